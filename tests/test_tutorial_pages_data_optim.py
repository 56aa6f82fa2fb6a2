"""PyTorch tutorial programs, the SAME text run under torch and under gradc with only the import lines changed.

"Datasets & DataLoaders" and "Optimization" (Learn the Basics) and the "optim" program of "Learning
PyTorch with Examples". torchvision / matplotlib / pandas are not dependencies: their import lines are
replaced, for both libraries alike, by in-memory stand-ins (an in-memory FashionMNIST of the real shapes,
a plot recorder), so the runs need no download and no display. The gradc run rewrites `import torch`
to `import gradc as torch` and `from torch... import` to `from gradc... import`; nothing else changes
(tests/tutorial_harness.py, shared with the other tutorial tests).
"""

from __future__ import annotations

import math
import re
import types

import numpy as np
import pytest

import gradc

torch = pytest.importorskip("torch")

from tests.tutorial_harness import as_gradc  # noqa: E402
from tests.tutorial_harness import run as run_program  # noqa: E402

# ----------------------------------------------------------------------------- the programs' text

DATA_TUTORIAL = '''
import torch
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision.transforms import ToTensor
import matplotlib.pyplot as plt


training_data = datasets.FashionMNIST(
    root="data",
    train=True,
    download=True,
    transform=ToTensor()
)

test_data = datasets.FashionMNIST(
    root="data",
    train=False,
    download=True,
    transform=ToTensor()
)

labels_map = {
    0: "T-Shirt",
    1: "Trouser",
    2: "Pullover",
    3: "Dress",
    4: "Coat",
    5: "Sandal",
    6: "Shirt",
    7: "Sneaker",
    8: "Bag",
    9: "Ankle Boot",
}
figure = plt.figure(figsize=(8, 8))
cols, rows = 3, 3
for i in range(1, cols * rows + 1):
    sample_idx = torch.randint(len(training_data), size=(1,)).item()
    img, label = training_data[sample_idx]
    figure.add_subplot(rows, cols, i)
    plt.title(labels_map[label])
    plt.axis("off")
    plt.imshow(img.squeeze(), cmap="gray")
plt.show()

import os
import pandas as pd
from torchvision.io import read_image

class CustomImageDataset(Dataset):
    def __init__(self, annotations_file, img_dir, transform=None, target_transform=None):
        self.img_labels = pd.read_csv(annotations_file)
        self.img_dir = img_dir
        self.transform = transform
        self.target_transform = target_transform

    def __len__(self):
        return len(self.img_labels)

    def __getitem__(self, idx):
        img_path = os.path.join(self.img_dir, self.img_labels.iloc[idx, 0])
        image = read_image(img_path)
        label = self.img_labels.iloc[idx, 1]
        if self.transform:
            image = self.transform(image)
        if self.target_transform:
            label = self.target_transform(label)
        return image, label

from torch.utils.data import DataLoader

train_dataloader = DataLoader(training_data, batch_size=64, shuffle=True)
test_dataloader = DataLoader(test_data, batch_size=64, shuffle=True)

# Display image and label.
train_features, train_labels = next(iter(train_dataloader))
print(f"Feature batch shape: {train_features.size()}")
print(f"Labels batch shape: {train_labels.size()}")
img = train_features[0].squeeze()
label = train_labels[0]
plt.imshow(img, cmap="gray")
plt.show()
print(f"Label: {label}")
'''

