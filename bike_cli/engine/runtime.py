"""What every stage's compute needs from this machine: the device, the precision, CPU threads.

(Progress reports go through `bike_cli.progress.Progress`.)"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import torch

from bike_cli.errors import InputError

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
    """The DataLoader workers that can help: `requested`, at most one per usable core and one per item
    (video or batch) to load; a log line says when fewer than requested are started."""
    workers = max(0, min(requested, usable_cores(), items))
    if workers < requested and items > 0:
        log.info("--workers %d: starting %d (%d usable CPU cores, %d items to load)", requested, workers,
                 usable_cores(), items)
    return workers


@contextlib.contextmanager
def cores_beside_workers(device: torch.device, workers: int) -> Iterator[None]:
    """On the CPU, give this process's torch ops the cores the DataLoader workers do not use.

    Measured on 2 cores: 2 torch threads next to 2 decoding workers made the model 5-20x slower.
    """
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
        if device.type != "cuda":
            return contextlib.nullcontext()
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
