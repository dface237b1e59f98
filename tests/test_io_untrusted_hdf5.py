"""A feature cache (or a part of one) handed to a user is read as untrusted (issue 28): it cannot make
bike read a file the user never named (external storage, external or soft links, virtual datasets),
size a read from a shape it does not store, or hang bike on corrupted metadata. Each refusal is one
`error:` line naming the file, exit 1, no traceback, and no byte of the foreign file in any output."""

from __future__ import annotations

import os
import pickle
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from bike_cli.errors import InputError
from bike_cli.io import untrusted_hdf5
from bike_cli.io.feature_cache import CacheMeta, FeatureCache, parts_dir_for, scan_parts

BIKE = [sys.executable, "-m", "bike_cli"]
MARKER = b"PRIVATE-MARKER-28."
STR = h5py.string_dtype("utf-8")
ROWS, FRAMES, DIM = 6, 4, 64  # bike-tiny's width
SHAPE = (ROWS, 1, FRAMES, DIM)
NBYTES = int(np.prod(SHAPE)) * 2


def write_cache(path: Path, rows: int = ROWS, frames: int = FRAMES, embeddings: bool = True) -> Path:
    """A small bike-tiny cache in the documented layout, byte for byte the same each time (without
    /embeddings unless `embeddings`)."""
    meta = CacheMeta(model_name="bike-tiny", pretrained="none", checkpoint_sha256=None, quick_gelu=False,
                     image_size=64, embed_dim=DIM, frames=frames, clips=1, crops=1, sampling_mode="test", seed=0,
                     decoder="decord", multilabel=False, num_classes=3, class_names=("a", "b", "c"))
    with h5py.File(path, "w") as h5:
        if embeddings:
            emb = np.random.default_rng(0).standard_normal((rows, 1, frames, DIM)).astype(np.float16)
            h5.create_dataset("embeddings", data=emb, chunks=(1, 1, frames, DIM))
        h5.create_dataset("video_ids", data=np.array([f"vid{i}" for i in range(rows)], dtype=object), dtype=STR)
        h5.create_dataset("labels", data=np.arange(rows, dtype=np.int64) % 3)
        h5.create_dataset("num_frames", data=np.full(rows, 40, dtype=np.int64))
        h5.create_dataset("decoders", data=np.array(["decord"] * rows, dtype=object), dtype=STR)
        h5.attrs.update(meta.to_attrs())
    return path


