"""uint8 video frames -> CLIP frame embeddings, and the one pixel normalisation (the model's mean and std).

Every command that embeds frames goes through `FrameEncoder` (extract-features, eval `--videos`,
predict): the same normalisation, autocast (`--precision`; `auto` is bf16, or fp16 where bf16 is
unsupported, on CUDA and fp32 on the CPU), channels-last on CUDA, and chunks of `FRAMES_PER_FORWARD`
frames. Training feeds normalised pixels (`to_unit_pixels`) to a tower that learns.
"""

from __future__ import annotations

import torch

from bike_cli.engine.runtime import autocast_for
from bike_cli.models.clip import ClipSpec
from bike_cli.models.video_branch import image_features

# Frames per encode_image call: bounds activation memory whatever the batch and view settings.
FRAMES_PER_FORWARD = 512


def to_unit_pixels(pixels: torch.Tensor, spec: ClipSpec, device: torch.device) -> torch.Tensor:
    """uint8 [..., 3, S, S] -> float32 [..., 3, S, S] on `device`: (x / 255 - mean) / std, the model's input."""
    mean = torch.tensor(spec.mean, device=device).view(3, 1, 1) * 255.0
    std = torch.tensor(spec.std, device=device).view(3, 1, 1) * 255.0
    return (pixels.to(device, non_blocking=True).float() - mean) / std


class FrameEncoder:
    """uint8 frames -> CLIP image embeddings (not normalised), in chunks on `device` under `precision`.

    `model` is anything whose `visual` is a CLIP image tower: a CLIP model (extract-features) or a
    Video branch (eval, predict: its tower, fine-tuned or CLIP's)."""

    def __init__(self, model: torch.nn.Module, spec: ClipSpec, device: torch.device, precision: str = "auto") -> None:
        if getattr(model, "visual", None) is None:
            raise ValueError("FrameEncoder needs a model with an image tower (`visual`)")
        self.visual = model.visual.to(device).eval()
        if device.type == "cuda":
            self.visual = self.visual.to(memory_format=torch.channels_last)
        self.spec, self.device = spec, device
        self.precision = precision  # auto, fp32, bf16 or fp16

    @torch.inference_mode()
    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [..., 3, S, S] -> float32 [..., D] on the device."""
        lead = frames.shape[:-3]
        flat = frames.reshape(-1, *frames.shape[-3:])  # [N, 3, S, S]
        out = []
        for start in range(0, flat.shape[0], FRAMES_PER_FORWARD):
            chunk = to_unit_pixels(flat[start : start + FRAMES_PER_FORWARD], self.spec, self.device)  # [n, 3, S, S]
            if self.device.type == "cuda":
                chunk = chunk.contiguous(memory_format=torch.channels_last)
            with autocast_for(self.device, self.precision):
                out.append(image_features(self.visual, chunk).float())  # [n, D]
        emb = torch.cat(out)
        return emb.view(*lead, emb.shape[-1])

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [..., 3, S, S] -> float16 [..., D] on the CPU: a feature cache's rows."""
        return self.embed(frames).half().cpu()
