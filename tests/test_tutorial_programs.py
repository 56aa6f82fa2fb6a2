"""PyTorch's "Learning PyTorch with Examples" programs and tutorial pages, run unchanged under both libraries.

Each program below is written against `torch` (following the official examples: the same API calls,
sizes, learning rates and seeds, with fewer steps to keep the suite fast). `run_both` (tests/tutorial_harness.py)
executes the text once with the real torch and once with only its import lines rewritten to gradc,
captures what it prints, and compares the printed numbers. Random initial weights agree because gradc
reproduces PyTorch's CPU random streams after `manual_seed`.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tests.tutorial_harness import run_both  # noqa: E402

POLYNOMIAL_TENSOR = """
import math
import torch

torch.manual_seed(0)
dtype = torch.float
device = torch.device("cpu")
x = torch.linspace(-math.pi, math.pi, 2000, device=device, dtype=dtype)
y = torch.sin(x)
a = torch.randn((), device=device, dtype=dtype)
b = torch.randn((), device=device, dtype=dtype)
c = torch.randn((), device=device, dtype=dtype)
d = torch.randn((), device=device, dtype=dtype)
learning_rate = 1e-6
for t in range(300):
    y_pred = a + (b * x) + (c * x.pow(2)) + (d * x.pow(3))
    loss = (y_pred - y).pow(2).sum().item()
    if t % 100 == 99:
        print(t, loss)
    grad_y_pred = -2.0 * (y - y_pred)
    grad_a = grad_y_pred.sum()
    grad_b = torch.matmul(input=grad_y_pred, other=x).sum()
    grad_c = torch.matmul(input=grad_y_pred, other=x.pow(2)).sum()
    grad_d = torch.matmul(input=grad_y_pred, other=x.pow(3)).sum()
    a -= learning_rate * grad_a
    b -= learning_rate * grad_b
    c -= learning_rate * grad_c
    d -= learning_rate * grad_d
print(f'Result: y = {a.item()} + {b.item()} x + {c.item()} x^2 + {d.item()} x^3')
"""

POLYNOMIAL_AUTOGRAD = """
import torch
import math

torch.manual_seed(0)
dtype = torch.float
device = "cuda" if torch.cuda.is_available() else "cpu"
x = torch.linspace(-math.pi, math.pi, 2000, dtype=dtype, device=device)
y = torch.sin(x)
a = torch.randn((), dtype=dtype, requires_grad=True)
b = torch.randn((), dtype=dtype, requires_grad=True)
c = torch.randn((), dtype=dtype, requires_grad=True)
d = torch.randn((), dtype=dtype, requires_grad=True)
learning_rate = 1e-6
for t in range(300):
    y_pred = a + b * x + c * x ** 2 + d * x ** 3
    loss = (y_pred - y).pow(2).sum()
    if t % 100 == 99:
        print(t, loss.item())
    loss.backward()
    with torch.no_grad():
        a -= learning_rate * a.grad
        b -= learning_rate * b.grad
        c -= learning_rate * c.grad
        d -= learning_rate * d.grad
        a.grad = None
        b.grad = None
        c.grad = None
        d.grad = None
print(f'Result: y = {a.item()} + {b.item()} x + {c.item()} x^2 + {d.item()} x^3')
"""

POLYNOMIAL_CUSTOM_FUNCTION = """
import torch
import math


class LegendrePolynomial3(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input):
        ctx.save_for_backward(input)
        return 0.5 * (5 * input ** 3 - 3 * input)

    @staticmethod
    def backward(ctx, grad_output):
        input, = ctx.saved_tensors
        return grad_output * 1.5 * (5 * input ** 2 - 1)


dtype = torch.float
device = torch.device("cpu")
x = torch.linspace(-math.pi, math.pi, 2000, device=device, dtype=dtype)
y = torch.sin(x)
a = torch.full((), 0.0, device=device, dtype=dtype, requires_grad=True)
b = torch.full((), -1.0, device=device, dtype=dtype, requires_grad=True)
c = torch.full((), 0.0, device=device, dtype=dtype, requires_grad=True)
d = torch.full((), 0.3, device=device, dtype=dtype, requires_grad=True)
learning_rate = 5e-6
for t in range(300):
    P3 = LegendrePolynomial3.apply
    y_pred = a + b * P3(c + d * x)
    loss = (y_pred - y).pow(2).sum()
    if t % 100 == 99:
        print(t, loss.item())
    loss.backward()
    with torch.no_grad():
        a -= learning_rate * a.grad
        b -= learning_rate * b.grad
        c -= learning_rate * c.grad
        d -= learning_rate * d.grad
        a.grad = None
        b.grad = None
        c.grad = None
        d.grad = None
