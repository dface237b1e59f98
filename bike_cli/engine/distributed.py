"""Process topology for stages that split work across processes (`accelerate launch`).

A plain `bike ...` is one process. Under `accelerate launch --num_processes N` (one machine or
several), every process runs the same stage and takes its share of the work.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from bike_cli.errors import BikeError
from bike_cli.io.guard import OutputLockedError, WriterLock


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
    """One process, or this process's place in an `accelerate launch` run.

    On a machine without CUDA the processes talk over gloo (launch with ACCELERATE_USE_CPU=1).
    """
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched <= 1:
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        return DistContext(0, 1, device)
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
    """Hold the WriterLock of `output` for the block: rank 0 takes it for all the ranks of one launch.

    Every rank learns whether rank 0 got it and raises the same OutputLockedError if not, so that
    no rank waits at a barrier for a rank 0 that has stopped.
    """
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
    """`val_*` metrics (in %) of the whole validation set from every process's share of it.

    scores: this process's float [n, K] arrays; labels: its int [n] or multi-hot [n, K] arrays.
    """
    import numpy as np
    from accelerate.utils import gather_object

    from bike_cli.eval.metrics import recognition_metrics

    mine = (np.concatenate(scores), np.concatenate(labels)) if scores else (None, None)
    parts = [(s, y) for s, y in gather_object([mine]) if s is not None]
    all_scores = np.concatenate([s for s, _ in parts])
    all_labels = np.concatenate([y for _, y in parts])
    return {f"val_{k}": v for k, v in recognition_metrics(all_scores, all_labels).items()}
