"""A run whose loss becomes NaN stops at once, in one line (the epoch, the step, lower --lr), exit 1;
it keeps its last finite epoch and writes nothing NaN: no NaN checkpoint, metrics.jsonl strict JSON,
and predict/eval refuse a checkpoint with NaN weights instead of printing NaN probabilities."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from training_rig import Quadratic, Rows, fit_rig

from bike_cli.engine.training_loop import LoopSettings, TrainingDiverged
from bike_cli.io.checkpoints import load_video_checkpoint
from bike_cli.io.train_state import STATE_FILE

BIKE = [sys.executable, "-m", "bike_cli"]
ENV = {**os.environ, "COLUMNS": "200"}


def bike(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*BIKE, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=timeout)


def train_args(train: Path, out: Path, *extra: str) -> list[str]:
    return ["train-video", "--features", str(train), "--out", str(out), "--batch-size", "8", "--workers", "0",
            "--template", "{}", "--temporal-layers", "1", *extra]


def strict_records(path: Path) -> list[dict]:
    """The lines of a metrics.jsonl, read by a JSON reader that refuses NaN and Infinity."""
    def refuse(name: str):
        raise AssertionError(f"{path} holds {name}, which is not JSON")
    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_a_diverging_train_video_stops_in_one_line_and_saves_nothing(tmp_path, motion_caches):
    _, train, val = motion_caches
    run = tmp_path / "run"
    result = bike(*train_args(train, run, "--epochs", "2", "--lr", "1e9", "--val-features", str(val)))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = error_lines(result.stderr)
    assert "training diverged" in line and "epoch 1, step" in line and "nothing was saved" in line
    assert "Lower --lr (now 1e+09" in line
    assert not (run / "last.pt").exists() and not (run / "best.pt").exists()
    assert not (run / "metrics.jsonl").exists()
    assert not list(run.glob(f"checkpoints/*/{STATE_FILE}"))


def test_a_run_that_diverges_later_keeps_its_last_finite_epoch_and_predict_refuses_nan_weights(
        tmp_path, motion_caches):
    data, train, val = motion_caches
    run = tmp_path / "run"
    # lr 300: epoch 1 stays finite on this rig, a later epoch's weights overflow
    result = bike(*train_args(train, run, "--epochs", "3", "--lr", "300", "--val-features", str(val)))
    assert result.returncode == 1, result.stderr
    (line,) = error_lines(result.stderr)
    kept = re.search(r"last\.pt and best\.pt keep epoch (\d+), the last finite one", line)
    assert kept, line
    epoch = int(kept[1])
    assert f"epoch {epoch + 1}" in line and "--overwrite" in line
    records = strict_records(run / "metrics.jsonl")
    assert [r["epoch"] for r in records] == list(range(1, epoch + 1))
    assert all(math.isfinite(r["train_loss"]) for r in records)
    last = load_video_checkpoint(run / "last.pt")
    assert last.epoch == epoch and all(t.isfinite().all() for t in last.state_dict.values())

    video = sorted((data.root).rglob("*.mp4"))[0]
    ok = bike("predict", video, "--checkpoint", run / "last.pt", "--json", "--lexicon", "none")
    assert ok.returncode == 0, ok.stderr
    assert "nan" not in ok.stdout.lower()

    # a checkpoint of an older bike: NaN weights, or finite weights that overflow
    payload = torch.load(run / "last.pt", weights_only=True)
    key = next(k for k in payload["state_dict"] if k.endswith("in_proj_weight"))
    for name, value, command, message in (
            ("nan.pt", float("nan"), ["predict", video, "--lexicon", "none"], "NaN or infinite weights"),
            ("huge.pt", 1e30, ["eval", "--features", val, "--out", tmp_path / "e"], "NaN or infinite class scores")):
        bad = tmp_path / name
        torch.save({**payload, "state_dict": {**payload["state_dict"], key: torch.full_like(
            payload["state_dict"][key], value)}}, bad)
        refused = bike(*command, "--checkpoint", bad)
        assert refused.returncode == 1, refused.stderr
        assert "nan" not in refused.stdout.lower() and "Traceback" not in refused.stderr
        (line,) = error_lines(refused.stderr)
        assert str(bad) in " ".join(refused.stderr.split()) and message in line
        assert not (tmp_path / "e" / "video_scores.csv").exists()


def test_a_diverging_train_attrs_stops_in_one_line(tmp_path):
    from test_stage_train_attrs import CLASSES, attributes_file

    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(CLASSES) + "\n")
    attributes_file(tmp_path / "train.csv", 4, seed=0)
    run = tmp_path / "run"
    result = bike("train-attrs", "--attributes", tmp_path / "train.csv", "--classes", classes, "--out", run,
                  "--model", "bike-tiny", "--pretrained", "none", "--epochs", "2", "--batch-size", "8",
                  "--template", "{}", "--lr", "1e12", "--workers", "0")
    assert result.returncode == 1, result.stderr
    (line,) = error_lines(result.stderr)
    assert "training diverged" in line and "Lower --lr" in line
    assert not (run / "last.pt").exists() and not (run / "best.pt").exists()


def _settings(out, epochs: int) -> LoopSettings:
    return LoopSettings(out=out, epochs=epochs, batch_size=4, grad_accum=1, warmup_epochs=0.0, precision="fp32",
                        seed=0, val_every=1, workers=0, resume=False, device="cpu", overwrite=False)


class NanAfter(Quadratic):
    """The rig's quadratic loss, NaN from its `calls`-th forward on."""

    def __init__(self, calls: int) -> None:
        super().__init__()
        self.calls, self.seen = calls, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += 1
        loss = super().forward(x)
        return loss * float("nan") if self.seen >= self.calls else loss