def private_file(folder: Path) -> Path:
    """A file of the user's that no command names: its bytes must never reach an output."""
    path = folder / "private.txt"
    path.write_bytes((MARKER * (NBYTES // len(MARKER) + 1))[:NBYTES])
    return path


def other_hdf5(folder: Path) -> Path:
    """An HDF5 file holding the private bytes as float16 embeddings."""
    path = folder / "other.h5"
    with h5py.File(path, "w") as h5:
        h5["embeddings"] = np.frombuffer(private_file(folder).read_bytes(), dtype=np.float16).reshape(SHAPE)
    return path


def replace_embeddings(path: Path, make) -> None:
    with h5py.File(path, "r+") as h5:
        del h5["embeddings"]
        make(h5)


def external_storage(path: Path) -> None:
    private = private_file(path.parent)
    replace_embeddings(path, lambda h5: h5.create_dataset("embeddings", shape=SHAPE, dtype=np.float16,
                                                          external=[(str(private), 0, NBYTES)]))


def fifo_storage(path: Path) -> None:
    fifo = path.parent / "fifo"
    os.mkfifo(fifo)
    replace_embeddings(path, lambda h5: h5.create_dataset("embeddings", shape=SHAPE, dtype=np.float16,
                                                          external=[(str(fifo), 0, NBYTES)]))


def external_link(path: Path) -> None:
    other = other_hdf5(path.parent)
    replace_embeddings(path, lambda h5: h5.__setitem__("embeddings", h5py.ExternalLink(str(other), "/embeddings")))


def virtual_dataset(path: Path) -> None:
    layout = h5py.VirtualLayout(shape=SHAPE, dtype=np.float16)
    layout[:] = h5py.VirtualSource(str(other_hdf5(path.parent)), "embeddings", shape=SHAPE)
    replace_embeddings(path, lambda h5: h5.create_virtual_dataset("embeddings", layout))


def soft_link(path: Path) -> None:
    with h5py.File(path, "r+") as h5:
        h5.move("embeddings", "hidden")
        h5["embeddings"] = h5py.SoftLink("/hidden")


def a_group(path: Path) -> None:
    replace_embeddings(path, lambda h5: h5.create_group("embeddings"))


def compressed(path: Path) -> None:
    with h5py.File(path, "r+") as h5:
        data = h5["embeddings"][()]
        del h5["embeddings"]
        h5.create_dataset("embeddings", data=data, chunks=(1, 1, FRAMES, DIM), compression="gzip")


def declared_far_larger_than_the_file(path: Path) -> None:
    """The issue's 430 KB cache of 4,096 rows of 200,000 frames (search allocated 97.7 GiB)."""
    rows, frames = 4096, 200_000
    write_cache(path, rows=rows, frames=frames, embeddings=False)
    with h5py.File(path, "r+") as h5:
        emb = h5.create_dataset("embeddings", shape=(rows, 1, frames, DIM), dtype=np.float16, chunks=(1, 1, 1000, DIM))
        emb[0, 0, :1000] = 1.0  # one chunk written, the rest never


def array_schema_version(path: Path) -> None:
    with h5py.File(path, "r+") as h5:
        h5.attrs["schema_version"] = np.array([1, 1])


# (how the cache is made hostile, words its one line holds after the file's name)
HOSTILE = {
    "external raw storage on a private file": (external_storage, "another file (HDF5 external storage)"),
    "external raw storage on a FIFO": (fifo_storage, "another file (HDF5 external storage)"),
    "an external link": (external_link, "/embeddings is a link to another file"),
    "a virtual dataset": (virtual_dataset, "/embeddings is a virtual dataset"),
    "a soft link": (soft_link, "/embeddings is a soft link to /hidden"),
    "a group for a dataset": (a_group, "/embeddings is a group, not a dataset"),
    "compressed storage": (compressed, "stored through HDF5 filters (deflate)"),
    "a shape far larger than the file": (declared_far_larger_than_the_file, "declares shape (4096, 1, 200000, 64)"),
    "an array-valued schema_version": (array_schema_version, "attribute schema_version holds an array of shape (2,)"),
}


def one_line(text: str) -> str:
    assert "Traceback" not in text, text[-3000:]
    return " ".join(text.split())


def assert_no_foreign_byte(folder: Path, *allowed: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file() and path not in allowed:
            assert MARKER not in path.read_bytes(), f"{path} holds bytes of the private file"


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_cache_that_reaches_beyond_itself_or_lies_about_its_size_is_refused_in_one_line(tmp_path, case):
    path = write_cache(tmp_path / "cache.h5")
    make_hostile, words = HOSTILE[case]
    make_hostile(path)
    with pytest.raises(InputError) as err:
        FeatureCache(path, need_rows=True)
    message = str(err.value)
    assert message.startswith(f"{path} is a malformed feature cache: ") and words in message, message
    assert "\n" not in message


def test_a_cache_another_process_holds_open_for_writing_is_in_use_not_unreadable(tmp_path):
    path = write_cache(tmp_path / "cache.h5")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, h5py; f = h5py.File(sys.argv[1], 'a'); "
                               "print('held', flush=True); sys.stdin.read()", str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(InputError) as err:
            FeatureCache(path, need_rows=True)
    finally:
        holder.communicate("", timeout=60)
    assert str(err.value).startswith(f"{path} is in use by another process, which holds it open for writing")
    assert FeatureCache(path, need_rows=True).meta.frames == FRAMES  # free again: read as usual


@pytest.mark.slow
def test_search_on_external_storage_is_one_line_and_reads_no_byte_of_the_private_file(tmp_path):
    path = write_cache(tmp_path / "cache.h5")
    external_storage(path)
    proc = subprocess.Popen([*BIKE, "search", "--features", str(path), "a dog", "--out", str(tmp_path / "hits.csv")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1
    text = one_line(err.decode())
    assert text.startswith(f"error: {path} is a malformed feature cache: dataset /embeddings keeps its data in "
                           "another file"), text
    assert MARKER not in out + err
    assert not (tmp_path / "hits.csv").exists()
    assert_no_foreign_byte(tmp_path, tmp_path / "private.txt")


@pytest.mark.slow
def test_search_on_a_cache_declaring_100_gb_in_a_small_file_stays_small(tmp_path):
    path = tmp_path / "cache.h5"
    declared_far_larger_than_the_file(path)
    assert path.stat().st_size < 1 << 20
    proc = subprocess.Popen([*BIKE, "search", "--features", str(path), "a dog"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=tmp_path)
    _, status, usage = os.wait4(proc.pid, 0)  # the pipes hold one line: they cannot fill
    err = proc.stderr.read().decode()
    assert os.waitstatus_to_exitcode(status) == 1
    assert "declares shape (4096, 1, 200000, 64)" in one_line(err)
    assert usage.ru_maxrss < 4 << 20, f"peak memory {usage.ru_maxrss} KiB"  # torch's import is most of it


@pytest.mark.slow
def test_resuming_an_extraction_into_an_externally_linked_cache_is_one_line_and_copies_nothing(tmp_path, sample_data):
    path = write_cache(tmp_path / "cache.h5")
    external_link(path)
    before = path.read_bytes()
    done = subprocess.run([*BIKE, "extract-features", "--model", "bike-tiny", "--list", str(sample_data.train),
                           "--classes", str(sample_data.classes), "--out", str(path), "--frames", "4",
                           "--workers", "0"], capture_output=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 1
    text = one_line(done.stderr.decode())
    assert f"error: {path} is a malformed feature cache: /embeddings is a link to another file" in text, text
    assert path.read_bytes() == before
    assert_no_foreign_byte(tmp_path, tmp_path / "private.txt", tmp_path / "other.h5")


@pytest.mark.slow
def test_train_video_on_a_virtual_dataset_is_one_line(tmp_path):
    path = write_cache(tmp_path / "cache.h5")
    virtual_dataset(path)
    done = subprocess.run([*BIKE, "train-video", "--features", str(path), "--out", str(tmp_path / "run"), "--epochs",
                           "1", "--batch-size", "4", "--frames", "4", "--workers", "0", "--template", "{}"],
                          capture_output=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 1
    assert one_line(done.stderr.decode()).startswith(f"error: {path} is a malformed feature cache: dataset "
                                                     "/embeddings is a virtual dataset")
    assert_no_foreign_byte(tmp_path, tmp_path / "private.txt", tmp_path / "other.h5")


def test_a_part_that_reaches_another_file_is_dropped_and_redone(tmp_path):
    parts = parts_dir_for(tmp_path / "cache.h5")
    parts.mkdir()
    part = parts / "rank000-0000000.h5"
    write_cache(part)
    external_storage(part)
    assert scan_parts(parts).files == [] and not part.exists()


# ----------------------------------------------------------------------------- corrupted metadata


def empty_heap_objects(data: bytes) -> list[int]:
    """Offsets of the size field of each empty object (an empty string) in the file's global heaps."""
    found, start = [], data.find(b"GCOL")
    while start >= 0:
        at, end = start + 16, start + struct.unpack_from("<Q", data, start + 8)[0]
        while at + 16 <= end:
            index, _, _, size = struct.unpack_from("<HHIQ", data, at)
            if index == 0:
                break
            if size == 0:
                found.append(at + 8)
            at += 16 + (size + 7) // 8 * 8
        start = data.find(b"GCOL", start + 4)
    return found


def looping_cache(folder: Path, which: int = -1) -> Path:
    """A cache whose empty string attribute claims 64 bytes: with libhdf5 2.0 reading the attribute
    loops for ever inside the C library (the last two such objects of this file; the first errors)."""
    path = write_cache(folder / "flipped.h5")
    data = bytearray(path.read_bytes())
    data[empty_heap_objects(bytes(data))[which]] ^= 0x40
    path.write_bytes(data)
    return path


def test_metadata_that_makes_libhdf5_loop_is_one_line_once_its_helper_stalls(tmp_path):
    path = looping_cache(tmp_path)
    with pytest.raises(InputError, match=f"^{path} is a malformed feature cache: "):
        FeatureCache(path)


def gone(pid: int) -> bool:
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_sigterm_stops_bike_while_a_corrupted_cache_is_being_checked(tmp_path):
    path = looping_cache(tmp_path)
    proc = subprocess.Popen([*BIKE, "-v", "search", "--features", str(path), "a dog"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, cwd=tmp_path, env={**os.environ, "COLUMNS": "400"})
    seen = ""
    while "in helper process" not in seen:
        line = proc.stderr.readline().decode()
        assert line, f"bike ended before checking the cache: {seen}"
        seen += line
    helper = int(seen.split("in helper process")[1].split()[0])
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 128 + signal.SIGTERM
    assert "terminated" in one_line(seen + proc.stderr.read().decode())
    assert gone(helper), "the helper process went with bike"


def test_bit_flipped_attributes_of_a_real_cache_are_one_line_or_harmless(tmp_path, tiny_cache):
    data = tiny_cache.read_bytes()
    start = max(0, min(data.find(b"model_name"), data.find(b"GCOL")) - 512)
    rng = random.Random(28)
    for trial in range(12):
        flipped = bytearray(data)
        for _ in range(3):
            flipped[rng.randrange(start, min(len(data), start + 6000))] ^= 1 << rng.randrange(8)
        path = tmp_path / f"flipped{trial}.h5"
        path.write_bytes(flipped)
        try:
            cache = FeatureCache(path, need_rows=True)
            cache.embeddings(slice(None))
        except InputError as err:
            assert str(err).startswith(str(path)) and "\n" not in str(err)


def test_a_checked_cache_pickled_to_a_worker_is_not_checked_again(tmp_path, monkeypatch):
    cache = FeatureCache(write_cache(tmp_path / "cache.h5"))
    worker = pickle.loads(pickle.dumps(cache))
    monkeypatch.setattr(untrusted_hdf5, "_PASSED", set())
    monkeypatch.setattr(untrusted_hdf5._HELPER, "ask", lambda *a: pytest.fail("checked again"))
    assert worker.embeddings(0).shape == (1, FRAMES, DIM)
    shutil.copyfile(cache.path, tmp_path / "copy.h5")
    os.replace(tmp_path / "copy.h5", cache.path)  # another file under the name: checked again
    worker.close()
    monkeypatch.undo()
    assert worker.embeddings(0).shape == (1, FRAMES, DIM)
