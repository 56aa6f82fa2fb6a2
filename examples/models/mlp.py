"""W2's MLP as a plain PyTorch file, for `gradc bench --model`:

    gradc bench --model examples/models/mlp.py:MLP --input f32[64,784] --target i64[64]:10

Nothing here knows about gradc: `gradc bench --model` loads this file once with PyTorch and once with gradc
standing in for `torch`.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class MLP(nn.Module):
    def __init__(self, sizes=(784, 256, 10)):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x):
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x)


def make_batch(batch_size=64):
    return torch.randn(batch_size, 784), torch.randint(0, 10, (batch_size,))
