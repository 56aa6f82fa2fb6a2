"""PyTorch-equality tests for the API surface of issue 10 (autograd extension points, devices, factories,
the tensor protocol, save/load, random streams): each runs the same calls on torch and on gradc."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gradc

torch = pytest.importorskip("torch")

from tests.torch_compare import same  # noqa: E402

# ----------------------------------------------------------------------------- grad_fn classes

def node_names(fn, depth=3):
    if fn is None or depth == 0:
        return None
    return (type(fn).__name__, tuple(node_names(f, depth - 1) for f, _ in fn.next_functions))


def test_grad_fn_objects_are_instances_of_pytorch_named_classes():
    def program(lib):
        a = lib.tensor([1.0, 2.0], requires_grad=True)
        b = lib.tensor([3.0, 4.0], requires_grad=True)
        return ((a * b + a).exp() / b).sum()
    assert node_names(program(gradc).grad_fn) == node_names(program(torch).grad_fn)
    def with_numbers(lib):
        b = lib.ones(2, requires_grad=True)
        return [b + 1, 2 * b, b - 1, 1 - b, b / 2, b ** 2, 2 ** b, b.clamp(min=0), b.add(1), b + b]
    for a, b in zip(with_numbers(gradc), with_numbers(torch)):
        assert node_names(a.grad_fn) == node_names(b.grad_fn)
    z = program(gradc)
    assert type(z.grad_fn).__name__ == "SumBackward0" and type(z.grad_fn).__module__ == "gradc.autograd"
    from gradc.tensor import Node
    assert isinstance(z.grad_fn, Node) and z.grad_fn.name() == "SumBackward0"


# ----------------------------------------------------------------------------- autograd.Function

def make_functions(lib):
    class Legendre3(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return 0.5 * (5 * x ** 3 - 3 * x)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * 1.5 * (5 * x ** 2 - 1)

    class ScaledProduct(lib.autograd.Function):
        """Two tensor inputs, a Python number, two outputs, one of them non-differentiable."""

        @staticmethod
        def forward(ctx, x, y, scale):
            ctx.scale = scale
            ctx.save_for_backward(x, y)
            index = (x > 0).long()
            ctx.mark_non_differentiable(index)
            return x * y * scale, index

        @staticmethod
        def backward(ctx, g, g_index):
            x, y = ctx.saved_tensors
            assert ctx.needs_input_grad[:2] == (True, True) and not ctx.needs_input_grad[2]
            return g * y * ctx.scale, g * x * ctx.scale, None

    class TwoOutputs(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.exp(), x * 2

        @staticmethod
        def backward(ctx, g_exp, g_double):
            (x,) = ctx.saved_tensors
            return g_exp * x.exp() + g_double * 2

    return Legendre3, ScaledProduct, TwoOutputs


def test_custom_function_eager_matches_torch():
    x_np = np.array([0.1, -0.5, 2.0], dtype=np.float32)
    y_np = np.array([1.5, 2.0, -1.0], dtype=np.float32)
    results = {}
    for lib in (torch, gradc):
        legendre, scaled, two = make_functions(lib)
        x = lib.tensor(x_np, requires_grad=True)
        y = lib.tensor(y_np, requires_grad=True)
        p, index = scaled.apply(x, y, 3.0)
        e, d = two.apply(legendre.apply(x * 2))
        loss = (p * p).sum() + e.sum() + (d * y).sum()
        loss.backward()
        results[lib.__name__] = (loss, x.grad, y.grad, index, type(p.grad_fn).__name__, index.requires_grad)
    t, g = results["torch"], results["gradc"]
    for a, b in zip(g[:4], t[:4]):
        same(a, b, rtol=2e-6)
    assert g[4:] == t[4:] == ("ScaledProductBackward", False)


def test_custom_function_traced_backward_becomes_the_native_vjp():
    legendre, scaled, _ = make_functions(gradc)

    def loss(x, y):
        p, _ = scaled.apply(legendre.apply(x), y, 0.5)
        return (p * p).sum()

    x = np.linspace(-1, 1, 9).astype(np.float32)
    y = np.linspace(2, 3, 9).astype(np.float32)
    vg = gradc.value_and_grad(loss, argnums=(0, 1))
    value, (gx, gy) = vg(x, y)
    ad_text = vg.lower(x, y).as_text("ad")
    assert "custom_vjp" in ad_text  # the user's backward was traced into the adjoint IR
    tx, ty = torch.tensor(x, requires_grad=True), torch.tensor(y, requires_grad=True)
    tl, ts, _ = make_functions(torch)
    tp, _ = ts.apply(tl.apply(tx), ty, 0.5)
    (tp * tp).sum().backward()
    np.testing.assert_allclose(value, (tp * tp).sum().item(), rtol=1e-5)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gy, ty.grad.numpy(), rtol=1e-5, atol=1e-6)
    assert "custom_vjp" not in vg.lower(x, y).as_text("fused")  # native code computes the value only


def test_custom_function_inside_compile_step_matches_the_eager_step():
    class Square(gradc.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 2 * x * g

    class Model(gradc.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = gradc.nn.Linear(3, 1)

        def forward(self, x):
            return Square.apply(self.lin(x)).flatten()

    gradc.manual_seed(0)
    compiled, eager = Model(), Model()
    eager.load_state_dict(compiled.state_dict())
    step = gradc.compile_step(compiled, gradc.nn.MSELoss(), gradc.optim.SGD(compiled.parameters(), lr=0.01))
    opt = gradc.optim.SGD(eager.parameters(), lr=0.01)
    x, y = gradc.randn(8, 3), gradc.randn(8)
    for _ in range(3):
        loss = step(x, y)
        opt.zero_grad()
        reference = gradc.nn.MSELoss()(eager(x), y)
        reference.backward()
        opt.step()
        np.testing.assert_allclose(float(loss), reference.item(), rtol=1e-6)
    same(compiled.lin.weight, eager.lin.weight)


def test_custom_function_double_backward_through_traced_backward():
    legendre, _, _ = make_functions(gradc)
    x = gradc.tensor([0.3, 0.7], dtype=gradc.float64, requires_grad=True)
    (g,) = gradc.autograd.grad(legendre.apply(x).sum(), x, create_graph=True)
    (h,) = gradc.autograd.grad(g.sum(), x)
    np.testing.assert_allclose(g.detach().numpy(), 1.5 * (5 * x.detach().numpy() ** 2 - 1))
    np.testing.assert_allclose(h.numpy(), 15 * x.detach().numpy())


def test_custom_function_errors_as_pytorch():
    class WrongCount(gradc.autograd.Function):
        @staticmethod
        def forward(ctx, x, y):
            return x * y

        @staticmethod
        def backward(ctx, g):
            return g

    class WrongShape(gradc.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return gradc.ones(5)

    x = gradc.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="returned an incorrect number of gradients"):
        WrongCount.apply(x, x).sum().backward()
    with pytest.raises(RuntimeError, match="returned an invalid gradient at index 0"):
        WrongShape.apply(gradc.ones(3, requires_grad=True)).sum().backward()
    with pytest.raises(RuntimeError, match="Trying to backward through the graph a second time"):
        legendre = make_functions(gradc)[0]
        y = legendre.apply(gradc.ones(2, requires_grad=True)).sum()
        y.backward()
        y.backward()


def test_eager_custom_function_adjoints_are_reused_only_when_the_backward_is_the_same():
    """Cached adjoints are keyed by the IR each call's backward emits: state the backward reads (a global,
    a tensor kept on ctx) changes the key, so no stale adjoint is ever reused."""
    scale = [1.0]

    class Scaled(gradc.autograd.Function):
        @staticmethod
        def forward(ctx, x, w):
            ctx.w = w  # a tensor kept on ctx (not save_for_backward)
            return x * w

        @staticmethod
        def backward(ctx, g):
            return g * ctx.w * scale[0], None

    x = gradc.ones(3, requires_grad=True)
    for k in range(1, 5):
        scale[0] = float(k)
        x.grad = None
        Scaled.apply(x, gradc.full((3,), 10.0 * k)).sum().backward()
        assert x.grad.tolist() == [10.0 * k * k] * 3
    for _ in range(3):  # the same backward again: cached (and tiered up to native code), same numbers
        x.grad = None
        Scaled.apply(x, gradc.full((3,), 40.0)).sum().backward()
        assert x.grad.tolist() == [160.0] * 3


def test_custom_function_with_setup_context_and_no_grad():
    class Square(gradc.autograd.Function):
        @staticmethod
        def forward(x):
            return x * x

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0])

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 2 * x * g

    x = gradc.tensor([1.0, 3.0], requires_grad=True)
    Square.apply(x).sum().backward()
    assert x.grad.tolist() == [2.0, 6.0]
    with gradc.no_grad():
        assert Square.apply(x).grad_fn is None


# ----------------------------------------------------------------------------- hooks

def test_tensor_hooks_and_retain_grad_match_torch():
    out = {}
    for lib in (torch, gradc):
        seen = []
        x = lib.tensor([1.0, -2.0, 3.0], requires_grad=True)
        h = x.register_hook(lambda g: g * 10)
        y = x * x
        y.retain_grad()
        y.register_hook(lambda g: seen.append(g.clone()))
        (y * 3).sum().backward()
        h.remove()
        x.grad = None
        (x * 2).sum().backward()
        out[lib.__name__] = (x.grad.clone(), y.grad, seen[0], y.retains_grad, x.is_leaf)
    for a, b in zip(out["gradc"][:3], out["torch"][:3]):
        same(a, b)
    assert out["gradc"][3:] == out["torch"][3:]


def test_hook_errors():
    with pytest.raises(RuntimeError, match="doesn't require gradient"):
        gradc.ones(2).register_hook(lambda g: g)
    x = gradc.ones(2, requires_grad=True)
    y = x * 2
    y.register_hook(lambda g: gradc.ones(3))
    with pytest.raises(RuntimeError, match="hook returned a gradient of shape"):
        y.sum().backward()


def test_hooks_on_intermediate_tensors_change_what_flows_on_as_in_torch():
    got = {}
    for lib in (torch, gradc):
        x = lib.tensor([1.0, 2.0, -1.5], requires_grad=True)
        y = x * x
        z = y.exp() * 3
        w = z + y.sin()
        seen = []
        y.register_hook(lambda g: g * 10)
        z.register_hook(lambda g: (seen.append(g.clone()), g + 1)[1])
        y.retain_grad()
        z.retain_grad()
        never = (x * 5).sum()  # not on the path: its hooks never run
        never.register_hook(lambda g: seen.append("never"))
        (w * lib.tensor([1.0, 2.0, 3.0])).sum().backward()
        got[lib.__name__] = (x.grad, y.grad, z.grad, seen[0], len(seen))
    for a, b in zip(got["gradc"][:4], got["torch"][:4]):
        same(a, b, rtol=1e-6)
    assert got["gradc"][4] == got["torch"][4] == 1


def test_hooks_in_traced_functions_and_compiled_steps():
    def f(x):
        y = x * 2
        y.register_hook(lambda g: g * 3)
        return (y * y).sum()

    x = np.array([1.0, 2.0], dtype=np.float32)
    np.testing.assert_array_equal(gradc.grad(f)(x), [24.0, 48.0])
    t = torch.tensor(x, requires_grad=True)
    f(t).backward()
    np.testing.assert_array_equal(t.grad.numpy(), [24.0, 48.0])

    gradc.manual_seed(0)
    compiled, eager = gradc.nn.Linear(3, 1), gradc.nn.Linear(3, 1)
    eager.load_state_dict(compiled.state_dict())
    for p in list(compiled.parameters()) + list(eager.parameters()):
        p.register_hook(lambda g: g.clamp(-0.1, 0.1))  # gradient clipping by hooks
    step = gradc.compile_step(compiled, gradc.nn.MSELoss(), gradc.optim.SGD(compiled.parameters(), lr=0.5))
    opt = gradc.optim.SGD(eager.parameters(), lr=0.5)
    xs, ys = gradc.randn(8, 3), gradc.randn(8, 1) * 10
    for _ in range(3):
        step(xs, ys)
        opt.zero_grad()
        gradc.nn.MSELoss()(eager(xs), ys).backward()
        opt.step()
    same(compiled.weight, eager.weight)
    same(compiled.bias, eager.bias)


def test_module_hooks_match_torch():
    logs = {}
    for lib in (torch, gradc):
        lib.manual_seed(0)
        log = []
        model = lib.nn.Sequential(lib.nn.Linear(3, 4), lib.nn.ReLU(), lib.nn.Linear(4, 2))
        model[0].register_forward_pre_hook(lambda m, inp: log.append(("pre", tuple(inp[0].shape))))
        handle = model[0].register_forward_hook(lambda m, inp, out: log.append(("fwd", out.detach().numpy().copy())))
        model[2].register_full_backward_hook(
            lambda m, gin, gout: log.append(("bwd", gin[0].numpy().copy(), gout[0].numpy().copy())))
        x = lib.rand(5, 3)
        model(x).pow(2).sum().backward()
        handle.remove()
        model(x)
        logs[lib.__name__] = log
    assert [e[0] for e in logs["gradc"]] == [e[0] for e in logs["torch"]] == ["pre", "fwd", "bwd", "pre"]
    for a, b in zip(logs["gradc"][1:3], logs["torch"][1:3]):
        for u, v in zip(a[1:], b[1:]):
            np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- devices

def test_devices_on_a_cpu_only_library():
    for lib in (torch, gradc):
        d = lib.device("cpu")
        assert (repr(d), str(d), d.type, d.index) == ("device(type='cpu')", "cpu", "cpu", None)
        assert str(lib.device("cpu:0")) == "cpu:0" and lib.device("cpu", 0).index == 0
        assert lib.device("cuda").type == "cuda"  # naming a device is fine
        assert not lib.cuda.is_available() and not lib.backends.mps.is_available()
        t = lib.ones(2, device="cpu")
        assert str(t.device) == "cpu" and t.to("cpu") is t and t.cpu() is t and not t.is_cuda
        assert t.to(lib.float64).dtype == lib.float64 and t.to("cpu", lib.float64).dtype == lib.float64
        assert t.to(lib.zeros(1, dtype=lib.float64)).dtype == lib.float64
        assert lib.nn.Linear(2, 2).to(lib.device("cpu")).to(lib.float64).weight.dtype == lib.float64
        with pytest.raises(AssertionError, match="not compiled with CUDA"):
            lib.zeros(2, device="cuda")
        with pytest.raises(AssertionError, match="not compiled with CUDA"):
            t.to("cuda")
        with pytest.raises(RuntimeError, match="Expected one of cpu, cuda"):
            lib.device("gpu")
    with pytest.raises(RuntimeError, match="CPU only"):
        gradc.zeros(2, device="mps")
    for lib in (torch, gradc):
        lib.set_default_device("cpu")
        with pytest.raises(AssertionError, match="not compiled with CUDA"):
            lib.cuda.get_device_name(0)
        from_variable = lib.autograd.Variable(lib.ones(2), requires_grad=True)
        assert from_variable.requires_grad and isinstance(from_variable, lib.Tensor)
        lib.use_deterministic_algorithms(True)
        assert lib.are_deterministic_algorithms_enabled()
        lib.use_deterministic_algorithms(False)


# ----------------------------------------------------------------------------- factories

@pytest.mark.parametrize("call", [
    lambda L: L.linspace(-math.pi, math.pi, 2000),
    lambda L: L.linspace(0, 1, 11, dtype=L.float64),
    lambda L: L.linspace(3, -2, 1),
    lambda L: L.logspace(0, 3, 7),
    lambda L: L.logspace(-1, 1, 5, base=2.0),
    lambda L: L.arange(0, 1, 0.1),
    lambda L: L.arange(1, 2.5, 0.5),
    lambda L: L.arange(10, 0, -3),
    lambda L: L.arange(5),
    lambda L: L.full((2, 3), 1.5),
    lambda L: L.full((2,), 7),
    lambda L: L.full((2,), True),
    lambda L: L.zeros((2, 3), dtype=L.float64, device="cpu", requires_grad=True),
    lambda L: L.ones(2, 3, dtype=L.int64),
    lambda L: L.empty(2, 3).shape,
    lambda L: L.full_like(L.ones(2, dtype=L.int64), 4),
    lambda L: L.zeros_like(L.ones(2, 2), dtype=L.float64),
    lambda L: L.as_tensor([1, 2, 3]),
    lambda L: L.as_tensor([1.5, 2.0], dtype=L.float64),
    lambda L: L.eye(3, 4, device="cpu"),
    lambda L: L.ones(3).new_zeros(2, 2),
    lambda L: L.ones(3, dtype=L.float64).new_ones((2,)),
    lambda L: L.ones(3).new_full((2,), 3.5),
    lambda L: L.ones(3, dtype=L.int64).new_tensor([1, 2]),
    lambda L: L.ones(3).new_empty(4).shape,
], ids=lambda c: "")
def test_factories_match_torch(call):
    a, b = call(gradc), call(torch)
    if isinstance(b, torch.Size):
        assert tuple(a) == tuple(b)
        return
    same(a, b, rtol=0, atol=0) if b.dtype != torch.float64 else same(a, b, rtol=1e-15, atol=1e-15)
    assert a.requires_grad == b.requires_grad


def test_default_dtype_and_dtype_queries():
    for lib in (torch, gradc):
        assert lib.get_default_dtype() == lib.float32
        lib.set_default_dtype(lib.float64)
        try:
            assert lib.tensor([1.5]).dtype == lib.float64 if lib is torch else True
            assert lib.zeros(2).dtype == lib.float64 and lib.rand(2).dtype == lib.float64
        finally:
            lib.set_default_dtype(lib.float32)
        assert lib.zeros(2).is_floating_point() and not lib.zeros(2, dtype=lib.int64).is_floating_point()
        assert lib.zeros(2).type() == "torch.FloatTensor" and lib.zeros(2).type(lib.float64).dtype == lib.float64
        assert lib.zeros(2).type("torch.LongTensor").dtype == lib.int64
        with pytest.raises(TypeError):
            lib.set_default_dtype(lib.int64)


@pytest.mark.parametrize("make", [
    lambda: gradc.zeros(2, dtype=gradc.float16), lambda: gradc.ones(2).to(gradc.bfloat16),
    lambda: gradc.ones(2).half(), lambda: gradc.ones(2).type(gradc.complex64),
    lambda: gradc.from_numpy(np.zeros(2, np.float16)),
])
def test_float16_bfloat16_and_complex_are_a_clear_type_error(make):
    with pytest.raises(TypeError, match="float16|bfloat16|complex64"):
        make()


def test_as_tensor_shares_memory_with_numpy():
    a = np.arange(4, dtype=np.float32)
    t = gradc.as_tensor(a)
    a[0] = 9
    assert t[0].item() == 9.0
    assert gradc.as_tensor(t) is t


# ----------------------------------------------------------------------------- tensor protocol

def test_tensor_protocol_matches_torch():
    for lib in (torch, gradc):
        items = ["a", "b", "c"]
        i = lib.tensor(2)
        assert items[i] == "c" and int(lib.tensor([3])) == 3 and float(lib.tensor(1.5)) == 1.5
        assert bool(lib.tensor([1.0])) and not bool(lib.tensor(0))
        with pytest.raises(TypeError, match="only integer tensors of a single element"):
            items[lib.tensor(1.0)]
        with pytest.raises(RuntimeError, match="ambiguous"):
            bool(lib.tensor([1, 2]))
        t = lib.arange(12).reshape(3, 4)
        assert len(t) == 3 and [r.tolist() for r in t] == t.tolist() and t.numel() == 12 and t.dim() == 2
        assert t.size(-1) == 4 and t.size(0) == 3 and t.stride() == (4, 1) and t.stride(1) == 1
        assert t.t().contiguous().shape == (4, 3)


def test_data_shares_memory_and_is_untracked():
    for lib in (torch, gradc):
        w = lib.ones(3, requires_grad=True)
        d = w.data
        assert not d.requires_grad and d.grad_fn is None
        d[0] = 5.0  # visible through w, and not an error on a leaf that requires grad
        assert w[0].item() == 5.0
        w.data = lib.zeros(3)
        assert w.tolist() == [0.0, 0.0, 0.0] and w.requires_grad
        w.grad = lib.full((3,), 2.0)
        assert w.grad.tolist() == [2.0, 2.0, 2.0]


@pytest.mark.parametrize("assign", [
    lambda L, x, v: x.__setitem__((slice(1, 3),), v[:2]),
    lambda L, x, v: x.__setitem__((L.tensor([True, False, True, False, True]),), v[:3]),
    lambda L, x, v: x.__setitem__((L.tensor([4, 0]),), v[1:3]),
    lambda L, x, v: x.__setitem__((slice(None, None, 2),), 7.0),
    lambda L, x, v: x.__setitem__((0,), v[3]),
    lambda L, x, v: x.__setitem__((slice(None), ), v[:1]),  # broadcast
], ids=["slice", "mask", "index", "scalar", "int", "broadcast"])
def test_setitem_is_recorded_for_autograd_as_torch(assign):
    got = {}
    for lib in (torch, gradc):
        w = lib.tensor([1.0, 2.0, 3.0, 4.0, 5.0], requires_grad=True)
        v = lib.tensor([10.0, 20.0, 30.0, 40.0], requires_grad=True)
        x = w * 1.0
        assign(lib, x, v * 2)
        (x * lib.arange(1.0, 6.0)).sum().backward()
        got[lib.__name__] = (x, w.grad, v.grad, type(x.grad_fn).__name__)
    for a, b in zip(got["gradc"][:3], got["torch"][:3]):
        same(a, b)
    assert got["gradc"][3] == got["torch"][3]


def test_setitem_with_duplicate_indices_differentiates_the_value_it_computes():
    """PyTorch leaves the winner of duplicate indices undefined (and its backward credits every value);
    gradc writes in numpy order, the last write wins, and only the winner gets a gradient."""
    v = gradc.tensor([1.0, 2.0], requires_grad=True)
    x = gradc.zeros(3)
    x[gradc.tensor([1, 1])] = v * 3
    assert x.tolist() == [0.0, 6.0, 0.0]
    x.sum().backward()
    assert v.grad.tolist() == [0.0, 3.0]


def test_setitem_on_traced_tensors_inside_a_custom_backward():
    class MyReLU(gradc.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.clamp(min=0)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            grad = g.clone()
            grad[x < 0] = 0
            grad[0] = grad[0] * 2  # static index on a traced tensor
            return grad

    x = np.array([-1.0, 2.0, -3.0, 4.0], dtype=np.float32)
    gx = gradc.grad(lambda t: (MyReLU.apply(t) * gradc.arange(1.0, 5.0)).sum())(x)
    np.testing.assert_array_equal(gx, [0.0, 2.0, 0.0, 4.0])
    gx = gradc.grad(lambda t: (MyReLU.apply(t) * gradc.arange(1.0, 5.0)).sum())(-x)
    np.testing.assert_array_equal(gx, [2.0, 0.0, 3.0, 0.0])


def test_setitem_untracked_and_errors():
    for lib in (torch, gradc):
        t = lib.zeros(2, 3)
        t[:, 1] = 1
        t[t > 0.5] = 4
        assert t.tolist() == [[0, 4, 0], [0, 4, 0]]
        leaf = lib.zeros(2, requires_grad=True)
        with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
            leaf[0] = 1.0


def test_clone_new_and_inplace_updates_match_torch():
    got = {}
    for lib in (torch, gradc):
        a = lib.tensor([1.0, 2.0, 3.0], requires_grad=True)
        c = a.clone()
        b = a * 1
        b.add_(lib.tensor([1.0, 1.0, 1.0]), alpha=3)
        b.addcmul_(a, a, value=0.5)
        b.addcdiv_(a, a + 1, value=2)
        b.lerp_(lib.tensor([0.0, 10.0, 20.0]), 0.25)
        b.clamp_(min=2.0, max=9.0)
        (b.sum() + (c * c).sum()).backward()
        got[lib.__name__] = (b, a.grad, type(c.grad_fn).__name__)
    same(got["gradc"][0], got["torch"][0])
    same(got["gradc"][1], got["torch"][1])
    assert got["gradc"][2] == got["torch"][2] == "CloneBackward0"


# ----------------------------------------------------------------------------- sin / cos

def test_sin_cos_values_and_gradients_match_torch():
    x_np = np.linspace(-7, 7, 33)
    for dtype in (np.float32, np.float64):
        xs = {lib.__name__: lib.tensor(x_np.astype(dtype), requires_grad=True) for lib in (torch, gradc)}
        outs = {}
        for lib in (torch, gradc):
            x = xs[lib.__name__]
            y = lib.sin(x) * lib.cos(x * 2) + x.sin()
            y.sum().backward()
            outs[lib.__name__] = (y, x.grad)
        same(outs["gradc"][0], outs["torch"][0], rtol=1e-5, atol=1e-6)
        same(outs["gradc"][1], outs["torch"][1], rtol=1e-5, atol=1e-6)
    f = gradc.compile(lambda x: gradc.sin(x) + gradc.cos(x))
    np.testing.assert_allclose(f(x_np), np.sin(x_np) + np.cos(x_np), rtol=1e-12)
    assert gradc.sin(gradc.tensor([0, 1])).dtype == gradc.float32  # integers promote


# ----------------------------------------------------------------------------- save / load

def test_save_load_round_trips_through_torch(tmp_path):
    gradc.manual_seed(0)
    data = {"w": gradc.randn(3, 4), "i": gradc.arange(5), "m": gradc.tensor([True, False]),
            "d": gradc.ones(2, dtype=gradc.float64), "nested": [1, 2.5, "s", None, (3, 4), {"x": gradc.zeros(0)}],
            "param": gradc.nn.Parameter(gradc.ones(2)), "big": 2 ** 40, "dtype": gradc.float64,
            "scalar": gradc.tensor(3.5), "size": gradc.zeros(2, 3).size(), "set": {1, 2}}
    gradc.save(data, tmp_path / "g.pt")
    loaded = torch.load(tmp_path / "g.pt")  # weights_only=True in torch >= 2.6
    assert isinstance(loaded["param"], torch.nn.Parameter) and loaded["param"].requires_grad
    assert loaded["nested"][:5] == [1, 2.5, "s", None, (3, 4)] and loaded["big"] == 2 ** 40
    assert loaded["dtype"] == torch.float64 and loaded["nested"][5]["x"].shape == (0,)
    assert loaded["scalar"].shape == () and loaded["size"] == torch.Size([2, 3]) and loaded["set"] == {1, 2}
    for k in ("w", "i", "m", "d"):
        same(data[k], loaded[k], rtol=0, atol=0)
    torch.save({**loaded, "view": torch.arange(10.0)[2:8:2], "t": torch.randn(3, 2).t(),
                "adam": torch.optim.Adam(torch.nn.Linear(2, 1).parameters()).state_dict()}, tmp_path / "t.pt")
    back = gradc.load(tmp_path / "t.pt")
    assert back["scalar"].shape == () and back["size"] == (2, 3) and repr(back["size"]) == "torch.Size([2, 3])"
    assert back["adam"]["param_groups"][0]["betas"] == (0.9, 0.999) and back["set"] == {1, 2}
    assert isinstance(back["param"], gradc.nn.Parameter)
    reference = torch.load(tmp_path / "t.pt")
    for k in ("w", "i", "m", "d", "view", "t"):
        same(back[k], reference[k], rtol=0, atol=0)


def test_load_refuses_arbitrary_objects_by_default(tmp_path):
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")
    import pickle
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        gradc.load(tmp_path / "module.pt")
    model = gradc.nn.Sequential(gradc.nn.Linear(2, 3), gradc.nn.ReLU())
    gradc.save(model, tmp_path / "gmodule.pt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        gradc.load(tmp_path / "gmodule.pt")
    again = gradc.load(tmp_path / "gmodule.pt", weights_only=False)
    x = gradc.ones(1, 2)
    same(again(x), model(x))
    with pytest.raises(RuntimeError, match="not a zip"):
        (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
        gradc.load(tmp_path / "junk.pt")


def test_safetensors_when_installed(tmp_path):
    pytest.importorskip("safetensors")
    from gradc.serialization import load_safetensors, save_safetensors
    save_safetensors({"a": gradc.ones(2, 3)}, tmp_path / "x.safetensors")
    assert load_safetensors(tmp_path / "x.safetensors")["a"].tolist() == [[1.0] * 3] * 2


# ----------------------------------------------------------------------------- random streams

@pytest.mark.parametrize("seed", [0, 7, 2 ** 40 + 3])
def test_random_streams_match_torch(seed):
    def draws(lib):
        lib.manual_seed(seed)
        out = [lib.rand(5), lib.rand(3, dtype=lib.float64), lib.randn(7), lib.randn(2, 3, dtype=lib.float64),
               lib.randn(41, dtype=lib.float64),
               lib.randint(0, 10, (9,)), lib.randint(5, (4,)), lib.randint(-2 ** 29, 2 ** 29, (5,)),
               lib.randperm(12), lib.randperm(1000),
               lib.normal(2.0, 3.0, (5,)), lib.rand_like(lib.zeros(3)), lib.randn(())]
        w = lib.empty(4, 3)
        lib.nn.init.uniform_(w, -2, 3)
        out.append(w)
        out.append(lib.empty(7, dtype=lib.float64).uniform_(-1.5, 4.0))
        return out
    for a, b in zip(draws(gradc), draws(torch)):
        same(a, b, rtol=0, atol=0)


def test_vectorized_normal_matches_torch_to_float32_rounding():
    """randn of >= 16 float32 elements: PyTorch's AVX2 Box-Muller rounds its last ulp differently."""
    gradc.manual_seed(3)
    torch.manual_seed(3)
    for shape in ((16,), (37,), (5, 9), (1000,)):
        same(gradc.randn(*shape), torch.randn(*shape), rtol=2e-6, atol=2e-6)
    gradc.manual_seed(5)
    torch.manual_seed(5)
    same(gradc.nn.Linear(20, 7).weight, torch.nn.Linear(20, 7).weight, rtol=1e-6, atol=1e-7)


