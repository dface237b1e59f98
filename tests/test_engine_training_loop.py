"""The training loop's promises to a user, on a tiny quadratic model (tests/training_rig.py): which
epochs are validated, which epoch is best, which checkpoint folders are kept, how many optimiser
steps an epoch takes under accumulation, the lr schedule's peak, what `--overwrite` removes and what a
later `--resume` continues."""

from __future__ import annotations

import json
import math

import pytest
from torch.optim.optimizer import register_optimizer_step_pre_hook
from training_rig import Rows, fit_rig

from bike_cli.engine.run_folder import RunFolder
from bike_cli.engine.training_loop import LoopSettings, warmup_cosine
from bike_cli.errors import InputError
from bike_cli.io.train_state import STATE_FILE

LR = 1e-2
N, BATCH = 47, 2  # 24 batches an epoch under bike's profile (the last one of a single row)


def _settings(out, epochs: int, *, val_every: int = 1, grad_accum: int = 1, warmup: float = 1.0,
              resume: bool = False, overwrite: bool = False) -> LoopSettings:
    return LoopSettings(out=out, epochs=epochs, batch_size=BATCH, grad_accum=grad_accum, warmup_epochs=warmup,
                        precision="fp32", seed=0, val_every=val_every, workers=0, resume=resume, device="cpu",
                        overwrite=overwrite)


def check_run_folder(settings: LoopSettings):
    """The run folder's rules for `settings` (what the stages apply under the lock)."""
    return RunFolder(settings.out, "train-video", resume=settings.resume, overwrite=settings.overwrite).check(
        settings.epochs)


def latest_checkpoint(out):
    return RunFolder(out, "train-video").latest_checkpoint()


def _fit(settings: LoopSettings, validate=None, on_epoch=None, compat: str = "bike"):
    """Train the quadratic rig; returns (summary, lr of every optimiser step, `improved` of every save)."""
    lrs: list[float] = []
    saves: list[tuple[int, bool]] = []

    class Watched(RunFolder):
        def save_checkpoints(self, model, line, improved, header):
            saves.append((line["epoch"], improved))
            if on_epoch is not None:
                on_epoch(line["epoch"])

    run = Watched(settings.out, "train-video", resume=settings.resume, overwrite=settings.overwrite)
    handle = register_optimizer_step_pre_hook(lambda opt, args, kwargs: lrs.append(opt.param_groups[0]["lr"]))
    try:
        summary = fit_rig(settings, compat, Rows(N), lr=LR, validate=validate, run=run)
    finally:
        handle.remove()
    return summary, lrs, saves


