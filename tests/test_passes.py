"""simplify, cse, dce and the pipeline: each rewrite, NaN safety, semantics on random programs, GRADC_DEBUG."""

from __future__ import annotations

import numpy as np
import pytest

from gradc.ir.builder import Builder
from gradc.ir.core import Function, IRError, TensorType, Value, float32, float64, int64
from gradc.ir.interp import run
from gradc.ir.parser import parse_function
from gradc.ir.passes import PASSES, cse, dce, optimize, run_pipeline, simplify
from gradc.ir.passes.ad import ad
from gradc.ir.passes.simplify import FOLD_LIMIT
from gradc.ir.printer import print_function
from gradc.ir.verify import verify

X = TensorType((3, 4), float64)


def one_result(build, *types: TensorType) -> Function:
    b = Builder()
    params = [Value(t, name=f"p{i}") for i, t in enumerate(types or (X,))]
    return Function("f", params, b.ops, [build(b, *params)])


def simplified(fn: Function) -> Function:
    out = dce(simplify(fn))
    verify(out)
    return out


def names(fn: Function) -> list[str]:
    return [op.name for op in fn.ops]


def same_results(a: Function, b: Function, args, exact: bool = False) -> None:
    """Equal results; `exact`: the same values bit for bit, zeros' signs included (any NaN matches any NaN)."""
    for got, want in zip(run(b, *args), run(a, *args), strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        if not exact:
            np.testing.assert_allclose(got, want, rtol=1e-13, atol=0, equal_nan=True)
            continue
        np.testing.assert_array_equal(got, want)
        if got.dtype.kind == "f":
            numbers = ~np.isnan(want)
            np.testing.assert_array_equal(np.signbit(got[numbers]), np.signbit(want[numbers]))


SPECIAL = np.array([[0.0, -0.0, 1.5, -2.0], [np.inf, -np.inf, np.nan, 1e-300], [3.0, 7.0, -1e300, 0.5]])

# (label, build, op names left after simplify + dce)
IDENTITIES = [
    ("x+-0", lambda b, x: b.add(x, b.scalar(-0.0, x)), []),
    ("-0+x", lambda b, x: b.add(b.scalar(-0.0, x), x), []),
    ("x-0", lambda b, x: b.sub(x, b.scalar(0.0, x)), []),
    ("-0-x", lambda b, x: b.sub(b.scalar(-0.0, x), x), ["neg"]),
    ("x*1", lambda b, x: b.mul(x, b.scalar(1.0, x)), []),
    ("1*x", lambda b, x: b.mul(b.scalar(1.0, x), x), []),
    ("x/1", lambda b, x: b.div(x, b.scalar(1.0, x)), []),
    ("x**1", lambda b, x: b.pow(x, b.scalar(1.0, x)), []),
    ("--x", lambda b, x: b.neg(b.neg(x)), []),
    ("x+-y", lambda b, x: b.add(x, b.neg(b.exp(x))), ["exp", "sub"]),
    ("-y+x", lambda b, x: b.add(b.neg(b.exp(x)), x), ["exp", "sub"]),
    ("where(c,x,x)", lambda b, x: b.where(b.gt(x, x), x, x), []),
    ("where(true,x,y)", lambda b, x: b.where(b.constant(True, TensorType(x.shape, b.gt(x, x).dtype)), x, b.exp(x)), []),
    ("reshape same", lambda b, x: b.reshape(x, shape=(3, 4)), []),
    ("reshape of reshape", lambda b, x: b.reshape(b.reshape(x, shape=(12,)), shape=(2, 6)), ["reshape"]),
    ("reshape back", lambda b, x: b.reshape(b.reshape(x, shape=(12,)), shape=(3, 4)), []),
    ("cast same", lambda b, x: b.cast(x, dtype=float64), []),
    ("permute identity", lambda b, x: b.permute(x, perm=(0, 1)), []),
    ("permute of permute", lambda b, x: b.permute(b.permute(x, perm=(1, 0)), perm=(1, 0)), []),
    ("permute of unit axes", lambda b, x: b.permute(b.reshape(x, shape=(3, 1, 4)), perm=(1, 0, 2)), ["reshape"]),
    ("broadcast same", lambda b, x: b.broadcast_to(x, (3, 4)), []),
    ("broadcast of broadcast",
     lambda b, x: b.broadcast_to(b.broadcast_to(b.reduce_sum(x, axes=(0,)), (3, 4)), (2, 3, 4)),
     ["reduce_sum", "broadcast_to"]),
    ("broadcast of unit reshape",
     lambda b, x: b.broadcast_to(b.reshape(b.reduce_sum(x, axes=(0, 1)), shape=(1, 1)), (3, 4)),
     ["reduce_sum", "broadcast_to"]),
    ("max over no axes", lambda b, x: b.reduce_max(b.reduce_max(x, axes=()), axes=()), []),
    ("whole slice", lambda b, x: b.slice(x, starts=(0, 0), stops=(3, 4), steps=(1, 1)), []),
    ("empty pad", lambda b, x: b.pad(x, lo=(0, 0), hi=(0, 0), interior=(0, 0)), []),
    ("double stop_gradient", lambda b, x: b.stop_gradient(b.stop_gradient(x)), ["stop_gradient"]),
]


@pytest.mark.parametrize("label, build, left", IDENTITIES, ids=[i[0] for i in IDENTITIES])
def test_simplify_identity(label, build, left):
    fn = one_result(build)
    out = simplified(fn)
    assert names(out) == left
    same_results(fn, out, [SPECIAL], exact=True)


@pytest.mark.parametrize("label, build", [
    ("x+0.0 is +0.0 for x=-0.0", lambda b, x: b.add(x, b.scalar(0.0, x))),
    ("0.0+x", lambda b, x: b.add(b.scalar(0.0, x), x)),
    ("x-(-0.0)", lambda b, x: b.sub(x, b.scalar(-0.0, x))),
    ("0.0-x is +0.0 for x=0.0", lambda b, x: b.sub(b.scalar(0.0, x), x)),
    ("x*0 is nan for inf and nan", lambda b, x: b.mul(x, b.scalar(0.0, x))),
    ("0*x", lambda b, x: b.mul(b.scalar(0.0, x), x)),
    ("x-x is nan for inf", lambda b, x: b.sub(x, x)),
    ("x/x", lambda b, x: b.div(x, x)),
    ("stop_gradient is kept", lambda b, x: b.stop_gradient(x)),
    ("a real transpose", lambda b, x: b.permute(x, perm=(1, 0))),
    ("a sum over no axes is 0 + x", lambda b, x: b.reduce_sum(x, axes=())),
    ("cast to f32 and back loses bits", lambda b, x: b.cast(b.cast(x, dtype=float32), dtype=float64)),
])
def test_simplify_keeps_what_is_not_an_identity(label, build):
    fn = one_result(build)
    out = simplified(fn)
    assert names(out) == names(dce(fn))
    same_results(fn, out, [SPECIAL], exact=True)


def test_integer_zero_identities():
    t = TensorType((5,), int64)
    fn = one_result(lambda b, x: b.sub(b.add(b.constant(0, t), b.sub(x, b.constant(0, t))),
                                       b.reduce_sum(b.neg(b.neg(x)), axes=())), t)
    out = simplified(fn)
    assert names(out) == ["sub"]
    same_results(fn, out, [np.array([-3, 0, 7, 2**62, -2**63])], exact=True)
    neg = simplified(one_result(lambda b, x: b.sub(b.constant(0, t), x), t))
    assert names(neg) == ["neg"]


def test_mul_by_zero_really_gives_nan():
    fn = simplified(one_result(lambda b, x: b.mul(x, b.scalar(0.0, x))))
    (r,) = run(fn, SPECIAL)
    assert np.isnan(r[1, :3]).all() and not np.isnan(r[0]).any()


def test_constant_folding_of_small_results():
    def build(b, x):
        c = b.constant(np.arange(12.0).reshape(3, 4), X)
        folded = b.reduce_sum(b.exp(b.mul(c, b.scalar(0.5, c))), axes=(1,))
        return b.add(b.broadcast_to(b.reshape(folded, shape=(3, 1)), (3, 4)), x)
    fn = one_result(build)
    out = simplified(fn)
    assert names(out) == ["const", "add"]
    np.testing.assert_array_equal(out.ops[0].attrs["value"], run(fn, np.zeros((3, 4)))[0])


def test_filled_constants_stay_filled_at_any_size():
    big = TensorType((100, 100), float32)
    fn = one_result(lambda b, x: b.add(x, b.exp(b.permute(b.add(b.scalar(1.0, x), b.scalar(2.0, x)), perm=(1, 0)))),
                    big)
    out = simplified(fn)
    assert names(out) == ["const", "add"]
    assert out.ops[0].attrs["value"] == float(np.exp(np.float32(3.0)))  # folded in the op's dtype


def test_large_non_filled_constants_are_not_expanded():
    n = FOLD_LIMIT + 1
    t = TensorType((n,), float64)
    fn = one_result(lambda b, x: b.add(x, b.exp(b.constant(np.arange(float(n)), t))), t)
    assert names(simplified(fn)) == ["const", "exp", "add"]


def test_array_constants_with_one_value_become_filled():
    fn = one_result(lambda b, x: b.add(x, b.constant(np.full((3, 4), 2.5), X)))
    out = simplified(fn)
    assert out.ops[0].attrs["value"] == 2.5
    signs = one_result(lambda b, x: b.add(x, b.constant(np.array([[0.0, -0.0, 0, 0]] * 3), X)))
    assert isinstance(simplified(signs).ops[0].attrs["value"], np.ndarray)  # -0.0 is not 0.0 bit for bit


def test_folding_leaves_run_time_errors_to_run_time():
    def build(b, x):
        idx = b.constant(np.array([0, 9, 1]), TensorType((3,), int64))
        return b.gather(b.constant(np.ones((3, 4)) * 2, X), idx, axis=1)
    out = simplified(one_result(build))
    assert "gather" in names(out)
    with pytest.raises(IndexError, match="index 9 is out of bounds"):
        run(out, np.zeros((3, 4)))


# ----------------------------------------------------------------------------- cse

def test_cse_merges_duplicates_but_not_different_attrs():
    def build(b, x):
        s0, s0_again, s1 = b.reduce_sum(x, axes=(0,)), b.reduce_sum(x, axes=(0,)), b.reduce_sum(x, axes=(1,))
        e, e_again = b.exp(x), b.exp(x)
        lt, gt = b.lt(x, e), b.gt(x, e_again)
        zero, negzero, nan1, nan2 = (b.scalar(v, x) for v in (0.0, -0.0, np.nan, np.nan))
        total = b.add(b.add(b.mul(e, e_again), b.where(lt, zero, negzero)), b.where(gt, nan1, nan2))
        return b.add(b.add(total, b.broadcast_to(s0, (3, 4))),
                     b.add(b.broadcast_to(s0_again, (3, 4)), b.broadcast_to(b.reshape(s1, shape=(3, 1)), (3, 4))))
    fn = one_result(build)
    out = dce(cse(fn))
    verify(out)
    count = {n: names(out).count(n) for n in set(names(out))}
    assert count["reduce_sum"] == 2 and count["exp"] == 1 and count["compare"] == 2
    assert count["const"] == 3  # 0.0, -0.0 and one nan
    assert count["broadcast_to"] == 2
    same_results(fn, out, [SPECIAL])


def test_cse_keeps_signed_zeros_apart():
    fn = one_result(lambda b, x: b.sub(b.recip(b.scalar(0.0, x)), b.recip(b.scalar(-0.0, x))))
    (r,) = run(cse(fn), np.zeros((3, 4)))
    assert (r == np.inf).all()  # inf - -inf; merging the zeros would give inf - inf = nan


# ----------------------------------------------------------------------------- all passes on random programs

def random_function(seed: int) -> Function:
    """A random program over f64 values with the redundancy the passes look for."""
    rng = np.random.default_rng(seed)
    b = Builder()
    params = [Value(TensorType((3, 4), float64), name="x"), Value(TensorType((4,), float64), name="v"),
              Value(TensorType((), float64), name="s")]
    pool = list(params)

    def full(v: Value) -> Value:
        if v.shape == (3,):
            v = b.reshape(v, shape=(3, 1))
        return v if v.shape == (3, 4) else b.broadcast_to(v, (3, 4))

    for _ in range(int(rng.integers(8, 20))):
        a, c = (pool[int(i)] for i in rng.integers(0, len(pool), size=2))
        kind = int(rng.integers(0, 12))
        if kind == 0:
            out = b.emit(str(rng.choice(["neg", "tanh", "sigmoid", "abs", "relu"])), a)
        elif kind == 1:
            out = b.emit(str(rng.choice(["add", "sub", "mul", "maximum", "div"])), full(a), full(c))
        elif kind == 2:
            out = b.add(full(a), b.scalar(float(rng.choice([0.0, 1.0, -0.0])), full(a)))
        elif kind == 3:
            out = b.mul(b.scalar(1.0, full(a)), full(a))
        elif kind == 4:  # the same op twice: cse must merge it
            x = full(a)
            out = b.add(b.exp(b.neg(x)), b.exp(b.neg(x)))
        elif kind == 5:
            out = b.permute(b.permute(full(a), perm=(1, 0)), perm=(1, 0))
        elif kind == 6:
            out = b.reshape(b.reshape(b.reshape(full(a), shape=(12,)), shape=(2, 6)), shape=(3, 4))
        elif kind == 7:
            out = b.reduce_sum(full(a), axes=(int(rng.integers(0, 2)),))
        elif kind == 8:
            out = b.reduce_max(full(a), axes=(0, 1))
        elif kind == 9:
            k = b.add(b.scalar(float(rng.normal()), full(a)), b.scalar(2.0, full(a)))
            out = b.mul(full(a), b.tanh(k))
        elif kind == 10:
            out = b.where(b.lt(full(a), full(c)), full(a), b.neg(b.neg(full(c))))
        else:
            out = b.matmul(b.matmul(full(a), b.permute(full(c), perm=(1, 0))), full(c))
        pool.append(out)
    results = [pool[-1]] + [pool[int(i)] for i in rng.integers(3, len(pool), size=2)]
    return Function(f"random{seed}", params, b.ops, results)


@pytest.mark.parametrize("seed", range(30))
def test_passes_keep_interpreter_results(seed):
    fn = random_function(seed)
    before = print_function(fn)
    rng = np.random.default_rng(seed)
    args = [rng.normal(size=(3, 4)), rng.normal(size=4), rng.normal(size=())]
    args[0][0, 0] = [np.nan, np.inf, -np.inf, 0.0][seed % 4]
    for name, p in list(PASSES.items()) + [("optimize", optimize)]:
        out = p(fn)
        verify(out)
        same_results(fn, out, args)
        assert print_function(fn) == before, f"{name} changed its input"
    joint = ad(fn, wrt=[0, 1, 2])
    cts = [rng.normal(size=r.shape) for r in fn.results]
    same_results(joint, optimize(joint), [np.abs(a) + 0.5 for a in args] + cts)
    assert len(optimize(fn).ops) <= len(fn.ops)


def test_optimize_reaches_a_fixed_point():
    for seed in range(10):
        once = optimize(ad(random_function(seed)))
        assert print_function(optimize(once)) == print_function(once)


# ----------------------------------------------------------------------------- pipeline and GRADC_DEBUG

def broken_pass(fn: Function) -> Function:
    """Returns IR that uses a value before defining it."""
    ops = list(fn.ops)
    ops[0], ops[-1] = ops[-1], ops[0]
    return Function(fn.name, fn.params, ops, fn.results)


def sample() -> Function:
    return parse_function("func @f(%x: f64[3]) -> f64[] {\n  %0 = exp %x : f64[3]\n  %1 = neg %0 : f64[3]\n"
                          "  %2 = neg %1 : f64[3]\n  %3 = reduce_sum %2 {axes = [0]} : f64[]\n  return %3\n}\n")


def test_debug_1_verifies_after_each_pass(monkeypatch):
    monkeypatch.setitem(PASSES, "broken", broken_pass)
    monkeypatch.setenv("GRADC_DEBUG", "1")
    with pytest.raises(IRError, match="after pass 'broken'.*used before it is defined"):
        run_pipeline(sample(), ["simplify", "broken", "dce"])
    monkeypatch.setenv("GRADC_DEBUG", "0")
    run_pipeline(sample(), ["broken"])  # without debugging nothing checks


def test_debug_1_blames_the_input_when_it_is_already_broken(monkeypatch):
    monkeypatch.setenv("GRADC_DEBUG", "1")
    with pytest.raises(IRError, match="after the pipeline input"):
        run_pipeline(broken_pass(sample()), ["dce"])


def test_debug_2_prints_the_ir_after_each_pass(monkeypatch, capsys):
    monkeypatch.setenv("GRADC_DEBUG", "2")
    out = run_pipeline(sample(), ["simplify", "dce"])
    err = capsys.readouterr().err
    assert "// ----- IR after simplify" in err and "// ----- IR after dce" in err
    assert err.index("after simplify") < err.index("after dce")
    assert print_function(out) in err
    assert names(out) == ["exp", "reduce_sum"]


def test_pipeline_without_debug_prints_nothing(monkeypatch, capsys):
    monkeypatch.delenv("GRADC_DEBUG", raising=False)
    run_pipeline(sample(), ["simplify", "cse", "dce"])
    assert capsys.readouterr().err == ""


def test_unknown_pass_is_named():
    with pytest.raises(KeyError, match="unknown pass 'fuse-everything'.*cse, dce, simplify"):
        run_pipeline(sample(), ["dce", "fuse-everything"])


def _transposed_product(extra_use: bool):
    from gradc.ir.builder import Builder
    from gradc.ir.core import TensorType, Value, float64
    b = Builder()
    a, c = Value(TensorType((3, 4), float64), name="a"), Value(TensorType((4, 5), float64), name="c")
    product = b.matmul(a, c)
    transposed = b.emit("permute", product, perm=(1, 0))
    results = [transposed, product] if extra_use else [transposed]
    return b.function("f", [a, c], results)


def test_transpose_of_a_single_use_product_becomes_a_product_of_transposes():
    from gradc.ir.interp import run
    from gradc.ir.passes import optimize
    fn = _transposed_product(extra_use=False)
    out = optimize(fn)
    names = [op.name for op in out.ops]
    assert names.count("matmul") == 1 and out.results[0].op.name == "matmul"
    rng = np.random.default_rng(0)
    args = rng.standard_normal((3, 4)), rng.standard_normal((4, 5))
    np.testing.assert_allclose(run(out, *args)[0], run(fn, *args)[0], rtol=1e-12)


def test_transpose_of_a_shared_product_is_kept():
    from gradc.ir.passes import optimize
    out = optimize(_transposed_product(extra_use=True))
    assert [op.name for op in out.ops].count("matmul") == 1
    assert out.results[0].op.name == "permute"


@pytest.mark.parametrize("starts, stops, expect", [
    ((3, 0), (7, 4), "param"),  # exactly the padded input: the input itself
    ((0, 0), (2, 4), "const"),  # only padding: zeros
    ((2, 1), (5, 3), "pad"),  # straddles: a smaller pad of a slice
    ((4, 0), (6, 2), "slice"),  # inside the input: a slice of it
])
def test_slice_of_pad_is_simplified(starts, stops, expect):
    x = Value(TensorType((4, 4), float64), name="x")
    b = Builder()
    padded = b.pad(x, lo=(3, 0), hi=(2, 1), interior=(0, 0))  # [9, 5]
    out = b.slice(padded, starts=starts, stops=stops, steps=(1, 1))
    fn = Function("f", [x], b.ops, [out])
    simple = dce(simplify(fn))
    got = simple.results[0]
    assert (got.op.name if got.op is not None else "param") == expect
    assert all(op.name != "pad" or expect == "pad" for op in simple.ops)
    arg = np.random.default_rng(0).standard_normal((4, 4))
    np.testing.assert_array_equal(run(simple, arg)[0], run(fn, arg)[0])


def test_row_permutes_move_across_a_product():
    """matmul(rows of a buffer permuted, w) becomes the product with its rows permuted (the GEMM reads the
    buffer in place); a product of an elementwise operand whose rows are then permuted permutes the operand
    instead (its nest writes them in that order). Same values either way."""
    q = Value(TensorType((3, 4, 5), float64), name="q")
    w = Value(TensorType((5, 2), float64), name="w")
    b = Builder()
    read = b.matmul(b.reshape_to(b.permute(q, perm=(1, 0, 2)), (12, 5)), w)  # rows (4, 3) of q's (3, 4)
    product = b.matmul(b.reshape_to(b.tanh(q), (12, 5)), w)
    written = b.permute(b.reshape_to(product, (3, 4, 2)), perm=(1, 0, 2))
    fn = Function("f", [q, w], b.ops, [read, written])
    simple = optimize(fn)
    products = [op for op in simple.ops if op.name == "matmul"]
    lefts = [_through_reshapes(op.inputs[0]) for op in products]
    assert simple.params[0] in lefts  # the buffer is read in place (a view)
    permuted = [x for x in lefts if x.op is not None and x.op.name == "permute"]
    assert len(permuted) == 1 and permuted[0].op.inputs[0].op.name in ("tanh", "reshape")  # the cheap operand
    assert _through_reshapes(simple.results[0]).op.name == "permute"  # the read product's rows move
    assert _through_reshapes(simple.results[1]).op.name == "matmul"  # the written one needs no permute
    rng = np.random.default_rng(1)
    args = [rng.standard_normal((3, 4, 5)), rng.standard_normal((5, 2))]
    for got, want in zip(run(simple, *args), run(fn, *args)):
        np.testing.assert_allclose(got, want, rtol=1e-14)


def _through_reshapes(v):
    while v.op is not None and v.op.name == "reshape":
        v = v.op.inputs[0]
    return v


def test_permutes_that_mix_row_elements_stay():
    """A permute whose rows are merged with the next axis by the reshape (attention heads into features) does
    not commute with the product: left alone."""
    q = Value(TensorType((2, 3, 4, 5), float64), name="q")  # (B, H, T, D) -> (B, T, H, D) -> (B*T, H*D)
    w = Value(TensorType((15, 2), float64), name="w")
    b = Builder()
    heads = b.reshape_to(b.permute(b.exp(q), perm=(0, 2, 1, 3)), (8, 15))
    mixed = b.reshape_to(b.permute(q, perm=(0, 2, 1, 3)), (8, 15))
    fn = Function("f", [q, w], b.ops, [b.matmul(heads, w), b.matmul(mixed, w)])
    simple = optimize(fn)
    rng = np.random.default_rng(2)
    args = [rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((15, 2))]
    for got, want in zip(run(simple, *args), run(fn, *args)):
        np.testing.assert_allclose(got, want, rtol=1e-14)
