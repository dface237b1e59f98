"""The training loop under `--compat authors`: lr cadence under gradient accumulation, drop_last,
mixed precision (issue 17). Their loop is written out here from their train.py."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook
from training_rig import Rows, fit_rig

from bike_cli.config.profile import get_profile
from bike_cli.engine.training_loop import EpochBatches, LoopSettings, accelerate_precision, make_accelerator

LR = 1e-2
N, BATCH, EPOCHS, WARMUP = 47, 2, 3, 1.0  # 23 full batches an epoch and one partial batch of 1




def _settings(out, grad_accum: int, epochs: int = EPOCHS, resume: bool = False, **kw) -> LoopSettings:
    return LoopSettings(out=out, epochs=epochs, batch_size=BATCH, grad_accum=grad_accum, warmup_epochs=WARMUP,
                        precision="fp32", seed=0, val_every=1, workers=0, resume=resume, device="cpu", **kw)


def _fit(out, compat: str, grad_accum: int, epochs: int = EPOCHS, resume: bool = False, batch_loader=None):
    """The lr of every optimiser step that ran, and the `step` of every metrics line."""
    settings = _settings(out, grad_accum, epochs, resume)
    lrs: list[float] = []
    handle = register_optimizer_step_pre_hook(lambda opt, args, kwargs: lrs.append(opt.param_groups[0]["lr"]))
    try:
        fit_rig(settings, compat, Rows(N), lr=LR, batch_loader=batch_loader)
    finally:
        handle.remove()
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    return lrs, steps


def _their_step_lrs(warmup: float, epochs: int, iters: int, accum: int) -> list[float]:
    """Their train.py: at iteration i, lr_scheduler.step(epoch + i / iters) when i == 0 or (i + 1) % 10 == 0
    (WarmupCosineAnnealingLR: x / warmup, then the cosine); optimizer step when (i + 1) % accum == 0."""
    lrs, current = [], 0.0
    for epoch in range(epochs):
        for i in range(iters):
            if i == 0 or (i + 1) % 10 == 0:
                x = epoch + i / iters
                if x < warmup:
                    current = x / warmup
                else:
                    current = (math.cos(math.pi * min(1.0, (x - warmup) / (epochs - warmup))) + 1) / 2
            if (i + 1) % accum == 0:
                lrs.append(LR * current)
    return lrs


@pytest.mark.parametrize("accum", [1, 2])
def test_authors_lr_follows_their_iteration_cadence_under_accumulation(tmp_path, accum):
    lrs, steps = _fit(tmp_path, "authors", accum)
    iters = N // BATCH  # drop_last: 23 iterations an epoch
    assert lrs == pytest.approx(_their_step_lrs(WARMUP, EPOCHS, iters, accum), rel=1e-6, abs=1e-12)
    assert steps == [e * (iters // accum) for e in range(1, EPOCHS + 1)]


def test_authors_resume_continues_the_lr_cadence_and_step_count(tmp_path):
    full_lrs, full_steps = _fit(tmp_path / "full", "authors", 2)
    _fit(tmp_path / "cut", "authors", 2, epochs=2)
    resumed_lrs, steps = _fit(tmp_path / "cut", "authors", 2, resume=True)
    assert resumed_lrs == pytest.approx(full_lrs[-len(resumed_lrs):], rel=1e-6, abs=1e-12)
    assert len(resumed_lrs) == (N // BATCH) // 2 and steps == full_steps


def test_bike_profile_keeps_its_optimiser_step_cadence(tmp_path):
    lrs, steps = _fit(tmp_path, "bike", 2, epochs=1)
    assert len(lrs) == math.ceil(N / BATCH) // 2 and steps == [math.ceil(math.ceil(N / BATCH) / 2)]


def test_authors_profile_drops_the_last_partial_batch():
    assert [len(b) for b in EpochBatches(11, 4, rank=0, world=1, seed=0, drop_last=True)] == [4, 4]
    assert [len(b) for b in EpochBatches(11, 4, rank=1, world=2, seed=0, drop_last=True)] == [2, 2]
    assert [len(b) for b in EpochBatches(11, 4, rank=0, world=1, seed=0)] == [4, 4, 3]  # bike keeps it


def test_authors_profile_drops_the_partial_batch_of_an_in_memory_loader(tmp_path):
    seen: list[int] = []

    def loader(sampler):
        class _Batches:
            def __len__(self):
                return len(sampler)

            def __iter__(self):
                for positions in sampler:
                    seen.append(len(positions))
                    yield Rows(N).x[positions]
        return _Batches()

    _fit(tmp_path / "a", "authors", 1, epochs=1, batch_loader=loader)
    assert seen == [BATCH] * (N // BATCH)
    seen.clear()
    _fit(tmp_path / "b", "bike", 1, epochs=1, batch_loader=loader)
    assert seen == [BATCH] * (N // BATCH) + [N % BATCH]


@pytest.mark.parametrize("precision,cuda,compat,bf16,expected", [
    ("auto", True, "authors", True, "fp16"),  # their torch.cuda.amp autocast + GradScaler
    ("auto", True, "authors", False, "fp16"),
    ("auto", True, "bike", True, "bf16"),
    ("auto", True, "bike", False, "fp16"),
    ("bf16", True, "authors", True, "bf16"),  # an explicit --precision is kept
    ("fp32", True, "authors", True, "no"),
    ("auto", False, "authors", True, "no"),  # the CPU trains in fp32 under both profiles
    ("fp16", False, "authors", True, "no"),
    ("bf16", False, "bike", True, "no"),
])
def test_accelerate_precision_per_profile_device_and_request(precision, cuda, compat, bf16, expected):
    assert accelerate_precision(precision, cuda, get_profile(compat), bf16) == expected


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_authors_profile_on_cuda_trains_under_fp16_with_a_grad_scaler(tmp_path):
    settings = LoopSettings(out=tmp_path, epochs=1, batch_size=BATCH, grad_accum=1, warmup_epochs=0.0,
                            precision="auto", seed=0, val_every=1, workers=0, resume=False, device="cuda")
    acc = make_accelerator(settings, get_profile("authors"))
    assert acc.mixed_precision == "fp16" and isinstance(acc.scaler, torch.amp.GradScaler)
    fit_rig(settings, "authors", Rows(N), lr=LR, inputs=lambda b: (b.to(acc.device),), accelerator=acc)
    assert math.isfinite(acc.scaler.get_scale())


def _authors_ckpt_and_cache(tmp_path, train):
    """A tiny random authors'-layout checkpoint, and a copy of `train` marked as made under their profile."""
    import shutil

    import h5py
    import open_clip

    from bike_cli.models.heads import TemporalTransformer
    from bike_cli.models.registry import register_configs

    register_configs()
    torch.manual_seed(7)
    clip = open_clip.create_model("bike-tiny", pretrained=None)
    ckpt = tmp_path / "authors.pt"
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in clip.state_dict().items()},
                "fusion_model_state_dict": {f"module.{k}": v for k, v in
                                            TemporalTransformer(64, layers=1, heads=1).state_dict().items()},
                "epoch": 0}, ckpt)
    cache = tmp_path / "train_authors.h5"
    shutil.copy(train, cache)
    with h5py.File(cache, "r+") as f:
        f.attrs["compat"] = "authors"
    return ckpt, cache


@pytest.mark.parametrize("given,expected", [(None, "all"), ("words", "words")])
def test_init_from_an_authors_checkpoint_queries_all_tokens_unless_told(tmp_path, motion_caches, caplog,
                                                                        given, expected):
    from bike_cli.config.stages import TrainVideoConfig
    from bike_cli.io.checkpoints import load_video_checkpoint
    from bike_cli.stages.train_video import run_train_video

    ckpt, cache = _authors_ckpt_and_cache(tmp_path, motion_caches[1])
    cfg = TrainVideoConfig(features=cache, out=tmp_path / "run", epochs=1, batch_size=8, workers=0,
                           temporal_layers=1, init_from=ckpt, templates=["{}"], compat="authors",
                           ignore_visual_weights=True, vcs_tokens=given)
    with caplog.at_level("INFO", logger="bike_cli.stages.train_video"):
        run_train_video(cfg)
    assert load_video_checkpoint(tmp_path / "run").config["vcs_tokens"] == expected
    said = [r.getMessage() for r in caplog.records if "--vcs-tokens" in r.getMessage()]
    assert len(said) == (1 if given is None else 0)
