"""Stage `predict`: single-video inference with a trained Video branch or zero-shot CLIP, explained.

Two ways to get a model:

- a Video-branch checkpoint of bike's own (`bike train-video`'s run folder or `.pt` file): CLIP is
  rebuilt from the checkpoint's record (architecture, weights, QuickGELU), the head and temporal
  module from its settings, the class names and prompt templates from the run. When the recorded
  weights are a file that has moved, `pretrained` points to the same file (its sha256 is checked);
- plain CLIP, zero-shot (`model` + `pretrained` + class names): the VCS head by default, no
  temporal module, CLIP's own logit scale.

For every video: T frames by test sampling (segment centres, one centre crop: the 1x1 view),
encoded by CLIP's image tower; class probabilities softmax(scale * logits); the temporal saliency of
the predicted class (Eq. 5 on the temporally encoded frames with the class's VCS query tokens;
uniform 1/T for the mean head, which weighs every frame alike); and the video's attributes, the top-k
lexicon phrases by cosine with the L2-normalised mean of the frame embeddings (Sec. 2.2), joined into
the attribute sentence.

Unreadable videos: by default the first one stops the run with a `DecodeError` naming the file,
before anything is written (all videos are predicted before any output). With `skip_bad` they are
skipped, listed in `PredictResult.skipped`, and the run fails only if no video could be read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bike_cli.config.profile import BIKE, PIL_SCALE, check_profile, get_profile, video_score_rule
from bike_cli.data.authors import authors_views
from bike_cli.data.decoding.read import DEFAULT_DECODER, read_frames
from bike_cli.data.indices import TEST_INDICES
from bike_cli.data.lexicons import load_lexicon
from bike_cli.data.lists.classes import read_class_names
from bike_cli.data.views import square_views
from bike_cli.engine.runtime import autocast_for, resolve_device
from bike_cli.errors import DecodeError, InputError, ModelLoadError
from bike_cli.io.authors_checkpoint import is_authors_checkpoint
from bike_cli.io.checkpoints import BranchCheckpoint, load_video_checkpoint
from bike_cli.io.guard import PathGuard, file_or_none
from bike_cli.models.authors import view_probabilities
from bike_cli.models.authors_branch import load_authors_branch
from bike_cli.models.build import VideoBranchSpec, build_video_branch, video_spec_of
from bike_cli.models.clip import load_clip
from bike_cli.models.clip_spec import ClipSpec, file_sha256
from bike_cli.models.heads import DEFAULT_TAU, HEADS, vcs_saliency
from bike_cli.models.registry import get_tokenizer
from bike_cli.models.retrieval import encode_texts, topk_cosine
from bike_cli.models.text import DEFAULT_TEMPLATE, VCS_TOKENS, ClassTexts, attribute_sentence, encode_class_texts
from bike_cli.models.video_branch import VideoBranch

log = logging.getLogger(__name__)

DEFAULT_FRAMES = 8  # zero-shot; a checkpoint's own frame count otherwise
DEFAULT_LEXICON = "k400"  # used when its file is there (a checkout or editable install)
NO_LEXICON = "none"  # --lexicon none: no attributes


@dataclass
class PredictConfig:
    """Options of `bike predict` (see its --help)."""

    videos: list[Path]
    checkpoint: Path | None = None  # bike Video-branch run folder or .pt
    model: str | None = None  # zero-shot: open_clip architecture
    pretrained: str | None = None  # zero-shot: tag, file or none; with a checkpoint: the moved weights file
    quick_gelu: bool | None = None  # zero-shot only
    classes: Path | None = None  # zero-shot: class-name file
    class_names: list[str] | None = None  # zero-shot: free-text class names
    frames: int | None = None  # default: the checkpoint's, else DEFAULT_FRAMES
    head: str | None = None  # zero-shot: mean | vcs (default vcs); must match a checkpoint's
    vcs_tokens: str | None = None  # zero-shot: words | all (default words); must match a checkpoint's
    lexicon: str | None = None  # None: DEFAULT_LEXICON when available; NO_LEXICON: no attributes
    top_k: int = 5  # attributes per video
    top: int = 5  # classes reported per video
    explain: Path | None = None  # figure to draw (report.explain)
    skip_bad: bool = False
    decoder: str = DEFAULT_DECODER
    device: str | None = None
    compat: str = BIKE  # bike | authors (bike_cli.config.profile): test sampling, transform and view rule

    def validate(self) -> None:
        """Option combinations, checked before anything is loaded."""
        if not self.videos:
            raise InputError("no video given")
        for option, value in (("--top-k", self.top_k), ("--top", self.top), ("--frames", self.frames)):
            if value is not None and value < 1:
                raise InputError(f"{option} must be at least 1, not {value}")
        if self.head is not None and self.head not in HEADS:
            raise InputError(f"--head {self.head!r} is not one of {', '.join(HEADS)}")
        if self.vcs_tokens is not None and self.vcs_tokens not in VCS_TOKENS:
            raise InputError(f"--vcs-tokens {self.vcs_tokens!r} is not one of {', '.join(VCS_TOKENS)}")
        check_profile(self.compat)
        if self.checkpoint is not None and is_authors_checkpoint(self.checkpoint):
            if not self.model or (self.classes is None) == (not self.class_names):
                raise InputError(f"{self.checkpoint} is an authors' checkpoint, which records neither the CLIP "
                                 "architecture nor the classes: pass --model and one of --classes / --class-names")
            return
        if self.checkpoint is not None:
            given = [o for o, v in (("--model", self.model), ("--classes", self.classes),
                                    ("--class-names", self.class_names), ("--quick-gelu", self.quick_gelu))
                     if v is not None]
            if given:
                raise InputError(f"{', '.join(given)} cannot be combined with --checkpoint: the checkpoint "
                                 "fixes the model and its classes")
            return
        if not self.model or not self.pretrained:
            raise InputError("give --checkpoint RUN_DIR|FILE, or --model and --pretrained for zero-shot CLIP")
        if (self.classes is None) == (not self.class_names):
            raise InputError("zero-shot prediction needs exactly one of --classes FILE and --class-names 'a,b,c'")


@dataclass
class EncodedVideo:
    """One video's sampled frames and their CLIP embeddings."""

    frame_indices: list[int]  # T indices into the video's frames
    num_frames: int  # frames in the video, as the decoder counted them
    pixels: torch.Tensor  # uint8 [T, 3, S, S], the centre crops the model saw
    embeddings: torch.Tensor  # float32 [T, D], not normalised (as in a feature cache)


