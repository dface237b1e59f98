"""`bike demo`: a small labelled video dataset made by bike itself, run through the pipeline's stages.

It needs no download: the videos are generated (shapes that differ in content and in motion) and the
default model is the built-in, randomly initialised `bike-tiny`. With `--model ViT-B-16 --pretrained
openai` it runs with real CLIP weights where they can be downloaded.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from bike_cli.config.ranges import check_ranges
from bike_cli.config.stages import (
    DemoConfig,
    EvalConfig,
    ExtractConfig,
    GenAttributesConfig,
    PredictConfig,
    SearchConfig,
    TrainAttrsConfig,
    TrainVideoConfig,
)
from bike_cli.data.synthetic import SAMPLE_CLASSES, make_sample_dataset
from bike_cli.engine.run_folder import TrainSummary
from bike_cli.io.atomic import write_text
from bike_cli.io.guard import check_folder_output
from bike_cli.progress import Progress
from bike_cli.stages.evaluate import run_eval
from bike_cli.stages.extract import ExtractSummary, run_extraction
from bike_cli.stages.gen_attributes import run_gen_attributes
from bike_cli.stages.predict import run_predict
from bike_cli.stages.search import run_search
from bike_cli.stages.train_attrs import run_train_attrs
from bike_cli.stages.train_video import run_train_video

# Phrases that can describe the generated videos: the Video-to-Text lexicon of the demo.
DEMO_LEXICON = (
    "a red square", "an orange square", "a blue circle", "a violet circle", "a small shape", "a large shape",
    "moving to the left", "moving to the right", "moving up", "moving down", "sliding across",
    "a grey background", "a noisy picture", "a still scene", "a bright colour", "a dark colour",
)

DEMO_QUERY = "a red square moving to the right"  # searched in the val cache with `bike search`'s VCS rule

log = logging.getLogger(__name__)


@dataclass
class DemoStep:
    name: str
    output: Path
    videos: int
    seconds: float
    result: str = ""


@dataclass
class DemoSummary:
    out: Path
    classes: Path
    steps: list[DemoStep]
    video_top1: float
    attrs_top1: float
    fused_top1: float
    chance: float
    explain: Path | None = None
    search: list[tuple[str, float]] | None = None  # the demo query's top 3: (video id, score)


def run_demo(cfg: DemoConfig, progress_factory=Progress) -> DemoSummary:
    """Generate the sample dataset (once), extract train (1x1) and val (2x3 views) caches, train the
    Video branch on the train cache and validate it on every view of the val cache."""
    check_ranges(cfg)
    check_folder_output("--out", cfg.out)
    data = make_sample_dataset(cfg.out / "data", videos_per_class=cfg.videos_per_class, seed=cfg.seed)
    log.info("sample dataset: %s", data.root)
    steps, caches = [], {}
    for name, list_path, views in (("train", data.train, "1x1"), ("val", data.val, "2x3")):
        extract = ExtractConfig(list_path=list_path, out=cfg.out / "features" / f"{name}.h5", model=cfg.model,
                                pretrained=cfg.pretrained, classes=data.classes, frames=cfg.frames, views=views,
                                sampling="test", seed=cfg.seed, workers=cfg.workers)
        log.info("extract-features: %s videos -> %s (%s views)", name, extract.out, views)
        done: ExtractSummary = run_extraction(extract, progress_factory())
        caches[name] = done.cache
        steps.append(DemoStep(f"extract-features ({name}, {views} views)", done.cache, done.cached, done.seconds))
    train = TrainVideoConfig(features=caches["train"], val_features=caches["val"], out=cfg.out / "runs" / "video",
                             frames=cfg.frames, epochs=20, batch_size=8, lr=2e-3, warmup_epochs=1, val_every=5,
                             workers=0, seed=cfg.seed, resume=True,
                             # bike-tiny's text tower is random: behind the paper's shared prompt prefix every
                             # class embeds to nearly the same vector, so the tiny demo prompts with the bare name.
                             templates=["{}"] if cfg.model == "bike-tiny" else TrainVideoConfig().templates)
    log.info("train-video: VCS head + temporal transformer on %s -> %s", caches["train"], train.out)
    trained: TrainSummary = run_train_video(train, progress_factory)
    top1 = trained.best_metrics.get("val_top1", float("nan"))
    steps.append(DemoStep("train-video (VCS + transformer)", train.out / "best.pt", 0, trained.seconds,
                          f"val top-1 {top1:.1f} % (epoch {trained.best_epoch})"))
    attributes = _attributes_branch(cfg, caches, data.classes, train.templates, steps, progress_factory)
    top1, predicted = _eval_and_predict(cfg, data, caches["val"], attributes["val"], train.out, steps,
                                        progress_factory)
    found = run_search(SearchConfig(features=caches["val"], queries=[DEMO_QUERY], top=3, root=data.root,
                                    out=cfg.out / "results" / "search_hits.csv"))
    top3 = [(hit.video_id, hit.score) for hit in found.queries[0].hits]
    steps.append(DemoStep(f"search {DEMO_QUERY!r} (VCS, top 3)", found.out, len(top3), found.seconds["total"],
                          ", ".join(Path(v).stem for v, _ in top3)))
    return DemoSummary(cfg.out, data.classes, steps, top1["video"], top1["attrs"], top1["fused"],
                       100.0 / len(SAMPLE_CLASSES), predicted.explain, top3)


def _eval_and_predict(cfg: DemoConfig, data, val_cache: Path, val_attributes: Path, video_run: Path,
                      steps: list, progress_factory) -> tuple[dict[str, float], object]:
    """eval of both branches with fusion, then predict --explain on one val video; each step timed."""
    evaluation = EvalConfig(out=cfg.out / "results", checkpoint=video_run, features=val_cache,
                            attributes=val_attributes, attrs_checkpoint=cfg.out / "runs" / "attrs", fuse=0.6,
                            workers=0)
    log.info("eval: both branches on every view of %s, fused with lambda 0.6 -> %s", val_cache, evaluation.out)
    evaluated, seconds = _timed(run_eval, evaluation, progress_factory())
    top1 = {branch: result["top1"] for branch, result in evaluated.metrics.items()}
    steps.append(DemoStep("eval (2x3 views, fuse 0.6)", evaluation.out / "metrics.json", evaluated.videos, seconds,
                          ", ".join(f"{b} {v:.1f} %" for b, v in top1.items())))
    with open(data.val, newline="") as fh:  # the list's first video
        first_val = data.root / next(csv.DictReader(fh))["path"]
    predicted, seconds = _timed(run_predict, PredictConfig(
        videos=[first_val], checkpoint=video_run, lexicon=str(cfg.out / "data" / "lexicon.txt"), top_k=3,
        explain=cfg.out / "results" / "explain.png"))
    name, prob = predicted.predictions[0].top[0]
    steps.append(DemoStep("predict --explain (one val video)", predicted.explain, 1, seconds, f"{name} (p={prob:.2f})"))
    return top1, predicted


def _timed(call, *args):
    """`call(*args)` and the seconds it took."""
    started = time.perf_counter()
    result = call(*args)
    return result, time.perf_counter() - started


def _attributes_branch(cfg: DemoConfig, caches: dict, classes: Path, templates: list[str], steps: list,
                       progress_factory) -> dict[str, Path]:
    """gen-attributes on both caches (S_A without training on val), then train-attrs."""
    lexicon = cfg.out / "data" / "lexicon.txt"
    write_text(lexicon, "\n".join(DEMO_LEXICON) + "\n")
    attributes = {}
    for name in ("train", "val"):
        gen = GenAttributesConfig(features=caches[name], lexicon=str(lexicon),
                                  out=cfg.out / "attributes" / f"{name}.csv", top_k=3, class_prompt=templates[0],
                                  scores=cfg.out / "scores" / "val_attrs_zero_shot.csv" if name == "val" else None)
        log.info("gen-attributes: %s -> %s", caches[name], gen.out)
        done = run_gen_attributes(gen, progress_factory())
        attributes[name] = done.out
        zero = f"zero-training S_A top-1 {done.metrics['top1']:.1f} %" if done.metrics else ""
        steps.append(DemoStep(f"gen-attributes ({name})", done.out, done.videos, done.seconds.get("total", 0.0), zero))
    attrs = TrainAttrsConfig(attributes=attributes["train"], val_attributes=attributes["val"], classes=classes,
                             out=cfg.out / "runs" / "attrs", model=cfg.model, pretrained=cfg.pretrained, tune="head",
                             templates=templates, epochs=15, batch_size=8, lr=3e-3, warmup_epochs=1, val_every=5,
                             seed=cfg.seed, resume=True)
    log.info("train-attrs: %s -> %s", attributes["train"], attrs.out)
    trained = run_train_attrs(attrs, progress_factory)
    top1 = trained.best_metrics.get("val_top1", float("nan"))
    steps.append(DemoStep("train-attrs (--tune head)", attrs.out / "best.pt", 0, trained.seconds,
                          f"val top-1 {top1:.1f} % (epoch {trained.best_epoch})"))
    return attributes
