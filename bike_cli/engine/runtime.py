"""What every stage's compute needs from this machine: the device, the precision, CPU threads, and the
processes of an `accelerate launch` (each runs the same stage and takes its share of the work)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from bike_cli.errors import BikeError, InputError
from bike_cli.io.guard import OutputLockedError, WriterLock

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(requested: str | None) -> torch.device:
    """`--device` as a torch device (None: cuda when available, else cpu); one this machine lacks is an error."""
    if requested is None:
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError):
        raise InputError(f"--device {requested!r} is not a torch device: use cpu or cuda (cuda:N)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"--device {requested}: this machine has no CUDA GPU that torch can use; "
                             "use --device cpu (or leave --device out)")
        if device.index is not None and device.index >= count:
            raise InputError(f"--device {requested}: this machine has {count} CUDA GPU(s) (cuda:0..cuda:{count - 1})")
    elif device.type != "cpu":
        raise InputError(f"--device {requested!r}: bike runs on cpu or cuda")
    return device


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def loader_workers(requested: int, items: int) -> int:
    """`requested` DataLoader workers, at most one per usable core and per item to load (logged when fewer)."""
    workers = max(0, min(requested, usable_cores(), items))
    if workers < requested and items > 0:
        log.info("--workers %d: starting %d (%d usable CPU cores, %d items to load)", requested, workers,
                 usable_cores(), items)
    return workers


@contextlib.contextmanager
def cores_beside_workers(device: torch.device, workers: int) -> Iterator[None]:
    """On the CPU, give torch the cores the DataLoader workers do not use (on 2 cores, 2 threads beside 2
    decoding workers made the model 5-20x slower)."""
    threads = torch.get_num_threads()
    if device.type == "cpu" and workers > 0:
        torch.set_num_threads(max(1, usable_cores() - workers))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def autocast_for(device: torch.device, precision: str):
    """Autocast context: bf16 (or fp16 where bf16 is unsupported) on CUDA for `auto`; fp32 on CPU."""
    if precision == "auto":
        precision = "fp32" if device.type != "cuda" else "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class DistContext:
    rank: int
    world_size: int
    device: torch.device
    _state: object | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            self._state.wait_for_everyone()  # type: ignore[union-attr]


def init_distributed() -> DistContext:
    """One process, or this one's place in an `accelerate launch` (without CUDA: gloo, ACCELERATE_USE_CPU=1)."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched <= 1:
        return DistContext(0, 1, resolve_device(None))
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    if state.num_processes != launched:
        raise BikeError(
            f"launched with WORLD_SIZE={launched} but Accelerate set up {state.num_processes} process(es); "
            "on a machine without GPUs launch with ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu "
            f"--num_processes {launched} ..."
        )
    return DistContext(state.process_index, state.num_processes, state.device, state)


@contextlib.contextmanager
def writer_lock(output: Path, *, folder: bool, is_main: bool, world_size: int) -> Iterator[None]:
    """Hold the WriterLock of `output` for the block, rank 0 for every rank; each rank raises the same
    OutputLockedError if rank 0 failed (none waits at a barrier for a rank 0 that has stopped)."""
    lock = WriterLock(output, folder=folder)
    message = None
    if is_main:
        try:
            lock.acquire()
        except OutputLockedError as err:
            message = str(err)
    if world_size > 1:
        from accelerate.utils import broadcast_object_list

        message = broadcast_object_list([message], from_process=0)[0]
    if message is not None:
        raise OutputLockedError(message)
    try:
        yield
    finally:
        lock.release()


def metrics_over_processes(scores: list, labels: list) -> dict:
    """`val_*` metrics (%) of the whole validation set from this process's scores [n, K] and labels [n] or [n, K]."""
    import numpy as np
    from accelerate.utils import gather_object

    from bike_cli.eval.metrics import recognition_metrics

    mine = (np.concatenate(scores), np.concatenate(labels)) if scores else (None, None)
    parts = [(s, y) for s, y in gather_object([mine]) if s is not None]
    metrics = recognition_metrics(np.concatenate([s for s, _ in parts]), np.concatenate([y for _, y in parts]))
    return {f"val_{k}": v for k, v in metrics.items()}
