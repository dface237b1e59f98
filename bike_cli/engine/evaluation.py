"""Batches -> class probabilities: `bike eval`'s loops (a feature cache, decoded videos, an attributes CSV),
train-video's validation over every process's share, and `bike predict`'s `Predictor` (one video's classes,
temporal saliency by Eq. 5, and top-k lexicon phrases by cosine, Sec. 2.2)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from bike_cli.config.profile import AUTHORS_TEST, AUTHORS_VALIDATE, BIKE_SOFTMAX, Profile, check_same_profile
from bike_cli.config.stages import DEFAULT_DECODER, TrainVideoConfig
from bike_cli.data.cached_clips import CachedClips, SlabBatches, cache_labels
from bike_cli.data.class_names import subset_entries, subset_rows
from bike_cli.data.clip_dataset import MultiViewClips, collate_items, val_targets
from bike_cli.data.decoding.read import read_frames
from bike_cli.data.sampling import TEST_INDICES, TEST_TRANSFORMS, ViewLayout
from bike_cli.data.video_lists import labels_array, read_video_list
from bike_cli.engine.frame_encoder import FrameEncoder, to_unit_pixels
from bike_cli.engine.run_folder import VAL_SKIPPED
from bike_cli.engine.runtime import cores_beside_workers, loader_workers, metrics_over_processes
from bike_cli.errors import InputError
from bike_cli.io.attributes_csv import read_attributes_csv
from bike_cli.io.csv_meta import read_csv_meta
from bike_cli.io.feature_cache import Failure, FeatureCache
from bike_cli.models import authors
from bike_cli.models.attributes import SENTENCE_BATCH, attribute_scores, encode_texts, topk_cosine
from bike_cli.models.clip import ClipSpec
from bike_cli.models.factory import AttrsClassifier, VideoClassifier
from bike_cli.models.heads import vcs_saliency
from bike_cli.models.registry import get_tokenizer
from bike_cli.models.text import ClassTexts, attribute_sentence
from bike_cli.models.video_branch import VideoBranch, ViewRule
from bike_cli.progress import Progress

log = logging.getLogger(__name__)

# Score rules by profile name: cosine logits [b, V, K] (attributes: [R, K]) and exp(logit scale) -> [b, K] ([R, K])
VIDEO_SCORES: dict[str, ViewRule] = {
    BIKE_SOFTMAX: authors.scaled_view_scores,
    AUTHORS_TEST: lambda logits, scale: authors.authors_view_scores(logits),  # unscaled: their test.py
    AUTHORS_VALIDATE: lambda logits, scale: authors.authors_validate_scores(logits),  # unscaled: their validate()
}
ATTRS_SCORES: dict[str, ViewRule] = {
    BIKE_SOFTMAX: authors.scaled_row_scores,
    AUTHORS_VALIDATE: lambda logits, scale: authors.authors_attrs_scores(logits),
}

Scores = tuple[list[str], np.ndarray, np.ndarray, list[str]]  # video ids, labels, probabilities [N, K], failed ids


@torch.no_grad()
def cache_scores(vm: VideoClassifier, rule: ViewRule, cache: FeatureCache, batch_size: int, device,
                 progress: Progress) -> Scores:
    """The Video branch's scores of every video of a feature cache by `rule` (none fail)."""
    labels, scores = [], []
    dataset = CachedClips(cache, vm.frames, train=False)
    progress.start(len(dataset), "scoring (cache)")
    for frames, target in SlabBatches(dataset, batch_size):  # frames [b, V, T, D], no workers
        scores.append(vm.scores(frames.to(device).float(), rule).cpu().numpy())
        labels.append(target.numpy())
        progress.advance(len(target))
    progress.stop()
    return list(cache.video_ids), np.concatenate(labels), np.concatenate(scores), []


