"""Neural network layers and functions (PyTorch's torch.nn subset)."""

from gradc.nn import functional, init, ops, utils
from gradc.nn.activation import MODULES as _ACTIVATIONS
from gradc.nn.layers import (
                             GELU,
                             Dropout,
                             Embedding,
                             Flatten,
                             Identity,
                             LayerNorm,
                             Linear,
                             LogSoftmax,
                             ModuleList,
                             ReLU,
                             Sequential,
                             Sigmoid,
                             Softmax,
                             Tanh,
)
from gradc.nn.loss import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, NLLLoss
from gradc.nn.losses_more import MODULES as _LOSSES
from gradc.nn.module import Module, Parameter

globals().update({**_ACTIVATIONS, **_LOSSES})  # nn.ELU, nn.L1Loss, ...

__all__ = ["functional", "init", "ops", "Module", "Parameter", "Sequential", "ModuleList", "Identity", "Linear",
           "Flatten", "LayerNorm", "Embedding", "Dropout", "ReLU", "Tanh", "Sigmoid", "GELU", "Softmax",
           "LogSoftmax", "MSELoss", "CrossEntropyLoss", "BCEWithLogitsLoss", "BCELoss", "NLLLoss",
           "utils", *_ACTIVATIONS, *_LOSSES]

from gradc.nn import parallel  # noqa: E402,F401  (DistributedDataParallel)
