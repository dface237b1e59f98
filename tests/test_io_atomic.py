"""The atomic writer's durability order, for each writer: fsync of the temporary file, then the
rename over the target, then fsync of the folder (so that the rename survives a power loss)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from bike_cli.io.atomic import copy_file, torch_save, write_bytes, write_text


def _fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


WRITERS = {
    "text": lambda target, source: write_text(target, "new text\n"),
    "bytes": lambda target, source: write_bytes(target, b"new bytes"),
    "torch": lambda target, source: torch_save({"w": torch.arange(3)}, target),
    "copy": lambda target, source: copy_file(source, target),
}


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name an fsync'ed descriptor")
@pytest.mark.parametrize("writer", list(WRITERS))
def test_each_writer_fsyncs_the_temp_file_then_renames_then_fsyncs_the_folder(tmp_path, monkeypatch, writer):
    source = tmp_path / "source.bin"
    source.write_bytes(b"copied bytes")
    target = tmp_path / "out" / "target.bin"
    target.parent.mkdir()
    target.write_bytes(b"old content")
    calls: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append(("fsync", _fd_path(fd)))
        real_fsync(fd)

    def replace(src, dst) -> None:
        calls.append(("replace", os.fspath(src), os.fspath(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    WRITERS[writer](target, source)
    assert len(calls) == 3, calls
    (_, synced), (_, renamed, onto), (_, folder) = calls
    assert [c[0] for c in calls] == ["fsync", "replace", "fsync"]
    assert synced == renamed and Path(renamed).parent == target.parent and Path(renamed).name.endswith(".tmp")
    assert onto == str(target) and folder == str(target.parent)
    assert target.read_bytes() != b"old content" and sorted(p.name for p in target.parent.iterdir()) == ["target.bin"]
