"""What `--resume` checks and repairs in a run folder before training continues.

- The resolved settings must equal those in the run's `config.yaml` (except those that cannot
  change the result, `FREE_ON_RESUME`): a resumed run is the run it continues, or it is refused.
- `--epochs` may change (`GROWS_ON_RESUME`), as with the Hugging Face Trainer and mmaction2: a larger
  total continues a run, finished or not, on the lr schedule recomputed for the new total
  (`apply_schedule`); fewer epochs than the run has trained are refused (`check_resume_epochs`).
- `metrics.jsonl` is cut back to the epochs the resumed state has finished (a kill between the
  metrics append and the state write leaves a line of an epoch that is then trained again), and a
  torn last line is dropped.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

from bike_cli.config.recipe import config_to_dict
from bike_cli.errors import InputError
from bike_cli.io.atomic import write_text

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
FREE_ON_RESUME = {"resume", "overwrite", "workers", "cache_in_memory", "allow_model_mismatch", "out"}  # cannot change what the run computes
GROWS_ON_RESUME = "epochs"  # a new total: the run goes on, on the schedule of the new total


def check_resume_config(config, out: Path) -> int | None:
    """InputError listing every setting that differs from the run's config.yaml (`--epochs` aside);
    returns the epochs the run was set for (None without a config.yaml)."""
    path = out / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        saved = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise InputError(f"{path} is not readable YAML ({err}); it records the run that --resume continues") from None
    if not isinstance(saved, dict):
        raise InputError(f"{path} is not a settings file of bike")
    now = config_to_dict(config)
    changed = [f"{key}: {saved.get(key)!r} in the run, {value!r} now" for key, value in now.items()
               if key not in FREE_ON_RESUME | {GROWS_ON_RESUME} and not _same(saved.get(key), value)]
    if changed:
        raise InputError(f"--resume would change the run in {out}: " + "; ".join(changed[:8])
                         + (f" (and {len(changed) - 8} more)" if len(changed) > 8 else "")
                         + ". Resume with the same settings, or start a new --out")
    epochs = saved.get(GROWS_ON_RESUME)
    return epochs if isinstance(epochs, int) else None


def check_resume_epochs(out: Path, trained: int, epochs: int) -> None:
    """InputError when `--epochs` is below the epochs the run in `out` has trained."""
    if epochs < trained:
        raise InputError(f"--resume with --epochs {epochs}: the run in {out} has trained {trained} epochs already; "
                         f"give --epochs {trained} or more to continue it, or --overwrite to start over")


def apply_schedule(optimizer, scheduler) -> None:
    """Set each group's lr to the factor of the scheduler's lambdas at its restored step.

    A resumed LambdaLR keeps the lr of the step it was saved at until its next step; where the total
    changed (a larger `--epochs`), that lr is of the old schedule: the first step would use it."""
    for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def log_new_total(out: Path, was: int | None, epochs: int, trained: int) -> None:
    """The one line saying the schedule follows a new total."""
    if was is not None and was != epochs:
        log.info("--resume: %s was set for %d epochs and has trained %d; the lr schedule is recomputed for %d "
                 "epochs and metrics.jsonl goes on from epoch %d", out, was, trained, epochs, trained + 1)


def _same(saved, now) -> bool:
    if saved == now:
        return True
    if isinstance(saved, str) and isinstance(now, str) and "/" in saved + now:
        return Path(saved).resolve() == Path(now).resolve()  # the same file, written another way
    return False


def trim_metrics(out: Path, last_epoch: int) -> None:
    """Keep the complete lines of `metrics.jsonl` whose epoch is at most `last_epoch`."""
    path = out / METRICS_FILE
    if not path.exists():
        return
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            dropped += 1
            continue
        if isinstance(record, dict) and int(record.get("epoch", 0)) <= last_epoch:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        log.info("%s: dropped %d line(s) past epoch %d (they are trained again)", path, dropped, last_epoch)
        write_text(path, "".join(line + "\n" for line in kept))
