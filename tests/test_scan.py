"""The scan op and gradc.scan (issue 13): against the unrolled loop (values and every gradient, interpreter
and native), central differences, second order, nested scans, reverse, pytrees, eager backward, text round
trip, and bad input."""

import numpy as np
import pytest

import gradc
from gradc.ir.interp import run
from gradc.ir.parser import parse_function
from gradc.ir.printer import print_function
from gradc.ir.verify import verify

rng = np.random.default_rng(13)
T, B, I, H = 7, 2, 3, 9  # H = 9 hits a vector tail


def arrays(dtype=np.float64):
    return [rng.standard_normal((T, B, I)).astype(dtype), (0.5 * rng.standard_normal((B, H))).astype(dtype),
            (rng.standard_normal((I, H)) * 0.5).astype(dtype), (rng.standard_normal((H, H)) * 0.3).astype(dtype),
            (rng.standard_normal(H) * 0.1).astype(dtype)]


def rnn_scan(xs, h0, wx, wh, b, reverse=False):
    def step(h, x):
        h = gradc.tanh(x @ wx + h @ wh + b)
        return h, gradc.sigmoid(h)
    h, ys = gradc.scan(step, h0, xs, reverse=reverse)
    return (h ** 2).mean() + (ys * ys).sum() * 0.1


def rnn_unrolled(xs, h0, wx, wh, b, reverse=False):
    h, acc = h0, 0.0
    for t in (reversed(range(xs.shape[0])) if reverse else range(xs.shape[0])):
        h = gradc.tanh(xs[t] @ wx + h @ wh + b)
        y = gradc.sigmoid(h)
        acc = acc + (y * y).sum()
    return (h ** 2).mean() + acc * 0.1


@pytest.fixture(params=["interp", "native"])
def backend(request):
    gradc.set_backend(request.param)
    yield request.param
    gradc.set_backend("auto")


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_scan_matches_unrolled_loop(backend, reverse, dtype):
    args = arrays(dtype)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    f = gradc.value_and_grad(lambda *a: rnn_scan(*a, reverse=reverse), argnums=(0, 1, 2, 3, 4))
    g = gradc.value_and_grad(lambda *a: rnn_unrolled(*a, reverse=reverse), argnums=(0, 1, 2, 3, 4))
    (v1, g1), (v2, g2) = f(*args), g(*args)
    np.testing.assert_allclose(v1, v2, rtol=tol)
    for a, b in zip(g1, g2):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def test_scan_gradient_matches_central_differences():
    args = arrays()
    fn = gradc.trace(rnn_scan, *args)
    _, grads = gradc.value_and_grad(rnn_scan, argnums=(2, 3, 4))(*args)
    for k, g in zip((2, 3, 4), grads):
        num = np.zeros_like(args[k])
        for j in range(args[k].size):
            plus, minus = [a.copy() for a in args], [a.copy() for a in args]
            plus[k].flat[j] += 1e-6
            minus[k].flat[j] -= 1e-6
            num.flat[j] = (run(fn, *plus)[0] - run(fn, *minus)[0]) / 2e-6
        np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8)


def test_second_order_through_a_scan(backend):
    xs, h0, wx, wh, b = arrays()
    wh = wh[:4, :4].copy()
    h0, wx, b = h0[:, :4].copy(), wx[:, :4].copy(), b[:4].copy()
    want = gradc.hessian(lambda w: rnn_unrolled(xs, h0, wx, w, b))(wh)
    got = gradc.hessian(lambda w: rnn_scan(xs, h0, wx, w, b))(wh)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_nested_scans_and_pytrees(backend):
    x = rng.standard_normal((3, 4, 5))
    w = rng.standard_normal(5) * 0.5

    def nested(x, w):
        def outer(carry, row):
            def inner(c, v):
                c = {"s": gradc.tanh(c["s"] * w + v), "n": c["n"] + 1.0}
                return c, c["s"] * 2.0
            c, ys = gradc.scan(inner, {"s": carry[0], "n": carry[1]}, row)
            return (c["s"], c["n"]), (ys.sum(), [c["s"]])
        (s, n), (sums, [last]) = gradc.scan(outer, (gradc.zeros(5, dtype=gradc.float64),
                                                    gradc.zeros(5, dtype=gradc.float64)), x)
        return (s * n).sum() + sums.sum() + (last ** 2).sum()

    def plain(x, w):
        s, n, total, lasts = np.zeros(5), np.zeros(5), 0.0, []
        for row in x:
            for v in row:
                s, n = np.tanh(s * w + v), n + 1
                total += (2 * s).sum()
            lasts.append(s)
        return (s * n).sum() + total + sum((v ** 2).sum() for v in lasts)

    value, (gx, gw) = gradc.value_and_grad(nested, argnums=(0, 1))(x, w)
    np.testing.assert_allclose(value, plain(x, w), rtol=1e-12)
    eps, num = 1e-6, np.zeros_like(w)
    for j in range(w.size):
        wp, wm = w.copy(), w.copy()
        wp[j] += eps
        wm[j] -= eps
        num[j] = (plain(x, wp) - plain(x, wm)) / (2 * eps)
    np.testing.assert_allclose(gw, num, rtol=1e-6, atol=1e-8)
    assert gx.shape == x.shape


