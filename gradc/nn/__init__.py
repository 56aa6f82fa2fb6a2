"""Neural network layers and functions (PyTorch's torch.nn subset)."""

from gradc.nn import functional, init, ops, utils
from gradc.nn import hooks as _hooks  # noqa: F401  (binds Module.__call__ with hooks, Module.to)
from gradc.nn.activation import MODULES as _ACTIVATIONS
from gradc.nn.attention import MultiheadAttention
from gradc.nn.containers import ModuleDict, ParameterDict, ParameterList
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
from gradc.nn.norms import RMSNorm
from gradc.nn.rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from gradc.nn.transformer import TransformerDecoderLayer, TransformerEncoder, TransformerEncoderLayer

globals().update({**_ACTIVATIONS, **_LOSSES})  # nn.ELU, nn.L1Loss, ...

__all__ = ["functional", "init", "ops", "Module", "Parameter", "Sequential", "ModuleList", "Identity", "Linear",
           "Flatten", "LayerNorm", "Embedding", "Dropout", "ReLU", "Tanh", "Sigmoid", "GELU", "Softmax",
           "LogSoftmax", "MSELoss", "CrossEntropyLoss", "BCEWithLogitsLoss", "BCELoss", "NLLLoss",
           "utils", "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", *_ACTIVATIONS, *_LOSSES]

__all__ += ["MultiheadAttention", "ModuleDict", "ParameterDict", "ParameterList", "RMSNorm",
            "TransformerDecoderLayer", "TransformerEncoder", "TransformerEncoderLayer"]

from gradc.nn.conv_layers import *  # noqa: E402,F401,F403  (CNN modules)
from gradc.nn.conv_layers import __all__ as _cnn_all  # noqa: E402

__all__ += _cnn_all

from gradc.nn import parallel  # noqa: E402,F401  (DistributedDataParallel)
