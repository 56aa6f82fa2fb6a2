"""An MLP with LayerNorm and GELU, as a plain PyTorch file (a model gradc's benchmarks do not define).

`gradc bench --model examples/models/mlp_norm.py:NormMLP --input f32[128,512] --target i64[128]:32`
"""

import torch
from torch import nn


class NormMLP(nn.Module):
    def __init__(self, d_in=512, hidden=1024, classes=32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.LayerNorm(hidden), nn.GELU(),
                                 nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.GELU(),
                                 nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