OPTIMIZATION_TUTORIAL = '''
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import ToTensor

training_data = datasets.FashionMNIST(
    root="data",
    train=True,
    download=True,
    transform=ToTensor()
)

test_data = datasets.FashionMNIST(
    root="data",
    train=False,
    download=True,
    transform=ToTensor()
)

train_dataloader = DataLoader(training_data, batch_size=64)
test_dataloader = DataLoader(test_data, batch_size=64)

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

model = NeuralNetwork()

learning_rate = 1e-3
batch_size = 64
epochs = 5

# Initialize the loss function
loss_fn = nn.CrossEntropyLoss()

optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)

def train_loop(dataloader, model, loss_fn, optimizer):
    size = len(dataloader.dataset)
    # Set the model to training mode - important for batch normalization and dropout layers
    # Unnecessary in this situation but added for best practices
    model.train()
    for batch, (X, y) in enumerate(dataloader):
        # Compute prediction and loss
        pred = model(X)
        loss = loss_fn(pred, y)

        # Backpropagation
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

        if batch % 100 == 0:
            loss, current = loss.item(), batch * batch_size + len(X)
            print(f"loss: {loss:>7f}  [{current:>5d}/{size:>5d}]")


def test_loop(dataloader, model, loss_fn):
    # Set the model to evaluation mode - important for batch normalization and dropout layers
    # Unnecessary in this situation but added for best practices
    model.eval()
    size = len(dataloader.dataset)
    num_batches = len(dataloader)
    test_loss, correct = 0, 0

    # Evaluating the model with torch.no_grad() ensures that no gradients are computed during test mode
    # also serves to reduce unnecessary gradient computations and memory usage for tensors with requires_grad=True
    with torch.no_grad():
        for X, y in dataloader:
            pred = model(X)
            test_loss += loss_fn(pred, y).item()
            correct += (pred.argmax(1) == y).type(torch.float).sum().item()

    test_loss /= num_batches
    correct /= size
    print(f"Test Error: \\n Accuracy: {(100*correct):>0.1f}%, Avg loss: {test_loss:>8f} \\n")


loss_fn = nn.CrossEntropyLoss()
optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)

epochs = 10
for t in range(epochs):
    print(f"Epoch {t+1}\\n-------------------------------")
    train_loop(train_dataloader, model, loss_fn, optimizer)
    test_loop(test_dataloader, model, loss_fn)
print("Done!")
'''

POLYNOMIAL_OPTIM = '''
import torch
import math


# Create Tensors to hold input and outputs.
x = torch.linspace(-math.pi, math.pi, 2000)
y = torch.sin(x)

# Prepare the input tensor (x, x^2, x^3).
p = torch.tensor([1, 2, 3])
xx = x.unsqueeze(-1).pow(p)

# Use the nn package to define our model and loss function.
model = torch.nn.Sequential(
    torch.nn.Linear(3, 1),
    torch.nn.Flatten(0, 1)
)
loss_fn = torch.nn.MSELoss(reduction='sum')

# Use the optim package to define an Optimizer that will update the weights of
# the model for us. Here we will use RMSprop; the optim package contains many other
# optimization algorithms. The first argument to the RMSprop constructor tells the
# optimizer which Tensors it should update.
learning_rate = 1e-3
optimizer = torch.optim.RMSprop(model.parameters(), lr=learning_rate)
for t in range(2000):
    # Forward pass: compute predicted y by passing x to the model.
    y_pred = model(xx)

    # Compute and print loss.
    loss = loss_fn(y_pred, y)
    if t % 100 == 99:
        print(t, loss.item())

    # Before the backward pass, use the optimizer object to zero all of the
    # gradients for the variables it will update (which are the learnable
    # weights of the model). This is because by default, gradients are
    # accumulated in buffers( i.e, not overwritten) whenever .backward()
    # is called. Checkout docs of torch.autograd.backward for more details.
    optimizer.zero_grad()

    # Backward pass: compute gradient of the loss with respect to model
    # parameters
    loss.backward()

    # Calling the step function on an Optimizer makes an update to its
    # parameters
    optimizer.step()


linear_layer = model[0]
print(f'Result: y = {linear_layer.bias.item()} + {linear_layer.weight[:, 0].item()} x + {linear_layer.weight[:, 1].item()} x^2 + {linear_layer.weight[:, 2].item()} x^3')
'''  # noqa: E501  (the tutorial's own line)

