"""The native scan loop (codegen/scan_loop.py): one kernel whatever the trip count, against the interpreter
and the unrolled lowering (GRADC_UNROLL_SCANS=1) on forward, reverse, nested and length-0/1 scans, the
recurrent layers' compile_step against PyTorch, the gather fallback, and the VJP's hoisted weight gradients."""

import numpy as np
import pytest

import gradc
import gradc.nn as gnn
from gradc.codegen import compile_function
from gradc.codegen.lower import lower
from gradc.ir.interp import run
from gradc.ir.scan import has_gather

rng = np.random.default_rng(31)


def rnn_loss(xs, h0, wx, wh, b, reverse=False):
    def step(h, x):
        h = gradc.tanh(x @ wx + h @ wh + b)
        return h, gradc.sigmoid(h) * 2.0
    h, ys = gradc.scan(step, h0, xs, reverse=reverse)
    return (h ** 2).mean() + (ys * ys).sum() * 0.1


def rnn_arrays(T, dtype=np.float64, B=3, I=5, H=9):
    return [rng.standard_normal((T, B, I)).astype(dtype), (0.5 * rng.standard_normal((B, H))).astype(dtype),
            (0.5 * rng.standard_normal((I, H))).astype(dtype), (0.3 * rng.standard_normal((H, H))).astype(dtype),
            (0.1 * rng.standard_normal(H)).astype(dtype)]


def joint_of(f, args, argnums=(0, 1, 2, 3, 4)):
    return gradc.value_and_grad(f, argnums=argnums).lower(*args).joint


def three_ways(fn, args, monkeypatch):
    """(native loop, interpreter, unrolled native) outputs of fn."""
    native = compile_function(fn)(*args)
    interp = run(fn, *args)
    with monkeypatch.context() as m:
        m.setenv("GRADC_UNROLL_SCANS", "1")
        unrolled = compile_function(fn)(*args)
    return [np.asarray(v) for v in native], interp, [np.asarray(v) for v in unrolled]


def assert_all_close(outs, tol):
    native, interp, unrolled = outs
    assert len(native) == len(interp) == len(unrolled)
    for a, b, c in zip(native, interp, unrolled):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
        np.testing.assert_allclose(c, b, rtol=tol, atol=tol)


def test_native_loop_does_not_grow_with_length():
    low = {T: lower(joint_of(rnn_loss, rnn_arrays(T))) for T in (3, 64, 512)}
    assert "scan loop x 512" in low[512].fused_text
    assert low[64].num_kernels == low[512].num_kernels
    # (kernels outside the loop vary a little with T: at T = 3 some of them have shapes no other kernel has,
    # so fewer are shared and the module is a little LARGER than at T = 64; growth is what must not happen)
    sizes = {T: len(str(lw.module)) for T, lw in low.items()}
    assert sizes[512] < 1.1 * min(sizes[3], sizes[64]), sizes


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 3e-5)])
@pytest.mark.parametrize("T", [1, 7])
def test_native_matches_interpreter_and_unrolled(reverse, dtype, tol, T, monkeypatch):
    args = rnn_arrays(T, dtype)
    fn = joint_of(lambda *a: rnn_loss(*a, reverse=reverse), args)
    assert_all_close(three_ways(fn, args, monkeypatch), tol)


def test_length_zero_scan(monkeypatch):
    xs = np.zeros((0, 2, 3))
    h0, w = rng.standard_normal((2, 3)), rng.standard_normal((3, 3))

    def f(xs, h0, w):
        h, ys = gradc.scan(lambda h, x: (gradc.tanh(h @ w + x), h * 2.0), h0, xs)
        return (h * h).sum() + ys.sum()
    fn = joint_of(f, [xs, h0, w], argnums=(1, 2))
    outs = three_ways(fn, [xs, h0, w], monkeypatch)
    assert_all_close(outs, 1e-12)
    value, g_h0, g_w = outs[0]
    np.testing.assert_allclose(value, (h0 * h0).sum(), rtol=1e-12)
    np.testing.assert_allclose(g_h0, 2 * h0, rtol=1e-12)
    np.testing.assert_array_equal(g_w, np.zeros_like(w))


