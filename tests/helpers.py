"""Small helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch import nn


def digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1797 8x8 digits as (N, 1, 8, 8) float32 images in [0, 1] and int64 labels."""
    d = load_digits()
    x = torch.tensor(d.data / 16, dtype=torch.float32).view(-1, 1, 8, 8)
    return x, torch.tensor(d.target, dtype=torch.int64)


def train_briefly(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float) -> nn.Module:
    """A few seeded Adam steps on random batches of 64: a small trained network for the tests."""
    opt = torch.optim.Adam(model.parameters(), lr)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()
