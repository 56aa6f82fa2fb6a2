"""nn.RNN / nn.LSTM / nn.GRU and their cells against PyTorch: outputs, final states and every gradient,
float32 and float64, over the flag combinations; parameter names and init; bad input (issue 13)."""

import numpy as np
import pytest

import gradc
import gradc.nn as gnn

torch = pytest.importorskip("torch")

LAYERS = [("RNN", {}), ("RNN", {"nonlinearity": "relu"}), ("LSTM", {}), ("LSTM", {"proj_size": 2}), ("GRU", {})]
FLAGS = [dict(num_layers=1), dict(num_layers=2, bias=False, batch_first=True),
         dict(num_layers=2, bidirectional=True), dict(num_layers=3, batch_first=True, bidirectional=True)]
DTYPES = {"float32": (gradc.float32, torch.float32, np.float32, 2e-5), "float64": (gradc.float64, torch.float64,
                                                                                    np.float64, 1e-11)}


def layer_id(x):
    return x if isinstance(x, str) else "-".join(map(str, x.values())) or "plain"


def pair(kind, kwargs, dtype, input_size=3, hidden=4):
    g_dtype, t_dtype, _, _ = DTYPES[dtype]
    torch.manual_seed(0)
    t = getattr(torch.nn, kind)(input_size, hidden, **kwargs).to(t_dtype)
    g = getattr(gnn, kind)(input_size, hidden, dtype=g_dtype, **kwargs)
    assert [n for n, _ in g.named_parameters()] == [n for n, _ in t.named_parameters()]
    g.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})
    return g, t


def close(a, b, tol):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def check_grads(g_module, t_module, pairs, tol):
    for (name, tp), (_, gp) in zip(t_module.named_parameters(), g_module.named_parameters()):
        close(gp.grad.numpy(), tp.grad.numpy(), tol)
    for g, t in pairs:
        close(g.grad.numpy(), t.grad.numpy(), tol)


def leaves(*arrays):
    return [gradc.tensor(a, requires_grad=True) for a in arrays], [torch.tensor(a, requires_grad=True) for a in arrays]


def flat_states(states):
    return list(states) if isinstance(states, tuple) else [states]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: "-".join(f"{k}={v}" for k, v in f.items()))
@pytest.mark.parametrize("kind,extra", LAYERS, ids=lambda x: layer_id(x))
def test_layer_matches_torch(kind, extra, flags, dtype):
    kwargs = {**extra, **flags}
    g, t = pair(kind, kwargs, dtype)
    np_dtype, tol = DTYPES[dtype][2], DTYPES[dtype][3]
    rng = np.random.default_rng(1)
    T, B = 5, 2
    x = rng.standard_normal((B, T, 3) if kwargs.get("batch_first") else (T, B, 3)).astype(np_dtype)
    dirs = 2 if kwargs.get("bidirectional") else 1
    n = kwargs["num_layers"] * dirs
    h0 = (0.5 * rng.standard_normal((n, B, kwargs.get("proj_size") or 4))).astype(np_dtype)
    arrays = [x, h0]
    if kind == "LSTM":
        arrays.append((0.5 * rng.standard_normal((n, B, 4))).astype(np_dtype))
    gl, tl = leaves(*arrays)
    g_hx = (gl[1], gl[2]) if kind == "LSTM" else gl[1]
    t_hx = (tl[1], tl[2]) if kind == "LSTM" else tl[1]
    g_out, g_states = g(gl[0], g_hx)
    t_out, t_states = t(tl[0], t_hx)
    close(g_out.detach().numpy(), t_out.detach().numpy(), tol)
    for gs, ts in zip(flat_states(g_states), flat_states(t_states)):
        assert gs.shape == tuple(ts.shape)
        close(gs.detach().numpy(), ts.detach().numpy(), tol)
    weights = rng.standard_normal(tuple(t_out.shape)).astype(np_dtype)
    g_loss = (g_out * gradc.tensor(weights)).sum() + sum((s * s).sum() for s in flat_states(g_states))
    t_loss = (t_out * torch.tensor(weights)).sum() + sum((s * s).sum() for s in flat_states(t_states))
    g_loss.backward()
    t_loss.backward()
    check_grads(g, t, zip(gl, tl), 50 * tol)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_unbatched_input_and_default_states(kind):
    g, t = pair(kind, {"num_layers": 2, "bidirectional": True}, "float64")
    x = np.random.default_rng(2).standard_normal((4, 3))
    g_out, g_states = g(gradc.tensor(x))
    t_out, t_states = t(torch.tensor(x))
    close(g_out.detach().numpy(), t_out.detach().numpy(), 1e-12)
    for gs, ts in zip(flat_states(g_states), flat_states(t_states)):
        assert gs.shape == tuple(ts.shape)
        close(gs.detach().numpy(), ts.detach().numpy(), 1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind,extra", [("RNNCell", {}), ("RNNCell", {"nonlinearity": "relu"}), ("LSTMCell", {}),
                                        ("GRUCell", {}), ("GRUCell", {"bias": False})],
                         ids=lambda x: layer_id(x))
