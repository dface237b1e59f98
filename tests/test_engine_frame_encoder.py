"""The one frame encoder (extract, eval --videos, predict) and the one pixel normalisation."""

from __future__ import annotations

import torch

from bike_cli.engine import frame_encoder
from bike_cli.engine.frame_encoder import FrameEncoder, to_unit_pixels
from bike_cli.models.clip import load_clip

CPU = torch.device("cpu")


def test_pixels_are_normalised_by_the_models_mean_and_std():
    _, spec = load_clip("bike-tiny", "none", device=CPU)
    pixels = torch.randint(0, 256, (2, 3, 5, 5), dtype=torch.uint8)
    mean, std = torch.tensor(spec.mean).view(3, 1, 1), torch.tensor(spec.std).view(3, 1, 1)
    torch.testing.assert_close(to_unit_pixels(pixels, spec, CPU), (pixels.float() / 255.0 - mean) / std)


def test_frames_encoded_in_chunks_equal_one_forward_and_the_cache_rows_are_their_float16(monkeypatch):
    torch.manual_seed(0)
    model, spec = load_clip("bike-tiny", "none", device=CPU)
    frames = torch.randint(0, 256, (2, 3, 4, 3, spec.image_size, spec.image_size), dtype=torch.uint8)  # [B, V, T]
    with torch.no_grad():
        want = model.encode_image(to_unit_pixels(frames.flatten(0, 2), spec, CPU)).view(2, 3, 4, -1)  # [B, V, T, D]
    monkeypatch.setattr(frame_encoder, "FRAMES_PER_FORWARD", 5)  # 24 frames: 5 chunks, the last of 4
    encoder = FrameEncoder(model, spec, CPU, "fp32")
    got = encoder.embed(frames)
    assert got.dtype == torch.float32 and got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    rows = encoder(frames)
    assert rows.dtype == torch.float16 and rows.device.type == "cpu"
    torch.testing.assert_close(rows, want.half())
