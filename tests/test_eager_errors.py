"""Errors raised as PyTorch raises them: same exception type, same leading words.

Each row names the expected type and message prefix; gradc must match it, and when torch is
installed the row itself is checked against torch, so the table cannot drift from PyTorch.
"""

import re

import pytest

import gradc

try:
    import torch
except ImportError:  # the rows still check gradc; the torch side is skipped
    torch = None

pytestmark = pytest.mark.filterwarnings("ignore:Using a target size")  # torch warns before raising


def nn_f(m):
    return m.nn.functional


def backward_twice(m):
    a = m.ones(3, requires_grad=True)
    loss = (a * a).sum()
    loss.backward()
    loss.backward()


def backward_twice_through_exp(m):
    loss = m.exp(m.ones(3, requires_grad=True)).sum()
    loss.backward()
    loss.backward()


def saved_input_modified(m):
    a = m.ones(3, requires_grad=True)
    b = a * 2
    c = b * b
    b.add_(1)
    c.sum().backward()


def saved_result_modified(m):
    b = m.exp(m.ones(3, requires_grad=True))
    b.add_(1)
    b.sum().backward()


def grad_after_no_grad(m):
    with m.no_grad():
        loss = (m.ones(3, requires_grad=True) * 2).sum()
    loss.backward()