def test_nested_native_loops(monkeypatch):
    x = rng.standard_normal((4, 6, 5))
    w = rng.standard_normal((5, 5)) * 0.4

    def f(x, w):
        def outer(c, row):
            inner_c, ys = gradc.scan(lambda s, v: (gradc.tanh(s @ w + v), s.sum()), c, row, reverse=True)
            return inner_c * 0.5 + c, ys
        c, ys = gradc.scan(outer, gradc.zeros(5, dtype=gradc.float64), x)
        return (c ** 2).sum() + (ys ** 2).sum()
    fn = joint_of(f, [x, w], argnums=(0, 1))
    low = lower(fn)
    scans = [k for k in low.program.kernels if k.kind == "scan"]
    assert scans and any(k2.kind == "scan" for k in scans for k2 in k.body.kernels)  # the inner loop is native too
    assert_all_close(three_ways(fn, [x, w], monkeypatch), 1e-12)


def lstm_loss(xw, h0, c0, wh):
    def step(carry, x):
        h, c = carry
        z = x + h @ wh
        i, f, g, o = (z[:, k * 4:(k + 1) * 4] for k in range(4))
        c = gradc.sigmoid(f) * c + gradc.sigmoid(i) * gradc.tanh(g)
        h = gradc.sigmoid(o) * gradc.tanh(c)
        return (h, c), h
    (h, c), hs = gradc.scan(step, (h0, c0), xw)
    return (hs * hs).sum() + (c * h).sum()