@torch.no_grad()
def decoded_scores(vm: VideoClassifier, rule: ViewRule, videos: Path, root: Path | None, layout: ViewLayout,
                   profile: Profile, batch_size: int, workers: int, device, progress: Progress,
                   kept: list | None = None) -> Scores:
    """The Video branch's scores of a list's videos by `rule`, `layout` views decoded here (a video that fails
    is logged and listed); `kept` collects every batch's frame embeddings [b, V, T, D] for a protocol."""
    ids, labels, scores, failed = [], [], [], []
    video_list = read_video_list(videos, root=root, class_names=vm.names)
    k = vm.texts.pooled.shape[0]
    dataset = MultiViewClips(list(enumerate(video_list.entries)), frames=vm.frames, layout=layout,
                             size=vm.spec.image_size, profile=profile, resize_mode=vm.spec.resize_mode)
    per_batch = max(1, batch_size // layout.num_views)
    workers = loader_workers(workers, -(-len(dataset) // per_batch))
    loader = DataLoader(dataset, batch_size=per_batch, num_workers=workers, collate_fn=collate_items)
    progress.start(len(dataset), "scoring (videos)")
    encoder = FrameEncoder(vm.branch, vm.spec, torch.device(device))
    with cores_beside_workers(device, workers):  # CPU: torch threads beside the loader workers
        for batch in loader:
            failed += [item.entry.video_id for item in batch.failed]
            for item in batch.failed:
                log.warning("not scored: %s: %s", item.entry.video_id, item.error)
            if batch.frames is not None:
                emb = encoder.embed(batch.frames)  # [b, V, T, D]
                scores.append(vm.scores(emb, rule).cpu().numpy())
                if kept is not None:
                    kept.append(emb.cpu())
                ids += [item.entry.video_id for item in batch.ok]
                labels.append(labels_array([item.entry for item in batch.ok], k, video_list.multilabel))
            progress.advance(len(batch.ok) + len(batch.failed))
    progress.stop()
    return ids, np.concatenate(labels), np.concatenate(scores), failed


@torch.no_grad()
def attrs_scores(attributes: Path, compat: str, model: AttrsClassifier, rule: ViewRule) -> tuple[list[str], np.ndarray]:
    """(video ids, S_A scores [N, K] by `rule`) of the attributes CSV, rows of a video averaged."""
    table = read_attributes_csv(attributes)
    check_same_profile(compat, read_csv_meta(attributes).compat, attributes)
    return attribute_scores(lambda sentences: model.scores(sentences, rule), table.sentences, table.video_ids,
                            SENTENCE_BATCH)


@dataclass
class ValData:
    """The batches of this process's validation share, and what they hold."""

    loader: Iterable  # of batches: SlabBatches (a cache) or a DataLoader (videos)
    from_videos: bool
    multilabel: bool = False
    videos: int = 0  # in the whole validation list (every process's share)
    skipped: list[Failure] = field(default_factory=list)  # of the last validation, every process's, in list order


def val_data(cfg: TrainVideoConfig, class_names: list[str], spec: ClipSpec, rank: int, world: int,
             subset: np.ndarray | None = None) -> ValData | None:
    """This process's share of the validation set (every world-th video), test sampling, labels numbered by
    `class_names`; with `subset` (`--base-classes`' positions) only those classes, relabelled as training's."""
    if cfg.val_features:
        cache = FeatureCache(cfg.val_features, need_rows=True)
        labels = cache_labels(cache, class_names, cfg.classes or cfg.features)
        rows = np.arange(len(cache))
        if subset is not None:
            labels, rows = subset_rows(labels, subset)
        dataset = CachedClips(cache, cfg.frames, train=False, rows=rows[rank::world], labels=labels)
        return ValData(SlabBatches(dataset, batch_size=64), False)
    if cfg.val_videos:
        video_list = read_video_list(cfg.val_videos, root=cfg.val_root, class_names=class_names)
        items = list(enumerate(video_list.entries))
        if subset is not None:
            items = [(i, e) for i, e in subset_entries(items, subset) if e.labels]
        dataset = MultiViewClips(items[rank::world], frames=cfg.frames, layout=ViewLayout(1, 1), size=spec.image_size,
                                 resize_mode=spec.resize_mode)
        loader = DataLoader(dataset, batch_size=16, num_workers=cfg.workers, collate_fn=collate_items)
        return ValData(loader, True, video_list.multilabel, videos=len(video_list.entries))
    return None


@torch.no_grad()
def validate(model: VideoBranch, val: ValData, class_texts: ClassTexts, spec: ClipSpec,
             device: torch.device) -> dict:
    """Top-1/top-5 (or mAP) over the whole validation set from every process; with videos, `val_skipped`."""
    model.eval()
    scores, labels, failed = [], [], []
    for batch in val.loader:
        if val.from_videos:
            failed += [Failure(i.list_index, i.entry.video_id, str(i.entry.path), i.error or "") for i in batch.failed]
            if batch.frames is None:
                continue
            pixels = to_unit_pixels(batch.frames, spec, device)  # [b, V, T, 3, S, S]
            b, v, t = pixels.shape[:3]
            frames = model.frame_embeddings(pixels.flatten(0, 1)).view(b, v, t, -1)
            target = val_targets(batch.ok, class_texts.pooled.shape[0], val.multilabel)
        else:
            frames, target = batch
        scores.append(model.class_probabilities(frames.to(device).float(), class_texts).cpu().numpy())  # [b, K]
        labels.append(target.numpy())
    if not val.from_videos:
        return metrics_over_processes(scores, labels)
    from accelerate.utils import gather_object

    # every process's undecodable videos, in list order: the same list on every process
    val.skipped = sorted((f for part in gather_object([failed]) for f in part), key=lambda f: f.list_index)
    if len(val.skipped) >= val.videos:
        first = val.skipped[0]
        raise InputError(f"none of the {val.videos} videos of --val-videos could be read (e.g. {first.video_id}: "
                         f"{first.reason}); check the list and --val-root")
    return {**metrics_over_processes(scores, labels), VAL_SKIPPED: len(val.skipped)}



@dataclass
class EncodedVideo:
    """One video's sampled frames and their CLIP embeddings."""

    frame_indices: list[int]  # T indices into the video's frames
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
        kept = ("attributes", "attribute_scores", "sentence", "saliency", "saliency_method", "frame_indices")
        return {"video": str(self.video), "top5": [{"class": name, "prob": prob} for name, prob in self.top],
                **{key: getattr(self, key) for key in kept}}


class Predictor:
    """A loaded Video branch (with CLIP's image tower) run by a profile's rules, and the lexicon's phrases."""

    def __init__(self, model: VideoClassifier, profile: Profile, compat: str, device: torch.device) -> None:
        self.model, self.profile, self.compat, self.device = model, profile, compat, device
        self.branch, self.spec, self.frames = model.branch, model.spec, model.frames
        self.class_names, self.class_texts = model.names, model.texts
        self.description = {**model.description, "compat": compat}
        self.rule = VIDEO_SCORES[profile.video_score_rule(fusing=False)]
        self.phrases: list[str] = []
        self.phrase_emb: torch.Tensor | None = None  # [P, D] normalised
        self.encoder = FrameEncoder(self.branch, self.spec, device)  # the branch's image tower, precision auto

    def set_lexicon(self, phrases: list[str], batch_size: int = 256) -> None:
        """Encode the lexicon's phrases (bare, as in the paper) with the model's CLIP text encoder."""
        self.phrases = list(phrases)
        self.phrase_emb = encode_texts(self.model.clip, get_tokenizer(self.spec.model_name), self.phrases, batch_size)

    def encode_video(self, path: Path, decoder: str = DEFAULT_DECODER) -> EncodedVideo:
        """Decode T test-sampled frames (centre crop) and embed them; DecodeError names the file."""
        size, transform = self.spec.image_size, TEST_TRANSFORMS[self.profile.test_transform]
        def indices(n: int) -> np.ndarray:  # [T]: one test clip by the profile's rule
            return TEST_INDICES[self.profile.test_indices](n, self.frames, 1)[0]
        clip = read_frames(path, indices, short_side=None if transform.full_size else size, decoder=decoder,
                           resize=self.spec.resize_mode)
        pixels = transform.views(clip.frames, size, 1, self.spec.resize_mode)[0]  # [T, 3, S, S]
        return EncodedVideo(np.asarray(indices(clip.num_frames)).tolist(), pixels, self.encoder.embed(pixels))

    @torch.no_grad()
    def predict(self, path: Path, top: int = 5, top_k: int = 5, decoder: str = DEFAULT_DECODER) -> VideoPrediction:
        """Classes, saliency and attributes of one video."""
        video = self.encode_video(path, decoder)
        frames = video.embeddings.unsqueeze(0)  # [1, T, D]
        probs = self.model.scores(frames.unsqueeze(1), self.rule)[0].cpu()  # [K]
        order = probs.argsort(descending=True)[:top].tolist()
        saliency, method = self.saliency(frames, order[0])
        attributes, scores = self.attributes(video.embeddings, top_k)
        return VideoPrediction(
            video=path, top=[(self.class_names[i], float(probs[i])) for i in order], probabilities=probs.numpy(),
            saliency=saliency, saliency_method=method, frame_indices=video.frame_indices, attributes=attributes,
            attribute_scores=scores, sentence=attribute_sentence(attributes) if attributes else None,
            thumbnails=video.pixels.permute(0, 2, 3, 1).cpu().numpy())

    def saliency(self, frames: torch.Tensor, class_index: int) -> tuple[list[float], str]:
        """Temporal saliency [T] of one class for frames [1, T, D], and how it was made."""
        head = self.branch.head
        if head.head != "vcs":
            steps = frames.shape[1]
            return [1.0 / steps] * steps, "uniform"
        rows = slice(class_index, class_index + 1)
        texts = self.class_texts
        weights = texts.token_mask if texts.token_weights is None else texts.token_weights  # [K, M]
        s = vcs_saliency(head.encode(frames), texts.tokens[rows], weights[rows], head.tau)  # [1, 1, T]
        return s[0, 0].cpu().tolist(), "vcs"

    def attributes(self, embeddings: torch.Tensor, k: int) -> tuple[list[str], list[float]]:
        """Top-k phrases (k checked by the stage) for frame embeddings [T, D] (mean over T, normalised), cosines."""
        if self.phrase_emb is None:
            return [], []
        video = F.normalize(embeddings.mean(0, keepdim=True), dim=-1)  # [1, D]
        values, indices = topk_cosine(video, self.phrase_emb.to(video.device), k)  # [1, k]
        return [self.phrases[i] for i in indices[0].tolist()], values[0].cpu().tolist()