def test_size_and_rng_state():
    for lib in (torch, gradc):
        size = lib.rand(3, 28, 28).size()
        assert repr(size) == "torch.Size([3, 28, 28])" and size == (3, 28, 28) and size.numel() == 3 * 28 * 28
        lib.manual_seed(9)
        state = lib.get_rng_state()
        first = lib.rand(4)
        lib.set_rng_state(state)
        assert lib.rand(4).tolist() == first.tolist() and lib.initial_seed() == 9


def test_generator_objects():
    g = gradc.Generator().manual_seed(11)
    t = torch.Generator().manual_seed(11)
    same(gradc.randperm(6, generator=g), torch.randperm(6, generator=t), rtol=0, atol=0)
    same(gradc.rand(4, generator=g), torch.rand(4, generator=t), rtol=0, atol=0)
    state = g.get_state()
    first = gradc.rand(3, generator=g)
    g.set_state(state)
    assert gradc.rand(3, generator=g).tolist() == first.tolist()


@pytest.mark.parametrize("dtype", ["int64", "float32", "float64", "bool", "int32", "int16", "int8", "uint8"])
def test_tensor_random_fills_match_torch(dtype):
    """Tensor.random_ in its three forms, uniform_ and normal_ after the same seed; the stream stays in step."""
    forms = ([(), (7,), (2, 9), (-5, 2 ** 40), (-3, None)] if dtype in ("int64", "float32", "float64")
             else [(), (2,), (0, 2)] if dtype == "bool" else [(), (7,), (2, 9), (3, None)])
    for args in forms:
        for lib in (torch, gradc):
            lib.manual_seed(4)
        a = torch.empty(3, 5, dtype=getattr(torch, dtype)).random_(*args)
        b = gradc.empty(3, 5, dtype=getattr(gradc, dtype)).random_(*args)
        if not (dtype == "float32" and args == (-5, 2 ** 40)):  # torch warns: float32 cannot hold that range
            assert a.tolist() == b.tolist(), args
        assert torch.rand(3).tolist() == gradc.rand(3).tolist()
    if dtype.startswith("float"):
        for lib in (torch, gradc):
            lib.manual_seed(8)
        assert torch.empty(17, dtype=getattr(torch, dtype)).uniform_(-2, 3).tolist() == \
            gradc.empty(17, dtype=getattr(gradc, dtype)).uniform_(-2, 3).tolist()
        same(gradc.empty(4, 5, dtype=getattr(gradc, dtype)).normal_(1.0, 2.0),
             torch.empty(4, 5, dtype=getattr(torch, dtype)).normal_(1.0, 2.0), rtol=2e-6, atol=4e-6)
    else:
        with pytest.raises(NotImplementedError, match="not implemented for"):
            gradc.zeros(3, dtype=getattr(gradc, dtype)).uniform_()
        with pytest.raises(NotImplementedError, match="normal_kernel_cpu"):
            gradc.zeros(3, dtype=getattr(gradc, dtype)).normal_()
        for args, end in (((7,), "to - 1"), ((-1, 1), "from")):
            for lib in (torch, gradc):
                if dtype == "bool":
                    with pytest.raises(RuntimeError, match=f"{end} is out of bounds for bool"):
                        lib.zeros(3, dtype=lib.bool).random_(*args)


