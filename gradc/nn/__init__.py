"""Neural network layers and functions (PyTorch's torch.nn subset)."""

from gradc.nn import functional, init, ops
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
from gradc.nn.rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

__all__ = ["functional", "init", "ops", "Module", "Parameter", "Sequential", "ModuleList", "Identity", "Linear",
           "Flatten", "LayerNorm", "Embedding", "Dropout", "ReLU", "Tanh", "Sigmoid", "GELU", "Softmax",
           "LogSoftmax", "MSELoss", "CrossEntropyLoss", "BCEWithLogitsLoss", "BCELoss", "NLLLoss",
           "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"]