def test_cells_match_torch(kind, extra, dtype):
    g, t = pair(kind, extra, dtype)
    np_dtype, tol = DTYPES[dtype][2], DTYPES[dtype][3]
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal((2, 3)).astype(np_dtype), rng.standard_normal((2, 4)).astype(np_dtype)]
    if kind == "LSTMCell":
        arrays.append(rng.standard_normal((2, 4)).astype(np_dtype))
    gl, tl = leaves(*arrays)
    g_out = g(gl[0], tuple(gl[1:]) if kind == "LSTMCell" else gl[1])
    t_out = t(tl[0], tuple(tl[1:]) if kind == "LSTMCell" else tl[1])
    g_out, t_out = flat_states(g_out), flat_states(t_out)
    for a, b in zip(g_out, t_out):
        close(a.detach().numpy(), b.detach().numpy(), tol)
    sum((o * o).sum() for o in g_out).backward()
    sum((o * o).sum() for o in t_out).backward()
    check_grads(g, t, zip(gl, tl), 50 * tol)
    # unbatched, no state
    x1 = arrays[0][0]
    for a, b in zip(flat_states(g(gradc.tensor(x1))), flat_states(t(torch.tensor(x1)))):
        assert a.shape == tuple(b.shape)
        close(a.detach().numpy(), b.detach().numpy(), tol)


def test_dropout_between_layers():
    g, t = pair("LSTM", {"num_layers": 2, "dropout": 1.0}, "float64")
    x = np.random.default_rng(4).standard_normal((3, 2, 3))
    for mode in ("train", "eval"):
        getattr(g, mode)()
        getattr(t, mode)()
        g_out, (g_h, g_c) = g(gradc.tensor(x))
        t_out, (t_h, t_c) = t(torch.tensor(x))  # p = 1: layer 1 sees zeros, deterministic in both
        close(g_out.detach().numpy(), t_out.detach().numpy(), 1e-12)
        close(g_c.detach().numpy(), t_c.detach().numpy(), 1e-12)
    g.train()
    g.dropout = 0.5
    gradc.manual_seed(0)
    a = g(gradc.tensor(x))[0].detach().numpy()
    b = g(gradc.tensor(x))[0].detach().numpy()
    assert not np.allclose(a, b)  # fresh masks per call
    g.eval()
    close(g(gradc.tensor(x))[0].detach().numpy(), g(gradc.tensor(x))[0].detach().numpy(), 0)


def test_default_init_and_state_dict_into_torch():
    g = gnn.LSTM(3, 16, num_layers=2, bidirectional=True, proj_size=5)
    t = torch.nn.LSTM(3, 16, num_layers=2, bidirectional=True, proj_size=5)
    sd = g.state_dict()
    assert list(sd) == list(t.state_dict())
    for name, value in sd.items():
        v = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
        assert v.shape == tuple(t.state_dict()[name].shape)
        assert np.abs(v).max() <= 0.25 and np.abs(v).max() > 0.2  # U(-1/sqrt(16), 1/sqrt(16))
    t.load_state_dict({k: torch.tensor(np.asarray(v.numpy() if hasattr(v, "numpy") else v)) for k, v in sd.items()})
    assert "weight_hh_l1_reverse" in sd and "weight_hr_l0" in sd
    assert repr(g) == repr(t)


def test_compile_step_lstm_lm_matches_torch():
    V, E, H, B, T = 11, 6, 8, 3, 5

    def build(nn, **kw):
        class LM(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Embedding(V, E, **kw)
                self.lstm = nn.LSTM(E, H, num_layers=2, batch_first=True, **kw)
                self.head = nn.Linear(H, V, **kw)

            def forward(self, idx):
                out, _ = self.lstm(self.emb(idx))
                return self.head(out).reshape(-1, V)
        return LM()
    torch.manual_seed(0)
    tm = build(torch.nn, dtype=torch.float64)
    gm = build(gnn, dtype=gradc.float64)
    gm.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    rng = np.random.default_rng(5)
    x, y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B * T,))
    t_opt = torch.optim.Adam(tm.parameters(), lr=1e-2)
    step = gradc.compile_step(gm, gradc.nn.functional.cross_entropy, gradc.optim.Adam(gm.parameters(), lr=1e-2))
    for _ in range(2):
        t_opt.zero_grad()
        t_loss = torch.nn.functional.cross_entropy(tm(torch.tensor(x)), torch.tensor(y))
        t_loss.backward()
        t_opt.step()
        close(step(x, y), t_loss.item(), 1e-10)
    for (name, tp), (_, gp) in zip(tm.named_parameters(), gm.named_parameters()):
        close(gp.detach().numpy(), tp.detach().numpy(), 1e-9)


