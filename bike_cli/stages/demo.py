"""`bike demo`: a small labelled video dataset made by bike itself, run through the pipeline's stages.

It needs no download: the videos are generated (shapes that differ in content and in motion) and the
default model is the built-in, randomly initialised `bike-tiny`. With `--model ViT-B-16 --pretrained
openai` it runs with real CLIP weights where they can be downloaded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from bike_cli.data.synthetic import make_sample_dataset
from bike_cli.stages.extract import ExtractConfig, ExtractSummary, Progress, run_extraction

log = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    out: Path = Path("bike-demo")
    model: str = "bike-tiny"
    pretrained: str = "none"
    videos_per_class: int = 8
    frames: int = 8
    seed: int = 0
    workers: int = 2


@dataclass
class DemoStep:
    name: str
    summary: ExtractSummary


@dataclass
class DemoSummary:
    out: Path
    classes: Path
    steps: list[DemoStep]


def run_demo(cfg: DemoConfig, progress_factory=Progress) -> DemoSummary:
    """Generate the sample dataset (once) and extract train (1x1) and val (2x3 views) caches."""
    data = make_sample_dataset(cfg.out / "data", videos_per_class=cfg.videos_per_class, seed=cfg.seed)
    log.info("sample dataset: %s", data.root)
    steps = []
    for name, list_path, views in (("train", data.train, "1x1"), ("val", data.val, "2x3")):
        extract = ExtractConfig(
            list_path=list_path, out=cfg.out / "features" / f"{name}.h5", model=cfg.model,
            pretrained=cfg.pretrained, classes=data.classes, frames=cfg.frames, views=views,
            sampling="test", seed=cfg.seed, workers=cfg.workers,
        )
        log.info("extract-features: %s videos -> %s (%s views)", name, extract.out, views)
        steps.append(DemoStep(f"extract-features ({name}, {views} views)", run_extraction(extract, progress_factory())))
    return DemoSummary(cfg.out, data.classes, steps)
