"""Rows for the names the CNN, transformer, recurrent and API work added (one line each, like every area)."""

import numpy as np

from .dsl import build, row, rows


def f32(rng, *shape):
    return rng.normal(size=shape).astype(np.float32)


X = build(lambda rng: [(f32(rng, 3, 9),), (f32(rng, 2, 7, 3),)])
SQUARE = build(lambda rng: [(f32(rng, 7, 7),), (f32(rng, 2, 9, 9),), (f32(rng, 3, 8),)])
IMAGES = build(lambda rng: [(f32(rng, 2, 3, 9, 8),), (f32(rng, 1, 2, 7, 7),)])

ROWS = [
    # pointwise primitives of the API work
    *rows("torch.sin Tensor.sin torch.cos Tensor.cos", X),
    # transformer tensor ops (composites of pad, slice, where, gather)
    # list arguments: values here; their gradients are checked in tests/test_transformer_ops.py
    row("torch.cat", build(lambda rng: [([f32(rng, 3, 9), f32(rng, 2, 9)],),
                                         (([f32(rng, 3, 4), f32(rng, 3, 7)], 1), {}),
                                         (([f32(rng, 2, 7, 3), f32(rng, 2, 7, 1)], -1), {})]), grad=False, node=False),
    row("torch.stack", build(lambda rng: [([f32(rng, 3, 9), f32(rng, 3, 9)],), (([f32(rng, 7), f32(rng, 7)], 1), {})]),
        grad=False, node=False),
    # split/chunk/unbind/norm/sdpa/adaptive pooling: values and gradients as PyTorch; the grad_fn names differ
    # (gradc names the node of the composite's last primitive)
    *rows("torch.split Tensor.split", build(lambda rng: [(f32(rng, 9, 3), 4), (f32(rng, 3, 9), [2, 7], 1)]),
          node=False),
    *rows("torch.chunk Tensor.chunk", build(lambda rng: [(f32(rng, 9, 3), 3), (f32(rng, 3, 8), 3, 1)]), node=False),
    *rows("torch.unbind Tensor.unbind", build(lambda rng: [(f32(rng, 3, 9),), (f32(rng, 2, 7, 3), 1)]), node=False),
    *rows("torch.narrow Tensor.narrow", build(lambda rng: [(f32(rng, 9, 3), 0, 2, 5), (f32(rng, 3, 9), -1, 1, 7)])),
    *rows("torch.tril Tensor.tril torch.triu Tensor.triu", SQUARE),
    row("torch.tril", build(lambda rng: [(f32(rng, 7, 9), 1), (f32(rng, 8, 8), -2)])),
    row("torch.masked_fill", build(lambda rng: [(f32(rng, 3, 9), rng.uniform(size=(3, 9)) > 0.5, -1.5),
                                                (f32(rng, 2, 7, 3), rng.uniform(size=(7, 1)) > 0.5, 0.0)])),
    *rows("torch.index_select Tensor.index_select",
          build(lambda rng: [(f32(rng, 5, 7), 0, rng.integers(0, 5, size=(9,))),
                             (f32(rng, 3, 9), 1, rng.integers(0, 9, size=(4,)))])),
    row("Tensor.repeat", build(lambda rng: [(f32(rng, 3, 1), 2, 9), (f32(rng, 7), 3)])),
    *rows("torch.var Tensor.var torch.std Tensor.std",
          build(lambda rng: [(f32(rng, 3, 9),), ((f32(rng, 3, 9), 1), {"keepdim": True}),
                             ((f32(rng, 2, 7, 3), (0, 2)), {"correction": 0})])),
    *rows("torch.logsumexp Tensor.logsumexp", build(lambda rng: [(f32(rng, 3, 9), 1), (f32(rng, 2, 7, 3), -1, True)])),
    *rows("torch.norm Tensor.norm", build(lambda rng: [(f32(rng, 3, 9),), ((f32(rng, 3, 9),), {"dim": 1})]),
          node=False),
    row("torch.nn.functional.normalize", build(lambda rng: [(f32(rng, 3, 9),), ((f32(rng, 3, 9),), {"dim": 0})])),
    row("torch.nn.functional.scaled_dot_product_attention",
        build(lambda rng: [(f32(rng, 2, 3, 7, 8), f32(rng, 2, 3, 9, 8), f32(rng, 2, 3, 9, 5)),
                           ((f32(rng, 1, 2, 9, 4), f32(rng, 1, 2, 9, 4), f32(rng, 1, 2, 9, 4)), {"is_causal": True})]),
        node=False),
    # convolution, pooling and normalization
    row("torch.nn.functional.conv2d", build(lambda rng: [(f32(rng, 2, 3, 9, 8), f32(rng, 4, 3, 3, 3), f32(rng, 4)),
                                                         ((f32(rng, 1, 4, 7, 7), f32(rng, 4, 2, 3, 3)),
                                                          {"stride": 2, "padding": 1, "groups": 2})])),
    row("torch.nn.functional.conv1d", build(lambda rng: [(f32(rng, 2, 3, 17), f32(rng, 5, 3, 3)),
                                                         ((f32(rng, 1, 2, 9), f32(rng, 2, 2, 2)), {"dilation": 2})])),
    *rows("torch.nn.functional.max_pool2d torch.nn.functional.avg_pool2d",
          build(lambda rng: [(f32(rng, 2, 3, 9, 8), 2), (f32(rng, 1, 2, 7, 7), 3, 2, 1)])),
    row("torch.nn.functional.adaptive_avg_pool2d", build(lambda rng: [(f32(rng, 2, 3, 9, 8), 1),
                                                                      (f32(rng, 1, 2, 7, 7), (3, 2))]), node=False),
    row("torch.nn.functional.pad", build(lambda rng: [(f32(rng, 2, 3, 9), (1, 2)),
                                                      ((f32(rng, 1, 2, 7, 7), (1, 1, 2, 0)), {"mode": "reflect"})])),
    row("torch.nn.MaxPool2d", IMAGES, init={"kernel_size": 2}),
    row("torch.nn.AvgPool2d", IMAGES, init={"kernel_size": 3, "stride": 2}),
]
