"""Rows whose point is their bad inputs: each must raise PyTorch's exception type in gradc too."""

import numpy as np

from .dsl import Sample, row, unary

F = "torch.nn.functional."
X = np.ones((3, 4), np.float32)
V = np.ones(4, np.float32)
E = np.ones((0, 3), np.float32)
OK = unary(special=False, shapes=((3, 4),))


def bad(name, *errors, samples=OK, **options):
    """A row checked on `samples` as usual and on each bad input (args tuple, or (args, kwargs))."""
    errs = [Sample(e[0], e[1]) if len(e) == 2 and isinstance(e[1], dict) else Sample(e) for e in errors]
    return row(name, samples, errors=errs, **options)


ROWS = [
    bad("torch.flip", ((X, (2,)), {}), samples=unary(special=False, shapes=((3, 4),), dims=(0,))),
    bad("torch.cumprod", ((X,), {"dim": 2}), samples=unary(special=False, shapes=((3, 4),), dim=1)),
    bad("torch.prod", ((X,), {"dim": -3})), bad("torch.argmin", ((X,), {"dim": 5}), grad=False),
    bad("torch.movedim", (X, (0, 0), (0, 1)), samples=unary(special=False, shapes=((3, 4),), source=0, destination=1)),
    bad("torch.tile", (X, (-1, 2)), samples=unary(special=False, shapes=((3, 4),), dims=(2, 1))),
    bad("torch.gather", (X, 1, np.zeros((3, 1), np.float32)),
        samples=lambda rng: [Sample((X, 1, np.zeros((3, 1), np.int64)))]),
    bad("torch.scatter", (X, 0, np.array([[0, 3, 1, 0]]), np.ones((1, 4), np.float32)),
        (X, 0, np.array([0, 1]), np.ones((1, 4), np.float32)),
        samples=lambda rng: [Sample((X, 0, np.array([[0, 2, 1, 0]]), np.full((1, 4), 2.0, np.float32)))]),
    bad("torch.index_copy", (X, 0, np.array([0, 1]), np.ones((1, 4), np.float32)),
        samples=lambda rng: [Sample((X, 0, np.array([2, 0]), np.full((2, 4), 2.0, np.float32)))]),
    bad("torch.index_add", (X, 0, np.array([0, 1]), np.ones((1, 4), np.float32)),
        samples=lambda rng: [Sample((X, 0, np.array([2, 0, 2]), np.full((3, 4), 2.0, np.float32)))]),
    bad("torch.sort", ((V,), {"dim": -2})), bad("torch.roll", (X, 1, 2), samples=unary(special=False, shapes=((3, 4),),
                                                                                         shifts=1, dims=1)),
    bad(F + "kl_div", ((X, X), {"reduction": "avg"}), samples=lambda rng: [Sample((np.log(X / 4), X / 4),
                                                                                 {"reduction": "batchmean"})]),
    bad(F + "huber_loss", ((X, X), {"delta": -1.0}), samples=lambda rng: [Sample((X, 2 * X))]),
    bad(F + "poisson_nll_loss", ((X, X), {"reduction": "avg"}), samples=lambda rng: [Sample((X, 2 * X))]),
    bad(F + "soft_margin_loss", ((X, X), {"reduction": "avg"}), samples=lambda rng: [Sample((X, -X))], wrt=(0,)),
    bad(F + "triplet_margin_loss", (X, X, V), samples=lambda rng: [Sample((X, 2 * X, -X))]),
    bad(F + "cosine_similarity", (X, np.ones((3, 5), np.float32)), samples=lambda rng: [Sample((X, 2 * X))]),
    bad(F + "gaussian_nll_loss", (X, X, np.ones((2, 4), np.float32)),
        samples=lambda rng: [Sample((X, 2 * X, np.ones((3, 1), np.float32)))]),
    bad(F + "celu", ((X,), {"alpha": 0.0})), bad(F + "softshrink", ((X,), {"lambd": -1.0})),
    bad("torch.nn.L1Loss", (X, np.ones((3, 5), np.float32)), samples=lambda rng: [Sample((X, 2 * X))]),
    bad("torch.nn.MSELoss", (X, np.ones((2, 4), np.float32)), samples=lambda rng: [Sample((X, 2 * X))]),
    bad("torch.nn.functional.mse_loss", ((X, X), {"reduction": "avg"}), samples=lambda rng: [Sample((X, 2 * X))]),
    bad("torch.nn.functional.nll_loss", (X, np.array([0, 1, 4])),
        samples=lambda rng: [Sample((X, np.array([0, 1, 3])))]),
    bad("torch.squeeze", ((X,), {"dim": 3})), bad("torch.unsqueeze", (X, 3), samples=unary(special=False,
                                                                                         shapes=((3, 4),), dim=2)),
    bad("torch.mean", ((X,), {"dim": 2})), bad("torch.amax", ((X,), {"dim": -3})),
    # reductions without an identity over an empty dim: IndexError (RuntimeError without a dim), as PyTorch
    *[bad(f"torch.{name}", ((E,), {"dim": 0}), (E,), grad=name.startswith("am"))
      for name in ("amax", "amin", "argmax", "argmin")],
    bad("torch.max", ((E,), {"dim": 0}), (E,)), bad("torch.min", ((E,), {"dim": 0}), (E,)),
    bad("torch.aminmax", (E,), samples=lambda rng: [Sample((X,))], grad=False),
    bad("torch.softmax", ((X,), {"dim": 2}), samples=unary(special=False, shapes=((3, 4),), dim=1)),
]
