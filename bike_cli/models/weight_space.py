"""Arithmetic on state dicts: `interpolate` two models (WiSE-FT), `StateMean` of several (SWA); non-float tensors
are not averaged (the tuned / last one is kept); other keys or shapes are a ValueError."""

from __future__ import annotations

from collections.abc import Mapping

import torch


def _check_same_layout(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], what: str) -> None:
    if a.keys() != b.keys():
        missing, extra = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise ValueError(f"{what}: other tensors (missing {missing[:4]}, unexpected {extra[:4]})")
    shapes = [k for k in a if a[k].shape != b[k].shape]
    if shapes:
        raise ValueError(f"{what}: other shapes for {shapes[:4]}")


def interpolate(original: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor],
                alpha: float) -> dict[str, torch.Tensor]:
    """(1 - alpha) * original + alpha * tuned for each tensor (same keys and shapes), in `tuned`'s dtype;
    alpha 0 is `original`, 1 is `tuned`, exactly."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], not {alpha}")
    _check_same_layout(tuned, original, "the two models differ")
    merged = {}
    for key, value in tuned.items():
        start = original[key].to(value.device)
        if value.is_floating_point():
            merged[key] = (start.to(value.dtype) * (1.0 - alpha) + value * alpha).to(value.dtype)
        else:
            merged[key] = value.clone()
    return merged


class StateMean:
    """The running mean of state dicts of one layout: `add` each, then `mean()`."""

    def __init__(self) -> None:
        self.count = 0
        self._sum: dict[str, torch.Tensor] = {}
        self._last: dict[str, torch.Tensor] = {}

    def add(self, state: Mapping[str, torch.Tensor]) -> None:
        if self.count:
            _check_same_layout(self._last, state, f"state {self.count + 1} differs from the first")
        for key, value in state.items():
            if value.is_floating_point():
                value64 = value.detach().to("cpu", torch.float64)
                self._sum[key] = self._sum[key] + value64 if key in self._sum else value64.clone()
            self._last[key] = value.detach().cpu()
        self.count += 1

    def mean(self) -> dict[str, torch.Tensor]:
        """The mean of the states added (each tensor in its own dtype); non-float tensors: the last one's."""
        if not self.count:
            raise ValueError("no state to average")
        return {key: (self._sum[key] / self.count).to(value.dtype) if key in self._sum else value
                for key, value in self._last.items()}