CASES = [
    ("second backward", backward_twice, RuntimeError, "Trying to backward through the graph a second time"),
    ("second backward (exp)", backward_twice_through_exp, RuntimeError,
     "Trying to backward through the graph a second time"),
    ("non-scalar backward", lambda m: (m.ones(3, requires_grad=True) * 2).backward(), RuntimeError,
     "grad can be implicitly created only for scalar outputs"),
    ("backward without grad", lambda m: m.ones(3).sum().backward(), RuntimeError,
     "element 0 of tensors does not require grad and does not have a grad_fn"),
    ("backward of a no_grad result", grad_after_no_grad, RuntimeError,
     "element 0 of tensors does not require grad and does not have a grad_fn"),
    ("integer tensor requires grad", lambda m: m.tensor([1, 2], requires_grad=True), RuntimeError,
     "Only Tensors of floating point and complex dtype can require gradients"),
    ("integer arange requires grad", lambda m: m.arange(3, requires_grad=True), RuntimeError,
     "Only Tensors of floating point and complex dtype can require gradients"),
    ("integer requires_grad_", lambda m: m.tensor([1, 2]).requires_grad_(), RuntimeError,
     "only Tensors of floating point dtype can require gradients"),
    ("broadcast mismatch", lambda m: m.ones(3, 4) + m.ones(5), RuntimeError,
     "The size of tensor a (4) must match the size of tensor b (5) at non-singleton dimension 1"),
    ("maximum mismatch", lambda m: m.maximum(m.ones(3), m.ones(4)), RuntimeError,
     "The size of tensor a (3) must match the size of tensor b (4) at non-singleton dimension 0"),
    ("mm mismatch", lambda m: m.ones(3, 4) @ m.ones(5, 2), RuntimeError,
     "mat1 and mat2 shapes cannot be multiplied (3x4 and 5x2)"),
    ("vector-matrix mismatch", lambda m: m.ones(3) @ m.ones(4, 2), RuntimeError,
     "mat1 and mat2 shapes cannot be multiplied (1x3 and 4x2)"),
    ("dot mismatch", lambda m: m.ones(3) @ m.ones(4), RuntimeError,
     "inconsistent tensor size, expected tensor [3] and src [4]"),
    ("mv mismatch", lambda m: m.ones(3, 4) @ m.ones(3), RuntimeError, "size mismatch, got input (3), mat (3x4), vec (3)"),
    ("bmm mismatch", lambda m: m.matmul(m.ones(2, 3, 4), m.ones(2, 5, 2)), RuntimeError,
     "Expected size for first two dimensions of batch2 tensor to be: [2, 4] but got: [2, 5]."),
    ("in-place on a leaf", lambda m: m.ones(3, requires_grad=True).add_(1), RuntimeError,
     "a leaf Variable that requires grad is being used in an in-place operation."),
    ("in-place mul on a leaf", lambda m: m.ones(3, requires_grad=True).mul_(2), RuntimeError,
     "a leaf Variable that requires grad is being used in an in-place operation."),
    ("saved input modified", saved_input_modified, RuntimeError,
     "one of the variables needed for gradient computation has been modified by an inplace operation"),
    ("saved result modified", saved_result_modified, RuntimeError,
     "one of the variables needed for gradient computation has been modified by an inplace operation"),
    ("numpy of a tensor requiring grad", lambda m: m.ones(3, requires_grad=True).numpy(), RuntimeError,
     "Can't call numpy() on Tensor that requires grad"),
    ("item of many", lambda m: m.ones(3).item(), RuntimeError, "a Tensor with 3 elements cannot be converted to Scalar"),
    ("bool of many", lambda m: bool(m.ones(3)), RuntimeError,
     "Boolean value of Tensor with more than one value is ambiguous"),
    ("view of a wrong size", lambda m: m.ones(3, 4).view(5, 2), RuntimeError, "shape '[5, 2]' is invalid for input of size 12"),
    ("reshape with -1", lambda m: m.ones(3, 4).reshape(-1, 5), RuntimeError, "shape '[-1, 5]' is invalid for input of size 12"),
    ("sum dim out of range", lambda m: m.ones(3, 4).sum(2), IndexError,
     "Dimension out of range (expected to be in range of [-2, 1], but got 2)"),
    ("softmax dim out of range", lambda m: m.softmax(m.ones(3), dim=1), IndexError,
     "Dimension out of range (expected to be in range of [-1, 0], but got 1)"),
    ("index out of range", lambda m: m.ones(3, 4)[3], IndexError, "index 3 is out of bounds for dimension 0 with size 3"),
    ("too many indices", lambda m: m.ones(3)[0, 0], IndexError, "too many indices for tensor of dimension 1"),
    ("t of 3-d", lambda m: m.ones(2, 3, 4).t(), RuntimeError, "t() expects a tensor with <= 2 dimensions, but self is 3D"),
    ("mean of integers", lambda m: m.tensor([1, 2]).mean(), RuntimeError,
     "mean(): could not infer output dtype. Input dtype must be either a floating point or complex dtype. Got: Long"),
    ("bce-with-logits shapes", lambda m: nn_f(m).binary_cross_entropy_with_logits(m.ones(3), m.ones(4)), ValueError,
     "Target size (torch.Size([4])) must be the same as input size (torch.Size([3]))"),
    ("bce input outside [0, 1]", lambda m: nn_f(m).binary_cross_entropy(m.tensor([1.5]), m.tensor([1.0])),
     RuntimeError, "all elements of input should be between 0 and 1"),
    ("mse shapes", lambda m: nn_f(m).mse_loss(m.ones(3), m.ones(4)), RuntimeError,
     "The size of tensor a (3) must match the size of tensor b (4)"),
    ("float class labels", lambda m: nn_f(m).cross_entropy(m.ones(3, 4), m.ones(3)), RuntimeError,
     "expected target dtype to be Long or Byte, but got Float"),
    ("multi-target labels", lambda m: nn_f(m).nll_loss(m.ones(3, 4), m.ones(3, 5)), RuntimeError,
     "0D or 1D target tensor expected, multi-target not supported"),
    ("label batch size", lambda m: nn_f(m).cross_entropy(m.ones(3, 4), m.tensor([0, 1])), ValueError,
     "Expected input batch_size (3) to match target batch_size (2)."),
    ("label out of range", lambda m: nn_f(m).cross_entropy(m.ones(3, 4), m.tensor([0, 1, 4])), IndexError,
     "Target 4 is out of bounds."),
    ("negative label", lambda m: nn_f(m).nll_loss(m.ones(3, 4), m.tensor([0, -1, 1])), IndexError,
     "Target -1 is out of bounds."),
    ("bad reduction", lambda m: nn_f(m).mse_loss(m.ones(3), m.ones(3), reduction="avg"), ValueError,
     "avg is not a valid value for reduction"),
    ("grad of an unused input",
     lambda m: m.autograd.grad((m.ones(3, requires_grad=True) * 2).sum(), [m.ones(3, requires_grad=True)]),
     RuntimeError, "The differentiated Tensor at index 0 appears to not have been used in the graph."),
    ("grad of an input without grad",
     lambda m: m.autograd.grad((m.ones(3, requires_grad=True) * 2).sum(), [m.ones(3)]), RuntimeError,
     "One of the differentiated Tensors does not require grad"),
    ("gradient of a wrong shape", lambda m: (m.ones(3, requires_grad=True) * 2).backward(m.ones(4)), RuntimeError,
     "Mismatch in shape: grad_output[0] has a shape of torch.Size([4]) and output[0] has a shape of torch.Size([3])."),
    ("requires_grad_(False) on a non-leaf", lambda m: (m.ones(3, requires_grad=True) * 2).requires_grad_(False),
     RuntimeError, "you can only change requires_grad flags of leaf variables."),
    ("clamp without bounds", lambda m: m.clamp(m.ones(3)), RuntimeError,
     "torch.clamp: At least one of 'min' or 'max' must not be None"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_error_as_pytorch(case):
    _, fn, exc_type, prefix = case
    with pytest.raises(exc_type, match="^" + re.escape(prefix)):
        fn(gradc)


@pytest.mark.skipif(torch is None, reason="torch is not installed")
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_table_agrees_with_torch(case):
    _, fn, exc_type, prefix = case
    with pytest.raises(exc_type) as info:
        fn(torch)
    assert type(info.value) is exc_type
    assert str(info.value).startswith(prefix)


@pytest.mark.parametrize("make", [lambda m: m.ones(3, 4) + m.ones(5), lambda m: m.ones(3, 4) @ m.ones(5, 2),
                                  lambda m: m.matmul(m.ones(2, 3, 4), m.ones(2, 5, 2))])
def test_shape_errors_name_both_shapes(make):
    with pytest.raises(RuntimeError) as info:
        make(gradc)
    assert re.search(r"shapes \[[\d, ]+\] and \[[\d, ]+\]", str(info.value))


def test_linear_graph_can_be_backpropagated_twice_as_in_pytorch():
    # nodes that save no tensors (add, sum) survive a freed graph in PyTorch, and so in gradc
    a = gradc.ones(3, requires_grad=True)
    loss = (a + 1).sum()
    loss.backward()
    loss.backward()
    assert a.grad.tolist() == [2.0, 2.0, 2.0]