@dataclass
class VideoPrediction:
    """What `predict` reports for one video."""

    video: Path
    top: list[tuple[str, float]]  # (class name, probability), best first
    probabilities: np.ndarray  # float32 [K], sums to 1
    saliency: list[float]  # [T] temporal saliency of the predicted class, sums to 1
    saliency_method: str  # "vcs" or "uniform" (mean head)
    frame_indices: list[int]  # [T]
    attributes: list[str]  # top-k lexicon phrases, best first ([] without a lexicon)
    attribute_scores: list[float]  # their cosine similarities
    sentence: str | None  # the attribute sentence (None without a lexicon)
    thumbnails: np.ndarray  # uint8 [T, S, S, 3], for the explanation figure

    @property
    def predicted(self) -> str:
        return self.top[0][0]

    def to_json(self) -> dict:
        """The JSON record of `bike predict --json` (no thumbnails)."""
        return {
            "video": str(self.video),
            "top5": [{"class": name, "prob": prob} for name, prob in self.top],
            "attributes": self.attributes,
            "attribute_scores": self.attribute_scores,
            "sentence": self.sentence,
            "saliency": self.saliency,
            "saliency_method": self.saliency_method,
            "frame_indices": self.frame_indices,
        }


@dataclass
class PredictResult:
    """Every prediction of a run, the videos skipped, and what model made them."""

    predictions: list[VideoPrediction]
    skipped: list[tuple[Path, str]]  # (video, reason), with skip_bad
    model: dict  # see `Predictor.describe`
    lexicon: str | None
    explain: Path | None = None  # the figure written, if any
    class_names: list[str] = field(default_factory=list)  # what `VideoPrediction.probabilities` index

    def to_json(self) -> dict:
        """The document `bike predict --json` prints."""
        return {
            "model": self.model,
            "lexicon": self.lexicon,
            "videos": [p.to_json() for p in self.predictions],
            "skipped": [{"video": str(v), "error": reason} for v, reason in self.skipped],
        }


