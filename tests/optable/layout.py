"""Rows: shape and movement ops, indexing, scatters, matmul, dtype conversions."""

import numpy as np

from .dsl import DType, Sample, both, build, row, rows


def f32(rng, *shape):
    return rng.normal(size=shape).astype(np.float32)


def _scatter(rng):
    x = f32(rng, 3, 9)
    idx = np.stack([rng.permutation(3) for _ in range(9)], axis=1)[:2]  # unique per column
    return [(x, 0, idx, f32(rng, 2, 9)), (x, 1, np.stack([rng.permutation(9)[:4] for _ in range(3)]), f32(rng, 3, 4)),
            (f32(rng, 4, 7), -2, np.stack([rng.permutation(4)[:3] for _ in range(5)], axis=1), f32(rng, 3, 5))]


def _scatter_add(rng):
    x = f32(rng, 3, 9)
    return [(x, 0, rng.integers(0, 3, size=(5, 9)), f32(rng, 5, 9)),
            (x, 1, rng.integers(0, 9, size=(2, 17)), f32(rng, 2, 17)),
            (f32(rng, 8), 0, rng.integers(0, 8, size=(7,)), f32(rng, 7))]


def _index_add(rng):
    return [(f32(rng, 5, 7), 0, rng.integers(0, 5, size=(9,)), f32(rng, 9, 7)),
            ((f32(rng, 3, 8), 1, rng.integers(0, 8, size=(4,)), f32(rng, 3, 4)), {"alpha": 2.0})]


def _index_copy(rng):
    return [(f32(rng, 5, 7), 0, rng.permutation(5)[:3], f32(rng, 3, 7)),
            (f32(rng, 3, 9), -1, rng.permutation(9)[:4], f32(rng, 3, 4))]


def _one_hot(rng):
    return [((rng.integers(0, 3, size=(2, 7)),), {"num_classes": 4}), (rng.integers(0, 5, size=(9,)),),
            ((np.array([], np.int64),), {"num_classes": 3})]


X = build(lambda rng: [(f32(rng, 3, 9),)])
X3 = build(lambda rng: [(f32(rng, 2, 7, 3), 0, 2)])


def _gather(rng):
    x = f32(rng, 4, 9)
    return [(x, 1, rng.integers(0, 9, size=(4, 1))), (x, 0, rng.integers(0, 4, size=(1, 9))),
            (x, -1, rng.integers(0, 9, size=(4, 1)))]


def _getitem(rng):
    x = f32(rng, 4, 9, 3)
    return [(x, 1), (x, (slice(1, 3), 2)), (x, (Ellipsis, 1)), (x, (None, slice(None, None, 2))),
            (x, (-1, slice(2, 8, 3), 0))]


