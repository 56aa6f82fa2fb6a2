"""Neural network layers and functions (PyTorch's torch.nn subset)."""

from gradc.nn import functional, init, ops
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
from gradc.nn.module import Module, Parameter
from gradc.nn.norms import RMSNorm
from gradc.nn.transformer import TransformerDecoderLayer, TransformerEncoder, TransformerEncoderLayer

__all__ = ["functional", "init", "ops", "Module", "Parameter", "Sequential", "ModuleList", "Identity", "Linear",
           "Flatten", "LayerNorm", "Embedding", "Dropout", "ReLU", "Tanh", "Sigmoid", "GELU", "Softmax",
           "LogSoftmax", "MSELoss", "CrossEntropyLoss", "BCEWithLogitsLoss", "BCELoss", "NLLLoss"]
__all__ += ["MultiheadAttention", "ModuleDict", "ParameterDict", "ParameterList", "RMSNorm",
            "TransformerDecoderLayer", "TransformerEncoder", "TransformerEncoderLayer"]
