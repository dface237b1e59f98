"""Stage `merge`: interpolate a fine-tuned visual encoder with the original CLIP's (WiSE-FT, Open-VCLIP).

Every `visual.*` tensor becomes (1 - alpha) * original + alpha * fine-tuned; the head and logit scale are
the run's, the text tower is never trained. The output is a Video-branch checkpoint with an `origin`
(docs/formats.md) and empty `metrics`: the run's figures describe other weights.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from bike_cli.config.ranges import check_ranges
from bike_cli.config.stages import MergeConfig
from bike_cli.errors import InputError, as_user_error
from bike_cli.io.checkpoints import (
    VIDEO_KIND,
    BranchCheckpoint,
    checkpoint_file,
    load_video_checkpoint,
    save_checkpoint,
)
from bike_cli.io.guard import PathGuard, check_file_output, file_or_none
from bike_cli.io.identity import file_sha256
from bike_cli.models.clip import PREFIX, recorded_clip
from bike_cli.models.weight_space import interpolate

log = logging.getLogger(__name__)

INTERPOLATION = "interpolation"  # the checkpoint's origin.method


@dataclass
class MergeSummary:
    out: Path
    source: Path  # the checkpoint file read (a run folder's best.pt, else last.pt)
    alpha: float
    interpolated: int  # visual.* tensors interpolated
    kept: int  # tensors kept from the run (head, logit scale)
    clip: str  # the CLIP weights interpolated with: model name and pretrained tag or file


def run_merge(cfg: MergeConfig) -> MergeSummary:
    """Write the merged checkpoint of the module docstring."""
    check_ranges(cfg)  # --alpha in [0, 1]
    check_file_output("--out", cfg.out)
    guard = PathGuard({"RUN": cfg.run, "--pretrained": file_or_none(cfg.pretrained)}, {"--out": cfg.out})
    if cfg.out.exists() and not cfg.overwrite:
        raise InputError(f"--out {cfg.out} exists; pass --overwrite to replace it, or choose another --out")
    source = checkpoint_file(cfg.run)
    ckpt = load_video_checkpoint(source)
    tuned = {k: v for k, v in ckpt.state_dict.items() if k.startswith(PREFIX)}
    if not tuned:
        raise InputError(f"{source} was trained with CLIP's visual encoder frozen (on a feature cache): its visual "
                         "weights are the original CLIP's, so there is nothing to interpolate; merge a run trained "
                         "end to end (train-video --videos)")
    if ckpt.config.get("init_from"):
        log.warning("%s started from --init-from %s; it is interpolated with the CLIP it records (%s), not with "
                    "that checkpoint's weights", source, ckpt.config["init_from"], ckpt.clip.get("pretrained"))
    clip_model, spec = recorded_clip(ckpt.clip, source, cfg.pretrained)  # sha256-checked
    original = {k: v for k, v in clip_model.state_dict().items() if k.startswith(PREFIX)}
    with as_user_error(ValueError, prefix=f"{source} does not fit the visual encoder of the CLIP it records: "):
        merged = interpolate(original, tuned, cfg.alpha)
    origin = {"method": INTERPOLATION, "alpha": float(cfg.alpha), "source": str(source.resolve()),
              "source_sha256": file_sha256(source), "source_epoch": ckpt.epoch,
              "clip_pretrained": spec.pretrained, "clip_sha256": spec.checkpoint_sha256,
              "source_origin": ckpt.origin}
    out = BranchCheckpoint(config=ckpt.config, clip=asdict(spec), class_names=ckpt.class_names, epoch=ckpt.epoch,
                           metrics={}, state_dict={**ckpt.state_dict, **merged}, model_args=ckpt.model_args,
                           origin=origin)
    with guard.holding(cfg.out):
        save_checkpoint(cfg.out, out, VIDEO_KIND)
    log.info("merged %s with %s %s at alpha %g into %s", source, spec.model_name, spec.pretrained, cfg.alpha, cfg.out)
    return MergeSummary(cfg.out, source, float(cfg.alpha), len(merged), len(ckpt.state_dict) - len(merged),
                        f"{spec.model_name} {spec.pretrained}")
