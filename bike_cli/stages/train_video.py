"""Stage `train-video`: the paper's Video branch (VCS head, temporal transformer, Eq. 7 loss).

Two modes: from a feature cache (CLIP frozen; trains the temporal transformer and the logit scale)
or end to end from videos (CLIP's visual encoder fine-tuned at `clip_lr_ratio` x the head's lr). The
text encoder is always frozen; the class embeddings are computed once per run. The same code runs on
one CPU, one GPU or many GPUs and nodes under `accelerate launch`.

Outputs in `out/`: `config.yaml` (the resolved settings), `metrics.jsonl` (one line per epoch),
`last.pt` and `best.pt` (bike's checkpoint format), and `checkpoints/epoch_NNNN/` (Accelerate state:
model, optimiser, scheduler, RNG; what `--resume` continues from).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from bike_cli import __version__
from bike_cli.config.recipe import config_to_dict, save_resolved
from bike_cli.config.train_video import TrainVideoConfig
from bike_cli.data.augment import ClipAugment
from bike_cli.data.cached_clips import CachedClips
from bike_cli.data.clip_dataset import MultiViewClips, collate_items
from bike_cli.data.few_shot import few_shot_indices
from bike_cli.data.lists import read_class_names, read_video_list
from bike_cli.data.sampling import ViewLayout
from bike_cli.data.train_clips import TrainClips, collate_train, val_targets
from bike_cli.errors import InputError
from bike_cli.eval.metrics import recognition_metrics
from bike_cli.io.feature_cache import FeatureCache
from bike_cli.io.video_checkpoint import (
    VideoCheckpoint,
    is_authors_checkpoint,
    load_video_checkpoint,
    read_authors_checkpoint,
    save_video_checkpoint,
)
from bike_cli.models.clip import get_tokenizer, load_clip
from bike_cli.models.heads import VideoHead
from bike_cli.models.loss import LogitScale
from bike_cli.models.text import ClassTexts, encode_class_texts
from bike_cli.models.video_branch import VideoBranch
from bike_cli.stages.extract import PRECISIONS, Progress

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"  # written last into a checkpoint folder: marks it complete
KEEP_CHECKPOINTS = 2


@dataclass
class TrainSummary:
    out: Path
    epochs: int
    steps: int
    best_epoch: int
    best_metrics: dict
    last_metrics: dict
    seconds: float
    is_main: bool = True


class EpochBatches(Sampler[list[int]]):
    """Global batches of a seeded per-epoch permutation; this process gets every world-th index of each.

    Every process sees batches of the same size (the gathered loss needs that): a last batch is cut
    to a multiple of the world size, and dropped when smaller than it.
    """

    def __init__(self, n: int, global_batch: int, rank: int, world: int, seed: int) -> None:
        self.n, self.rank, self.world, self.seed = n, rank, world, seed
        self.global_batch = max(world, min(global_batch, n) // world * world)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _sizes(self) -> list[int]:
        full, rest = divmod(self.n, self.global_batch)
        rest -= rest % self.world
        return [self.global_batch] * full + ([rest] if rest else [])

    def __len__(self) -> int:
        return len(self._sizes())

    def __iter__(self) -> Iterator[list[int]]:
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch))
        start = 0
        for size in self._sizes():
            yield perm[start : start + size][self.rank :: self.world].tolist()
            start += size


def _check(cfg: TrainVideoConfig) -> None:
    if (cfg.features is None) == (cfg.videos is None):
        raise InputError("give exactly one of --features (a feature cache) or --videos (a video list)")
    if cfg.val_features is not None and cfg.val_videos is not None:
        raise InputError("give at most one of --val-features and --val-videos")
    for name in ("frames", "epochs", "batch_size", "grad_accum", "val_every"):
        if getattr(cfg, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(cfg, name)}")
    if cfg.lr <= 0:
        raise InputError(f"--lr must be positive, not {cfg.lr}")
    if cfg.precision not in PRECISIONS:
        raise InputError(f"--precision {cfg.precision!r} is not one of {', '.join(PRECISIONS)}")


def _class_names(cfg: TrainVideoConfig, cache: FeatureCache | None) -> list[str]:
    from_file = read_class_names(cfg.classes) if cfg.classes else None
    from_cache = list(cache.meta.class_names) if cache is not None else []
    if from_file and from_cache and from_file != from_cache:
        raise InputError(f"the class names in {cfg.classes} differ from those recorded in {cache.path}")
    names = from_file or from_cache
    if not names:
        raise InputError("no class names: pass --classes FILE (the cache does not record them)")
    return names


def _resolve_model(cfg: TrainVideoConfig, cache: FeatureCache | None) -> tuple[str, str]:
    """Model and weights: a cache fixes them (it was made by one CLIP); end to end they are required."""
    if cache is None:
        if not cfg.model or not cfg.pretrained:
            raise InputError("end-to-end training needs --model and --pretrained")
        return cfg.model, cfg.pretrained
    meta = cache.meta
    if cfg.model and cfg.model != meta.model_name:
        raise InputError(f"--model {cfg.model} differs from {meta.model_name}, the model that made {cache.path}")
    if cfg.pretrained and cfg.pretrained != meta.pretrained and not Path(cfg.pretrained).is_file():
        raise InputError(f"--pretrained {cfg.pretrained} differs from {meta.pretrained}, which made {cache.path}")
    return meta.model_name, cfg.pretrained or meta.pretrained


def _mixed_precision(precision: str, cuda: bool) -> str:
    if not cuda or precision == "fp32":
        return "no"
    if precision == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return precision


def _latest_checkpoint(out: Path) -> Path | None:
    done = sorted(p.parent for p in (out / "checkpoints").glob(f"epoch_*/{STATE_FILE}"))
    return done[-1] if done else None


def run_train_video(cfg: TrainVideoConfig, progress_factory=Progress) -> TrainSummary:
    """Train the Video branch; see the module docstring for the outputs."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    started = time.perf_counter()
    _check(cfg)
    cuda = torch.cuda.is_available()
    accelerator = Accelerator(cpu=not cuda, mixed_precision=_mixed_precision(cfg.precision, cuda),
                              gradient_accumulation_steps=cfg.grad_accum)
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    set_seed(cfg.seed)

    cache = FeatureCache(cfg.features) if cfg.features else None
    class_names = _class_names(cfg, cache)
    model_name, pretrained = _resolve_model(cfg, cache)
    clip_model, spec = load_clip(model_name, pretrained, quick_gelu=cfg.quick_gelu, device=device)
    if cache is not None and spec.embed_dim != cache.meta.embed_dim:
        raise InputError(f"{cache.path} holds {cache.meta.embed_dim}-d features; {model_name} makes {spec.embed_dim}-d")
    class_texts = encode_class_texts(clip_model, get_tokenizer(model_name), class_names, cfg.templates, cfg.vcs_tokens)
    text_width = clip_model.ln_final.weight.shape[0]

    head = VideoHead(spec.embed_dim, head=cfg.head, temporal=cfg.temporal, tau=cfg.tau,
                     layers=cfg.temporal_layers, heads=max(1, text_width // 64))
    visual = clip_model.visual if cfg.videos else None
    model = VideoBranch(head, LogitScale.from_clip(clip_model), visual).to(device)
    del clip_model  # the text tower's work is done (class_texts); the visual tower lives on in `model`
    if cfg.init_from:
        _init_from(model, cfg.init_from)
    if cfg.grad_checkpointing:
        if visual is not None:
            visual.set_grad_checkpointing(True)
        if cfg.temporal == "transformer":
            head.temporal.grad_checkpointing = True

    train_set, train_targets = _train_dataset(cfg, cache, class_names, spec.image_size)
    batches = EpochBatches(len(train_set), cfg.batch_size, rank, world, cfg.seed)
    if len(batches) == 0:
        raise InputError(f"{len(train_set)} training videos are fewer than the {world} processes")
    loader = DataLoader(train_set, batch_sampler=batches, num_workers=cfg.workers,
                        collate_fn=collate_train if cfg.videos else None, pin_memory=cuda)
    steps_per_epoch = math.ceil(len(batches) / cfg.grad_accum)
    optimizer = torch.optim.AdamW(model.param_groups(cfg.lr, cfg.clip_lr_ratio, cfg.weight_decay),
                                  lr=cfg.lr, betas=(0.9, 0.98), eps=1e-8)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _warmup_cosine(round(cfg.warmup_epochs * steps_per_epoch), cfg.epochs * steps_per_epoch)
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)  # not prepared: Accelerate would step it per process
    class_texts = ClassTexts(*(t.to(device) for t in (class_texts.pooled, class_texts.tokens, class_texts.token_mask)))

    cfg.out.mkdir(parents=True, exist_ok=True)
    state = {"epoch": 0, "step": 0, "best_epoch": 0, "best_metrics": {}, "best_score": -math.inf}
    if cfg.resume and (latest := _latest_checkpoint(cfg.out)) is not None:
        accelerator.load_state(str(latest))
        state = json.loads((latest / STATE_FILE).read_text())
        log.info("resumed from %s (epoch %d done)", latest, state["epoch"])
    elif cfg.resume:
        log.warning("--resume: no checkpoint in %s yet; starting from the beginning", cfg.out / "checkpoints")
    if accelerator.is_main_process:
        save_resolved(cfg, cfg.out / "config.yaml", stage="train-video")
        log.info("training on %d videos, %d classes, %d process(es), global batch %d, %d steps/epoch",
                 len(train_set), len(class_names), world, batches.global_batch, steps_per_epoch)

    val = _val_data(cfg, class_names, spec.image_size, rank, world)
    board = _tensorboard(cfg.out) if accelerator.is_main_process else None
    last_metrics: dict = {}
    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        batches.set_epoch(epoch)
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        epoch_start = time.perf_counter()
        loss = _train_epoch(model, loader, optimizer, scheduler, accelerator, class_texts, spec,
                            progress_factory() if accelerator.is_main_process else Progress(), epoch)
        state["step"] += steps_per_epoch
        metrics = {}
        if val is not None and (epoch % cfg.val_every == 0 or epoch == cfg.epochs):
            metrics = _validate(accelerator.unwrap_model(model), val, class_texts, spec, device)
        last_metrics = {"epoch": epoch, "step": state["step"], "train_loss": loss,
                        "lr": scheduler.get_last_lr()[0], **metrics, "seconds": time.perf_counter() - epoch_start}
        _end_epoch(cfg, accelerator, model, state, last_metrics, metrics, spec, class_names, epoch)
        if board is not None:
            for key, value in last_metrics.items():
                if key not in ("epoch", "step"):
                    board.add_scalar(key, value, state["step"])
            board.flush()
    accelerator.wait_for_everyone()
    if board is not None:
        board.close()
    return TrainSummary(cfg.out, cfg.epochs, state["step"], state["best_epoch"], state["best_metrics"],
                        last_metrics, time.perf_counter() - started, accelerator.is_main_process)


def _tensorboard(out: Path):
    """A TensorBoard writer into `out/tensorboard` where the tensorboard package is installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _init_from(model: VideoBranch, path: Path) -> None:
    """Start from a trained Video branch: bike's checkpoint, or the authors' released one."""
    if is_authors_checkpoint(path):
        authors = read_authors_checkpoint(path)
        state = {f"head.temporal.{k}": v for k, v in authors.temporal_state_dict.items()}
        state.update({k: v for k, v in authors.clip_state_dict.items() if k.startswith("visual.")})
        if "logit_scale" in authors.clip_state_dict:
            state["logit_scale.log_scale"] = authors.clip_state_dict["logit_scale"].reshape(())
    else:
        state = load_video_checkpoint(path).state_dict
    own = model.state_dict()
    if model.visual is None:  # cached features: the checkpoint's visual encoder is not used
        state = {k: v for k, v in state.items() if not k.startswith("visual.")}
    missing = [k for k in own if k not in state and not (model.visual is not None and k.startswith("visual."))]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise InputError(
            f"--init-from {path} does not fit this Video branch (head/temporal settings differ?): "
            f"missing {missing[:4]}, unexpected {unexpected[:4]}, other shapes {shapes[:4]}"
        )
    model.load_state_dict(state, strict=False)
    log.info("initialised from %s (%d tensors)", path, len(state))


def _warmup_cosine(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _train_dataset(cfg: TrainVideoConfig, cache: FeatureCache | None, class_names: list[str], size: int):
    """The training set (cached clips or decoded, augmented videos) and its targets."""
    if cache is not None:
        labels = cache.labels
        labelled = np.flatnonzero(labels.any(1) if labels.ndim == 2 else labels >= 0)
        rows = labelled
        if cfg.shots:
            rows = labelled[few_shot_indices(labels[labelled], cfg.shots, cfg.seed)]
        return CachedClips(cache, cfg.frames, train=True, seed=cfg.seed, rows=rows), labels[rows]
    video_list = read_video_list(cfg.videos, root=cfg.root, class_names=class_names)
    entries = [(i, e) for i, e in enumerate(video_list.entries) if e.labels]
    if cfg.shots:
        if video_list.multilabel:
            hot = np.zeros((len(entries), len(class_names)), dtype=np.uint8)
            for row, (_, e) in enumerate(entries):
                hot[row, list(e.labels)] = 1
            labels = hot
        else:
            labels = np.array([e.labels[0] for _, e in entries])
        entries = [entries[i] for i in few_shot_indices(labels, cfg.shots, cfg.seed)]
    augment = ClipAugment(size, scale_min=cfg.crop_scale_min, flip_prob=cfg.flip_prob,
                          grayscale_prob=cfg.grayscale_prob)
    dataset = TrainClips(entries, frames=cfg.frames, size=size, augment=augment, seed=cfg.seed,
                         num_classes=len(class_names), multilabel=video_list.multilabel)
    return dataset, None


def _to_unit_pixels(pixels: torch.Tensor, spec, device) -> torch.Tensor:
    """uint8 [..., 3, S, S] -> normalised float on `device`."""
    mean = torch.tensor(spec.mean, device=device).view(3, 1, 1)
    std = torch.tensor(spec.std, device=device).view(3, 1, 1)
    return (pixels.to(device, non_blocking=True).float() / 255.0 - mean) / std


def _train_epoch(model, loader, optimizer, scheduler, accelerator, class_texts, spec, progress, epoch) -> float:
    model.train()
    total, count = 0.0, 0
    progress.start(len(loader), f"epoch {epoch}")
    try:
        for inputs, targets in loader:
            if inputs.dtype == torch.uint8:  # decoded pixels (end to end)
                inputs = _to_unit_pixels(inputs, spec, accelerator.device)
            else:
                inputs = inputs.to(accelerator.device, non_blocking=True).float()
            targets = targets.to(accelerator.device)
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    loss = model(inputs, targets, class_texts)
                accelerator.backward(loss)
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            total += loss.item()
            count += 1
            progress.advance(1)
    finally:
        progress.stop()
    return total / max(1, count)


@dataclass
class _ValData:
    loader: DataLoader
    from_videos: bool
    multilabel: bool = False


def _val_data(cfg: TrainVideoConfig, class_names: list[str], size: int, rank: int, world: int) -> _ValData | None:
    """This process's share of the validation set (every world-th video), all views, test sampling."""
    if cfg.val_features:
        cache = FeatureCache(cfg.val_features)
        rows = np.arange(len(cache))[rank::world]
        dataset = CachedClips(cache, cfg.frames, train=False, rows=rows)
        return _ValData(DataLoader(dataset, batch_size=64, num_workers=cfg.workers), False)
    if cfg.val_videos:
        video_list = read_video_list(cfg.val_videos, root=cfg.val_root, class_names=class_names)
        items = list(enumerate(video_list.entries))[rank::world]
        dataset = MultiViewClips(items, frames=cfg.frames, layout=ViewLayout(1, 1), size=size)
        loader = DataLoader(dataset, batch_size=16, num_workers=cfg.workers, collate_fn=collate_items)
        return _ValData(loader, True, video_list.multilabel)
    return None


@torch.no_grad()
def _validate(model: VideoBranch, val: _ValData, class_texts: ClassTexts, spec, device) -> dict:
    """Top-1/top-5 (or mAP) over the whole validation set, gathered from every process."""
    from accelerate.utils import gather_object

    model.eval()
    scores, labels = [], []
    for batch in val.loader:
        if val.from_videos:
            if batch.frames is None:
                continue
            pixels = _to_unit_pixels(batch.frames, spec, device)  # [b, V, T, 3, S, S]
            b, v, t = pixels.shape[:3]
            frames = model.frame_embeddings(pixels.flatten(0, 1)).view(b, v, t, -1)
            target = val_targets(batch.ok, class_texts.pooled.shape[0], val.multilabel)
        else:
            frames, target = batch
        probs = model.class_probabilities(frames.to(device).float(), class_texts)  # [b, K]
        scores.append(probs.cpu().numpy())
        labels.append(target.numpy())
    gathered = gather_object([(np.concatenate(scores) if scores else None, np.concatenate(labels) if labels else None)])
    parts = [(s, l) for s, l in gathered if s is not None]
    all_scores = np.concatenate([s for s, _ in parts])
    all_labels = np.concatenate([l for _, l in parts])
    return {f"val_{k}": v for k, v in recognition_metrics(all_scores, all_labels).items()}


def _end_epoch(cfg, accelerator, model, state, line, metrics, spec, class_names, epoch) -> None:
    """Log the epoch, write last/best checkpoints and the resumable Accelerate state."""
    key = "val_mAP" if "val_mAP" in metrics else "val_top1"
    score = metrics.get(key, -line["train_loss"])  # without validation, the lowest training loss is best
    improved = score > state["best_score"]
    state["epoch"] = epoch
    if improved:
        state.update(best_epoch=epoch, best_metrics=metrics, best_score=score)
    folder = cfg.out / "checkpoints" / f"epoch_{epoch:04d}"
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        with open(cfg.out / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(line) + "\n")
        log.info("epoch %d: %s", epoch, ", ".join(f"{k} {v:.4g}" for k, v in line.items() if k != "epoch"))
        ckpt = VideoCheckpoint(config=config_to_dict(cfg), clip=asdict(spec), class_names=class_names,
                               epoch=epoch, metrics=line, state_dict=accelerator.unwrap_model(model).state_dict())
        save_video_checkpoint(cfg.out / "last.pt", ckpt)
        if improved:
            shutil.copyfile(cfg.out / "last.pt", cfg.out / "best.pt")
        (folder / STATE_FILE).write_text(json.dumps(state))  # last: marks the folder complete
        for old in sorted((cfg.out / "checkpoints").glob("epoch_*"))[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