print(type(y_pred.grad_fn.next_functions[1][0].next_functions[1][0]).__name__ == "LegendrePolynomial3Backward")
print(f'Result: y = {a.item()} + {b.item()} * P3({c.item()} + {d.item()} x)')
"""

POLYNOMIAL_NN = """
import torch
import math

torch.manual_seed(0)
x = torch.linspace(-math.pi, math.pi, 2000)
y = torch.sin(x)
p = torch.tensor([1, 2, 3])
xx = x.unsqueeze(-1).pow(p)
model = torch.nn.Sequential(
    torch.nn.Linear(3, 1),
    torch.nn.Flatten(0, 1)
)
loss_fn = torch.nn.MSELoss(reduction='sum')
learning_rate = 1e-6
for t in range(300):
    y_pred = model(xx)
    loss = loss_fn(y_pred, y)
    if t % 100 == 99:
        print(t, loss.item())
    model.zero_grad()
    loss.backward()
    with torch.no_grad():
        for param in model.parameters():
            param -= learning_rate * param.grad
linear_layer = model[0]
print(f'Result: y = {linear_layer.bias.item()} + {linear_layer.weight[:, 0].item()} x + '
      f'{linear_layer.weight[:, 1].item()} x^2 + {linear_layer.weight[:, 2].item()} x^3')
"""

POLYNOMIAL_MODULE = """
import torch
import math


class Polynomial3(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.randn(()))
        self.b = torch.nn.Parameter(torch.randn(()))
        self.c = torch.nn.Parameter(torch.randn(()))
        self.d = torch.nn.Parameter(torch.randn(()))

    def forward(self, x):
        return self.a + self.b * x + self.c * x ** 2 + self.d * x ** 3

    def string(self):
        return f'y = {self.a.item()} + {self.b.item()} x + {self.c.item()} x^2 + {self.d.item()} x^3'


torch.manual_seed(0)
x = torch.linspace(-math.pi, math.pi, 2000)
y = torch.sin(x)
model = Polynomial3()
criterion = torch.nn.MSELoss(reduction='sum')
optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)
for t in range(300):
    y_pred = model(x)
    loss = criterion(y_pred, y)
    if t % 100 == 99:
        print(t, loss.item())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
print(f'Result: {model.string()}')
"""

DYNAMIC_NET = """
import random
import torch
import math


class DynamicNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.randn(()))
        self.b = torch.nn.Parameter(torch.randn(()))
        self.c = torch.nn.Parameter(torch.randn(()))
        self.d = torch.nn.Parameter(torch.randn(()))
        self.e = torch.nn.Parameter(torch.randn(()))

    def forward(self, x):
        y = self.a + self.b * x + self.c * x ** 2 + self.d * x ** 3
        for exp in range(4, random.randint(4, 6)):
            y = y + self.e * x ** exp
        return y

    def string(self):
        return (f'y = {self.a.item()} + {self.b.item()} x + {self.c.item()} x^2 + {self.d.item()} x^3 + '
                f'{self.e.item()} x^4 ? + {self.e.item()} x^5 ?')


torch.manual_seed(0)
x = torch.linspace(-math.pi, math.pi, 2000)
y = torch.sin(x)
model = DynamicNet()
criterion = torch.nn.MSELoss(reduction='sum')
optimizer = torch.optim.SGD(model.parameters(), lr=1e-8, momentum=0.9)
for t in range(400):
    y_pred = model(x)
    loss = criterion(y_pred, y)
    if t % 100 == 99:
        print(t, loss.item())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
print(f'Result: {model.string()}')
"""


TWO_LAYER_NET_CUSTOM_FUNCTION = """
import torch


class MyReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input):
        ctx.save_for_backward(input)
        return input.clamp(min=0)

    @staticmethod
    def backward(ctx, grad_output):
        input, = ctx.saved_tensors
        grad_input = grad_output.clone()
        grad_input[input < 0] = 0
        return grad_input


