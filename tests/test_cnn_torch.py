"""CNN functions equal PyTorch's: forward and gradients in float32 and float64, eager (issue 11).

Each case is written once against a module `m` (torch or gradc) and its `F`, run on the same inputs
under both and compared: the forward value and every input's gradient for a fixed random cotangent.
Strides, paddings, dilations, groups and odd sizes (7, 9, 17) are mixed in.
"""

import numpy as np
import pytest

import gradc

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def randn(rng, *shape):
    return rng.standard_normal(shape)


# name -> (fn(m, F, *tensors), list of input shapes); every input is differentiable
CASES = {
    "conv2d_plain": (lambda m, F, x, w, b: F.conv2d(x, w, b), [(2, 3, 9, 8), (4, 3, 3, 2), (4,)]),
    "conv2d_strided_groups": (lambda m, F, x, w, b: F.conv2d(x, w, b, stride=(2, 1), padding=(1, 2), dilation=(1, 2),
                                                             groups=2), [(2, 4, 9, 7), (6, 2, 3, 3), (6,)]),
    "conv2d_same": (lambda m, F, x, w: F.conv2d(x, w, padding="same", dilation=2), [(1, 3, 7, 9), (2, 3, 4, 3)]),
    "conv2d_valid_unbatched": (lambda m, F, x, w: F.conv2d(x, w, padding="valid", stride=3),
                               [(3, 17, 9), (5, 3, 2, 2)]),
    "conv2d_depthwise": (lambda m, F, x, w, b: F.conv2d(x, w, b, padding=1, groups=4),
                         [(2, 4, 7, 7), (8, 1, 3, 3), (8,)]),
    "conv1d": (lambda m, F, x, w, b: F.conv1d(x, w, b, stride=3, padding=2, groups=2), [(3, 4, 17), (6, 2, 4), (6,)]),
    "conv1d_same_dilated": (lambda m, F, x, w: F.conv1d(x, w, padding="same", dilation=3), [(2, 3, 9), (2, 3, 4)]),
    "conv_transpose2d": (lambda m, F, x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1,
                                                                  groups=2), [(2, 4, 5, 6), (4, 3, 3, 2), (6,)]),
    "conv_transpose2d_dilated": (lambda m, F, x, w: F.conv_transpose2d(x, w, stride=(1, 2), padding=(3, 0), dilation=2),
                                 [(2, 4, 5, 6), (4, 3, 3, 3)]),
    "conv_transpose1d": (lambda m, F, x, w, b: F.conv_transpose1d(x, w, b, stride=3, padding=2, output_padding=2),
                         [(2, 3, 7), (3, 2, 5), (2,)]),
    "max_pool2d": (lambda m, F, x: F.max_pool2d(x, 2), [(2, 3, 9, 8)]),
    "max_pool2d_padded": (lambda m, F, x: F.max_pool2d(x, 3, stride=2, padding=1), [(2, 3, 9, 8)]),
    "max_pool2d_ceil_dilated": (lambda m, F, x: F.max_pool2d(x, (3, 2), (2, 3), (1, 1), (2, 1), ceil_mode=True),
                                [(2, 3, 9, 8)]),
    "max_pool1d": (lambda m, F, x: F.max_pool1d(x, 4, stride=3, padding=2, ceil_mode=True), [(2, 3, 17)]),
    "avg_pool2d": (lambda m, F, x: F.avg_pool2d(x, 3, stride=2, padding=1), [(2, 3, 9, 8)]),
    "avg_pool2d_ceil_nopad": (lambda m, F, x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
                              [(2, 3, 9, 8)]),
    "avg_pool2d_divisor": (lambda m, F, x: F.avg_pool2d(x, (3, 2), divisor_override=5), [(1, 2, 9, 7)]),
    "avg_pool1d": (lambda m, F, x: F.avg_pool1d(x, 4, 3, 2, ceil_mode=True, count_include_pad=False), [(2, 3, 17)]),
    "adaptive_avg_pool2d": (lambda m, F, x: F.adaptive_avg_pool2d(x, (4, 3)), [(2, 3, 9, 8)]),
    "adaptive_avg_pool2d_none": (lambda m, F, x: F.adaptive_avg_pool2d(x, (None, 2)), [(2, 3, 7, 9)]),
    "adaptive_avg_pool1d": (lambda m, F, x: F.adaptive_avg_pool1d(x, 5), [(2, 3, 17)]),
    "adaptive_max_pool2d": (lambda m, F, x: F.adaptive_max_pool2d(x, (4, 3)), [(2, 3, 9, 8)]),
    "batch_norm_eval": (lambda m, F, x, w, b: F.batch_norm(x, x.detach()[0, :, 0] * 0 + 0.5,
                                                                       x.detach()[0, :, 0] * 0 + 2.0, w, b),
                        [(4, 3, 7), (3,), (3,)]),
    "batch_norm_train": (lambda m, F, x, w, b: F.batch_norm(x, None, None, w, b, training=True, eps=1e-3),
                         [(4, 3, 5, 2), (3,), (3,)]),
    "group_norm": (lambda m, F, x, w, b: F.group_norm(x, 2, w, b), [(3, 6, 7), (6,), (6,)]),
    "instance_norm": (lambda m, F, x, w, b: F.instance_norm(x, weight=w, bias=b), [(2, 3, 5, 4), (3,), (3,)]),
    "pad_constant": (lambda m, F, x: F.pad(x, (1, 2, 0, 3), value=1.5), [(2, 3, 4)]),
    "pad_negative": (lambda m, F, x: F.pad(x, (-1, 2, 1, -2)), [(2, 5, 4)]),
    "pad_reflect": (lambda m, F, x: F.pad(x, (2, 3, 1, 2), mode="reflect"), [(2, 3, 5, 4)]),
    "pad_replicate": (lambda m, F, x: F.pad(x, (2, 1, 3, 0), mode="replicate"), [(2, 3, 5, 4)]),
    "pad_reflect_1d": (lambda m, F, x: F.pad(x, (3, 1), mode="reflect"), [(2, 3, 7)]),
    "pad_circular": (lambda m, F, x: F.pad(x, (1, 2, 2, 1), mode="circular"), [(1, 2, 4, 5)]),
    "interpolate_nearest": (lambda m, F, x: F.interpolate(x, scale_factor=2), [(2, 3, 4, 3)]),
    "interpolate_nearest_size": (lambda m, F, x: F.interpolate(x, size=(7, 5)), [(2, 3, 4, 3)]),
    "interpolate_bilinear": (lambda m, F, x: F.interpolate(x, size=(7, 9), mode="bilinear", align_corners=False),
                             [(2, 3, 4, 5)]),
    "interpolate_bilinear_corners": (lambda m, F, x: F.interpolate(x, scale_factor=(2, 1.5), mode="bilinear",
                                                                   align_corners=True), [(1, 2, 5, 4)]),
    "interpolate_linear": (lambda m, F, x: F.interpolate(x, size=9, mode="linear"), [(2, 3, 4)]),
}


