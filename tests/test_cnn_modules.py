"""CNN modules (issue 11): PyTorch state_dicts, running statistics eager and compiled, train/eval,
native vs interpreter vs eager, float64 finite differences, and bad input as PyTorch reports it."""

import numpy as np
import pytest

import gradc
import gradc.nn as nn
import gradc.nn.functional as F
from gradc.api import get_backend, set_backend

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def small_cnn(lib, bn_momentum=0.1):
    N = lib.nn
    return N.Sequential(N.Conv2d(2, 4, 3, padding=1, bias=False), N.BatchNorm2d(4), N.ReLU(), N.MaxPool2d(2),
                        N.Conv2d(4, 4, 3, padding="same", groups=2), N.GroupNorm(2, 4), N.AvgPool2d(2),
                        N.Flatten(), N.Linear(16, 7, bias=False), N.BatchNorm1d(7, momentum=bn_momentum), N.ReLU(),
                        N.Linear(7, 3))


ALL_MODULES = [
    lambda N: N.Conv1d(4, 6, 3, stride=2, padding=1, groups=2),
    lambda N: N.Conv2d(3, 8, (3, 2), dilation=2, bias=False),
    lambda N: N.ConvTranspose1d(4, 6, 3, stride=2, groups=2),
    lambda N: N.ConvTranspose2d(3, 5, 3, stride=2, padding=1, output_padding=1),
    lambda N: N.BatchNorm1d(5), lambda N: N.BatchNorm2d(5, affine=False),
    lambda N: N.BatchNorm2d(5, track_running_stats=False),
    lambda N: N.GroupNorm(2, 6), lambda N: N.InstanceNorm2d(3, affine=True, track_running_stats=True),
    lambda N: N.MaxPool1d(3), lambda N: N.MaxPool2d(2, 1), lambda N: N.AvgPool1d(2), lambda N: N.AvgPool2d(3, 2, 1),
    lambda N: N.AdaptiveAvgPool1d(3), lambda N: N.AdaptiveAvgPool2d((2, 3)), lambda N: N.AdaptiveMaxPool2d(2),
    lambda N: N.Dropout2d(0.3), lambda N: N.Upsample(scale_factor=2, mode="nearest"),
]


@pytest.mark.parametrize("index", range(len(ALL_MODULES)))
def test_module_state_dict_names_shapes_and_repr_match_torch(index):
    g, t = ALL_MODULES[index](nn), ALL_MODULES[index](torch.nn)
    gs, ts = g.state_dict(), t.state_dict()
    assert list(gs) == list(ts)
    for k in ts:
        assert gs[k].shape == tuple(ts[k].shape), k
        assert str(gs[k].dtype) == str(ts[k].dtype).removeprefix("torch."), k
    g.load_state_dict(ts)  # torch -> gradc
    t.load_state_dict({k: torch.tensor(v) for k, v in g.state_dict().items()})  # and back
    assert repr(g) == repr(t)


