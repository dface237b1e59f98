"""The run folder (`--out`) of a training stage as one object, `RunFolder` (after timm's CheckpointSaver): its
files, the --resume/--overwrite rules and the averaging window are described in docs/formats.md."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml
from torch import nn

from bike_cli.config.recipe import config_to_dict
from bike_cli.errors import InputError
from bike_cli.io import train_state
from bike_cli.io.atomic import copy_file, make_folder
from bike_cli.io.checkpoints import (
    AVERAGED_FILE,
    BEST_FILE,
    LAST_FILE,
    BranchCheckpoint,
    load_checkpoint,
    save_checkpoint,
)
from bike_cli.io.feature_cache import Failure, write_failures_csv
from bike_cli.io.guard import PathGuard, PathOptions, check_folder_output
from bike_cli.io.metrics_json import append_metrics_line, metrics_line, read_metrics_lines, write_metrics_lines
from bike_cli.io.train_state import STATE_FILE, RunState, save_resolved
from bike_cli.models.weight_space import StateMean

log = logging.getLogger(__name__)

CONFIG_FILE, METRICS_FILE, CHECKPOINTS, TENSORBOARD = "config.yaml", "metrics.jsonl", "checkpoints", "tensorboard"
VAL_FAILURES = "val_failures.csv"  # the videos of --val-videos the last validation could not decode
RUN_FILES = (LAST_FILE, BEST_FILE, METRICS_FILE, CONFIG_FILE, VAL_FAILURES, AVERAGED_FILE)  # in the order the guard names them
VAL_SKIPPED = "val_skipped"  # an epoch record's count of undecodable validation videos (not a score)
RUN_FOLDERS = (CHECKPOINTS, TENSORBOARD)
KEEP_CHECKPOINTS = 2  # epoch folders kept: the newest complete one, and the one before it
AVERAGING = "averaging"  # checkpoints/averaging/epoch_NNNN.pt: the epochs averaged.pt is the mean of
FREE_ON_RESUME = {"resume", "overwrite", "workers", "cache_in_memory", "allow_model_mismatch", "out"}  # cannot change what the run computes
GROWS_ON_RESUME = "epochs"  # a new total: the run goes on, on the schedule of the new total


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
    finished_before: bool = False  # --resume of a run that had trained every epoch: nothing was done


@dataclass
class CheckpointHeader:
    """What last.pt and best.pt record besides the run's config and the epoch's metrics and weights."""

    kind: str  # bike_cli.io.checkpoints.VIDEO_KIND | ATTRS_KIND
    clip: dict  # the ClipSpec's fields
    class_names: list[str]
    model_args: dict  # the branch spec's fields: what rebuilds the module


def run_guard(out: Path, inputs: PathOptions) -> PathGuard:
    """The guard of a training run: no input is a file it writes or a folder it replaces in `out`."""
    check_folder_output("--out", out)
    return PathGuard(inputs, {f"--out's {name}": out / name for name in RUN_FILES},
                     trees={f"--out's {name}": out / name for name in RUN_FOLDERS})


class RunFolder:
    """The files of one training run in `out` and their rules; the loop asks it (rank 0 writes shared files)."""

    def __init__(self, out: Path, stage: str, *, resume: bool = False, overwrite: bool = False,
                 config: object = None, guard: PathGuard | None = None, average_last: int | None = None) -> None:
        self.out, self.stage, self.resume, self.overwrite = Path(out), stage, resume, overwrite
        self.config, self.guard, self.board = config, guard, None
        self.average_last, self.epochs = average_last, 0  # epochs: the total asked for (set by `restore`)

    def epoch_folder(self, epoch: int) -> Path:
        return self.out / CHECKPOINTS / f"epoch_{epoch:04d}"

    def latest_checkpoint(self) -> Path | None:
        """The newest complete epoch folder: what --resume continues."""
        return max((p.parent for p in (self.out / CHECKPOINTS).glob(f"epoch_*/{STATE_FILE}")), default=None)

    def holds_run(self) -> bool:
        """Whether the folder holds a complete epoch, metrics or a last checkpoint."""
        return self.out.is_dir() and (self.latest_checkpoint() is not None or (self.out / METRICS_FILE).exists()
                                      or (self.out / LAST_FILE).exists())

    def check(self, epochs: int) -> TrainSummary | None:
        """Apply the --resume/--overwrite rules (hold the lock); a summary means "finished before: do nothing".
        A finished run is read as `--resume` reads any: changed settings and foreign files are refused."""
        if not self.holds_run():
            return None
        main = int(os.environ.get("RANK", "0")) == 0
        if self.overwrite:
            if main:  # one process of a launched run removes the files
                self.discard()
            return None
        if not self.resume:
            raise InputError(f"{self.out} already holds a {self.stage} run: pass --resume to continue it, "
                             "--overwrite to start it over, or choose another --out")
        self.check_config()
        latest = self.latest_checkpoint()
        if latest is None:
            return None
        state = RunState(**train_state.load_state(latest, 0)["trainer"])  # every file read safely, as by --resume
        self._check_epochs(state.epoch, epochs)
        if state.epoch < epochs:
            return None
        log.info("%s: %s finished epoch %d of %d earlier; nothing to do", self.stage, self.out, state.epoch, epochs)
        try:
            records, _ = read_metrics_lines(self.out / METRICS_FILE)
        except OSError:
            records = []
        return TrainSummary(self.out, state.epoch, state.step, state.best_epoch, state.best_metrics,
                            records[-1] if records else {}, 0.0, is_main=main, finished_before=True)

    def end_epoch(self, state: RunState, line: dict, metrics: dict) -> bool:
        """Record the epoch of `line` in `state`; whether it is the new best (val_mAP, else val_top1, else the
        lowest training loss; a tie keeps the earlier epoch)."""
        score = metrics.get("val_mAP" if "val_mAP" in metrics else "val_top1", -line["train_loss"])
        state.epoch = line["epoch"]
        if not score > state.best_score:
            return False
        scores = {k: v for k, v in metrics.items() if k != VAL_SKIPPED}
        state.best_epoch, state.best_metrics, state.best_score = line["epoch"], scores, score
        return True

    def record_val_skips(self, skipped: list[Failure], videos: int) -> None:
        """Main process, after validating --val-videos: `val_failures.csv` (header only when none) and a warning."""
        path = write_failures_csv(self.out / VAL_FAILURES, skipped)
        if skipped:
            shown = ", ".join(f"{f.video_id} ({f.reason})" for f in skipped[:3])
            more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
            log.warning("validation skipped %d of the %d videos of --val-videos, which could not be decoded "
                        "(the metrics are over the other %d): %s%s; all in %s", len(skipped), videos,
                        videos - len(skipped), shown, more, path)

    def discard(self) -> None:
        """Remove the files a training run wrote into the folder (and nothing else), through its guard."""
        guard = self.guard or run_guard(self.out, {})
        guard.discard(*(self.out / name for name in RUN_FOLDERS), *(self.out / name for name in RUN_FILES))
        log.info("--overwrite: removed the earlier run in %s", self.out)

    def sweep_temps(self) -> None:
        """Remove the temporary files of a writer killed mid-write (hold the lock: none is alive)."""
        (self.guard or run_guard(self.out, {})).sweep_temps(self.out, RUN_FILES)

    def check_config(self) -> int | None:
        """InputError listing every setting that differs from config.yaml (`--epochs` aside); the run's epochs
        (None without a config or a config.yaml)."""
        path = self.out / CONFIG_FILE
        if self.config is None or not path.is_file():
            return None
        try:
            saved = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as err:
            raise InputError(f"{path} is not readable YAML ({err}); it records the run that --resume continues") from None
        if not isinstance(saved, dict):
            raise InputError(f"{path} is not a settings file of bike")
        changed = [f"{key}: {saved.get(key)!r} in the run, {value!r} now" for key, value in config_to_dict(self.config).items()
                   if key not in FREE_ON_RESUME | {GROWS_ON_RESUME} and not _same(saved.get(key), value)]
        if changed:
            raise InputError(f"--resume would change the run in {self.out}: " + "; ".join(changed[:8])
                             + (f" (and {len(changed) - 8} more)" if len(changed) > 8 else "")
                             + ". Resume with the same settings, or start a new --out")
        epochs = saved.get(GROWS_ON_RESUME)
        return epochs if isinstance(epochs, int) else None

    def restore(self, model: nn.Module, optimizer, scheduler, scaler, *, epochs: int, rank: int) -> RunState | None:
        """Make the folder; with --resume, load the newest complete epoch folder (code-free state files) into the
        unwrapped `model` and the others and return its state (None: nothing to continue)."""
        make_folder(self.out)
        self.epochs = epochs
        if not self.resume:
            return None
        was = self.check_config()
        latest = self.latest_checkpoint()
        if latest is None:
            log.info("--resume: no checkpoint in %s yet; starting from the first epoch", self.out)
            return None
        loaded = train_state.load_state(latest, rank)
        try:
            model.load_state_dict(loaded["model"])
            optimizer.load_state_dict(loaded["optimizer"])
            scheduler.load_state_dict(loaded["scheduler"])
            if loaded["scaler"] is not None and scaler is not None:
                scaler.load_state_dict(loaded["scaler"])
            state = RunState(**loaded["trainer"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise InputError(f"{latest} does not fit this run ({type(err).__name__}: {err})") from None
        self._check_epochs(state.epoch, epochs)
        if rank == 0 and was is not None and was != epochs:
            log.info("--resume: %s was set for %d epochs and has trained %d; the lr schedule is recomputed for %d "
                     "epochs and metrics.jsonl goes on from epoch %d", self.out, was, state.epoch, epochs,
                     state.epoch + 1)
        if loaded["rng"] is not None:
            train_state.restore_rng(loaded["rng"])
        log.info("resumed from %s (epoch %d done)", latest, state.epoch)
        return state

    def start(self, state: RunState) -> None:
        """Main process, before the first epoch: trim metrics, drop a shorter total's averaged.pt, config, board."""
        self._trim_metrics(state.epoch)
        if self.average_last and (self.out / AVERAGED_FILE).exists():  # of a shorter total: epochs are to come
            (self.guard or run_guard(self.out, {})).discard(self.out / AVERAGED_FILE)
        if self.config is not None:
            save_resolved(self.config, self.out / CONFIG_FILE, stage=self.stage)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        self.board = SummaryWriter(str(self.out / TENSORBOARD))

    def new_epoch_folder(self, epoch: int) -> None:
        """On the main process: an empty folder for the epoch's state (a folder of an earlier run goes first)."""
        folder = self.epoch_folder(epoch)
        shutil.rmtree(folder, ignore_errors=True)
        make_folder(folder)

    def save_state(self, epoch: int, rank: int, model: nn.Module | None = None, optimizer=None, scheduler=None,
                   scaler=None) -> None:
        """This process's share of the epoch's state (its RNG); with `model` (the main process), the rest."""
        folder = self.epoch_folder(epoch)
        train_state.save_process_state(folder, rank)
        if model is not None:
            train_state.save_shared_state(folder, model.state_dict(), optimizer.state_dict(), scheduler.state_dict(),
                                          scaler.state_dict() if scaler is not None else None)

    def finish_epoch(self, state: RunState, line: dict, model: nn.Module, improved: bool,
                     header: CheckpointHeader | None) -> None:
        """Main process, once every process saved its state: metrics, checkpoints, state file, retention, board."""
        append_metrics_line(self.out / METRICS_FILE, line)
        log.info("epoch %d: %s", line["epoch"], ", ".join(f"{k} {v:.4g}" for k, v in line.items() if k != "epoch"))
        self.save_checkpoints(model, line, improved, header)
        self.keep_for_average(state.epoch, header)
        train_state.save_trainer_state(self.epoch_folder(state.epoch), state)  # last: marks it complete
        for old in sorted((self.out / CHECKPOINTS).glob("epoch_*"))[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)
        if self.board is not None:
            for k, v in line.items():
                if k not in ("epoch", "step"):
                    self.board.add_scalar(k, v, state.step)
            self.board.flush()

    def save_checkpoints(self, model: nn.Module, line: dict, improved: bool, header: CheckpointHeader | None) -> None:
        """last.pt every epoch; best.pt an atomic copy of it when the epoch improved. Nothing without a `header`."""
        if header is None:
            return
        ckpt = BranchCheckpoint(config=config_to_dict(self.config), clip=header.clip, class_names=header.class_names,
                                epoch=line["epoch"], metrics=line, state_dict=model.state_dict(),
                                model_args=header.model_args)
        save_checkpoint(self.out / LAST_FILE, ckpt, header.kind)
        if improved:
            copy_file(self.out / LAST_FILE, self.out / BEST_FILE)

    def keep_for_average(self, epoch: int, header: CheckpointHeader | None) -> None:
        """With `average_last` N: keep last.pt of the last N epochs of the total, and after the last epoch write
        averaged.pt, their mean (before the epoch's state file: a kill trains the epoch again, same files)."""
        if not self.average_last or header is None:
            return
        first = self.epochs - self.average_last + 1
        if epoch < first:
            return
        folder = self.out / CHECKPOINTS / AVERAGING
        make_folder(folder)
        copy_file(self.out / LAST_FILE, folder / f"epoch_{epoch:04d}.pt")
        for old in folder.glob("epoch_*.pt"):
            if old.stem[len("epoch_"):].isdigit() and int(old.stem[len("epoch_"):]) < first:
                old.unlink(missing_ok=True)
        if epoch == self.epochs:
            self.save_average([folder / f"epoch_{e:04d}.pt" for e in range(first, epoch + 1)], header.kind)

    def save_average(self, paths: list[Path], kind: str) -> None:
        """averaged.pt: the mean weights of `paths` (epoch order), the last one's record; `origin` lists the epochs."""
        mean, epochs, last = StateMean(), [], None
        for path in paths:
            if not path.is_file():
                raise InputError(f"{path} is missing: --average-last {self.average_last} needs the weights of "
                                 f"each of the last {self.average_last} epochs (train again with --overwrite)")
            last = load_checkpoint(path, kind)
            mean.add(last.state_dict)
            epochs.append(last.epoch)
        averaged = BranchCheckpoint(config=last.config, clip=last.clip, class_names=last.class_names,
                                    epoch=last.epoch, metrics={}, state_dict=mean.mean(), model_args=last.model_args,
                                    origin={"method": "average", "epochs": epochs})
        save_checkpoint(self.out / AVERAGED_FILE, averaged, kind)
        log.info("wrote %s: the mean of the weights of epochs %s", self.out / AVERAGED_FILE,
                 ", ".join(map(str, epochs)))

    def close(self) -> None:
        if self.board is not None:
            self.board.close()

    def _check_epochs(self, trained: int, epochs: int) -> None:
        if epochs < trained:
            raise InputError(f"--resume with --epochs {epochs}: the run in {self.out} has trained {trained} epochs "
                             f"already; give --epochs {trained} or more to continue it, or --overwrite to start over")

    def _trim_metrics(self, last_epoch: int) -> None:
        """Keep metrics.jsonl's complete lines up to `last_epoch` (strict JSON: an older bike's `NaN` becomes null)."""
        path = self.out / METRICS_FILE
        if not path.exists():
            return
        records, dropped = read_metrics_lines(path)
        kept = [record for record in records if int(record.get("epoch", 0)) <= last_epoch]
        dropped += len(records) - len(kept)
        if dropped:
            log.info("%s: dropped %d line(s) past epoch %d (they are trained again)", path, dropped, last_epoch)
        if dropped or any(metrics_line(record) != line for record, line in
                          zip(kept, path.read_text(encoding="utf-8").splitlines())):
            write_metrics_lines(path, kept)


def _same(saved, now) -> bool:  # equal, or the same file written another way
    return saved == now or (isinstance(saved, str) and isinstance(now, str) and "/" in saved + now
                            and Path(saved).resolve() == Path(now).resolve())