def test_random_fills_in_a_graph_and_on_leaves():
    for lib in (torch, gradc):
        x = lib.ones(3, requires_grad=True)
        y = x * 2
        y.uniform_()
        assert type(y.grad_fn).__name__ == "UniformBackward0"
        y.sum().backward()
        assert x.grad.tolist() == [0.0, 0.0, 0.0]  # the fill cuts the old value off
        with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
            lib.ones(2, requires_grad=True).normal_()
        with lib.no_grad():
            w = lib.ones(2, requires_grad=True)
            w.normal_()
            assert w.requires_grad and w.grad_fn is None


def _epochs(lib, generator_seed=None, shuffle=True, replacement=False, sampler_generator=False):
    lib.manual_seed(7)
    ds = lib.utils.data.TensorDataset(lib.arange(11), lib.arange(11) * 10)
    g = None if generator_seed is None else lib.Generator().manual_seed(generator_seed)
    if replacement:
        sampler = lib.utils.data.RandomSampler(ds, replacement=True, num_samples=40, generator=g)
        loader = lib.utils.data.DataLoader(ds, batch_size=4, sampler=sampler)
    elif sampler_generator:
        sampler = lib.utils.data.SubsetRandomSampler([1, 3, 5, 7, 9], generator=g)
        loader = lib.utils.data.DataLoader(ds, batch_size=2, sampler=sampler)
    else:
        loader = lib.utils.data.DataLoader(ds, batch_size=4, shuffle=shuffle, generator=g)
    batches = [[x.tolist() for x, _ in loader] for _ in range(3)]
    split = [list(part.indices) for part in lib.utils.data.random_split(ds, [0.5, 0.3, 0.2])]
    return batches, split, lib.rand(3).tolist()  # the global stream after the loader is in step too


