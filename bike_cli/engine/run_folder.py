"""The run folder (`--out`) of a training stage: its guard, its lock, and what an earlier run left there.

Under the folder's writer lock (taken first: another process's live run is never touched):

- no run there: train;
- a run there, neither `--resume` nor `--overwrite`: an error offering both (nothing is touched);
- `--overwrite`: the run's files are removed (only those: other files in the folder stay), then train;
- `--resume` of a run whose last complete epoch is the last one asked for: nothing to do; the run's
  own summary is returned and no file is written (config.yaml stays as it was);
- `--resume` with fewer `--epochs` than the run has trained: an error (nothing is touched);
- `--resume` of an unfinished run, of a finished one with a larger `--epochs`, or of a folder with no
  run yet: train (resuming where it was, on the schedule of the total now asked for).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from bike_cli.engine.distributed import writer_lock
from bike_cli.engine.loop_settings import LoopSettings, RunState, TrainSummary, latest_checkpoint, make_accelerator
from bike_cli.engine.resume import CONFIG_FILE, METRICS_FILE, check_resume_config, check_resume_epochs
from bike_cli.errors import InputError
from bike_cli.io import train_state
from bike_cli.io.guard import PathGuard, PathOptions, check_folder_output

log = logging.getLogger(__name__)

RUN_FILES = ("metrics.jsonl", "last.pt", "best.pt", "config.yaml")  # besides checkpoints/ and tensorboard/
RUN_FOLDERS = ("checkpoints", "tensorboard")
RUN_OUTPUTS = ("last.pt", "best.pt", METRICS_FILE, CONFIG_FILE)  # the order the guard names them in


def run_guard(out: Path, inputs: PathOptions) -> PathGuard:
    """The guard of a training run: no input is a file it writes or a folder it replaces in `out`."""
    check_folder_output("--out", out)
    return PathGuard(inputs, {f"--out's {name}": out / name for name in RUN_OUTPUTS},
                     trees={f"--out's {name}": out / name for name in RUN_FOLDERS})


def run_training(cfg, stage: str, guard: PathGuard, train: Callable[[LoopSettings, object], TrainSummary]) -> TrainSummary:
    """What train-video and train-attrs share around their training: settings, Accelerator, the run
    folder's lock, then (under it) the earlier run's rules, the temp sweep, and `train(settings, acc)`."""
    settings = LoopSettings.of(cfg)
    settings.check()
    accelerator = make_accelerator(settings, cfg.compat)
    main = accelerator.is_main_process
    with writer_lock(cfg.out, folder=True, is_main=main, world_size=accelerator.num_processes):
        finished = check_run_folder(settings, stage, cfg, guard)
        accelerator.wait_for_everyone()  # rank 0 has removed an --overwrite'n run before any rank reads
        if finished is not None:
            return finished
        if main:  # of a writer killed mid-write: the lock says none is alive
            guard.sweep_temps(cfg.out, RUN_FILES)
        return train(settings, accelerator)


def holds_run(out: Path) -> bool:
    """Whether `out` has what a training run leaves: a complete epoch, metrics or a last checkpoint."""
    if not out.is_dir():
        return False
    return latest_checkpoint(out) is not None or (out / "metrics.jsonl").exists() or (out / "last.pt").exists()


def check_run_folder(settings: LoopSettings, stage: str, config: object = None,
                     guard: PathGuard | None = None) -> TrainSummary | None:
    """Apply the rules of the module docstring (hold the lock); a summary means "finished before: do nothing".

    A finished run is read as `--resume` reads any run (`check_resume_config`, then the state files
    through the code-free loader): changed settings and foreign files are refused here too."""
    out = settings.out
    if not holds_run(out):
        return None
    if settings.overwrite:
        if int(os.environ.get("RANK", "0")) == 0:  # one process of a launched run removes the files
            discard_run(out, guard or run_guard(out, {}))
        return None
    if not settings.resume:
        raise InputError(f"{out} already holds a {stage} run: pass --resume to continue it, --overwrite to "
                         "start it over, or choose another --out")
    if config is not None:
        check_resume_config(config, out)
    latest = latest_checkpoint(out)
    if latest is None:
        return None
    state = RunState(**train_state.load_state(latest, 0)["trainer"])  # every file read safely, as by --resume
    check_resume_epochs(out, state.epoch, settings.epochs)
    if state.epoch < settings.epochs:
        return None
    log.info("%s: %s finished epoch %d of %d earlier; nothing to do", stage, out, state.epoch, settings.epochs)
    return TrainSummary(out, state.epoch, state.step, state.best_epoch, state.best_metrics, _last_line(out), 0.0,
                        is_main=int(os.environ.get("RANK", "0")) == 0, finished_before=True)


def discard_run(out: Path, guard: PathGuard) -> None:
    """Remove the files a training run wrote into `out` (and nothing else), through its guard."""
    guard.discard(*(out / name for name in RUN_FOLDERS), *(out / name for name in RUN_FILES))
    log.info("--overwrite: removed the earlier run in %s", out)


def _last_line(out: Path) -> dict:
    try:
        lines = (out / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return {}
    return json.loads(lines[-1]) if lines else {}
