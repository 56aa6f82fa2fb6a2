"""Rows: torch.nn.functional activations and losses, and the nn modules."""

import numpy as np

from .dsl import Sample, build, row, rows, samples, unary

F = "torch.nn.functional."
REDUCTIONS = ({}, {"reduction": "sum"}, {"reduction": "none"})


def f32(rng, *shape, lo=-2.0, hi=2.0):
    return rng.uniform(lo, hi, size=shape).astype(np.float32)


def act(name, module, module_init=None, **kwargs):
    """F.name with kwargs and nn.Module(**module_init)."""
    return [row(F + name, unary(**kwargs)), row(F + name, unary()),
            row("torch.nn." + module, unary(special=False), init=module_init or {})]


def pairs(lo=-2.0, hi=2.0, tlo=-2.0, thi=2.0, **extra):
    def make(rng):
        out = []
        for kw in REDUCTIONS:
            for shape in ((9,), (3, 8), (2, 17)):
                out.append(Sample((f32(rng, *shape, lo=lo, hi=hi), f32(rng, *shape, lo=tlo, hi=thi)), {**kw, **extra}))
        return out
    return make


def module_pairs(lo=-2.0, hi=2.0, tlo=-2.0, thi=2.0):
    return lambda rng: [Sample((f32(rng, 3, 8, lo=lo, hi=hi), f32(rng, 3, 8, lo=tlo, hi=thi)))]


def _labels(rng):
    x = f32(rng, 4, 7)
    y = rng.integers(0, 7, size=(4,))
    return [(x, y), ((x, y), {"reduction": "sum"}), ((x, y), {"reduction": "none"}),
            ((f32(rng, 2, 5, 3), rng.integers(0, 5, size=(2, 3))), {}), ((x, np.array([1, -100, 3, 0])), {})]


def _sign_pairs(rng):
    return [((f32(rng, *s), np.sign(f32(rng, *s)).astype(np.float32)), kw)
            for s in ((9,), (3, 8)) for kw in REDUCTIONS]


def _triplet(rng):
    return [((f32(rng, 4, 9), f32(rng, 4, 9), f32(rng, 4, 9)), kw) for kw in
            ({}, {"margin": 0.5, "p": 1.0}, {"swap": True, "reduction": "sum"}, {"reduction": "none", "p": 3.0})]


def _ranking(rng):
    return [((f32(rng, 9), f32(rng, 9), np.sign(f32(rng, 9)).astype(np.float32)), kw)
            for kw in ({}, {"margin": 0.3}, {"reduction": "sum"}, {"reduction": "none"})]


def _poisson(rng):
    x, t = f32(rng, 3, 8), rng.integers(0, 5, size=(3, 8)).astype(np.float32)
    return [((x, t), {}), ((x, t), {"full": True, "reduction": "sum"}),
            ((f32(rng, 3, 8, lo=0.2, hi=3.0), t), {"log_input": False}), ((x, t), {"reduction": "none"})]


def _gaussian(rng):
    x, t = f32(rng, 4, 7), f32(rng, 4, 7)
    return [((x, t, f32(rng, 4, 7, lo=0.1, hi=2.0)), {}), ((x, t, f32(rng, 4, 1, lo=0.1, hi=2.0)), {"full": True}),
            ((x, t, f32(rng, 4, lo=0.1, hi=2.0)), {"reduction": "sum"}),
            ((x, t, f32(rng, 4, 7, lo=0.1, hi=2.0)), {"reduction": "none"})]


def _kl(rng):
    x = np.log(rng.dirichlet(np.ones(7), size=4)).astype(np.float32)
    t = rng.dirichlet(np.ones(7), size=4).astype(np.float32)
    t[0, 2] = 0.0
    return [((x, t), {"reduction": "batchmean"}), ((x, t), {"reduction": "sum"}), ((x, t), {"reduction": "none"}),
            ((x, np.log(t + 0.1).astype(np.float32)), {"reduction": "batchmean", "log_target": True})]


def _cos(rng):
    return [(f32(rng, 4, 9), f32(rng, 4, 9)), ((f32(rng, 3, 8), f32(rng, 1, 8)), {"dim": -1}),
            ((f32(rng, 2, 17, 3), f32(rng, 2, 17, 3)), {"dim": 1, "eps": 1e-3})]