def test_no_xs_with_length_and_no_ys():
    def f(k):
        c, ys = gradc.scan(lambda c, _: (c * k + 1.0, None), gradc.ones(3, dtype=gradc.float64), length=4)
        assert ys is None
        return c.sum()
    k = np.array([0.5, -1.0, 2.0])
    value, g = gradc.value_and_grad(f)(k)
    c = np.ones(3)
    for _ in range(4):
        c = c * k + 1
    np.testing.assert_allclose(value, c.sum())
    np.testing.assert_allclose(g, 1 + 2 * k + 3 * k ** 2 + 4 * k ** 3 * 1, rtol=1e-12)


def test_eager_scan_backward_reaches_closed_over_weights():
    xs, h0, wx, wh, b = arrays()
    leaves = [gradc.tensor(a, requires_grad=True) for a in (wx, wh, b)]
    ref = [gradc.tensor(a, requires_grad=True) for a in (wx, wh, b)]
    rnn_scan(gradc.tensor(xs), gradc.tensor(h0), *leaves).backward()
    rnn_unrolled(gradc.tensor(xs), gradc.tensor(h0), *ref).backward()
    for a, r in zip(leaves, ref):
        np.testing.assert_allclose(a.grad.numpy(), r.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_text_round_trip_and_verify():
    args = arrays()
    fn = gradc.trace(rnn_scan, *args)
    joint = gradc.value_and_grad(rnn_scan, argnums=(2, 3)).lower(*args).joint
    for f in (fn, joint):
        verify(f)
        text = print_function(f)
        assert "scan" in text and "body = func @" in text
        parsed = parse_function(text)
        verify(parsed)
        assert print_function(parsed) == text
        for got, want in zip(run(parsed, *args), run(f, *args)):
            np.testing.assert_array_equal(got, want)


def test_body_is_traced_once_and_optimized():
    calls = []

    def step(c, x):
        calls.append(1)
        return c + x * 2.0 + x * 2.0, None  # x * 2.0 twice: CSE inside the body merges them
    fn = gradc.trace(lambda xs: gradc.scan(step, gradc.zeros(3, dtype=gradc.float64), xs)[0].sum(),
                     np.ones((50, 3)))
    assert len(calls) == 1
    (scan_op,) = [op for op in fn.ops if op.name == "scan"]
    assert sum(op.name == "mul" for op in scan_op.attrs["body"].ops) == 1


def test_bad_input():
    h = gradc.zeros(2, 3)
    with pytest.raises(ValueError, match=r"different leading axis sizes: xs\[0\] has 4, xs\[1\] has 5"):
        gradc.scan(lambda c, x: (c, None), h, (gradc.zeros(4, 3), gradc.zeros(5, 3)))
    with pytest.raises(TypeError, match=r"carry\[1\] has type f32\[2,3\] but the corresponding output carry "
                                        r"component has type f32\[2,4\]"):
        gradc.scan(lambda c, x: ((c[0], gradc.zeros(2, 4)), None), (h, h), gradc.zeros(4, 3))
    with pytest.raises(TypeError, match=r"carry output has structure \(\*, \*\), but its carry input has "
                                        r"structure \[\*, \*\]"):
        gradc.scan(lambda c, x: ((c[0], c[1]), None), [h, h], gradc.zeros(4, 3))
    with pytest.raises(TypeError, match=r"component carry has type f32\[2,3\] but the corresponding output carry "
                                        r"component has type f64\[2,3\]"):
        gradc.scan(lambda c, x: (gradc.zeros(2, 3, dtype=gradc.float64), None), h, gradc.zeros(4, 3))
    with pytest.raises(ValueError, match="`length` argument of 3 which disagrees with leading axis sizes"):
        gradc.scan(lambda c, x: (c, None), h, gradc.zeros(4, 3), length=3)
    with pytest.raises(ValueError, match="no values to scan over and `length` not provided"):
        gradc.scan(lambda c, x: (c, None), h)
    with pytest.raises(TypeError, match="must return a pair"):
        gradc.scan(lambda c, x: c, h, gradc.zeros(4, 3))


def test_passes_see_into_parsed_bodies():
    text = """
    func @f(%x: f64[4,3], %c: f64[3]) -> f64[15] {
      %0 = scan %c, %x {body = func @b(%h: f64[3], %r: f64[3]) -> (f64[3], f64[3]) {
          %0 = mul %r, %r : f64[3]
          %1 = mul %r, %r : f64[3]
          %2 = add %0, %1 : f64[3]
          %3 = const {value = 0.0} : f64[3]
          %4 = add %2, %3 : f64[3]
          %5 = exp %h : f64[3]
          %6 = add %h, %4 : f64[3]
          return %6, %6
        }, num_consts = 0, num_carry = 1, length = 4, reverse = false} : f64[15]
      return %0
    }
    """
    from gradc.ir.passes import optimize
    fn = parse_function(text)
    opt = optimize(fn)
    body = [op for op in opt.ops if op.name == "scan"][0].attrs["body"]
    names = [op.name for op in body.ops]
    assert names.count("mul") == 1 and "exp" not in names  # CSE merged r * r, DCE dropped the unused exp
    args = [rng.standard_normal((4, 3)), rng.standard_normal(3)]
    np.testing.assert_allclose(run(opt, *args)[0], run(fn, *args)[0], rtol=1e-15)