class Predictor:
    """A loaded Video branch (with CLIP's image tower), its classes, and the lexicon's phrases."""

    def __init__(self, branch: VideoBranch, spec: ClipSpec, class_names: list[str], class_texts: ClassTexts,
                 frames: int, description: dict, device: torch.device, compat: str = BIKE) -> None:
        self.branch = branch.to(device).eval()
        self.compat = compat
        self.spec, self.class_names, self.class_texts = spec, class_names, class_texts
        self.frames, self.description, self.device = frames, description, device
        self.phrases: list[str] = []
        self.phrase_emb: torch.Tensor | None = None  # [P, D] normalised
        self.mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1) * 255.0

    def set_lexicon(self, clip_model: nn.Module, phrases: list[str], batch_size: int = 256) -> None:
        """Encode the lexicon's phrases (bare, as in the paper) with the same CLIP's text encoder."""
        self.phrases = list(phrases)
        tokenizer = get_tokenizer(self.spec.model_name)
        self.phrase_emb = encode_texts(clip_model, tokenizer, self.phrases, batch_size)  # [P, D]

    def encode_video(self, path: Path, decoder: str = DEFAULT_DECODER) -> EncodedVideo:
        """Decode T test-sampled frames (centre crop) and embed them; DecodeError names the file."""
        size, authors = self.spec.image_size, get_profile(self.compat).test_transform == PIL_SCALE
        def indices(n: int) -> np.ndarray:  # [T]: one test clip by the profile's rule
            return TEST_INDICES[get_profile(self.compat).test_indices](n, self.frames, 1)[0]
        clip = read_frames(path, indices, short_side=None if authors else size, decoder=decoder,
                           resize=self.spec.resize_mode)
        if authors:
            pixels = authors_views(clip.frames, size, 1)[0]  # [T, 3, S, S]
        else:
            pixels = square_views(clip.frames, size, 1, self.spec.resize_mode)[0]  # [T, 3, S, S], the model's resize
        with torch.no_grad(), autocast_for(self.device, "auto"):
            unit = (pixels.to(self.device).float() - self.mean) / self.std
            emb = self.branch.frame_embeddings(unit.unsqueeze(0))[0].float()  # [T, D]
        return EncodedVideo(np.asarray(indices(clip.num_frames)).tolist(), clip.num_frames, pixels, emb)

    @torch.no_grad()
    def predict(self, path: Path, top: int = 5, top_k: int = 5, decoder: str = DEFAULT_DECODER) -> VideoPrediction:
        """Classes, saliency and attributes of one video."""
        video = self.encode_video(path, decoder)
        frames = video.embeddings.unsqueeze(0)  # [1, T, D]
        probs = view_probabilities(self.branch, frames.unsqueeze(1), self.class_texts,
                                   video_score_rule(self.compat, fusing=False))[0].cpu()  # [K]
        order = probs.argsort(descending=True)[:top].tolist()
        saliency, method = self.saliency(frames, order[0])
        attributes, scores = self.attributes(video.embeddings, top_k)
        return VideoPrediction(
            video=path, top=[(self.class_names[i], float(probs[i])) for i in order],
            probabilities=probs.numpy(), saliency=saliency, saliency_method=method,
            frame_indices=video.frame_indices, attributes=attributes, attribute_scores=scores,
            sentence=attribute_sentence(attributes) if attributes else None,
            thumbnails=video.pixels.permute(0, 2, 3, 1).cpu().numpy(),
        )

    def saliency(self, frames: torch.Tensor, class_index: int) -> tuple[list[float], str]:
        """Temporal saliency [T] of one class for frames [1, T, D], and how it was made."""
        head = self.branch.head
        if head.head != "vcs":
            steps = frames.shape[1]
            return [1.0 / steps] * steps, "uniform"
        rows = slice(class_index, class_index + 1)
        s = vcs_saliency(head.encode(frames), self.class_texts.tokens[rows], self.class_texts.token_mask[rows],
                         head.tau)  # [1, 1, T]
        return s[0, 0].cpu().tolist(), "vcs"

    def attributes(self, embeddings: torch.Tensor, k: int) -> tuple[list[str], list[float]]:
        """Top-k phrases for frame embeddings [T, D] (mean over T, normalised), with their cosines."""
        if self.phrase_emb is None:
            return [], []
        if k > len(self.phrases):
            raise InputError(f"--top-k {k} is more than the {len(self.phrases)} phrases of the lexicon")
        video = F.normalize(embeddings.mean(0, keepdim=True), dim=-1)  # [1, D]
        values, indices = topk_cosine(video, self.phrase_emb.to(video.device), k)  # [1, k]
        return [self.phrases[i] for i in indices[0].tolist()], values[0].cpu().tolist()


# ----------------------------------------------------------------------------- loading


def _device(name: str | None) -> torch.device:
    return resolve_device(name)


def load_predictor(cfg: PredictConfig) -> tuple[Predictor, nn.Module]:
    """The predictor of `cfg` (checkpoint or zero-shot) and the CLIP model whose text tower it used."""
    device = _device(cfg.device)
    if cfg.checkpoint is not None and is_authors_checkpoint(cfg.checkpoint):
        predictor, clip_model = _from_authors(cfg, device)
    elif cfg.checkpoint is not None:
        predictor, clip_model = _from_checkpoint(cfg, device)
    else:
        predictor, clip_model = _zero_shot(cfg, device)
    predictor.compat = cfg.compat  # sampling, transform and scores of every kind of model
    predictor.description["compat"] = cfg.compat
    return predictor, clip_model


