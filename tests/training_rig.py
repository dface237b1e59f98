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


def fit_rig(settings, compat: str, dataset: Dataset, *, model: nn.Module | None = None, lr: float = 1e-2,
            inputs=lambda b: (b,), validate=None, batch_loader=None, run=None, accelerator=None):
    """`Trainer.fit` of `model` (a fresh Quadratic) on `dataset` under the profile `compat`, in the run
    folder `run` (a plain RunFolder of `settings.out` by default); returns the summary."""
    from bike_cli.config.profile import get_profile
    from bike_cli.engine.run_folder import RunFolder
    from bike_cli.engine.training_loop import FitSettings, TrainBranch, Trainer, make_accelerator

    profile = get_profile(compat)
    model = model if model is not None else Quadratic()
    run = run or RunFolder(settings.out, "train-video", resume=settings.resume, overwrite=settings.overwrite)
    trainer = Trainer(settings, accelerator or make_accelerator(settings, profile), run)
    branch = TrainBranch(model, [{"params": list(model.parameters())}], inputs, validate=validate)
    return trainer.fit(branch, FitSettings(lr, 0.0, profile), dataset, batch_loader=batch_loader)