# ----------------------------------------------------------------------------- in-memory stand-ins


class _Frame:
    """pandas.read_csv's result, as far as the tutorial uses it: len() and .iloc[row, col]."""

    def __init__(self, rows):
        self.rows = rows
        self.iloc = self

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, key):
        row, col = key
        return self.rows[row][col]


class InMemory:
    """What the replaced import lines bind: torchvision.datasets / ToTensor / read_image, pandas, pyplot."""

    def __init__(self, lib):
        self.lib = lib
        self.shown = []  # the arrays given to plt.imshow

    def datasets(self):
        class FashionMNIST:
            """28x28 grayscale images with labels 0-9 (deterministic, learnable: the label picks a bright row)."""

            def __init__(self, root, train=True, download=False, transform=None, target_transform=None):
                n = 128 if train else 64
                rng = np.random.default_rng(0 if train else 1)
                self.targets = rng.integers(0, 10, n)
                self.data = (rng.random((n, 28, 28)) * 80).astype(np.uint8)
                for i, t in enumerate(self.targets):
                    self.data[i, 2 * t + 3] = 255
                self.transform, self.target_transform = transform, target_transform

            def __len__(self):
                return len(self.targets)

            def __getitem__(self, i):
                img, target = self.data[i], int(self.targets[i])
                if self.transform is not None:
                    img = self.transform(img)
                if self.target_transform is not None:
                    target = self.target_transform(target)
                return img, target

        return types.SimpleNamespace(FashionMNIST=FashionMNIST)

    def to_tensor(self):
        lib = self.lib

        class ToTensor:
            """HxW uint8 -> 1xHxW float in [0, 1], as torchvision's."""

            def __call__(self, pic):
                return lib.from_numpy((pic[None] / 255.0).astype(np.float32))

        return ToTensor

    def read_image(self, path):
        return self.lib.from_numpy(np.full((1, 28, 28), len(path) / 100.0, dtype=np.float32))

    def pandas(self):
        return types.SimpleNamespace(read_csv=lambda f: _Frame([(f"img{i}.png", i % 10) for i in range(10)]))

    def pyplot(self):
        shown = self.shown

        class Figure:
            def add_subplot(self, *args):
                return None

        return types.SimpleNamespace(figure=lambda **kw: Figure(), title=lambda s: None, axis=lambda s: None,
                                     imshow=lambda img, cmap=None: shown.append(np.asarray(img.numpy())),
                                     show=lambda: None)


REPLACED = {  # import lines of libraries that are not dependencies -> their in-memory stand-ins
    "from torchvision import datasets": "datasets = _in_memory.datasets()",
    "from torchvision.transforms import ToTensor": "ToTensor = _in_memory.to_tensor()",
    "from torchvision.io import read_image": "read_image = _in_memory.read_image",
    "import matplotlib.pyplot as plt": "plt = _in_memory.pyplot()",
    "import pandas as pd": "pd = _in_memory.pandas()",
}


def run(text: str, lib_name: str):
    """Exec the program with the stand-ins bound; returns (namespace, printed lines, stand-ins)."""
    in_memory = InMemory(gradc if lib_name == "gradc" else torch)
    printed, namespace = run_program(text, lib_name, stand_ins=REPLACED, namespace={"_in_memory": in_memory})
    return namespace, printed.splitlines(), in_memory


# ----------------------------------------------------------------------------- the tests


def test_only_import_lines_change():
    for text in (DATA_TUTORIAL, OPTIMIZATION_TUTORIAL, POLYNOMIAL_OPTIM):
        for line in text.splitlines():
            if as_gradc(line) != line:
                assert line.lstrip().startswith(("import torch", "from torch"))
    assert as_gradc("from torch.utils.data import DataLoader") == "from gradc.utils.data import DataLoader"
    assert as_gradc("import torch") == "import gradc as torch"