def _from_authors(cfg: PredictConfig, device: torch.device) -> tuple[Predictor, nn.Module]:
    """An authors' checkpoint: architecture and frames from the options, classes from the user."""
    names = read_class_names(cfg.classes) if cfg.classes is not None else list(cfg.class_names or [])
    ab = load_authors_branch(cfg.checkpoint, cfg.model, cfg.frames, head=cfg.head, vcs_tokens=cfg.vcs_tokens,
                             device=device)
    settings = ab.branch_spec
    texts = encode_class_texts(ab.clip, get_tokenizer(ab.spec.model_name), names, settings.templates,
                               settings.vcs_tokens)
    description = {"checkpoint": str(cfg.checkpoint), "model_name": ab.spec.model_name, "pretrained": ab.spec.pretrained,
                   "head": settings.head, "temporal": settings.temporal, "vcs_tokens": settings.vcs_tokens,
                   "frames": settings.frames, "epoch": ab.epoch, "layout": "authors"}
    return Predictor(ab.branch, ab.spec, names, texts, settings.frames, description, device), ab.clip


def _zero_shot(cfg: PredictConfig, device: torch.device) -> tuple[Predictor, nn.Module]:
    names = read_class_names(cfg.classes) if cfg.classes is not None else list(cfg.class_names or [])
    clip_model, spec = load_clip(cfg.model, cfg.pretrained, quick_gelu=cfg.quick_gelu, device=device)
    head_name, vcs_tokens = cfg.head or "vcs", cfg.vcs_tokens or "words"
    texts = encode_class_texts(clip_model, get_tokenizer(spec.model_name), names, [DEFAULT_TEMPLATE], vcs_tokens)
    frames = cfg.frames or DEFAULT_FRAMES
    branch_spec = VideoBranchSpec.of(spec, head=head_name, temporal="none", tau=DEFAULT_TAU, vcs_tokens=vcs_tokens,
                                     frames=frames)
    branch = build_video_branch(branch_spec, clip_model, with_visual=True, cap=None)  # the model's own scale
    description = {"checkpoint": None, "model_name": spec.model_name, "pretrained": spec.pretrained,
                   "head": head_name, "temporal": "none", "vcs_tokens": vcs_tokens, "frames": frames}
    return Predictor(branch, spec, names, texts, frames, description, device), clip_model


def _from_checkpoint(cfg: PredictConfig, device: torch.device) -> tuple[Predictor, nn.Module]:
    ckpt = load_video_checkpoint(cfg.checkpoint)
    settings = video_spec_of(ckpt, cfg.checkpoint)
    for option, given, trained in (("--head", cfg.head, settings.head), ("--vcs-tokens", cfg.vcs_tokens,
                                                                         settings.vcs_tokens)):
        if given is not None and given != trained:
            raise InputError(f"{option} {given} differs from {trained!r}, the setting {cfg.checkpoint} was "
                             f"trained with; leave {option} out with --checkpoint")
    clip_model, spec = _checkpoint_clip(ckpt, cfg.checkpoint, cfg.pretrained, device)
    texts = encode_class_texts(clip_model, get_tokenizer(spec.model_name), ckpt.class_names,
                               settings.templates, settings.vcs_tokens)
    branch = build_video_branch(settings, clip_model, with_visual=True)
    _load_branch_state(branch, ckpt, cfg.checkpoint)
    frames = cfg.frames or settings.frames
    if frames != settings.frames:
        log.warning("predicting with %d frames; %s was trained with %d", frames, cfg.checkpoint, settings.frames)
    description = {"checkpoint": str(cfg.checkpoint), "model_name": spec.model_name, "pretrained": spec.pretrained,
                   "head": settings.head, "temporal": settings.temporal, "vcs_tokens": settings.vcs_tokens,
                   "frames": frames, "epoch": ckpt.epoch}
    return Predictor(branch, spec, ckpt.class_names, texts, frames, description, device), clip_model