ROWS = [
    *both("reshape", build(lambda rng: [(f32(rng, 3, 9), (9, 3)), (f32(rng, 3, 9), (-1,)),
                                         (f32(rng, 2, 7, 3), (7, -1))])),
    row("Tensor.view", build(lambda rng: [(f32(rng, 3, 9), (27,)), (f32(rng, 3, 9), 9, 3)])),
    row("Tensor.view_as", build(lambda rng: [(f32(rng, 3, 9), f32(rng, 9, 3))])),
    *both("permute", build(lambda rng: [(f32(rng, 2, 7, 3), (2, 0, 1)), (f32(rng, 3, 9), (-1, 0))])),
    *both("transpose", build(lambda rng: [(f32(rng, 2, 7, 3), 0, 2), (f32(rng, 3, 9), -1, 0)])),
    *both("t", X), row("Tensor.T", X, native=False, grad=False),
    row("Tensor.expand", build(lambda rng: [(f32(rng, 3, 1), 3, 9), (f32(rng, 9), (2, -1))])),
    row("Tensor.expand_as", build(lambda rng: [(f32(rng, 3, 1), f32(rng, 3, 9))])),
    *both("unsqueeze", build(lambda rng: [(f32(rng, 3, 9), 0), (f32(rng, 3, 9), -1), (f32(rng, 7), 1)])),
    *both("squeeze", build(lambda rng: [(f32(rng, 3, 1, 9),), (f32(rng, 1, 7), 0), (f32(rng, 3, 1), -1)])),
    *both("flatten", build(lambda rng: [(f32(rng, 2, 7, 3),), (f32(rng, 2, 7, 3), 1), (f32(rng, 2, 7, 3), 0, 1)])),
    *both("gather", build(_gather)),
    row("Tensor.__getitem__", build(_getitem)),
    *both("matmul", build(lambda rng: [(f32(rng, 3, 9), f32(rng, 9, 7)), (f32(rng, 9), f32(rng, 9, 2)),
                                        (f32(rng, 2, 3, 8), f32(rng, 8, 5)), (f32(rng, 17), f32(rng, 17))])),
    *both("mm", build(lambda rng: [(f32(rng, 3, 9), f32(rng, 9, 7))])),
    *rows("Tensor.__matmul__", build(lambda rng: [(f32(rng, 3, 9), f32(rng, 9, 7))])),
    *both("flip", build(lambda rng: [(f32(rng, 3, 9), (0,)), (f32(rng, 2, 7, 3), (0, -1)), (f32(rng, 17), [0])])),
    *both("fliplr", X), *both("flipud", X),
    *both("roll", build(lambda rng: [(f32(rng, 3, 9), 2, 1), (f32(rng, 3, 9), 4), (f32(rng, 2, 7, 3), (1, -2), (0, 1)),
                                      (f32(rng, 8), -3, 0)])),
    *both("movedim", build(lambda rng: [(f32(rng, 2, 7, 3), 0, -1), (f32(rng, 2, 7, 3), (0, 1), (2, 0))])),
    *both("moveaxis", build(lambda rng: [(f32(rng, 2, 7, 3), 1, 0)])),
    *both("tile", build(lambda rng: [(f32(rng, 3, 9), (2, 1)), (f32(rng, 7), (2, 3)), (f32(rng, 2, 3, 1), (2,))])),
    *both("scatter", build(_scatter)),
    row("torch.scatter", build(lambda rng: [((f32(rng, 3, 9), 0, np.stack([rng.permutation(3) for _ in range(9)], 1)),
                                             {"value": 2.5})])),
    *both("scatter_add", build(_scatter_add)), *both("index_add", build(_index_add)),
    *both("index_copy", build(_index_copy)),
    # duplicate indices: the last write along dim stays, as PyTorch's CPU loop (values only: PyTorch hands every
    # duplicate the gradient, gradc only the element that stays)
    *both("scatter", build(lambda rng: [(f32(rng, 3, 9), 0, rng.integers(0, 3, size=(5, 9)), f32(rng, 5, 9)),
                                        (f32(rng, 8), 0, rng.integers(0, 3, size=(7,)), f32(rng, 7))]), grad=False),
    *both("index_copy", build(lambda rng: [(f32(rng, 5, 7), 0, np.array([3, 1, 3, 3, 0]), f32(rng, 5, 7))]),
          grad=False),
    row("torch.nn.functional.one_hot", build(_one_hot), grad=False),
    row("Tensor.float", build(lambda rng: [(rng.integers(0, 5, size=(9,)),), (f32(rng, 3, 9).astype(np.float64),)])),
    row("Tensor.double", X, node=False),  # PyTorch returns float64 input itself (no node), gradc a copy
    row("Tensor.long", X, grad=False),
    row("Tensor.to", build(lambda rng: [(f32(rng, 3, 9), DType("float64")), (f32(rng, 7), DType("int64"))]),
        grad=False),
    row("Tensor.type_as", build(lambda rng: [(f32(rng, 3, 9), np.ones(2))]), node=False),  # as Tensor.double
    # integer and bool tensors through the movement ops (gather/where on int64 and i1)
    row("torch.flip", build(lambda rng: [(rng.integers(-9, 9, size=(3, 9)), (0, 1)),
                                         (rng.uniform(size=(7,)) > 0.5, (0,))]), grad=False),
    row("torch.roll", build(lambda rng: [(rng.integers(-9, 9, size=(3, 9)), 2, 1)]), grad=False),
    row("torch.tile", build(lambda rng: [(rng.uniform(size=(2, 3)) > 0.5, (2, 2))]), grad=False),
    row("torch.scatter_add", build(lambda rng: [(rng.integers(0, 5, size=(3, 9)), 0, rng.integers(0, 3, size=(2, 9)),
                                                 rng.integers(0, 5, size=(2, 9)))]), grad=False),
    row("torch.cumsum", build(lambda rng: [((rng.uniform(size=(3, 9)) > 0.5, 1), {})]), grad=False),
    # bad inputs
    row("torch.reshape", build(lambda rng: [(f32(rng, 3, 9), (9, 3))]),
        errors=[Sample((np.ones((3, 9), np.float32), (4, 7)))]),
    row("torch.matmul", build(lambda rng: [(f32(rng, 3, 9), f32(rng, 9, 7))]),
        errors=[Sample((np.ones((3, 9), np.float32), np.ones((8, 2), np.float32)))]),
    row("torch.transpose", X3, grad=False, native=False, errors=[Sample((np.ones((3, 9), np.float32), 0, 2))]),
    row("torch.nn.functional.one_hot", build(_one_hot), grad=False,
        errors=[Sample((np.array([1, -1]),)), Sample((np.array([1, 5]), 3)), Sample((np.ones(3, np.float32),))]),
    row("torch.scatter_add", build(_scatter_add),
        errors=[Sample((np.ones((3, 4), np.float32), 0, np.array([[0, 5, 1, 0]]), np.ones((1, 4), np.float32)))]),
    row("torch.index_add", build(_index_add),
        errors=[Sample((np.ones((3, 4), np.float32), 0, np.array([0.0]), np.ones((1, 4), np.float32)))]),
    row("torch.roll", build(lambda rng: [(f32(rng, 3, 9), 2, 1)]),
        errors=[Sample((np.ones((3, 4), np.float32), (1, 2), 0))]),
    row("torch.movedim", build(lambda rng: [(f32(rng, 2, 7, 3), 0, -1)]),
        errors=[Sample((np.ones((3, 4), np.float32), (0, 1), (0,)))]),
]
