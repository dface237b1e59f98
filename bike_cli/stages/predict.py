"""Stage `predict`: single-video inference with a trained Video branch or zero-shot CLIP, explained.

The model is loaded as `bike eval` loads its; all videos are predicted before anything is written: an
unreadable one stops the run, or with `skip_bad` is listed in `PredictResult.skipped` (failing if all are).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from bike_cli.config.profile import get_profile
from bike_cli.config.ranges import check_choice, check_ranges
from bike_cli.config.stages import PredictConfig
from bike_cli.data.class_names import read_class_names, read_class_texts
from bike_cli.data.decoding.frames import check_video_file
from bike_cli.data.lexicons import load_lexicon
from bike_cli.engine.evaluation import Predictor, VideoPrediction
from bike_cli.engine.runtime import resolve_device
from bike_cli.errors import DecodeError, InputError
from bike_cli.io.checkpoints import is_authors_checkpoint
from bike_cli.io.guard import PathGuard, file_or_none
from bike_cli.models.factory import load_video_branch
from bike_cli.models.heads import HEADS
from bike_cli.models.text import VCS_TOKENS

log = logging.getLogger(__name__)

DEFAULT_LEXICON = "k400"  # used when its file is there (a checkout or editable install)
NO_LEXICON = "none"  # --lexicon none: no attributes


def check_options(cfg: PredictConfig) -> None:
    """Option combinations, checked before anything is loaded."""
    if not cfg.videos:
        raise InputError("no video given")
    check_ranges(cfg)
    for option, value, choices in (("--head", cfg.head, HEADS), ("--vcs-tokens", cfg.vcs_tokens, VCS_TOKENS)):
        if value is not None:  # None: not given
            check_choice(option, value, choices)
    get_profile(cfg.compat)  # InputError for an unknown --compat
    if cfg.checkpoint is not None and is_authors_checkpoint(cfg.checkpoint):
        if not cfg.model or (cfg.classes is None) == (not cfg.class_names):
            raise InputError(f"{cfg.checkpoint} is an authors' checkpoint, which records neither the CLIP "
                             "architecture nor the classes: pass --model and one of --classes / --class-names")
        return
    if cfg.checkpoint is not None:
        given = [o for o, v in (("--model", cfg.model), ("--classes", cfg.classes), ("--class-names", cfg.class_names),
                                ("--quick-gelu", cfg.quick_gelu)) if v is not None]
        if given:
            raise InputError(f"{', '.join(given)} cannot be combined with --checkpoint: the checkpoint "
                             "fixes the model and its classes")
        return
    if not cfg.model or not cfg.pretrained:
        raise InputError("give --checkpoint RUN_DIR|FILE, or --model and --pretrained for zero-shot CLIP")
    if (cfg.classes is None) == (not cfg.class_names):
        raise InputError("zero-shot prediction needs exactly one of --classes FILE and --class-names 'a,b,c'")


@dataclass
class PredictResult:
    """Every prediction of a run, the videos skipped, and what model made them."""

    predictions: list[VideoPrediction]
    skipped: list[tuple[Path, str]]  # (video, reason), with skip_bad
    model: dict  # see `Predictor.description`
    lexicon: str | None
    explain: Path | None = None  # the figure written, if any
    class_names: list[str] = field(default_factory=list)  # what `VideoPrediction.probabilities` index

    def to_json(self) -> dict:
        """The document `bike predict --json` prints."""
        return {"model": self.model, "lexicon": self.lexicon, "videos": [p.to_json() for p in self.predictions],
                "skipped": [{"video": str(v), "error": reason} for v, reason in self.skipped]}


def load_predictor(cfg: PredictConfig) -> Predictor:
    """The predictor of `cfg` (checkpoint or zero-shot)."""
    device = resolve_device(cfg.device)
    # the classes of a zero-shot or authors' model: --classes FILE or --class-names; None: the checkpoint's
    class_names = read_class_names(cfg.classes) if cfg.classes is not None else cfg.class_names or None
    model = load_video_branch(cfg.checkpoint, class_names=class_names, model=cfg.model, pretrained=cfg.pretrained,
                              quick_gelu=cfg.quick_gelu, head=cfg.head, vcs_tokens=cfg.vcs_tokens, frames=cfg.frames,
                              device=device, class_texts=read_class_texts(cfg.class_texts) if cfg.class_texts else None,
                              class_texts_source=cfg.class_texts)
    return Predictor(model, get_profile(cfg.compat), cfg.compat, device)


def resolve_lexicon(lexicon: str | None) -> tuple[str | None, list[str]]:
    """(name, phrases) of the lexicon to use: the given one, none, or DEFAULT_LEXICON when available."""
    if lexicon is not None:
        return (None, []) if lexicon.lower() == NO_LEXICON else (lexicon, load_lexicon(lexicon))
    try:
        return DEFAULT_LEXICON, load_lexicon(DEFAULT_LEXICON)
    except InputError as err:
        log.warning("no attributes: the default lexicon is not available (%s); pass --lexicon", err)
        return None, []


def _check_inputs(cfg: PredictConfig) -> list[tuple[Path, str]]:
    """Videos that cannot be opened (missing, a folder, unreadable): an error naming each and why, or
    (skip_bad) the ones to skip."""
    bad = []
    for video in cfg.videos:
        try:
            check_video_file(Path(video))
        except DecodeError as err:
            bad.append((video, str(err)))
    if bad and not cfg.skip_bad:
        raise DecodeError("; ".join(reason for _, reason in bad))
    return bad


def run_predict(cfg: PredictConfig) -> PredictResult:
    """Predict every video of `cfg` (see the module docstring); draw `cfg.explain` when set."""
    check_options(cfg)
    if cfg.explain is not None:
        from bike_cli.report.figures import check_figure_path  # matplotlib only when a figure is asked for

        check_figure_path(cfg.explain, "--explain")
    # videos are checked by _check_inputs, so that --skip-bad can skip one that is not a regular file
    PathGuard({"--checkpoint": cfg.checkpoint, "--classes": cfg.classes, "--class-texts": cfg.class_texts,
               "--pretrained": file_or_none(cfg.pretrained)}, {"--explain": cfg.explain},
              listed={"a video": cfg.videos})
    skipped = _check_inputs(cfg)
    lexicon, phrases = resolve_lexicon(cfg.lexicon)
    if phrases and cfg.top_k > len(phrases):
        raise InputError(f"--top-k {cfg.top_k} is more than the {len(phrases)} phrases of lexicon {lexicon}")
    predictor = load_predictor(cfg)
    if phrases:
        predictor.set_lexicon(phrases)
    predictions = []
    for video in cfg.videos:
        if any(video == bad for bad, _ in skipped):
            continue
        try:
            predictions.append(predictor.predict(Path(video), cfg.top, cfg.top_k, cfg.decoder))
        except DecodeError as err:
            if not cfg.skip_bad:
                raise
            log.warning("skipping %s: %s", video, err)
            skipped.append((video, str(err)))
        else:
            log.info("%s: %s (%.3f)", video, predictions[-1].predicted, predictions[-1].top[0][1])
    if not predictions:
        raise DecodeError(f"none of the {len(cfg.videos)} videos could be read: "
                          + "; ".join(reason for _, reason in skipped))
    result = PredictResult(predictions, skipped, predictor.description, lexicon, class_names=predictor.class_names)
    if cfg.explain is not None:
        from bike_cli.report.figures import draw_explanation

        result.explain = draw_explanation(predictions, cfg.explain)
    return result