def run(lib, case, arrays, cotangent_seed):
    fn, _ = CASES[case]
    if lib is torch:
        tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
    else:
        tensors = [gradc.tensor(a, requires_grad=True) for a in arrays]
    out = fn(lib, lib.nn.functional, *tensors)
    value = out.detach().numpy()
    g = np.random.default_rng(cotangent_seed).standard_normal(value.shape).astype(value.dtype)
    out.backward(torch.tensor(g) if lib is torch else gradc.tensor(g))
    return value, [t.grad.numpy() if t.grad is not None else np.zeros_like(a) for t, a in zip(tensors, arrays)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", sorted(CASES))
def test_forward_and_gradients_equal_torch(case, dtype):
    rng = np.random.default_rng(abs(hash(case)) % 2**32)
    arrays = [randn(rng, *s).astype(dtype) for s in CASES[case][1]]
    if "max_pool" in case:  # integer-valued inputs: ties in every window (the first maximum gets the gradient)
        arrays = [np.round(a * 2).astype(dtype) for a in arrays]
    got, got_grads = run(gradc, case, arrays, 7)
    want, want_grads = run(torch, case, arrays, 7)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == np.float64 else dict(rtol=2e-4, atol=2e-5)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, **tol)
    for i, (a, b) in enumerate(zip(got_grads, want_grads)):
        np.testing.assert_allclose(a, b, err_msg=f"gradient of input {i}", **tol)