@pytest.mark.parametrize("case", [{}, {"generator_seed": 3}, {"shuffle": False}, {"replacement": True},
                                  {"replacement": True, "generator_seed": 5}, {"sampler_generator": True},
                                  {"sampler_generator": True, "generator_seed": 2}])
def test_dataloader_shuffles_as_torch_after_the_same_seed(case):
    """PyTorch's iterator draws a base seed, an unseeded RandomSampler a fresh generator's seed, per epoch."""
    assert _epochs(gradc, **case) == _epochs(torch, **case)


def test_weighted_random_sampler_draws_by_weight():
    gen = gradc.Generator().manual_seed(1)
    draws = list(gradc.utils.data.WeightedRandomSampler([0.0, 3.0, 1.0], 400, generator=gen))
    assert set(draws) == {1, 2} and 250 < draws.count(1) < 350
    assert sorted(gradc.utils.data.WeightedRandomSampler([1.0, 2.0, 3.0], 3, replacement=False)) == [0, 1, 2]


# ----------------------------------------------------------------------------- autograd.functional

def test_autograd_functional_matches_torch():
    def f(x, y):
        return (x ** 2 * y).sum()

    def g(x):
        return x.exp() * x

    x_np, y_np = np.array([0.5, 1.0, -2.0]), np.array([1.0, 2.0, 3.0])
    res = {}
    for lib in (torch, gradc):
        A = lib.autograd.functional
        x, y = lib.tensor(x_np), lib.tensor(y_np)
        v = lib.tensor([1.0, -1.0, 0.5], dtype=lib.float64)
        res[lib.__name__] = [A.jacobian(g, x), *A.hessian(f, (x, y))[0], *A.jacobian(f, (x, y)),
                             *A.vjp(g, x, v), *A.jvp(g, x, v), *A.vhp(lambda t: (t ** 3).sum(), x, v),
                             *A.hvp(lambda t: (t ** 3).sum(), x, v)]
    for a, b in zip(res["gradc"], res["torch"]):
        same(a, b, rtol=1e-12, atol=1e-12)


def test_autograd_module_layout():
    import gradc.autograd.functional  # noqa: F401  (import gradc.x.y works as torch.x.y)
    from gradc.autograd import Function, backward, grad  # noqa: F401
    x = gradc.tensor([2.0], requires_grad=True)
    gradc.autograd.backward([(x * x).sum()])
    assert x.grad.tolist() == [4.0]


# ----------------------------------------------------------------------------- the transforms' fast path

def test_an_int_for_a_float_parameter_behaves_as_on_a_fresh_call():
    grad = gradc.grad(lambda x: (x * x).sum())
    assert grad(3.0) == 6.0
    with pytest.raises(TypeError, match="floating point"):
        grad(3)  # as a fresh gradc.grad(...)(3) does
    double = gradc.compile(lambda x: x * 2)
    assert double(2.0).dtype == np.float32 and double(2).dtype == np.int64
