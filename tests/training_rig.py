"""A tiny model and dataset for tests of the training loop (engine/): a quadratic loss over random rows."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset


class Quadratic(nn.Module):
    """mean((w x + b)^2) of a batch of 3-vectors: a loss with gradients on two parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w(x).pow(2).mean()


class Rows(Dataset):
    """`n` fixed random 3-vectors (seed 0)."""

    def __init__(self, n: int) -> None:
        self.x = torch.randn(n, 3, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]
