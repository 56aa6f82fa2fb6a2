"""Tensors print as PyTorch prints them: compared with torch's own repr when torch is installed."""

import numpy as np
import pytest

import gradc
from gradc.ir.core import TensorType, Value, float32
from gradc.printing import printoptions
from gradc.tensor import Tensor


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


rng = np.random.default_rng(7)

ARRAYS = {
    "matrix 4 decimals": rng.random((3, 3)).astype(np.float32),
    "integer-valued floats": np.array([1.0, 2.0, 3.0], np.float32),
    "negative integer-valued": np.array([[-1.0, 20.0], [3.0, -400.0]], np.float32),
    "sci small": np.array([1e-5, 1.0], np.float32),
    "sci large": np.array([1e9, 1.0], np.float32),
    "sci ratio": np.arange(30) * 1000.0 + 0.5,
    "integer-valued sci": np.array([1e10, 1.0], np.float32),
    "just below 1e-4": np.array([1e-4, 2e-4], np.float32),
    "float64 suffix": np.array([1.5, 2.25]),
    "float64 3d": rng.standard_normal((2, 3, 4)),
    "float32 4d": rng.standard_normal((2, 2, 2, 2)).astype(np.float32),
    "nan inf": np.array([np.nan, np.inf, -np.inf, 1.0], np.float32),
    "nan and fraction": np.array([np.nan, 1.5], np.float32),
    "all zero": np.zeros(4, np.float32),
    "negative zero": np.array([-0.0, 1.0], np.float32),
    "long row wraps": rng.standard_normal(100).astype(np.float32),
    "summarized 2d": rng.standard_normal((40, 50)).astype(np.float32),
    "summarized 1d sci": (rng.standard_normal(1100) * 1e-6).astype(np.float32),
    "summarized 3d": rng.standard_normal((10, 10, 11)).astype(np.float32),
    "exactly 1000": rng.standard_normal((10, 100)).astype(np.float32),
    "int64": rng.integers(-1000, 1000, (5, 7)),
    "int64 summarized": np.arange(2000).reshape(40, 50),
    "int64 0-d": np.array(7),
    "bool": np.array([True, False, True]),
    "bool 2d": np.array([[True], [False]]),
    "0-d float": np.array(3.5, np.float32),
    "0-d float64": np.array(-3.0),
    "empty 2d": np.zeros((0, 3), np.float32),
    "empty int": np.zeros(0, np.int64),
    "empty float64": np.zeros(0),
    "big exponent": np.array([123456789.0, 1.0]),
    "one element": np.array([0.1], np.float32),
}


@pytest.mark.parametrize("name", list(ARRAYS))
def test_repr_matches_torch(torch, name):
    array = ARRAYS[name]
    assert repr(gradc.from_numpy(array.copy())) == repr(torch.from_numpy(array.copy()))


@pytest.mark.parametrize("name", ["matrix 4 decimals", "sci small", "float64 suffix", "long row wraps",
                                  "summarized 2d", "0-d float"])
def test_autograd_suffixes_match_torch(torch, name):
    array = ARRAYS[name]
    g = gradc.tensor(array, requires_grad=True)
    t = torch.tensor(array, requires_grad=True)
    assert repr(g) == repr(t)
    assert repr(g * 2) == repr(t * 2)
    assert repr(gradc.exp(g)) == repr(torch.exp(t))
    assert str(g.sum()) == str(t.sum())


def test_suffix_moves_to_a_new_line_when_the_row_is_full(torch):
    array = np.linspace(-1, 1, 7).astype(np.float64)  # 7 wide columns plus dtype and grad_fn suffixes
    g = gradc.tensor(array, requires_grad=True) * 3
    t = torch.tensor(array, requires_grad=True) * 3
    assert "\n" in repr(t) and repr(g) == repr(t)


@pytest.mark.parametrize("options", [dict(precision=2), dict(sci_mode=True), dict(sci_mode=False),
                                     dict(threshold=5), dict(edgeitems=1, threshold=5), dict(linewidth=40),
                                     dict(profile="short"), dict(profile="full")])
def test_print_options_match_torch(torch, options):
    arrays = [ARRAYS["matrix 4 decimals"], ARRAYS["sci small"], np.arange(10), ARRAYS["summarized 2d"]]
    for array in arrays:
        with printoptions(**options):
            ours = repr(gradc.from_numpy(array.copy()))
        with torch._tensor_str.printoptions(**options):
            theirs = repr(torch.from_numpy(array.copy()))
        assert ours == theirs


def test_print_options_are_restored():
    before = repr(gradc.tensor([0.123456]))
    with printoptions(precision=1):
        assert repr(gradc.tensor([0.123456])) == "tensor([0.1])"
    assert repr(gradc.tensor([0.123456])) == before == "tensor([0.1235])"


def test_traced_tensor_prints_its_type_not_values():
    t = Tensor._from_value(Value(TensorType((3, 4), float32)))
    assert repr(t) == "tensor(<traced f32[3,4]>)"


def test_repr_does_not_need_torch():
    assert repr(gradc.tensor([[1.0, 2.5], [3.0, 4.0]])) == "tensor([[1.0000, 2.5000],\n        [3.0000, 4.0000]])"
    assert repr(gradc.tensor([1, 2, 3])) == "tensor([1, 2, 3])"
    assert repr(gradc.tensor([True, False])) == "tensor([ True, False])"
    assert repr(gradc.tensor(2.0, dtype=gradc.float64)) == "tensor(2., dtype=torch.float64)"
    assert repr(gradc.ones(2, requires_grad=True)) == "tensor([1., 1.], requires_grad=True)"
    assert repr(gradc.tensor([1e-5, 1.0])) == "tensor([1.0000e-05, 1.0000e+00])"
