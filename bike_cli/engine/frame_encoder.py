"""uint8 video frames on the model's device: CLIP image embeddings (autocast, large batches), normalised pixels."""

from __future__ import annotations

import torch

from bike_cli.engine.runtime import autocast_for
from bike_cli.models.clip_spec import ClipSpec
from bike_cli.models.video_branch import image_features

# Frames per encode_image call: bounds activation memory whatever the batch and view settings.
FRAMES_PER_FORWARD = 512


class FrameEncoder:
    """uint8 frames -> CLIP image embeddings, normalised on the model's device in large batches."""

    def __init__(self, model: torch.nn.Module, spec: ClipSpec, device: torch.device, precision: str) -> None:
        self.model = model.to(device).eval()
        self.device = device
        if device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1) * 255.0
        self.precision = precision  # auto, fp32, bf16 or fp16
        self.autocast = lambda: autocast_for(device, precision)

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [..., 3, S, S] -> float16 [..., D] on the CPU."""
        lead = frames.shape[:-3]
        flat = frames.reshape(-1, *frames.shape[-3:])  # [N, 3, S, S]
        out = []
        for start in range(0, flat.shape[0], FRAMES_PER_FORWARD):
            chunk = flat[start : start + FRAMES_PER_FORWARD].to(self.device, non_blocking=True)
            chunk = (chunk.float() - self.mean) / self.std
            if self.device.type == "cuda":
                chunk = chunk.contiguous(memory_format=torch.channels_last)
            with self.autocast():
                out.append(image_features(self.model.visual, chunk).float().half().cpu())  # [n, D], not normalised
        emb = torch.cat(out)
        return emb.view(*lead, emb.shape[-1])


def to_unit_pixels(pixels: torch.Tensor, spec: ClipSpec, device: torch.device) -> torch.Tensor:
    """uint8 [..., 3, S, S] -> normalised float [..., 3, S, S] on `device` (the training input)."""
    mean = torch.tensor(spec.mean, device=device).view(3, 1, 1)
    std = torch.tensor(spec.std, device=device).view(3, 1, 1)
    return (pixels.to(device, non_blocking=True).float() / 255.0 - mean) / std