def test_conv_default_init_bounds_match_torch():
    conv = nn.Conv2d(6, 8, (3, 5), groups=2)
    bound = 1 / np.sqrt(3 * 3 * 5)  # fan_in = in/groups * kh * kw; kaiming_uniform(a=sqrt(5)) gives the same bound
    w, b = conv.weight.detach().numpy(), conv.bias.detach().numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound
    assert np.abs(b).max() <= bound
    t = nn.ConvTranspose2d(4, 6, 3)
    assert t.weight.shape == (4, 6, 3, 3)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_training_several_steps_matches_torch_eager_and_compiled(momentum):
    rng = np.random.default_rng(0)
    tm, gm, cm = small_cnn(torch, momentum), small_cnn(gradc, momentum), small_cnn(gradc, momentum)
    gm.load_state_dict(tm.state_dict())
    cm.load_state_dict(tm.state_dict())
    topt = torch.optim.SGD(tm.parameters(), lr=0.05)
    gopt = gradc.optim.SGD(gm.parameters(), lr=0.05)
    step = gradc.compile_step(cm, F.cross_entropy, gradc.optim.SGD(cm.parameters(), lr=0.05))
    for _ in range(3):
        x = rng.standard_normal((6, 2, 8, 8)).astype(np.float32)
        y = rng.integers(0, 3, 6)
        topt.zero_grad()
        loss_t = torch.nn.functional.cross_entropy(tm(torch.tensor(x)), torch.tensor(y))
        loss_t.backward()
        topt.step()
        gopt.zero_grad()
        loss_g = F.cross_entropy(gm(gradc.tensor(x)), gradc.tensor(y))
        loss_g.backward()
        gopt.step()
        loss_c = step(x, y)
        np.testing.assert_allclose(float(loss_g), loss_t.item(), rtol=1e-5)
        np.testing.assert_allclose(float(loss_c), loss_t.item(), rtol=1e-5)
    ts = tm.state_dict()
    for model in (gm, cm):
        for k, v in model.state_dict().items():
            np.testing.assert_allclose(v, ts[k].numpy(), rtol=1e-4, atol=1e-5, err_msg=k)
    assert int(cm.state_dict()["1.num_batches_tracked"]) == 3
    # eval mode: running statistics, no update; the compiled forward specializes per mode
    tm.eval(), gm.eval(), cm.eval()
    x = rng.standard_normal((5, 2, 8, 8)).astype(np.float32)
    want = tm(torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(gm(gradc.tensor(x)).detach().numpy(), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gradc.compile(cm)(x), want, rtol=1e-4, atol=1e-5)
    before = cm.state_dict()
    step(x, rng.integers(0, 3, 5))  # an eval-mode step: batch norm uses and keeps its running stats
    assert np.array_equal(cm.state_dict()["1.running_mean"], before["1.running_mean"])


def test_compiled_forward_in_training_mode_updates_running_stats():
    bn_g, bn_t = nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    fwd = gradc.compile(bn_g)
    x = np.random.default_rng(1).standard_normal((8, 3)).astype(np.float32)
    for _ in range(2):
        np.testing.assert_allclose(fwd(x), bn_t(torch.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-6)
    for k, v in bn_t.state_dict().items():
        np.testing.assert_allclose(bn_g.state_dict()[k], v.numpy(), rtol=1e-6, err_msg=k)


def test_traced_batch_norm_training_without_a_compiled_module_is_refused():
    bn = nn.BatchNorm1d(3)
    with pytest.raises(RuntimeError, match="running statistics"):
        gradc.compile(lambda x: bn(x).sum())(np.ones((4, 3), np.float32))


def test_dropout2d_zeroes_whole_channels_and_scales():
    gradc.manual_seed(0)
    x = gradc.ones(8, 16, 3, 3)
    y = F.dropout2d(x, 0.25).numpy()
    per_channel = y.reshape(8, 16, -1)
    assert np.all((per_channel == 0).all(-1) | np.isclose(per_channel, 1 / 0.75).all(-1))
    assert 0.1 < (per_channel[..., 0] == 0).mean() < 0.45
    drop = nn.Dropout2d(0.5)
    drop.eval()
    assert np.array_equal(drop(x).numpy(), x.numpy())


def _cnn_loss(x, w1, w2, b2):
    y = F.relu(F.conv2d(x, w1, stride=2, padding=1))
    y = F.max_pool2d(y, 2, ceil_mode=True)
    y = F.conv2d(y, w2, b2, padding="same", groups=2)
    y = F.avg_pool2d(F.pad(y, (1, 0, 0, 1), mode="reflect"), 2)
    return (y * y).sum()


def _cnn_args(dtype):
    rng = np.random.default_rng(5)
    return [rng.standard_normal(s).astype(dtype) for s in [(2, 3, 9, 9), (4, 3, 3, 3), (4, 2, 3, 3), (4,)]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_native_interpreter_and_eager_agree(dtype):
    args = _cnn_args(dtype)
    tensors = [gradc.tensor(a, requires_grad=True) for a in args]
    loss = _cnn_loss(*tensors)
    loss.backward()
    eager = [float(loss)] + [t.grad.numpy() for t in tensors]
    previous = get_backend()
    results = []
    try:
        for backend in ("native", "interp"):
            set_backend(backend)
            value, grads = gradc.value_and_grad(_cnn_loss, argnums=(0, 1, 2, 3))(*args)
            results.append([float(value)] + list(grads))
    finally:
        set_backend(previous)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-4)
    for native, interp, ref in zip(*results, eager):
        np.testing.assert_allclose(native, interp, **tol)
        np.testing.assert_allclose(interp, ref, **tol)


def test_float64_finite_differences_full_jacobian():
    """Every VJP row (unit cotangents) equals central differences: strided, padded, dilated, grouped conv
    followed by an overlapping max pool (odd sizes, no ties: random float64 inputs)."""
    rng = np.random.default_rng(9)
    x, w = rng.standard_normal((1, 2, 7, 7)), rng.standard_normal((4, 1, 3, 2))

    def f(x, w):
        y = F.conv2d(x, w, stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)
        return F.max_pool2d(y, 2, stride=1)

    out_shape = f(gradc.tensor(x), gradc.tensor(w)).shape
    tensors = [gradc.tensor(x, requires_grad=True), gradc.tensor(w, requires_grad=True)]
    rows = []
    for k in range(int(np.prod(out_shape))):
        ct = np.zeros(int(np.prod(out_shape)))
        ct[k] = 1
        for t in tensors:
            t.grad = None
        f(*tensors).backward(gradc.tensor(ct.reshape(out_shape)))
        rows.append(np.concatenate([t.grad.numpy().ravel() for t in tensors]))
    analytic = np.array(rows)
    flat = np.concatenate([x.ravel(), w.ravel()])

    def at(v):
        return f(gradc.tensor(v[:x.size].reshape(x.shape)), gradc.tensor(v[x.size:].reshape(w.shape))).numpy().ravel()

    numeric = np.zeros_like(analytic)
    for j in range(flat.size):
        step = np.zeros_like(flat)
        step[j] = 1e-6
        numeric[:, j] = (at(flat + step) - at(flat - step)) / 2e-6
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- bad input

BAD = [
    ("channels", lambda m: m.nn.functional.conv2d(m.randn(2, 1, 5, 5), m.randn(4, 3, 3, 3)), RuntimeError,
     "expected input[2, 1, 5, 5] to have 3 channels, but got 1 channels instead"),
    ("groups_weight", lambda m: m.nn.functional.conv2d(m.randn(2, 4, 5, 5), m.randn(3, 2, 3, 3), groups=2),
     RuntimeError, "expected weight to be divisible by 2 at dimension 0"),
    ("groups_input", lambda m: m.nn.functional.conv2d(m.randn(2, 3, 5, 5), m.randn(4, 1, 3, 3), groups=2),
     RuntimeError, "to have 2 channels, but got 3 channels instead"),
    ("kernel_too_big", lambda m: m.nn.functional.conv2d(m.randn(2, 3, 2, 2), m.randn(4, 3, 3, 3)), RuntimeError,
     "Kernel size can't be greater than actual input size"),
    ("negative_padding", lambda m: m.nn.functional.conv2d(m.randn(1, 3, 5, 5), m.randn(4, 3, 3, 3), padding=-1),
     RuntimeError, "negative padding is not supported"),
    ("stride_zero", lambda m: m.nn.functional.conv2d(m.randn(1, 3, 5, 5), m.randn(4, 3, 3, 3), stride=0),
     RuntimeError, "non-positive stride is not supported"),
    ("dilation_zero", lambda m: m.nn.functional.conv2d(m.randn(2, 3, 5, 5), m.randn(4, 3, 3, 3), dilation=0),
     RuntimeError, "non-positive dilation is not supported"),
    ("rank", lambda m: m.nn.functional.conv2d(m.randn(5, 5), m.randn(4, 3, 3, 3)), RuntimeError,
     "Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: [5, 5]"),
    ("rank_1d", lambda m: m.nn.functional.conv1d(m.randn(2, 3, 5, 5), m.randn(4, 3, 3)), RuntimeError,
     "Expected 2D (unbatched) or 3D (batched) input to conv1d"),
    ("same_strided", lambda m: m.nn.functional.conv2d(m.randn(1, 3, 5, 5), m.randn(4, 3, 3, 3), padding="same",
                                                      stride=2), RuntimeError,
     "padding='same' is not supported for strided convolutions"),
    ("padding_string", lambda m: m.nn.functional.conv2d(m.randn(1, 3, 5, 5), m.randn(4, 3, 3, 3), padding="foo"),
     RuntimeError, "Invalid padding string"),
    ("dtype", lambda m: m.nn.functional.conv2d(m.randn(1, 3, 5, 5).double(), m.randn(4, 3, 3, 3)), RuntimeError,
     "expected scalar type Double but found Float"),
    ("bias", lambda m: m.nn.functional.conv2d(m.randn(1, 3, 5, 5), m.randn(4, 3, 3, 3), m.randn(3)), RuntimeError,
     "expected bias to be 1-dimensional with 4 elements"),
    ("transpose_channels", lambda m: m.nn.functional.conv_transpose2d(m.randn(2, 3, 5, 5), m.randn(4, 3, 3, 3)),
     RuntimeError, "expected input[2, 3, 5, 5] to have 4 channels"),
    ("transpose_output_padding", lambda m: m.nn.functional.conv_transpose2d(m.randn(1, 4, 5, 5), m.randn(4, 3, 3, 3),
                                                                            output_padding=1),
     RuntimeError, "output padding must be smaller than either stride or dilation"),
    ("module_in_groups", lambda m: m.nn.Conv2d(3, 4, 3, groups=2), ValueError,
     "in_channels must be divisible by groups"),
    ("module_out_groups", lambda m: m.nn.Conv2d(4, 3, 3, groups=2), ValueError,
     "out_channels must be divisible by groups"),
    ("module_groups_zero", lambda m: m.nn.Conv2d(4, 4, 3, groups=0), ValueError, "groups must be a positive integer"),
    ("module_same_strided", lambda m: m.nn.Conv2d(4, 4, 3, stride=2, padding="same"), ValueError,
     "padding='same' is not supported for strided convolutions"),
    ("module_padding_string", lambda m: m.nn.Conv2d(4, 4, 3, padding="foo"), ValueError, "Invalid padding string"),
    ("pool_pad", lambda m: m.nn.functional.max_pool2d(m.randn(1, 1, 5, 5), 3, padding=2), RuntimeError,
     "pad should be at most half of effective kernel size"),
    ("pool_too_small", lambda m: m.nn.functional.max_pool2d(m.randn(1, 1, 2, 2), 3), RuntimeError,
     "Output size is too small"),
    ("pool_stride_zero", lambda m: m.nn.functional.max_pool2d(m.randn(1, 1, 5, 5), 3, stride=0), RuntimeError,
     "stride should not be zero"),
    ("pool_rank", lambda m: m.nn.functional.max_pool2d(m.randn(5), 3), RuntimeError,
     "non-empty 3D or 4D (batch mode) tensor expected for input"),
    ("avg_pool_pad", lambda m: m.nn.functional.avg_pool2d(m.randn(1, 1, 5, 5), 3, padding=2), RuntimeError,
     "pad should be at most half of effective kernel size"),
    ("bn_stats", lambda m: m.nn.functional.batch_norm(m.randn(2, 3, 4), m.zeros(4), m.ones(4), training=True),
     RuntimeError, "running_mean should contain 3 elements not 4"),
    ("bn_one_value", lambda m: m.nn.functional.batch_norm(m.randn(1, 3), m.zeros(3), m.ones(3), training=True),
     ValueError, "Expected more than 1 value per channel when training"),
    ("bn_module_rank", lambda m: m.nn.BatchNorm2d(3)(m.randn(2, 3)), ValueError, "expected 4D input (got 2D input)"),
    ("group_norm", lambda m: m.nn.functional.group_norm(m.randn(2, 6, 4), 4), RuntimeError,
     "Expected number of channels in input to be divisible by num_groups"),
    ("reflect_too_big", lambda m: m.nn.functional.pad(m.randn(1, 2, 3), (4, 4), mode="reflect"), RuntimeError,
     "Padding size should be less than the corresponding input dimension"),
    ("pad_odd", lambda m: m.nn.functional.pad(m.randn(1, 2, 3), (1,)), RuntimeError,
     "Padding length must be divisible by 2"),
    ("pad_mode", lambda m: m.nn.functional.pad(m.randn(1, 2, 3), (1, 1), mode="foo"), NotImplementedError,
     "Unrecognised padding mode foo"),
    ("interp_corners", lambda m: m.nn.functional.interpolate(m.randn(1, 2, 3, 3), scale_factor=2, mode="nearest",
                                                             align_corners=True), ValueError,
     "align_corners option can only be set with the interpolating modes"),
    ("interp_nothing", lambda m: m.nn.functional.interpolate(m.randn(1, 2, 3, 3)), ValueError,
     "either size or scale_factor should be defined"),
    ("adaptive_rank", lambda m: m.nn.functional.adaptive_avg_pool2d(m.randn(3, 3), 2), RuntimeError,
     "adaptive_avg_pool2d(): Expected 3D or 4D tensor, but got [3, 3]"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_raises_like_torch(case):
    _, fn, exc, words = case
    with pytest.raises(exc) as theirs:
        fn(torch)
    assert words in str(theirs.value), "the expected words are PyTorch's own"
    with pytest.raises(exc) as ours:
        fn(gradc)
    assert words in str(ours.value)


def test_bad_input_inside_compile_step_is_reported_at_trace_time():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2))
    step = gradc.compile_step(model, F.cross_entropy, gradc.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(RuntimeError, match="to have 3 channels, but got 1 channels instead"):
        step(np.zeros((2, 1, 3, 3), np.float32), np.zeros(2, np.int64))


def _resnet_like(lib):
    nn, F = lib.nn, lib.nn.functional

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            return F.relu(self.bn2(self.conv2(out)) + self.down(x))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.MaxPool2d(3, 2, 1))
            self.block = Block(8, 16, 2)
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(16, 5)

        def forward(self, x):
            return self.fc(lib.flatten(self.pool(self.up(self.block(self.stem(x)))), 1))
    return Net()


def test_unseen_resnet_like_model_trains_like_torch_eager_and_compiled():
    """Residual block, stride-2 and 1x1 convs, padded max pool, bilinear upsample, SGD with momentum."""
    rng = np.random.default_rng(4)
    tm, gm, cm = _resnet_like(torch), _resnet_like(gradc), _resnet_like(gradc)
    gm.load_state_dict(tm.state_dict())
    cm.load_state_dict(tm.state_dict())
    topt = torch.optim.SGD(tm.parameters(), lr=0.1, momentum=0.9)
    gopt = gradc.optim.SGD(gm.parameters(), lr=0.1, momentum=0.9)
    step = gradc.compile_step(cm, F.cross_entropy, gradc.optim.SGD(cm.parameters(), lr=0.1, momentum=0.9))
    for _ in range(3):
        x, y = rng.standard_normal((4, 3, 15, 15)).astype(np.float32), rng.integers(0, 5, 4)
        topt.zero_grad()
        want = torch.nn.functional.cross_entropy(tm(torch.tensor(x)), torch.tensor(y))
        want.backward()
        topt.step()
        gopt.zero_grad()
        got = F.cross_entropy(gm(gradc.tensor(x)), gradc.tensor(y))
        got.backward()
        gopt.step()
        np.testing.assert_allclose(float(got), want.item(), rtol=1e-5)
        np.testing.assert_allclose(float(step(x, y)), want.item(), rtol=1e-5)
    for model in (gm, cm):
        for k, v in tm.state_dict().items():
            np.testing.assert_allclose(model.state_dict()[k], v.numpy(), rtol=1e-4, atol=1e-5, err_msg=k)