def test_reverse_step_reads_stacked_residuals(monkeypatch):
    """The backward step of an LSTM reads the gate activations and tanh(c) the forward loop stacked: no GEMM
    and no transcendental is recomputed in the reverse loop; the forward loop runs once (shared)."""
    args = [rng.standard_normal((5, 3, 16)), rng.standard_normal((3, 4)) * 0.5, rng.standard_normal((3, 4)) * 0.5,
            rng.standard_normal((4, 16)) * 0.4]
    fn = joint_of(lstm_loss, args, argnums=(0, 1, 2, 3))
    scans = [k for k in lower(fn).program.kernels if k.kind == "scan"]
    assert len(scans) == 2
    forward, backward = (next(k for k in scans if k.body.fn.name.endswith(end)) for end in ("_res", "_adj"))
    assert len(forward.body.fn.results) == 3 + 2 + 5  # h, c, y; carry-in h, c; 4 gate activations and tanh(c)
    names = {op.name for op in backward.body.fn.ops}
    assert names.isdisjoint({"sigmoid", "tanh", "exp"}) and sum(op.name == "matmul" for op in
                                                                 backward.body.fn.ops) == 1  # dh = dz @ W only
    assert_all_close(three_ways(fn, args, monkeypatch), 1e-12)
    torch = pytest.importorskip("torch")
    t_args = [torch.tensor(a, requires_grad=True) for a in args]
    xw, h, c, wh = t_args
    hs = []
    for t in range(xw.shape[0]):
        z = xw[t] + h @ wh
        i, f, g, o = z.split(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        hs.append(h)
    loss = (torch.stack(hs) ** 2).sum() + (c * h).sum()
    loss.backward()
    got = compile_function(fn)(*args)
    np.testing.assert_allclose(got[0], loss.item(), rtol=1e-12)
    for g, t in zip(got[1:], t_args):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("B", [4, 6])
def test_rows_split_over_threads(B, monkeypatch):
    """Loops whose rows are independent (the batch of an LSTM, forward and reverse) are cut into row blocks
    (as many as the machine has CPUs, here made 2), each the whole loop on its rows; results match the
    interpreter, and are the same bits with one thread (the blocks in turn) and two."""
    import gradc.ir.passes.fuse as fuse_mod
    from gradc.ir.scan import split_rows
    args = [rng.standard_normal((7, B, 16)), rng.standard_normal((B, 4)) * 0.5, rng.standard_normal((B, 4)) * 0.5,
            rng.standard_normal((4, 16)) * 0.4]
    fn = joint_of(lstm_loss, args, argnums=(0, 1, 2, 3))
    monkeypatch.setattr(fuse_mod, "SCAN_ROWS_MIN_ELEMENTS", 0)
    monkeypatch.setattr(fuse_mod, "grid_threads", lambda: 2)
    monkeypatch.setenv("GRADC_CACHE", "0")
    outs = {}
    for threads in (2, 1):
        monkeypatch.setenv("GRADC_NUM_THREADS", str(threads))
        scans = [k for k in lower(fn).program.kernels if k.kind == "scan"]
        assert len(scans) == 2 and all(k.parts == 2 and k.threads == threads and
                                       k.body.fn.params[2].shape[0] == B // 2 for k in scans)
        outs[threads] = compile_function(fn)(*args)
    for a, b, c in zip(outs[2], outs[1], run(fn, *args)):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(a, b)
    # a body mixing rows (a sum over the batch in the carry) is not split
    mixing = joint_of(lambda h0, xs: gradc.scan(lambda h, x: (h + x.sum(0, keepdim=True), h), h0, xs)[1].sum(),
                      [np.ones((4, 3)), np.ones((5, 4, 3))], argnums=(0,))
    loop = next(op for op in mixing.ops if op.name == "scan")
    assert split_rows(loop.attrs["body"], loop.attrs["num_consts"], loop.attrs["num_carry"], 2) is None


def test_weight_gradients_are_hoisted_out_of_the_reverse_loop():
    fn = joint_of(rnn_loss, rnn_arrays(6), argnums=(2, 3, 4))
    for k in lower(fn).program.kernels:
        if k.kind == "scan" and k.body.fn.name.endswith("_adj"):
            carry = k.body.fn.results[:k.body.fn.meta["num_carry"]]
            assert [v.shape for v in carry] == [(3, 9)]  # only the carry cotangent: no weight accumulators
            break
    else:
        raise AssertionError("no adjoint scan")


def test_gather_in_body_falls_back_to_unrolling_and_checks_indices():
    table = rng.standard_normal((5, 3))

    def f(table, ids):
        h, _ = gradc.scan(lambda h, i: (gradc.tanh(h + table[i]), None), gradc.zeros(2, 3, dtype=gradc.float64), ids)
        return (h * h).sum()
    ids = rng.integers(0, 5, (4, 2))
    fn = joint_of(f, [table, ids], argnums=(0,))
    kernels = lower(fn).program.kernels
    # the forward loop is unrolled (its gathers are checked in the outer function's kernels); the reverse loop,
    # which reads the stacked residuals instead of recomputing the gathers, stays a native loop
    assert any(op.name == "gather" for k in kernels for op in k.ops)
    assert all(not has_gather(k.matmul.op.attrs["body"]) for k in kernels if k.kind == "scan")
    compiled = compile_function(fn)
    for a, b in zip(compiled(table, ids), run(fn, table, ids)):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    bad = ids.copy()
    bad[2, 1] = 7
    with pytest.raises(IndexError):
        compiled(table, bad)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("row_blocks", [False, True])
def test_compile_step_of_recurrent_layers_matches_torch(kind, row_blocks, monkeypatch):
    torch = pytest.importorskip("torch")
    T, B, I, H = 6, 4, 4, 5
    if row_blocks:  # every loop (forward and reverse, both directions and layers) on two row blocks
        import gradc.ir.passes.fuse as fuse_mod
        monkeypatch.setattr(fuse_mod, "SCAN_ROWS_MIN_ELEMENTS", 0)
        monkeypatch.setattr(fuse_mod, "grid_threads", lambda: 2)
        monkeypatch.setenv("GRADC_CACHE", "0")
        monkeypatch.setenv("GRADC_NUM_THREADS", "2")

    def build(nn, **kw):
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn = getattr(nn, kind)(I, H, num_layers=2, bidirectional=True, batch_first=True, **kw)
                self.head = nn.Linear(2 * H, 2, **kw)

            def forward(self, x):
                return self.head(self.rnn(x)[0])
        return Net()
    torch.manual_seed(3)
    tm, gm = build(torch.nn, dtype=torch.float64), build(gnn, dtype=gradc.float64)
    gm.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    x, y = rng.standard_normal((B, T, I)), rng.standard_normal((B, T, 2))
    t_opt = torch.optim.SGD(tm.parameters(), lr=0.1)
    step = gradc.compile_step(gm, gradc.nn.functional.mse_loss, gradc.optim.SGD(gm.parameters(), lr=0.1))
    for _ in range(2):
        t_opt.zero_grad()
        t_loss = torch.nn.functional.mse_loss(tm(torch.tensor(x)), torch.tensor(y))
        t_loss.backward()
        t_opt.step()
        np.testing.assert_allclose(float(step(x, y)), t_loss.item(), rtol=1e-10)
    for (name, tp), (_, gp) in zip(tm.named_parameters(), gm.named_parameters()):
        np.testing.assert_allclose(gp.detach().numpy(), tp.detach().numpy(), rtol=1e-9, atol=1e-12, err_msg=name)
