"""The views bike makes of a frame, in the model's own resize mode where a view allows it.

open_clip records a model's preprocessing in `model.visual.preprocess_cfg` (from the pretrained
tag's config, or the defaults for random weights): input size, mean/std, interpolation and
`resize_mode`:

- ``shortest`` (OpenAI CLIP, EVA02, ...): short side resized to the input size, centre crop;
- ``squash`` (SigLIP/SigLIP2, PE-Core, ...): the whole frame resized to size x size, aspect ignored;
- ``longest``: long side resized to the input size, centred and padded with black to a square.

The paper reading's views follow it as far as a view allows:

- the single centre view (`--views Cx1`) is made in the model's resize mode;
- multi-crop views (`Cx3`) stay square crops (left/centre/right) of the short-side resize, the
  authors' 3-crop protocol, whatever the model's mode (a squashed frame has no three crops);
- training crops (random resized crops of a short-side resize) are unchanged.

Resizing happens inside the video decoder (`read_frames`), with the decoder's own scaler: bike
does not apply the model's `interpolation` (`bike_cli.models.clip.ClipSpec` records
it for reference only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bike_cli.config.profile import DECODE_RESIZE, PIL_SCALE
from bike_cli.data.authors import authors_views
from bike_cli.data.sampling import spatial_crops
from bike_cli.errors import InputError

RESIZE_MODES = ("shortest", "squash", "longest")  # as bike_cli.models.clip


def view_resize_mode(resize_mode: str, crops: int) -> str:
    """The resize mode a view layout uses: the model's for one crop, `shortest` for several."""
    if resize_mode not in RESIZE_MODES:
        raise InputError(f"resize mode {resize_mode!r} is not one of {', '.join(RESIZE_MODES)}")
    return resize_mode if crops == 1 else "shortest"


def square_views(frames: torch.Tensor, size: int, crops: int, resize_mode: str) -> torch.Tensor:
    """uint8 frames [N, H, W, 3] resized by `read_frames(resize=view_resize_mode(...))` -> [S, N, 3, s, s].

    shortest: `crops` square crops; squash: the frames as they are (already s x s); longest: the
    frames centred on a black s x s canvas."""
    mode = view_resize_mode(resize_mode, crops)
    if mode == "shortest":
        return spatial_crops(frames, size, crops)
    chw = frames.permute(0, 3, 1, 2)  # [N, 3, H, W]
    height, width = chw.shape[-2:]
    if mode == "longest":
        top, left = (size - height) // 2, (size - width) // 2
        chw = F.pad(chw, (left, size - width - left, top, size - height - top))  # zeros = black
    if chw.shape[-2:] != (size, size):
        raise InputError(f"frames {height}x{width} do not fit a {size}x{size} {mode} view")
    return chw.unsqueeze(0).contiguous()  # [1, N, 3, s, s]


@dataclass(frozen=True)
class TestTransform:
    """How test frames become views (`Profile.test_transform`): decoded at the model's size or at their
    own, then `views(frames [T, H, W, 3] uint8, size, crops, resize_mode) -> [S, T, 3, size, size]`."""

    full_size: bool  # decode at the frames' own size (the transform resizes them itself)
    views: Callable[[torch.Tensor, int, int, str], torch.Tensor]


TEST_TRANSFORMS: dict[str, TestTransform] = {
    DECODE_RESIZE: TestTransform(False, square_views),  # short side resized while decoding, square crops
    PIL_SCALE: TestTransform(True, lambda frames, size, crops, resize_mode: authors_views(frames, size, crops)),
}
