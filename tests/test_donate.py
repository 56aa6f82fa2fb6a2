"""Donated results: native code writes chosen results into their argument arrays (in-place updates).

compile_step donates the new parameters and optimizer state, so a step updates the very arrays the model
and optimizer hold (as torch.optim does); `compile_function(fn, donate=...)` is the mechanism, refused per
result where a kernel would read the parameter after (or around) the element it overwrites.
"""

from __future__ import annotations

import numpy as np
import pytest

import gradc
import gradc.nn as nn
import gradc.optim as optim
from gradc.codegen import compile_function
from gradc.ir.builder import Builder
from gradc.ir.core import Function, TensorType, Value, float32
from gradc.ir.interp import run


def step_setup(optimizer=lambda p: optim.Adam(p, lr=0.01), seed=0):
    gradc.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 40), nn.ReLU(), nn.Linear(40, 4))
    opt = optimizer(model.parameters())
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((16, 6)).astype(np.float32)
    y = rng.integers(0, 4, 16)
    return model, opt, gradc.compile_step(model, nn.CrossEntropyLoss(), opt), x, y


def state_arrays(opt):
    return [t._data for group in opt.param_groups for p in group["params"]
            for t in opt.state.get(p, {}).values() if isinstance(t, gradc.Tensor)]


@pytest.mark.parametrize("name", ["adam", "sgd-momentum"])
def test_compile_step_updates_parameters_and_state_in_place(name):
    make = {"adam": lambda p: optim.Adam(p, lr=0.01), "sgd-momentum": lambda p: optim.SGD(p, lr=0.1, momentum=0.9)}
    model, opt, step, x, y = step_setup(make[name])
    views = [p.detach().numpy() for p in model.parameters()]
    before = [v.copy() for v in views]
    step(x, y)
    states = state_arrays(opt)
    assert states, "the optimizer has state tensors after a step"
    fn = next(iter(step.specializations.values())).fn
    assert sorted(fn.donated) == list(range(1, len(fn.result_types)))  # every update was donated
    step(x, y)
    for p, view, old in zip(model.parameters(), views, before):
        assert p._data is view or np.shares_memory(p._data, view)  # the same buffer, step after step
        assert not np.array_equal(view, old)  # ... and it was updated
    assert all(a is b for a, b in zip(state_arrays(opt), states))


def test_compile_step_in_place_equals_the_interpreter_step():
    model, _, step, x, y = step_setup()
    ref_model, _, _, _, _ = step_setup()
    ref_step = gradc.compile_step(ref_model, nn.CrossEntropyLoss(), optim.Adam(ref_model.parameters(), lr=0.01))
    gradc.set_backend("interp")
    try:
        ref_views = [p.detach().numpy() for p in ref_model.parameters()]
        losses_ref = [float(ref_step(x, y)) for _ in range(3)]
    finally:
        gradc.set_backend("auto")
    losses = [float(step(x, y)) for _ in range(3)]
    np.testing.assert_allclose(losses, losses_ref, rtol=1e-5)
    for p, q, view in zip(model.parameters(), ref_model.parameters(), ref_views):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-5, atol=1e-6)
        assert np.shares_memory(q._data, view)  # the interpreter's results are copied into the arrays too


def test_bad_label_leaves_parameters_untouched():
    model, opt, step, x, y = step_setup()
    step(x, y)
    saved = [p.detach().numpy().copy() for p in model.parameters()] + [s.copy() for s in state_arrays(opt)]
    bad = y.copy()
    bad[3] = 7  # 4 classes
    with pytest.raises(IndexError):
        step(x, bad)
    after = [p.detach().numpy() for p in model.parameters()] + state_arrays(opt)
    for a, b in zip(after, saved):
        np.testing.assert_array_equal(a, b)


def test_non_conforming_and_read_only_parameters_still_update():
    model, _, step, x, y = step_setup()
    expected_model, _, expected_step, _, _ = step_setup()
    weight = model[0].weight
    weight._data = np.asfortranarray(weight._data)  # not C-contiguous: the call conforms a copy
    frozen = model[2].bias
    frozen._data = frozen._data.copy()
    frozen._data.flags.writeable = False  # read-only: never written, replaced by the new array
    for _ in range(2):
        np.testing.assert_allclose(step(x, y), expected_step(x, y), rtol=1e-6)
    for p, q in zip(model.parameters(), expected_model.parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------- the mechanism

def _build(make, params):
    b = Builder()
    results = make(b, *params)
    return Function("f", params, b.ops, results)


def values(*shapes):
    return [Value(TensorType(s, float32), name=f"p{i}") for i, s in enumerate(shapes)]


def arrays(fn, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(p.shape).astype(np.float32) for p in fn.params]


@pytest.mark.parametrize("n", [1, 7, 33, 300_001])  # vector tails and the threaded path
def test_elementwise_update_is_written_in_place(n):
    fn = _build(lambda b, w, g: [b.sub(w, b.mul(g, b.scalar(0.5, g))), b.reduce_sum(b.mul(g, g), axes=(0,))],
                values((n,), (n,)))
    native = compile_function(fn, "donate_update", donate={0: 0})
    assert native.donated == {0: 0}
    args = arrays(fn)
    expected = run(fn, *args)
    w = args[0]
    out = native(*args)
    assert out[0] is w
    np.testing.assert_allclose(out[0], expected[0], rtol=1e-6)
    np.testing.assert_allclose(out[1], expected[1], rtol=1e-4)


def test_unsafe_donations_are_refused_and_results_stay_right():
    # result 0 reads w transposed (other elements); result 1 is written before a later kernel reads v;
    # result 2 may take w's buffer: its kernel runs after the last read of w
    def make(b, w, v):
        first = b.add(b.permute(w, perm=(1, 0)), v)
        total = b.reduce_sum(first, axes=(0, 1))
        return [first, b.mul(v, b.scalar(2.0, v)), b.add(v, b.broadcast_to(b.reshape(total, shape=(1, 1)), v.shape))]
    fn = _build(make, values((5, 5), (5, 5)))
    native = compile_function(fn, "donate_refused", donate={0: 0, 1: 1, 2: 0})
    assert native.donated == {2: 0}
    args = arrays(fn)
    expected = run(fn, *[a.copy() for a in args])
    out = native(*args)
    for got, want in zip(out, expected):
        np.testing.assert_allclose(got, want, rtol=1e-5)
    for r, p in native.donated.items():
        assert out[r] is args[p]


def test_donated_read_only_argument_is_copied_not_written():
    fn = _build(lambda b, w: [b.mul(w, b.scalar(3.0, w))], values((9,)))
    native = compile_function(fn, "donate_read_only", donate={0: 0})
    w = np.arange(9, dtype=np.float32)
    w.flags.writeable = False
    out = native(w)
    np.testing.assert_array_equal(w, np.arange(9, dtype=np.float32))
    np.testing.assert_array_equal(out[0], 3 * np.arange(9, dtype=np.float32))