BAD = [
    (lambda: gnn.LSTM(3, 4)(gradc.zeros(5, 2, 3), (gradc.zeros(1, 3, 4), gradc.zeros(1, 2, 4))), RuntimeError,
     "Expected hidden[0] size (1, 2, 4), got [1, 3, 4]"),
    (lambda: gnn.LSTM(3, 4)(gradc.zeros(5, 2, 3), (gradc.zeros(1, 2, 4), gradc.zeros(2, 2, 4))), RuntimeError,
     "Expected hidden[1] size (1, 2, 4), got [2, 2, 4]"),
    (lambda: gnn.LSTM(3, 4)(gradc.zeros(5, 2, 3), (gradc.zeros(2, 4), gradc.zeros(2, 4))), RuntimeError,
     "For batched 3-D input, hx and cx should also be 3-D"),
    (lambda: gnn.LSTM(3, 4)(gradc.zeros(5, 2, 3), gradc.zeros(1, 2, 4)), TypeError, "hx must be a tuple"),
    (lambda: gnn.GRU(3, 4)(gradc.zeros(5, 2, 3), gradc.zeros(2, 2, 4)), RuntimeError,
     "Expected hidden size (1, 2, 4), got [2, 2, 4]"),
    (lambda: gnn.RNN(3, 4)(gradc.zeros(5, 2, 7)), RuntimeError, "input.size(-1) must be equal to input_size"),
    (lambda: gnn.RNN(3, 4)(gradc.zeros(5, 2, 3, 1)), ValueError, "Expected input to be 2D or 3D, got 4D"),
    (lambda: gnn.RNN(3, 4)(gradc.zeros(5, 2, 3, dtype=gradc.float64)), ValueError, "input must have the type"),
    (lambda: gnn.GRU(3, 4, proj_size=2), ValueError, "proj_size argument is only supported for LSTM"),
    (lambda: gnn.LSTM(3, 4, proj_size=4), ValueError, "proj_size has to be smaller than hidden_size"),
    (lambda: gnn.LSTM(3, 4, dropout=1.5), ValueError, "dropout should be a number in range [0, 1]"),
    (lambda: gnn.RNN(3, 4, nonlinearity="sigmoid"), ValueError, "Unknown nonlinearity 'sigmoid'"),
    (lambda: gnn.RNN(3, 0), ValueError, "hidden_size must be greater than zero"),
    (lambda: gnn.LSTMCell(3, 4)(gradc.zeros(2, 3), (gradc.zeros(2, 5), gradc.zeros(2, 4))), RuntimeError,
     "hidden0 has inconsistent hidden_size: got 5, expected 4"),
    (lambda: gnn.GRUCell(3, 4)(gradc.zeros(2, 3), gradc.zeros(3, 4)), RuntimeError,
     "Input batch size 2 doesn't match hidden0 batch size 3"),
    (lambda: gnn.RNNCell(3, 4)(gradc.zeros(2, 5)), RuntimeError, "input has inconsistent input_size: got 5"),
]


@pytest.mark.parametrize("make,error,message", BAD, ids=[m for _, _, m in BAD])
def test_bad_input(make, error, message):
    with pytest.raises(error, match=None) as info:
        make()
    assert message in str(info.value)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_traced_layers_hold_one_scan_per_layer_and_direction(kind):
    g, t = pair(kind, {"num_layers": 2, "bidirectional": True}, "float64")
    x = np.random.default_rng(6).standard_normal((6, 2, 3))
    fn = gradc.trace(lambda x: g(x)[0], x)
    assert sum(op.name == "scan" for op in fn.ops) == 4
    from gradc.ir.interp import run
    close(run(fn, x)[0], t(torch.tensor(x))[0].detach().numpy(), 1e-12)


def test_eager_layers_record_one_scan_per_layer_and_direction(monkeypatch):
    # the eager graph holds the loop once, so its backward compiles one native loop, not T unrolled steps
    import gradc.loops
    calls = []
    real = gradc.loops.scan
    monkeypatch.setattr(gradc.loops, "scan", lambda *a, **k: calls.append(1) or real(*a, **k))
    g, t = pair("LSTM", {"num_layers": 2, "bidirectional": True}, "float64")
    x = np.random.default_rng(8).standard_normal((40, 2, 3))
    gx, tx = gradc.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    for _ in range(3):  # the third backward runs the compiled adjoint (tiered)
        gx.grad, tx.grad = None, None
        g(gx)[0].sum().backward()
        t(tx)[0].sum().backward()
        close(gx.grad.numpy(), tx.grad.numpy(), 1e-10)
    assert len(calls) == 3 * 4