torch.manual_seed(0)
dtype = torch.float
device = torch.device("cpu")
N, D_in, H, D_out = 64, 1000, 100, 10
x = torch.randn(N, D_in, device=device, dtype=dtype)
y = torch.randn(N, D_out, device=device, dtype=dtype)
w1 = torch.randn(D_in, H, device=device, dtype=dtype, requires_grad=True)
w2 = torch.randn(H, D_out, device=device, dtype=dtype, requires_grad=True)
learning_rate = 1e-6
for t in range(60):
    relu = MyReLU.apply
    y_pred = relu(x.mm(w1)).mm(w2)
    loss = (y_pred - y).pow(2).sum()
    if t % 20 == 19:
        print(t, loss.item())
    loss.backward()
    with torch.no_grad():
        w1 -= learning_rate * w1.grad
        w2 -= learning_rate * w2.grad
        w1.grad.zero_()
        w2.grad.zero_()
"""

PROGRAMS = {
    "two_layer_net_custom_function": TWO_LAYER_NET_CUSTOM_FUNCTION,
    "polynomial_tensor": POLYNOMIAL_TENSOR, "polynomial_autograd": POLYNOMIAL_AUTOGRAD,
    "polynomial_custom_function": POLYNOMIAL_CUSTOM_FUNCTION, "polynomial_nn": POLYNOMIAL_NN,
    "polynomial_module": POLYNOMIAL_MODULE, "dynamic_net": DYNAMIC_NET,
}


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_learning_pytorch_with_examples(name):
    # float32 sums over 2000 points in a different order: losses agree to about 1e-4 relative
    run_both(PROGRAMS[name], rtol=2e-4, atol=1e-4)




TENSORS_PAGE = """
import torch
import numpy as np

torch.manual_seed(0)
data = [[1, 2], [3, 4]]
x_data = torch.tensor(data)
np_array = np.array(data)
x_np = torch.from_numpy(np_array)
x_ones = torch.ones_like(x_data)
print(f"Ones Tensor: \\n {x_ones.tolist()} \\n")
x_rand = torch.rand_like(x_data, dtype=torch.float)
print(f"Random Tensor: \\n {x_rand.tolist()} \\n")
shape = (2, 3,)
rand_tensor = torch.rand(shape)
ones_tensor = torch.ones(shape)
zeros_tensor = torch.zeros(shape)
print(rand_tensor.tolist(), ones_tensor.tolist(), zeros_tensor.tolist())
tensor = torch.rand(3, 4)
print(f"Shape of tensor: {list(tensor.shape)}")
print(f"Datatype of tensor: {tensor.dtype == torch.float32}")
print(f"Device tensor is stored on: {str(tensor.device) == 'cpu'}")
if torch.cuda.is_available():
    tensor = tensor.to("cuda")
tensor = torch.ones(4, 4)
print('First row: ', tensor[0].tolist())
print('First column: ', tensor[:, 0].tolist())
print('Last column:', tensor[..., -1].tolist())
tensor[:, 1] = 0
print(tensor.tolist())
y1 = tensor @ tensor.T
y2 = tensor.matmul(tensor.T)
y3 = torch.rand_like(y1)
torch.matmul(tensor, tensor.T, out=y3)
z1 = tensor * tensor
z2 = tensor.mul(tensor)
z3 = torch.rand_like(tensor)
torch.mul(tensor, tensor, out=z3)
print(y1.tolist(), y2.tolist(), y3.tolist(), z1.tolist(), z2.tolist(), z3.tolist())
agg = tensor.sum()
agg_item = agg.item()
print(agg_item, type(agg_item) is float)
tensor.add_(5)
print(tensor.tolist())
t = torch.ones(5)
n = t.numpy()
t.add_(1)
print(f"t: {t.tolist()}")
print(f"n: {n.tolist()}")
n = np.ones(5)
t = torch.from_numpy(n)
np.add(n, 1, out=n)
print(f"t: {t.tolist()}")
print(f"n: {n.tolist()}")
"""

AUTOGRAD_PAGE = """
import torch

torch.manual_seed(0)
x = torch.ones(5)
y = torch.zeros(3)
w = torch.randn(5, 3, requires_grad=True)
b = torch.randn(3, requires_grad=True)
z = torch.matmul(x, w) + b
loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y)
print(type(z.grad_fn).__name__ == "AddBackward0")
print(type(loss.grad_fn).__name__ == "BinaryCrossEntropyWithLogitsBackward0")
loss.backward()
print(w.grad.tolist())
print(b.grad.tolist())
z = torch.matmul(x, w) + b
print(z.requires_grad)
with torch.no_grad():
    z = torch.matmul(x, w) + b