def _metrics(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_the_last_epoch_is_validated_when_epochs_are_not_a_multiple_of_val_every(tmp_path):
    validated: list[int] = []

    def validate(model):
        validated.append(len(validated) + 1)
        return {"val_top1": 10.0 * len(validated)}

    _fit(_settings(tmp_path, epochs=5, val_every=2), validate=validate)
    lines = _metrics(tmp_path)
    assert [line["epoch"] for line in lines if "val_top1" in line] == [2, 4, 5]
    assert len(validated) == 3


def test_a_tie_in_the_validation_metric_keeps_the_earlier_epoch_best(tmp_path):
    summary, _, saves = _fit(_settings(tmp_path, epochs=3), validate=lambda model: {"val_top1": 50.0})
    assert summary.best_epoch == 1
    assert saves == [(1, True), (2, False), (3, False)]  # best.pt is copied from last.pt only at epoch 1
    state = json.loads((latest_checkpoint(tmp_path) / STATE_FILE).read_text())
    assert state["best_epoch"] == 1 and state["best_metrics"] == {"val_top1": 50.0}


def test_a_better_later_epoch_becomes_best(tmp_path):
    scores = iter([40.0, 60.0, 55.0])
    summary, _, saves = _fit(_settings(tmp_path, epochs=3), validate=lambda model: {"val_top1": next(scores)})
    assert summary.best_epoch == 2 and saves == [(1, True), (2, True), (3, False)]


def test_checkpoint_retention_keeps_the_two_newest_epochs(tmp_path):
    kept: list[list[str]] = []

    def look(epoch):  # called by the stage's saver, before the epoch's state file and the retention
        kept.append(sorted(p.name for p in (tmp_path / "checkpoints").iterdir()))

    _fit(_settings(tmp_path, epochs=5), on_epoch=look)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch_0004", "epoch_0005"]
    # each epoch's folder exists when its checkpoint is written; only folders older than the last two go
    assert kept == [["epoch_0001"], ["epoch_0001", "epoch_0002"], ["epoch_0001", "epoch_0002", "epoch_0003"],
                    ["epoch_0002", "epoch_0003", "epoch_0004"], ["epoch_0003", "epoch_0004", "epoch_0005"]]
    assert latest_checkpoint(tmp_path).name == "epoch_0005"


@pytest.mark.parametrize("accum", [2, 5, 7])
def test_bike_schedule_steps_ceil_batches_over_accum_per_epoch_and_its_total_matches(tmp_path, accum):
    batches, epochs = math.ceil(N / BATCH), 2
    per_epoch = math.ceil(batches / accum)
    _, lrs, _ = _fit(_settings(tmp_path, epochs=epochs, grad_accum=accum))
    assert len(lrs) == epochs * per_epoch  # an epoch's last, partial group steps too
    assert [line["step"] for line in _metrics(tmp_path)] == [per_epoch * e for e in range(1, epochs + 1)]
    factor = warmup_cosine(per_epoch, epochs * per_epoch)  # --warmup-epochs 1
    assert lrs == pytest.approx([LR * factor(k) for k in range(epochs * per_epoch)], rel=1e-6)


def test_the_lr_factor_peaks_at_exactly_one_on_the_first_step_after_warm_up():
    factor = warmup_cosine(4, 20)
    values = [factor(step) for step in range(20)]
    assert max(values) == 1.0
    assert values[3] == 1.0 and values[4] == 1.0  # the warm-up's last step, then the cosine's first
    assert values[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert all(b <= a for a, b in zip(values[4:], values[5:]))


def test_the_trained_lr_never_exceeds_the_peak(tmp_path):
    _, lrs, _ = _fit(_settings(tmp_path, epochs=3, warmup=1.0))
    assert max(lrs) == pytest.approx(LR, rel=1e-9)
    assert all(lr <= LR * (1 + 1e-9) for lr in lrs)


def test_overwrite_removes_the_old_runs_checkpoints_and_tensorboard(tmp_path):
    _fit(_settings(tmp_path, epochs=3))
    (tmp_path / "tensorboard").mkdir(exist_ok=True)
    (tmp_path / "tensorboard" / "events.out").write_text("old")
    (tmp_path / "notes.txt").write_text("mine")
    assert check_run_folder(_settings(tmp_path, epochs=1, overwrite=True)) is None
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "tensorboard").exists()
    assert not (tmp_path / "metrics.jsonl").exists()
    assert (tmp_path / "notes.txt").read_text() == "mine"  # not a file of the run


def test_resume_after_overwrite_continues_the_new_run_not_the_old_one(tmp_path):
    _fit(_settings(tmp_path, epochs=3))  # the old run: epochs 1-3
    assert check_run_folder(_settings(tmp_path, epochs=1, overwrite=True)) is None
    _fit(_settings(tmp_path, epochs=1, overwrite=True))  # the new run: one epoch
    assert check_run_folder(_settings(tmp_path, epochs=2, resume=True)) is None  # not finished
    summary, _, saves = _fit(_settings(tmp_path, epochs=2, resume=True))
    assert [epoch for epoch, _ in saves] == [2]  # continues after the new run's epoch 1
    assert [line["epoch"] for line in _metrics(tmp_path)] == [1, 2]
    assert summary.steps == 2 * math.ceil(N / BATCH)


def test_resume_takes_the_same_file_named_another_way_as_unchanged(tmp_path, monkeypatch):
    from bike_cli.config.stages import TrainVideoConfig
    from bike_cli.engine.run_folder import CONFIG_FILE
    from bike_cli.io.train_state import save_resolved

    def check_resume_config(config, out):
        return RunFolder(out, "train-video", resume=True, config=config).check_config()

    (tmp_path / "feats").mkdir()
    cache = tmp_path / "feats" / "train.h5"
    cache.write_bytes(b"rows")
    (tmp_path / "link.h5").symlink_to(cache)
    (tmp_path / "other.h5").write_bytes(b"rows")
    out = tmp_path / "run"
    out.mkdir()
    save_resolved(TrainVideoConfig(features=cache.resolve(), out=out, epochs=3), out / CONFIG_FILE, stage="train-video")
    monkeypatch.chdir(tmp_path / "feats")
    for spelling in ("train.h5", "../feats/./train.h5", str(tmp_path / "link.h5")):
        assert check_resume_config(TrainVideoConfig(features=spelling, out=out, epochs=3), out) == 3
    with pytest.raises(InputError, match="features"):
        check_resume_config(TrainVideoConfig(features=tmp_path / "other.h5", out=out, epochs=3), out)