@pytest.mark.parametrize("lib_name", ["torch", "gradc"])
def test_datasets_and_dataloaders_tutorial(lib_name):
    ns, printed, in_memory = run(DATA_TUTORIAL, lib_name)
    lib = gradc if lib_name == "gradc" else torch
    assert len(ns["training_data"]) == 128 and len(ns["test_data"]) == 64
    assert tuple(ns["train_features"].shape) == (64, 1, 28, 28) and tuple(ns["train_labels"].shape) == (64,)
    assert ns["train_features"].dtype == lib.float32 and ns["train_labels"].dtype == lib.int64
    assert [a.shape for a in in_memory.shown] == [(28, 28)] * 10
    # the batch is a shuffled draw: images stay paired with their labels
    feats, labels = ns["train_features"].numpy(), ns["train_labels"].numpy()
    assert all(feats[i, 0, 2 * labels[i] + 3].min() == 1.0 for i in range(64))
    assert [line.split(":")[0] for line in printed] == ["Feature batch shape", "Labels batch shape", "Label"]
    assert printed[2] == f"Label: {int(labels[0])}"
    # the custom Dataset the page defines, batched by the library's DataLoader
    custom = ns["CustomImageDataset"]("labels.csv", "img_dir", target_transform=lambda y: y * 2)
    images, targets = next(iter(ns["DataLoader"](custom, batch_size=4)))
    assert tuple(images.shape) == (4, 1, 28, 28) and targets.tolist() == [0, 2, 4, 6]


def run_optimization(lib_name):
    return run(OPTIMIZATION_TUTORIAL, lib_name)


@pytest.mark.parametrize("lib_name", ["torch", "gradc"])
def test_optimization_tutorial(lib_name):
    ns, printed, _ = run_optimization(lib_name)
    expected = []
    for t in range(10):
        expected += [f"Epoch {t + 1}", "-" * 31, "loss", "Test Error: ", "Accuracy", ""]
    expected.append("Done!")
    assert len(printed) == len(expected)
    for line, want in zip(printed, expected):
        assert line.strip().startswith(want.strip()), (line, want)
    losses = [float(re.match(r"loss: +([\d.]+) +\[ +64/ +128\]", line).group(1)) for line in printed
              if line.startswith("loss")]
    accuracy = [float(re.search(r"Accuracy: ([\d.]+)%, Avg loss: ([\d.]+)", line).group(2)) for line in printed
                if "Accuracy" in line]
    # ten classes, small SGD steps from a fresh init: the loss starts near ln(10) and goes down
    assert all(abs(v - math.log(10)) < 0.3 for v in losses + accuracy)
    assert accuracy[-1] < accuracy[0]


@pytest.mark.parametrize("lib_name", ["torch", "gradc"])
def test_polynomial_fit_with_optim_rmsprop(lib_name):
    ns, printed, _ = run(POLYNOMIAL_OPTIM, lib_name)
    assert [int(line.split()[0]) for line in printed[:-1]] == list(range(99, 2000, 100))
    losses = [float(line.split()[1]) for line in printed[:-1]]
    coefficients = [float(v) for v in re.fullmatch(r"Result: y = (\S+) \+ (\S+) x \+ (\S+) x\^2 \+ (\S+) x\^3",
                                                   printed[-1]).groups()]
    layer = ns["linear_layer"]
    np.testing.assert_allclose(coefficients, [layer.bias.item(), *layer.weight.detach().numpy()[0]], rtol=1e-6)
    # RMSprop's steps are about lr each: within 2000 steps most initial weights (23 of 30 torch seeds) reach the
    # least-squares cubic y ~ 0.857 x - 0.0928 x^3 (loss ~ 8.9); all 30 reach a loss below 100
    assert losses[-1] < losses[0] and losses[-1] < 100
    if losses[-1] < 10:
        assert abs(losses[-1] - 8.9) < 0.15
        np.testing.assert_allclose(coefficients, [0.0, 0.857, 0.0, -0.0928], atol=0.01)