def test_the_loop_stops_at_the_first_nan_loss_and_keeps_the_epochs_before(tmp_path):
    # 12 rows, batch 4: 3 steps an epoch and one forward of the weights it ends with; the 6th forward is
    # epoch 2's second step
    with pytest.raises(TrainingDiverged, match=r"loss is nan at epoch 2, step 5 \(batch 2 of 3\)"):
        fit_rig(_settings(tmp_path, epochs=3), "bike", Rows(12), model=NanAfter(6))
    assert [r["epoch"] for r in strict_records(tmp_path / "metrics.jsonl")] == [1]
    assert [p.parent.name for p in tmp_path.glob(f"checkpoints/*/{STATE_FILE}")] == ["epoch_0001"]


@pytest.mark.parametrize("poisoned, message", [
    ("w", r"the weights epoch 2 ends with \(step 6\) give a training loss of nan on its last batch"),
    ("unused", "weights became NaN or infinite at epoch 2"),
])
def test_weights_that_diverge_in_an_epochs_last_step_stop_the_run_before_it_is_saved(tmp_path, poisoned, message):
    model = Quadratic()
    model.unused = torch.nn.Parameter(torch.zeros(2))  # saved with the rest, not in the loss
    steps = []

    def poison(optimizer, args, kwargs):
        steps.append(1)
        if len(steps) == 6:  # epoch 2's last optimiser step: its loss was finite, the weights it leaves are not
            with torch.no_grad():
                (model.w.bias if poisoned == "w" else model.unused).fill_(float("nan"))

    handle = register_optimizer_step_post_hook(poison)
    try:
        with pytest.raises(TrainingDiverged, match=message):
            fit_rig(_settings(tmp_path, epochs=3), "bike", Rows(12), model=model)
    finally:
        handle.remove()
    assert [r["epoch"] for r in strict_records(tmp_path / "metrics.jsonl")] == [1]
    assert [p.parent.name for p in tmp_path.glob(f"checkpoints/*/{STATE_FILE}")] == ["epoch_0001"]


def test_metrics_jsonl_is_strict_json_when_a_metric_has_nothing_to_measure(tmp_path):
    fit_rig(_settings(tmp_path, epochs=2), "bike", Rows(12), validate=lambda model: {"val_mAP": float("nan")})
    assert [r["val_mAP"] for r in strict_records(tmp_path / "metrics.jsonl")] == [None, None]


@pytest.mark.slow
def test_every_process_of_a_launch_stops_at_the_same_step(tmp_path, motion_caches):
    _, train, _ = motion_caches
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    launched = subprocess.run(
        [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "bike_cli",
         *train_args(train, tmp_path / "two", "--epochs", "2", "--lr", "1e9")],
        capture_output=True, text=True, env={**ENV, "ACCELERATE_USE_CPU": "1"}, timeout=300,
    )
    assert launched.returncode != 0
    lines = error_lines(launched.stderr)
    assert len(lines) == 2 and len(set(lines)) == 1, launched.stderr[-3000:]  # both processes, the same step
    assert "training diverged" in lines[0]
    assert not (tmp_path / "two" / "last.pt").exists()
