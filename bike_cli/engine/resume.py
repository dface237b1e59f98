"""What `--resume` checks and repairs in a run folder before training continues.

- The resolved settings must equal those in the run's `config.yaml` (except those that cannot
  change the result, `FREE_ON_RESUME`): a resumed run is the run it continues, or it is refused.
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


def check_resume_config(config, out: Path) -> None:
    """InputError listing every setting that differs from the run's config.yaml."""
    path = out / CONFIG_FILE
    if not path.is_file():
        return
    try:
        saved = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise InputError(f"{path} is not readable YAML ({err}); it records the run that --resume continues") from None
    if not isinstance(saved, dict):
        raise InputError(f"{path} is not a settings file of bike")
    now = config_to_dict(config)
    changed = [f"{key}: {saved.get(key)!r} in the run, {value!r} now" for key, value in now.items()
               if key not in FREE_ON_RESUME and not _same(saved.get(key), value)]
    if changed:
        raise InputError(f"--resume would change the run in {out}: " + "; ".join(changed[:8])
                         + (f" (and {len(changed) - 8} more)" if len(changed) > 8 else "")
                         + ". Resume with the same settings, or start a new --out")


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
