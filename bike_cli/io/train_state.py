"""The files of a training run that `--resume` reads back (docs/formats.md): `RUN/config.yaml` and the
state in `RUN/checkpoints/epoch_NNNN/`, loaded without running pickled code (any other file is refused)."""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bike_cli.config.recipe import resolved_yaml
from bike_cli.errors import InputError
from bike_cli.io.atomic import torch_save, write_text
from bike_cli.io.checkpoints import read_torch_file

STATE_FILE = "trainer_state.json"
MODEL_FILE, OPTIMIZER_FILE, SCHEDULER_FILE, SCALER_FILE = "model.pt", "optimizer.pt", "scheduler.json", "scaler.json"
_RNG = re.compile(r"rng_\d+\.json")
_KNOWN = {STATE_FILE, MODEL_FILE, OPTIMIZER_FILE, SCHEDULER_FILE, SCALER_FILE}


@dataclass
class RunState:
    """What trainer_state.json records: where the run is, and its best epoch."""

    epoch: int = 0
    step: int = 0
    best_epoch: int = 0
    best_metrics: dict = field(default_factory=dict)
    best_score: float = -math.inf


def save_resolved(config: Any, path: str | Path, *, stage: str | None = None) -> Path:
    """Write every setting of `config` to `path` as a recipe that `build_config` reads back equal."""
    return write_text(path, resolved_yaml(config, stage=stage))


def rng_file(rank: int) -> str:
    return f"rng_{rank}.json"


def capture_rng() -> dict:
    """The RNG states of this process, as JSON-safe lists."""
    np_state = np.random.get_state()
    state = {"python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
             "numpy": [np_state[0], np_state[1].tolist(), *(float(x) if isinstance(x, float) else int(x)
                                                             for x in np_state[2:])],
             "torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def save_process_state(folder: Path, rank: int) -> None:
    """This process's share of the state: its RNG."""
    write_text(folder / rng_file(rank), json.dumps(capture_rng()))


def save_shared_state(folder: Path, model_state: dict, optimizer_state: dict, scheduler_state: dict,
                      scaler_state: dict | None) -> None:
    """What all processes share (written by the main process)."""
    torch_save({k: v.detach().cpu() for k, v in model_state.items()}, folder / MODEL_FILE)
    torch_save(optimizer_state, folder / OPTIMIZER_FILE)
    write_text(folder / SCHEDULER_FILE, json.dumps(scheduler_state))
    if scaler_state is not None:
        write_text(folder / SCALER_FILE, json.dumps(scaler_state))


def save_trainer_state(folder: Path, state: RunState) -> None:
    """The run's state; written last, it marks the folder complete."""
    write_text(folder / STATE_FILE, json.dumps(state.__dict__))


def check_folder(folder: Path) -> None:
    """InputError for any file bike does not write into a checkpoint folder (nothing else is loaded)."""
    foreign = sorted(p.name for p in folder.iterdir() if p.name not in _KNOWN and not _RNG.fullmatch(p.name))
    if foreign:
        raise InputError(f"{folder} holds {', '.join(foreign[:5])}, which bike does not write: --resume loads only "
                         f"bike's own state files (docs/formats.md); remove them or start a new --out")
    missing = [name for name in (MODEL_FILE, OPTIMIZER_FILE, SCHEDULER_FILE) if not (folder / name).is_file()]
    if missing:
        raise InputError(f"{folder} lacks {', '.join(missing)}: not a checkpoint folder of this bike")


def _read(path: Path) -> dict:
    """The dict of a state file: a torch.save file (`.pt`, read without running pickled code), else JSON."""
    if path.suffix == ".pt":
        data = read_torch_file(path, "a training state file (a torch.save file of bike)")
    else:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise InputError(f"{path} is not a readable JSON state file: {err}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} is not a state file of bike (it holds a {type(data).__name__})")
    return data


def load_state(folder: Path, rank: int) -> dict:
    """Every part of the state (after `check_folder`): model, optimizer, scheduler, scaler, rng, trainer."""
    check_folder(folder)
    rng_path = folder / rng_file(rank)
    return {
        "model": _read(folder / MODEL_FILE),
        "optimizer": _read(folder / OPTIMIZER_FILE),
        "scheduler": _read(folder / SCHEDULER_FILE),
        "scaler": _read(folder / SCALER_FILE) if (folder / SCALER_FILE).exists() else None,
        "rng": _read(rng_path) if rng_path.exists() else None,
        "trainer": _read(folder / STATE_FILE),
    }