def _checkpoint_clip(ckpt: BranchCheckpoint, source: Path, pretrained: str | None,
                     device: torch.device) -> tuple[nn.Module, ClipSpec]:
    """CLIP as the checkpoint records it; `pretrained` relocates a weights file (same sha256)."""
    record = ckpt.clip
    recorded_sha = record.get("checkpoint_sha256")
    weights = record["pretrained"]
    if pretrained is not None:
        if recorded_sha is None:
            raise InputError(f"--pretrained relocates the CLIP weights file of a checkpoint, but {source} was "
                             f"trained from {weights!r}, which is not a file; leave --pretrained out")
        if not Path(pretrained).is_file():
            raise ModelLoadError(f"--pretrained {pretrained}: no such file")
        if file_sha256(pretrained) != recorded_sha:
            raise ModelLoadError(f"--pretrained {pretrained} is not the CLIP weights file {source} was trained "
                                 f"from (sha256 differs from the recorded {recorded_sha[:12]}...)")
        weights = pretrained
    elif recorded_sha is not None and not Path(weights).is_file():
        raise ModelLoadError(f"{source} was trained from the CLIP weights file {weights}, which no longer exists; "
                             "pass --pretrained PATH with the same file where it is now")
    clip_model, spec = load_clip(record["model_name"], weights, quick_gelu=record["quick_gelu"], device=device)
    if spec.embed_dim != record["embed_dim"]:
        raise ModelLoadError(f"{record['model_name']} now embeds in {spec.embed_dim} dimensions; {source} "
                             f"records {record['embed_dim']}")
    return clip_model, spec


def _load_branch_state(branch: VideoBranch, ckpt: BranchCheckpoint, source: Path) -> None:
    """The checkpoint's head and logit scale (and image tower, for end-to-end runs) into `branch`."""
    own = branch.state_dict()
    state = ckpt.state_dict
    missing = [k for k in own if k not in state and not k.startswith("visual.")]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise InputError(f"{source} does not fit the Video branch its settings describe: missing {missing[:4]}, "
                         f"unexpected {unexpected[:4]}, other shapes {shapes[:4]}")
    branch.load_state_dict(state, strict=False)
    tuned = sum(k.startswith("visual.") for k in state)
    log.info("loaded %s (epoch %d%s)", source, ckpt.epoch, ", fine-tuned image tower" if tuned else "")


def parse_class_names(text: str) -> list[str]:
    """Free-text class names "a,b,c" -> ["a", "b", "c"] (stripped; empty or repeated names are errors)."""
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise InputError(f"--class-names {text!r} has an empty name (two commas in a row, or a trailing comma?)")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"--class-names {text!r} repeats {', '.join(repeated)}")
    return names


def resolve_lexicon(lexicon: str | None) -> tuple[str | None, list[str]]:
    """(name, phrases) of the lexicon to use: the given one, none, or DEFAULT_LEXICON when available."""
    if lexicon is not None and lexicon.lower() == NO_LEXICON:
        return None, []
    if lexicon is not None:
        return lexicon, load_lexicon(lexicon)
    try:
        return DEFAULT_LEXICON, load_lexicon(DEFAULT_LEXICON)
    except InputError as err:
        log.warning("no attributes: the default lexicon is not available (%s); pass --lexicon", err)
        return None, []


# ----------------------------------------------------------------------------- the stage


def _check_inputs(cfg: PredictConfig) -> list[tuple[Path, str]]:
    """Videos that do not exist: an error naming them, or (skip_bad) the ones to skip."""
    missing = [v for v in cfg.videos if not Path(v).is_file()]
    if missing and not cfg.skip_bad:
        raise DecodeError(f"file not found: {', '.join(map(str, missing))}")
    return [(v, f"file not found: {v}") for v in missing]


def run_predict(cfg: PredictConfig) -> PredictResult:
    """Predict every video of `cfg` (see the module docstring); draw `cfg.explain` when set."""
    cfg.validate()
    if cfg.explain is not None:
        from bike_cli.report.explain import check_figure_path  # matplotlib only when a figure is asked for

        check_figure_path(cfg.explain)
        PathGuard({"a video": cfg.videos, "--checkpoint": cfg.checkpoint, "--classes": cfg.classes,
                   "--pretrained": file_or_none(cfg.pretrained)}, {"--explain": cfg.explain})
    skipped = _check_inputs(cfg)
    lexicon, phrases = resolve_lexicon(cfg.lexicon)
    if phrases and cfg.top_k > len(phrases):
        raise InputError(f"--top-k {cfg.top_k} is more than the {len(phrases)} phrases of lexicon {lexicon}")
    predictor, clip_model = load_predictor(cfg)
    if phrases:
        predictor.set_lexicon(clip_model, phrases)
    del clip_model  # the text tower's work is done
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
        from bike_cli.report.explain import draw_explanation

        result.explain = draw_explanation(predictions, cfg.explain)
    return result