print(z.requires_grad)
z = torch.matmul(x, w) + b
z_det = z.detach()
print(z_det.requires_grad)
inp = torch.eye(4, 5, requires_grad=True)
out = (inp + 1).pow(2).t()
out.backward(torch.ones_like(out), retain_graph=True)
print(f"First call\\n{inp.grad.tolist()}")
out.backward(torch.ones_like(out), retain_graph=True)
print(f"\\nSecond call\\n{inp.grad.tolist()}")
inp.grad.zero_()
out.backward(torch.ones_like(out), retain_graph=True)
print(f"\\nCall after zeroing gradients\\n{inp.grad.tolist()}")
"""

BUILD_MODEL_PAGE = """
import torch
from torch import nn

torch.manual_seed(0)
device = torch.accelerator.current_accelerator().type if torch.accelerator.is_available() else "cpu"
device = 'cuda' if torch.cuda.is_available() else device
print(f"Using {device == 'cpu'} device")


class NeuralNetwork(nn.Module):
    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(28*28, 512),
            nn.ReLU(),
            nn.Linear(512, 512),
            nn.ReLU(),
            nn.Linear(512, 10),
        )

    def forward(self, x):
        x = self.flatten(x)
        logits = self.linear_relu_stack(x)
        return logits


model = NeuralNetwork().to(device)
X = torch.rand(1, 28, 28, device=device)
logits = model(X)
pred_probab = nn.Softmax(dim=1)(logits)
y_pred = pred_probab.argmax(1)
print(f"Predicted class: {y_pred.tolist()}")
input_image = torch.rand(3, 28, 28)
print(list(input_image.size()))
flatten = nn.Flatten()
flat_image = flatten(input_image)
print(list(flat_image.size()))
layer1 = nn.Linear(in_features=28*28, out_features=20)
hidden1 = layer1(flat_image)
print(list(hidden1.size()))
print(f"Before ReLU: {hidden1.tolist()}")
hidden1 = nn.ReLU()(hidden1)
print(f"After ReLU: {hidden1.tolist()}")
seq_modules = nn.Sequential(flatten, layer1, nn.ReLU(), nn.Linear(20, 10))
input_image = torch.rand(3, 28, 28)
logits = seq_modules(input_image)
softmax = nn.Softmax(dim=1)
pred_probab = softmax(logits)
print(pred_probab.tolist())
for name, param in model.named_parameters():
    print(f"Layer: {len(name)} | Size: {list(param.size())} | Values : {param[:2].tolist()} ")
"""

SAVE_LOAD_PAGE = """
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
torch.save(model.state_dict(), 'model_weights.pth')
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
model.load_state_dict(torch.load('model_weights.pth', weights_only=True))
model.eval()
x = torch.rand(2, 8)
print(model(x).tolist())
torch.save(model, 'model.pth')
model = torch.load('model.pth', weights_only=False)
print(model(x).tolist())
"""


PAGES = {"tensors": TENSORS_PAGE, "autograd": AUTOGRAD_PAGE, "build_model": BUILD_MODEL_PAGE,
         "save_and_load": SAVE_LOAD_PAGE}


@pytest.mark.parametrize("name", list(PAGES))
def test_tutorial_pages(name, tmp_path):
    run_both(PAGES[name], str(tmp_path), rtol=1e-5, atol=1e-6)


def test_weights_written_by_one_library_load_in_the_other(tmp_path):
    import gradc
    torch.manual_seed(1)
    reference = torch.nn.Linear(5, 3)
    torch.save(reference.state_dict(), tmp_path / "torch.pth")
    model = gradc.nn.Linear(5, 3)
    model.load_state_dict(gradc.load(tmp_path / "torch.pth"))
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    np.testing.assert_array_equal(model.weight.detach().numpy(), reference.weight.detach().numpy())
    np.testing.assert_allclose(model(gradc.tensor(x)).detach().numpy(), reference(torch.tensor(x)).detach().numpy(),
                               rtol=1e-6, atol=1e-7)
    gradc.save(model.state_dict(), tmp_path / "gradc.pth")
    back = torch.nn.Linear(5, 3)
    back.load_state_dict(torch.load(tmp_path / "gradc.pth", weights_only=True))
    np.testing.assert_array_equal(back.bias.detach().numpy(), reference.bias.detach().numpy())
    np.testing.assert_array_equal(back.weight.detach().numpy(), reference.weight.detach().numpy())
