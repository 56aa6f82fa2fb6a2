"""W9's LSTM language model (shorter sequences), as a plain PyTorch file:

    gradc bench --model examples/models/lstm.py:LSTMLM --loss examples/models/lstm.py:loss
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB, T = 65, 32


class LSTMLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 64)
        self.lstm = nn.LSTM(64, 128, num_layers=2, batch_first=True)
        self.out = nn.Linear(128, VOCAB)

    def forward(self, idx):
        h, _ = self.lstm(self.embed(idx))
        return self.out(h)


def loss(logits, targets):
    return F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))


def make_batch(batch_size=32):
    data = torch.randint(0, VOCAB, (batch_size, T + 1))
    return data[:, :-1].contiguous(), data[:, 1:].contiguous()