def test_max_pool_return_indices_and_nan():
    x = np.round(np.random.default_rng(0).standard_normal((2, 3, 9, 8)) * 2)
    x[0, 0, 1, 1] = x[0, 0, 0, 1] = x[1, 2, 5, 5] = np.nan
    for kwargs in (dict(kernel_size=2), dict(kernel_size=(3, 2), stride=(2, 3), padding=1, dilation=(2, 1),
                                             ceil_mode=True)):
        gx, tx = gradc.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        gv, gi = gradc.nn.functional.max_pool2d(gx, return_indices=True, **kwargs)
        tv, ti = torch.nn.functional.max_pool2d(tx, return_indices=True, **kwargs)
        np.testing.assert_array_equal(gv.detach().numpy(), tv.detach().numpy())
        np.testing.assert_array_equal(gi.numpy(), ti.numpy())
        gv.sum().backward(), tv.sum().backward()
        np.testing.assert_array_equal(gx.grad.numpy(), tx.grad.numpy())
    v, i = gradc.nn.functional.max_pool1d(gradc.tensor(x[0, :, 0]), 3, return_indices=True)
    tv, ti = torch.nn.functional.max_pool1d(torch.tensor(x[0, :, 0]), 3, return_indices=True)
    np.testing.assert_array_equal(i.numpy(), ti.numpy())


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("native", [False, True], ids=["eager", "native"])
def test_max_pool_ties_and_nan_without_indices(native, channels_last):
    """The paths without return_indices (a select chain over up to 9 taps, the first-max mask of windows
    above; each NCHW or channels last, chosen by the source's layout: an NHWC value permuted to NCHW):
    ties send the gradient to the first maximum, a NaN window gives NaN and its (last) NaN gets the
    gradient, as PyTorch; eager and compiled natively."""
    x = np.round(np.random.default_rng(1).standard_normal((2, 3, 9, 8)) * 2)
    x[0, 0, 1, 1] = x[0, 0, 0, 1] = x[1, 2, 5, 5] = np.nan
    x[1, 1, 2:4, 2:4] = np.inf
    x[0, 1, 4:6, 4:6] = -0.0
    for kwargs in (dict(kernel_size=2), dict(kernel_size=(3, 2), stride=(2, 3), padding=1, dilation=(2, 1),
                                             ceil_mode=True), dict(kernel_size=(4, 3), stride=2, padding=1)):
        tx = torch.tensor(x, requires_grad=True)
        tv = torch.nn.functional.max_pool2d(tx, **kwargs)
        weights = np.random.default_rng(2).standard_normal(tuple(tv.shape))
        (tv * torch.tensor(weights)).sum().backward()

        def loss(a):
            if channels_last:  # NHWC data seen through a permute, as a channels-last conv result
                a = gradc.permute(gradc.permute(a, (0, 2, 3, 1)) * 1.0, (0, 3, 1, 2))
            return (gradc.nn.functional.max_pool2d(a, **kwargs) * gradc.tensor(weights)).sum()
        if native:
            _, gx = gradc.value_and_grad(loss)(x)
            gv = gradc.compile(lambda a: gradc.nn.functional.max_pool2d(a, **kwargs))(x)
        else:
            a = gradc.tensor(x, requires_grad=True)
            src = gradc.permute(gradc.permute(a, (0, 2, 3, 1)) * 1.0, (0, 3, 1, 2)) if channels_last else a
            gv = gradc.nn.functional.max_pool2d(src, **kwargs)
            (gv * gradc.tensor(weights)).sum().backward()
            gv, gx = gv.detach().numpy(), a.grad.numpy()
        np.testing.assert_array_equal(np.asarray(gv), tv.detach().numpy())
        # (overlapping windows add their gradients in another order than PyTorch: an ulp apart)
        np.testing.assert_allclose(np.asarray(gx), tx.grad.numpy(), rtol=1e-14, atol=1e-15)


def test_grad_fn_names():
    x = gradc.randn(1, 2, 6, 6, requires_grad=True)
    w = gradc.randn(3, 2, 3, 3, requires_grad=True)
    F = gradc.nn.functional
    assert F.conv2d(x, w).grad_fn.name() == "ConvolutionBackward0"
    assert F.max_pool2d(x, 2).grad_fn.name() == "MaxPool2DWithIndicesBackward0"
    assert F.avg_pool2d(x, 2).grad_fn.name() == "AvgPool2DBackward0"


def test_second_order_through_conv_and_pool_matches_torch():
    """The adjoint is ordinary IR: grad of (grad . v) through conv + max_pool + batch stats."""
    rng = np.random.default_rng(3)
    x, w = randn(rng, 2, 2, 7, 7), randn(rng, 3, 2, 3, 3)

    def loss(m, F, x, w):
        y = F.max_pool2d(F.conv2d(x, w, padding=1), 2)
        return (y * y * y).sum()

    results = []
    for lib in (gradc, torch):
        tx = lib.tensor(x, requires_grad=True)
        tw = lib.tensor(w, requires_grad=True)
        (gw,) = lib.autograd.grad(loss(lib, lib.nn.functional, tx, tw), [tw], create_graph=True)
        (gw * gw).sum().backward()
        results.append((tx.grad.numpy(), tw.grad.numpy()))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