def _pdist(rng):
    return [(f32(rng, 4, 9), f32(rng, 4, 9)), ((f32(rng, 3, 8), f32(rng, 8)), {"p": 1.0}),
            ((f32(rng, 2, 17), f32(rng, 2, 17)), {"p": 3.0, "keepdim": True})]


def _bce(rng):
    p = f32(rng, 3, 8, lo=0.05, hi=0.95)
    return [((p, f32(rng, 3, 8, lo=0, hi=1)), kw) for kw in REDUCTIONS]


ROWS = [
    *act("elu", "ELU", {"alpha": 0.5}, alpha=0.7), *act("selu", "SELU"),
    *act("celu", "CELU", {"alpha": 2.0}, alpha=1.5),
    *act("leaky_relu", "LeakyReLU", {"negative_slope": 0.2}, negative_slope=0.1),
    *act("hardtanh", "Hardtanh", {"min_val": -0.5, "max_val": 2.0}, min_val=-2.0, max_val=0.5),
    *act("relu6", "ReLU6"), *act("hardswish", "Hardswish"), *act("hardsigmoid", "Hardsigmoid"),
    *act("mish", "Mish"), *act("silu", "SiLU"), *act("logsigmoid", "LogSigmoid"), *act("softsign", "Softsign"),
    *act("tanhshrink", "Tanhshrink"),
    row(F + "threshold", unary(threshold=0.5, value=-1.0)), row("torch.nn.Threshold", unary(special=False),
                                                                  init={"threshold": 0.1, "value": 20.0}),
    *act("softplus", "Softplus", {"beta": 2.0, "threshold": 3.0}, beta=0.5, threshold=1.0),
    *act("hardshrink", "Hardshrink", {"lambd": 1.0}, lambd=0.3), *act("softshrink", "Softshrink", {"lambd": 1.0}),
    # the erf-based gelu: gradc's erfc has 1.2e-7 relative error, its derivative a few 1e-6
    row(F + "gelu", unary(special=False), grad_rtol=2e-5), row(F + "gelu", unary(approximate="tanh", special=False)),
    row("torch.nn.GELU", unary(special=False), grad_rtol=2e-5),
    row("torch.nn.GELU", unary(special=False), init={"approximate": "tanh"}),
    *rows(F + "relu " + F + "sigmoid " + F + "tanh", unary()),
    *rows("torch.nn.ReLU torch.nn.Tanh torch.nn.Sigmoid torch.nn.Identity", unary(special=False)),
    row("torch.nn.Softmax", unary(special=False, shapes=((3, 9), (2, 7, 3))), init={"dim": -1}),
    row("torch.nn.LogSoftmax", unary(special=False, shapes=((3, 9), (2, 7, 3))), init={"dim": 1}),
    # PyTorch's Flatten returns a 2-D input itself (no node); gradc's gives a ViewBackward0
    row("torch.nn.Flatten", unary(special=False, shapes=((3, 9), (2, 7, 3))), node=False),
    # losses
    row(F + "l1_loss", pairs()), row(F + "smooth_l1_loss", pairs()), row(F + "smooth_l1_loss", pairs(beta=0.5)),
    row(F + "huber_loss", pairs()), row(F + "huber_loss", pairs(delta=0.4)), row(F + "mse_loss", pairs()),
    row(F + "soft_margin_loss", build(_sign_pairs), wrt=(0,)), row(F + "kl_div", build(_kl)),
    row(F + "cosine_similarity", build(_cos)), row(F + "pairwise_distance", build(_pdist)),
    row(F + "triplet_margin_loss", build(_triplet)), row(F + "margin_ranking_loss", build(_ranking)),
    row(F + "poisson_nll_loss", build(_poisson)), row(F + "gaussian_nll_loss", build(_gaussian)),
    row(F + "binary_cross_entropy", build(_bce)), row(F + "binary_cross_entropy_with_logits", pairs(tlo=0, thi=1)),
    row(F + "cross_entropy", build(_labels)), row(F + "nll_loss", build(_labels)),
    row(F + "cross_entropy", build(lambda rng: [((f32(rng, 4, 7), np.array([1, 0, 6, 2])),
                                                 {"label_smoothing": 0.1})])),
    *[row("torch.nn." + m, module_pairs(), init=init) for m, init in (
        ("L1Loss", {}), ("SmoothL1Loss", {"beta": 0.5}), ("HuberLoss", {"delta": 0.5}), ("MSELoss", {}),
        ("BCEWithLogitsLoss", {}))],
    row("torch.nn.SoftMarginLoss", build(lambda rng: _sign_pairs(rng)[:1]), wrt=(0,)),
    row("torch.nn.KLDivLoss", build(lambda rng: [_kl(rng)[0][0]]), init={"reduction": "batchmean"}),
    row("torch.nn.CosineSimilarity", build(lambda rng: [_cos(rng)[0]])),
    row("torch.nn.PairwiseDistance", build(lambda rng: [_cos(rng)[0]]), init={"p": 1.0}),
    row("torch.nn.TripletMarginLoss", build(lambda rng: [_triplet(rng)[0][0]]), init={"margin": 0.5}),
    row("torch.nn.MarginRankingLoss", build(lambda rng: [_ranking(rng)[0][0]]), init={"margin": 0.2}),
    row("torch.nn.PoissonNLLLoss", build(lambda rng: [_poisson(rng)[0][0]])),
    row("torch.nn.GaussianNLLLoss", build(lambda rng: [_gaussian(rng)[0][0]])),
    row("torch.nn.BCELoss", build(lambda rng: [_bce(rng)[0][0]])),
    row("torch.nn.CrossEntropyLoss", build(lambda rng: [_labels(rng)[0]])),
    row("torch.nn.NLLLoss", build(lambda rng: [_labels(rng)[0]])),
    # layers with parameters (gradc's module gets PyTorch's initial parameters)
    row("torch.nn.Linear", unary(special=False, shapes=((3, 9), (2, 4, 9))),
        init={"in_features": 9, "out_features": 7}),
    row("torch.nn.LayerNorm", unary(special=False, shapes=((3, 9), (2, 4, 9))), init={"normalized_shape": 9}),
    row("torch.nn.Embedding", samples((np.array([[1, 4, 0], [9, 2, 2]]),)), init={"num_embeddings": 10,
                                                                                  "embedding_dim": 7}),
    row("torch.nn.Dropout", unary(special=False), init={"p": 0.0}),
    row("torch.nn.Sequential", unary(special=False, shapes=((3, 9), (17, 9))),
        init=lambda nn: nn.Sequential(nn.Linear(9, 5), nn.Tanh(), nn.Linear(5, 3), nn.LogSoftmax(dim=1))),
    row(F + "linear", build(lambda rng: [(f32(rng, 3, 9), f32(rng, 7, 9), f32(rng, 7)),
                                         (f32(rng, 2, 8), f32(rng, 5, 8))])),
    row(F + "layer_norm", build(lambda rng: [(f32(rng, 3, 9), (9,)), ((f32(rng, 2, 3, 8), (3, 8), f32(rng, 3, 8),
                                                                        f32(rng, 3, 8)), {"eps": 1e-3})])),
    row(F + "embedding", build(lambda rng: [(rng.integers(0, 5, size=(2, 3)), f32(rng, 5, 7))])),
    row(F + "dropout", unary(special=False, p=0.0)),
    # bad inputs
    row(F + "l1_loss", pairs(), errors=[Sample((np.ones(3, np.float32), np.ones(3, np.float32)), {"reduction": "x"})]),
    row(F + "gaussian_nll_loss", build(_gaussian),
        errors=[Sample((np.ones(3, np.float32), np.ones(3, np.float32), -np.ones(3, np.float32)))]),
    row(F + "smooth_l1_loss", pairs(), errors=[Sample((np.ones(3, np.float32), np.ones(3, np.float32)),
                                                      {"beta": -1.0})]),
    row(F + "hardtanh", unary(), errors=[Sample((np.ones(3, np.float32), 2.0, 1.0))]),
    row(F + "cross_entropy", build(_labels), errors=[Sample((np.ones((2, 3), np.float32), np.array([0, 3])))]),
    row(F + "margin_ranking_loss", build(_ranking),
        errors=[Sample((np.ones(3, np.float32), np.ones(3, np.float32), np.ones((1, 3), np.float32)))]),
]
