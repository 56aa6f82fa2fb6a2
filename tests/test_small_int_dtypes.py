"""int32, int16, int8 and uint8 end to end: PyTorch's promotion, wrapping arithmetic, casts, sums, comparisons,
indexing, floor division, printing and torch.save/load (each compared with PyTorch), plus native code == the IR
interpreter == eager on odd shapes (vector tails) and the IR text round trip."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

import gradc
from gradc.ir.interp import run
from gradc.ir.parser import parse_function
from gradc.ir.printer import print_function
from gradc.ir.verify import verify

NAMES = ("float32", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")
SMALL = ("int32", "int16", "int8", "uint8")
TAILS = ((1,), (7,), (9,), (17,), (33,), (3, 5), (2, 17), (0,))
rng = np.random.default_rng(7)


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def full_range(dtype: str, shape: tuple) -> np.ndarray:
    if dtype == "bool":
        return rng.uniform(size=shape) > 0.5
    if dtype.startswith("float"):
        return rng.uniform(-300, 300, size=shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)


def same(t, g) -> None:
    """A gradc tensor equals a torch tensor: dtype name, shape and values (NaN == NaN)."""
    assert str(g.dtype).split(".")[-1] == str(t.dtype).split(".")[-1], (g.dtype, t.dtype)
    want, got = t.numpy(), g.numpy()
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def both(torch, array: np.ndarray):
    return torch.from_numpy(array.copy()), gradc.from_numpy(array.copy())


# ----------------------------------------------------------------------------- promotion

@pytest.mark.parametrize("a, b", list(itertools.product(NAMES, NAMES)))
def test_promotion_of_every_pair_matches_pytorch(torch, a, b):
    x, y = full_range(a, (3, 4)), full_range(b, (4,))
    tx, gx = both(torch, x)
    ty, gy = both(torch, y)
    same(tx + ty, gx + gy)  # dimensioned tensors
    same(tx * ty[0], gx * gy[0])  # a 0-d tensor only counts when of a higher category
    same(tx[0, 0] * ty, gx[0, 0] * gy)
    same(tx[0, 0] * ty[0], gx[0, 0] * gy[0])  # two 0-d tensors: plain promotion
    assert str(gradc.promote_types(getattr(gradc, a if a != "bool" else "bool"), getattr(gradc, b))).split(".")[-1] \
        == str(torch.promote_types(getattr(torch, a), getattr(torch, b))).split(".")[-1]


@pytest.mark.parametrize("a", NAMES)
@pytest.mark.parametrize("number", [3, -1, 300, 2.5, True])
def test_promotion_with_python_numbers_matches_pytorch(torch, a, number):
    tx, gx = both(torch, full_range(a, (9,)))
    if a == "bool" and number is True:  # bool + bool is logical or in both
        same(tx + number, gx + number)
        return
    same(tx + number, gx + number)
    same(number * tx, number * gx)
    same(tx < number, gx < number)


def test_promotion_rules_named_in_the_issue():
    u8, i8 = gradc.ones(2, dtype=gradc.uint8), gradc.ones(2, dtype=gradc.int8)
    assert (u8 + i8).dtype == gradc.int16
    assert (gradc.ones(2, dtype=gradc.int32) + gradc.ones(2, dtype=gradc.int64)).dtype == gradc.int64
    assert (i8 + 1000).dtype == gradc.int8 and (i8 + 2.5).dtype == gradc.float32
    assert (gradc.ones(2, dtype=gradc.bool) + i8).dtype == gradc.int8
    assert (i8 + gradc.tensor(5)).dtype == gradc.int8  # a 0-d int64 tensor does not widen an int8 tensor
    assert (i8 + gradc.tensor(5.0, dtype=gradc.float64)).dtype == gradc.float64  # but a 0-d float does
    assert (gradc.ones(2) + gradc.tensor(5.0, dtype=gradc.float64)).dtype == gradc.float32
    assert (gradc.ones(2, dtype=gradc.int16) / 2).dtype == gradc.float32


# ----------------------------------------------------------------------------- arithmetic, casts, reductions

@pytest.mark.parametrize("dtype", SMALL)
def test_arithmetic_wraps_as_pytorch(torch, dtype):
    x, y = full_range(dtype, (33,)), full_range(dtype, (33,))
    (tx, gx), (ty, gy) = both(torch, x), both(torch, y)
    for op in (lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b, lambda a, b: -a, lambda a, b: a.abs(),
               lambda a, b: a + 300, lambda a, b: a * 3 - 1000, lambda a, b: torch_or_gradc(a).maximum(a, b),
               lambda a, b: torch_or_gradc(a).minimum(a, b), lambda a, b: a.relu()):
        same(op(tx, ty), op(gx, gy))
    assert (gradc.tensor([200], dtype=gradc.uint8) + 100).tolist() == [44]


def torch_or_gradc(t):
    return gradc if isinstance(t, gradc.Tensor) else __import__("torch")


def with_extremes(dtype: str, shape: tuple) -> np.ndarray:
    """Random values of the dtype with its minimum, maximum (NaN for floats) and 0 planted in every row."""
    x = full_range(dtype, shape)
    if dtype == "bool":
        return x
    if dtype.startswith("float"):
        specials = [np.nan, 0.0, -0.0, np.inf, -np.inf]
    else:
        info = np.iinfo(dtype)
        specials = [info.min, info.max, 0, info.min + 1, info.max - 1]
    for row in x.reshape(-1, x.shape[-1]):
        row[rng.permutation(x.shape[-1])[:len(specials)]] = specials
    return x


ORDER_OPS = {  # name: (torch or gradc module, tensor) -> result; bools raise in both where PyTorch raises
    "min": lambda m, a: a.min(), "max": lambda m, a: a.max(), "min_dim": lambda m, a: a.min(1),
    "max_dim": lambda m, a: a.max(0), "argmin": lambda m, a: a.argmin(1), "argmax": lambda m, a: a.argmax(),
    "minimum": lambda m, a: m.minimum(a, a.flip(1)), "maximum": lambda m, a: m.maximum(a, a.flip(0)),
    "amax": lambda m, a: m.amax(a, 1), "clamp": lambda m, a: a.clamp(max=a[0, 0]),
    "sort_desc": lambda m, a: a.sort(dim=1, descending=True, stable=True),
    "sort": lambda m, a: a.sort(dim=0, stable=True),
    "argsort_desc": lambda m, a: a.argsort(dim=1, descending=True, stable=True),
    "topk": lambda m, a: a.topk(3, 1).values, "topk_smallest": lambda m, a: a.topk(2, 0, largest=False).values,
    "amin": lambda m, a: m.amin(a, 0), "aminmax": lambda m, a: tuple(m.aminmax(a, dim=1)),
    "aminmax_all": lambda m, a: tuple(m.aminmax(a)),
}


@pytest.mark.parametrize("dtype", NAMES)
@pytest.mark.parametrize("op", ORDER_OPS)
def test_order_ops_at_the_type_extremes_match_pytorch(torch, dtype, op):
    # a minimum taken as -max(-x) overflows at the integer minimum and wraps for uint8; NaN is the largest value
    tx, gx = both(torch, with_extremes(dtype, (4, 9)))
    fn = ORDER_OPS[op]
    try:
        want = fn(torch, tx)
    except RuntimeError as error:
        with pytest.raises(RuntimeError, match=str(error).split(":")[0].split(" ")[0]):
            fn(gradc, gx)
        return
    got = fn(gradc, gx)
    for w, g in (zip(want, got) if isinstance(want, tuple) else [(want, got)]):
        same(w, g)


@pytest.mark.parametrize("src", NAMES)
def test_casts_match_pytorch(torch, src):
    x = full_range(src, (17,))
    if src.startswith("float"):
        x = np.concatenate([x, np.array([-1.5, 300.0, 255.9, -300.0, 127.9, -0.5, 65536.0], src)])
    tx, gx = both(torch, x)
    for name in ("int", "short", "byte", "char", "long", "float", "double", "bool"):
        same(getattr(tx, name)(), getattr(gx, name)())
    for dst in NAMES:
        same(tx.to(getattr(torch, dst)), gx.to(getattr(gradc, dst)))


@pytest.mark.parametrize("dtype", SMALL)
def test_sums_and_reductions_match_pytorch(torch, dtype):
    tx, gx = both(torch, full_range(dtype, (5, 17)))
    same(tx.sum(), gx.sum())  # int64, as PyTorch
    same(tx.sum(1), gx.sum(1))
    same(tx.sum(0, dtype=getattr(torch, dtype)), gx.sum(0, dtype=getattr(gradc, dtype)))  # wraps
    same(tx.cumsum(1), gx.cumsum(1))
    same(tx.amax(0), gx.amax(0))
    same(tx.max(), gx.max())
    same(tx.min(), gx.min())
    same(tx.argmax(1), gx.argmax(1))
    with pytest.raises(RuntimeError, match="mean\\(\\): could not infer output dtype"):
        torch.ones(2, dtype=getattr(torch, dtype)).mean()
    with pytest.raises(RuntimeError, match="mean\\(\\): could not infer output dtype"):
        gx.mean()


@pytest.mark.parametrize("a, b", [("uint8", "int8"), ("int8", "int8"), ("uint8", "uint8"), ("int16", "int32"),
                                  ("int32", "int64"), ("uint8", "float32")])
def test_comparisons_give_bool_as_pytorch(torch, a, b):
    (tx, gx), (ty, gy) = both(torch, full_range(a, (3, 9))), both(torch, full_range(b, (9,)))
    for op in ("lt", "le", "gt", "ge", "eq", "ne"):
        same(getattr(tx, op)(ty), getattr(gx, op)(gy))
    same(tx.eq(200), gx.eq(200))


@pytest.mark.parametrize("dtype", SMALL + ("int64",))
def test_floor_division_and_remainder_match_pytorch(torch, dtype):
    x, y = full_range(dtype, (64,)), full_range(dtype, (64,))
    y[y == 0] = 1
    y[:4] = np.array([1, 2, 3, 7], dtype)
    if dtype != "uint8":
        y[4:8] = np.array([-1, -2, -3, -7], dtype)
    (tx, gx), (ty, gy) = both(torch, x), both(torch, y)
    same(tx // ty, gx // gy)
    same(tx % ty, gx % gy)
    same(tx // 3, gx // 3)
    same(tx / ty, gx / gy)  # true division gives float
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        gx // gradc.zeros(64, dtype=gx.dtype)


def test_int64_floor_division_is_exact_at_the_extremes(torch):
    lo, hi = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    x = np.array([lo, lo, hi, hi, lo, hi, lo + 1, -1, 1, 0, hi - 1, lo, 10 ** 18 + 7], np.int64)
    y = np.array([-1, 1, 1, -1, hi, lo, -1, hi, lo, lo, 3, 7, -(10 ** 9) - 9], np.int64)
    (tx, gx), (ty, gy) = both(torch, x), both(torch, y)
    same(tx // ty, gx // gy)
    same(tx % ty, gx % gy)
    np.testing.assert_array_equal(np.asarray(gradc.compile(gradc.floor_divide)(x, y)), (tx // ty).numpy())


# ----------------------------------------------------------------------------- factories, indexing, grad

@pytest.mark.parametrize("dtype", SMALL)
def test_factories_printing_and_conversion_match_pytorch(torch, dtype):
    T, G = getattr(torch, dtype), getattr(gradc, dtype)
    for make in (lambda lib, d: lib.zeros(2, 3, dtype=d), lambda lib, d: lib.ones(4, dtype=d),
                 lambda lib, d: lib.full((3,), 7, dtype=d), lambda lib, d: lib.arange(0, 20, 3, dtype=d),
                 lambda lib, d: lib.tensor([[1, 2], [3, 100]], dtype=d), lambda lib, d: lib.tensor(5, dtype=d),
                 lambda lib, d: lib.tensor([], dtype=d)):
        t, g = make(torch, T), make(gradc, G)
        same(t, g)
        assert repr(g) == repr(t)
        assert g.tolist() == t.tolist() and g.type() == t.type() and g.element_size() == t.element_size()
    assert gradc.randint(0, 5, (9,), dtype=G).dtype == G
    array = full_range(dtype, (4,))
    assert gradc.from_numpy(array).dtype == G and gradc.from_numpy(array).numpy().dtype == array.dtype


def test_requires_grad_on_integer_tensors_is_pytorchs_error(torch):
    for lib in (torch, gradc):
        with pytest.raises(RuntimeError, match="Only Tensors of floating point and complex dtype can require"):
            lib.tensor([1, 2], dtype=lib.int32, requires_grad=True)
        with pytest.raises(RuntimeError, match="only Tensors of floating point dtype can require gradients"):
            lib.ones(2, dtype=lib.uint8).requires_grad_()


def test_int32_indices_are_accepted_where_pytorch_accepts_them(torch):
    x = rng.normal(size=(4, 5)).astype(np.float32)
    (tx, gx) = both(torch, x)
    i32 = np.array([3, 0, 4, 1], np.int32)
    (ti, gi) = both(torch, i32)
    same(tx.index_select(1, ti), gx.index_select(1, gi))
    same(tx[:, ti], gx[:, gi])
    same(tx[ti[:2]], gx[gi[:2]])
    rows = np.array([[0], [2], [1], [4]], np.int32)
    same(tx.gather(1, torch.from_numpy(rows)), gx.gather(1, gradc.from_numpy(rows)))
    tw, gw = both(torch, rng.normal(size=(5, 3)).astype(np.float32))
    same(torch.nn.functional.embedding(ti, tw), gradc.nn.functional.embedding(gi, gw))
    for lib, t in ((torch, tx), (gradc, gx)):
        with pytest.raises(IndexError, match="tensors used as indices must be long, int, byte or bool"):
            t[:, lib.tensor([0, 1], dtype=lib.int16)]
        with pytest.raises(RuntimeError, match="index_select\\(\\): Expected dtype int32 or int64 for index"):
            t.index_select(1, lib.tensor([0], dtype=lib.int8))
    mask = np.array([1, 0, 1, 1], np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # both deprecate uint8 masks
        same(tx[torch.from_numpy(mask)], gx[gradc.from_numpy(mask)])


def test_cross_entropy_takes_a_uint8_target(torch):
    logits = rng.normal(size=(4, 3)).astype(np.float32)
    target = np.array([0, 2, 1, 2], np.uint8)
    want = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(target))
    got = gradc.nn.functional.cross_entropy(gradc.from_numpy(logits), gradc.from_numpy(target))
    np.testing.assert_allclose(got.item(), want.item(), rtol=1e-6)


def test_float16_bfloat16_and_complex_stay_a_clear_type_error():
    for dtype in (gradc.float16, gradc.bfloat16, gradc.complex64):
        with pytest.raises(TypeError, match=f"gradc does not support {dtype.name} tensors"):
            gradc.zeros(2, dtype=dtype)


# ----------------------------------------------------------------------------- save / load

@pytest.mark.parametrize("dtype", SMALL)
def test_save_load_round_trips_with_pytorch_files(torch, tmp_path, dtype):
    array = full_range(dtype, (3, 5))
    torch.save({"w": torch.from_numpy(array), "view": torch.from_numpy(array)[:, 1:]}, tmp_path / "t.pt")
    loaded = gradc.load(tmp_path / "t.pt")
    assert loaded["w"].dtype == getattr(gradc, dtype)
    np.testing.assert_array_equal(loaded["w"].numpy(), array)
    np.testing.assert_array_equal(loaded["view"].numpy(), array[:, 1:])
    gradc.save({"w": loaded["w"]}, tmp_path / "g.pt")
    back = torch.load(tmp_path / "g.pt")
    assert back["w"].dtype == getattr(torch, dtype) and torch.equal(back["w"], torch.from_numpy(array))


# ----------------------------------------------------------------------------- native == interpreter == eager

def _pointwise(a, b):
    return (a + b, a - b, a * b, -a, abs(a), gradc.maximum(a, b), gradc.minimum(a, b), a < b, a >= b, a == b,
            a.float() * 1.5, a.double(), a.long(), a.to(gradc.uint8), a.to(gradc.int8), a.to(gradc.int16),
            a.to(gradc.int32), a.relu(), gradc.where(a > b, a, b), a + 7, a // 3, a % 5, a / 4, a.bool())


def _reductions(a):
    return (a.sum(), a.sum(-1), gradc.amax(a, -1), a.max(), a.min(), a.argmax(-1), a.sum(-1, dtype=a.dtype),
            a.cumsum(-1))


def _casts(x):
    return (x.to(gradc.uint8), x.to(gradc.int8), x.to(gradc.int16), x.to(gradc.int32), x.int().float())


def _agree(fn, *arrays) -> None:
    eager = fn(*(gradc.from_numpy(a) for a in arrays))
    native = gradc.compile(fn)(*arrays)
    ir = gradc.trace(fn, *arrays)
    text = print_function(ir)
    reparsed = parse_function(text)
    verify(reparsed)
    assert print_function(reparsed) == text
    interpreted = run(reparsed, *arrays)
    for i, (e, n, r) in enumerate(zip(eager, native, interpreted)):
        e, n, r = e.numpy(), np.asarray(n), np.asarray(r)
        assert e.dtype == n.dtype == r.dtype, (i, e.dtype, n.dtype, r.dtype)
        np.testing.assert_array_equal(n, e, err_msg=f"output {i}: native vs eager")
        np.testing.assert_array_equal(r, e, err_msg=f"output {i}: interpreter vs eager")


@pytest.mark.parametrize("dtype", SMALL)
@pytest.mark.parametrize("shape", TAILS)
def test_native_pointwise_matches_interpreter_and_eager(dtype, shape):
    a, b = full_range(dtype, shape), full_range(dtype, shape)
    b[b == 0] = 1  # integer // and % by zero are refused eagerly
    _agree(_pointwise, a, b)


@pytest.mark.parametrize("dtype", SMALL)
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 9), (2, 17), (5, 33)])
def test_native_reductions_match_interpreter_and_eager(dtype, shape):
    _agree(_reductions, full_range(dtype, shape))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(7,), (9,), (33,)])
def test_native_float_to_small_int_casts_match(dtype, shape):
    x = rng.uniform(-70000, 70000, size=shape).astype(dtype)
    x[:3] = [-1.5, 300.0, float("nan")]
    _agree(_casts, x)


def test_mixed_dtype_program_compiles():
    def f(u, i, s):
        return (u + i) * s, (u.float() - i) / 3, (u > i).sum(), u.to(gradc.int32) + s
    u, i, s = full_range("uint8", (17,)), full_range("int8", (17,)), full_range("int16", (17,))
    _agree(f, u, i, s)


def test_small_int_programs_print_as_mlir():
    pytest.importorskip("xdsl")
    from xdsl.context import Context
    from xdsl.dialects import arith, builtin, func, linalg, math, tensor
    from xdsl.parser import Parser

    from gradc.mlir import to_mlir

    def f(u, i):
        return gradc.maximum(u, u) + 1, (u < 7), u.to(gradc.int16) + i.to(gradc.int16), u.float(), gradc.amax(u, 0)
    text = to_mlir(gradc.trace(f, full_range("uint8", (3, 4)), full_range("int8", (3, 4))))
    assert "arith.maxui" in text and "arith.cmpi ult" in text and "arith.extui" in text and "arith.extsi" in text
    ctx = Context()
    for dialect in (builtin.Builtin, func.Func, arith.Arith, math.Math, linalg.Linalg, tensor.Tensor):
        ctx.load_dialect(dialect)
    Parser(ctx, text).parse_module().verify()


def _stores(lib):
    def setitem(x, v):
        x[0] = v
    return (lambda x, v: x.fill_(v), setitem, lambda x, v: x.masked_fill(lib.tensor([True, False, True]), v),
            lambda x, v: lib.where(lib.tensor([True, False, True]), x, v), lambda x, v: x.clamp(min=v))


@pytest.mark.parametrize("dtype, value", [("uint8", 300), ("uint8", -1), ("uint8", -256), ("int8", 128),
                                          ("int8", -129), ("int16", 40000), ("int32", 2 ** 31), ("int8", 100)])
def test_stored_numbers_are_checked_while_arithmetic_wraps(torch, dtype, value):
    for t_store, g_store in zip(_stores(torch), _stores(gradc)):
        tx, gx = torch.zeros(3, dtype=getattr(torch, dtype)), gradc.zeros(3, dtype=getattr(gradc, dtype))
        try:
            want = t_store(tx, value)
        except RuntimeError as e:
            with pytest.raises(RuntimeError, match=str(e)):
                g_store(gx, value)
            continue
        got = g_store(gx, value)
        same(tx if want is None else want, gx if got is None else got)
    same(torch.zeros(3, dtype=getattr(torch, dtype)) + value, gradc.zeros(3, dtype=getattr(gradc, dtype)) + value)


def test_in_place_results_are_only_cast_downwards(torch):
    for lib in (torch, gradc):
        x = lib.zeros(3, dtype=lib.uint8)
        x += 300
        assert x.tolist() == [44, 44, 44]
        x += lib.ones(3, dtype=lib.int64)  # int64 -> uint8: the same category, allowed
        assert x.tolist() == [45, 45, 45]
        with pytest.raises(RuntimeError, match="result type Float can't be cast to the desired output type Byte"):
            x += 1.5
        with pytest.raises(RuntimeError, match="result type Long can't be cast to the desired output type Bool"):
            b = lib.zeros(2, dtype=lib.bool)
            b += 1


def test_iinfo_and_finfo_match_pytorch(torch):
    for name in ("int64",) + SMALL:
        t, g = torch.iinfo(getattr(torch, name)), gradc.iinfo(getattr(gradc, name))
        assert (g.bits, g.min, g.max, g.dtype) == (t.bits, t.min, t.max, t.dtype) and repr(g) == repr(t)
    for name in ("float32", "float64"):
        t, g = torch.finfo(getattr(torch, name)), gradc.finfo(getattr(gradc, name))
        assert (g.bits, g.eps, g.max, g.min, g.tiny, g.resolution, g.dtype) == (
            t.bits, t.eps, t.max, t.min, t.tiny, t.resolution, t.dtype) and repr(g) == repr(t)
    assert gradc.finfo().eps == torch.finfo().eps
    with pytest.raises(TypeError):
        gradc.iinfo(gradc.float32)
