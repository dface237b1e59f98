"""A malformed feature cache is refused by the reader, the same way in every stage that reads it: one
line naming the file, the dataset and the first bad row, exit 1, never a traceback nor NaN results."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from bike_cli.cli.app import app
from bike_cli.errors import InputError
from bike_cli.io.feature_cache import UNKNOWN_LABEL, FeatureCache

STR = h5py.string_dtype("utf-8")


def flat(text: str) -> str:
    return "".join(text.split())


def stage_args(stage: str, cache: Path, out: Path, lexicon: Path) -> list[str]:
    """The cheapest real run of `stage` over `cache` (bike-tiny, CPU, no workers)."""
    if stage == "eval":
        return ["eval", "--features", str(cache), "--out", str(out), "--template", "{}", "--workers", "0"]
    if stage == "train-video":
        return ["train-video", "--features", str(cache), "--out", str(out), "--epochs", "1", "--batch-size", "4",
                "--frames", "4", "--workers", "0", "--template", "{}", "--temporal-layers", "1"]
    return ["gen-attributes", "--features", str(cache), "--lexicon", str(lexicon), "--top-k", "2",
            "--out", str(out / "attrs.csv"), "--scores", str(out / "scores.csv")]


@pytest.fixture
def lexicon(tmp_path) -> Path:
    path = tmp_path / "lexicon.txt"
    path.write_text("red square\nblue circle\nmoving left\nmoving right\n")
    return path


def copy_of(tiny_cache: Path, tmp_path: Path) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "cache.h5"
    shutil.copyfile(tiny_cache, path)
    return path


def rewrite(path: Path, name: str, data: np.ndarray) -> None:
    """Replace dataset `name` of the cache at `path` by `data` (strings as utf-8)."""
    with h5py.File(path, "r+") as h5:
        del h5[name]
        if data.dtype == object:
            h5.create_dataset(name, data=data, dtype=STR)
        else:
            h5.create_dataset(name, data=data)


def nan_in_row(path: Path, row: int) -> None:
    with h5py.File(path, "r+") as h5:
        block = h5["embeddings"][row]
        block[0, 1, 2] = np.nan
        h5["embeddings"][row] = block


def inf_in_row(path: Path, row: int) -> None:
    with h5py.File(path, "r+") as h5:
        block = h5["embeddings"][row]
        block[-1, -1, -1] = -np.inf
        h5["embeddings"][row] = block


def label(path: Path, row: int, value: int) -> None:
    with h5py.File(path, "r+") as h5:
        h5["labels"][row] = value


def rows_cut(path: Path, name: str, keep: int) -> None:
    with h5py.File(path, "r") as h5:
        data = h5[name][:keep]
    rewrite(path, name, data.astype(object) if data.dtype.kind in "OS" else data)


def no_rows(path: Path) -> None:
    for name in ("embeddings", "video_ids", "labels", "num_frames", "decoders"):
        rows_cut(path, name, 0)


def int_embeddings(path: Path) -> None:
    with h5py.File(path, "r") as h5:
        data = h5["embeddings"][()]
    rewrite(path, "embeddings", (data * 100).astype(np.int16))


# (how the cache is broken, what the message must name after the file): dataset, first bad row
MALFORMED = {
    "label above the classes": (lambda p: label(p, 2, 4), ["/labels", "row 2", "4"]),
    "negative label other than unknown": (lambda p: label(p, 3, -2), ["/labels", "row 3", "-2"]),
    "NaN feature": (lambda p: nan_in_row(p, 5), ["/embeddings", "row 5", "finite"]),
    "infinite feature": (lambda p: inf_in_row(p, 6), ["/embeddings", "row 6", "finite"]),
    "no rows": (no_rows, ["/video_ids", "norows"]),
    "a dataset shorter than the others": (lambda p: rows_cut(p, "num_frames", 7), ["/num_frames", "row 7"]),
    "integer features": (int_embeddings, ["/embeddings", "int16"]),
}


@pytest.mark.parametrize("stage", ["eval", "train-video", "gen-attributes"])
@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_cache_is_one_line_naming_file_dataset_and_row(tmp_path, tiny_cache, lexicon, stage, case):
    cache = copy_of(tiny_cache, tmp_path)
    breaks, names = MALFORMED[case]
    breaks(cache)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, stage_args(stage, cache, out, lexicon))
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    text = flat(result.output)
    assert flat(f"error: {cache}") in text
    for name in names:
        assert flat(name) in text, result.output
    written = [p.name for p in out.rglob("*") if p.is_file() and p.suffix in (".csv", ".pt", ".json")]
    assert [name for name in written if not name.endswith(".phrases.pt")] == [], \
        "nothing is written from a malformed cache (the phrase embeddings depend on the lexicon alone)"


def test_unknown_labels_are_minus_one_and_read(tmp_path, tiny_cache, lexicon):
    cache = copy_of(tiny_cache, tmp_path)
    label(cache, 0, UNKNOWN_LABEL)
    assert UNKNOWN_LABEL == -1
    assert FeatureCache(cache).labels[0] == -1
    result = CliRunner().invoke(app, stage_args("eval", cache, tmp_path / "out", lexicon))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["videos"] == 8


def multilabel_cache(tiny_cache: Path, tmp_path: Path, hot: np.ndarray) -> Path:
    cache = copy_of(tiny_cache, tmp_path)
    rewrite(cache, "labels", hot)
    with h5py.File(cache, "r+") as h5:
        h5.attrs["multilabel"] = True
    return cache


def test_multi_label_rows_of_another_width_are_refused(tmp_path, tiny_cache):
    cache = multilabel_cache(tiny_cache, tmp_path, np.zeros((8, 5), dtype=np.uint8))
    with pytest.raises(InputError) as err:
        FeatureCache(cache)
    assert all(part in str(err.value) for part in (str(cache), "/labels", "5", "4 classes"))


def test_multi_label_values_other_than_0_and_1_name_their_row(tmp_path, tiny_cache):
    hot = np.zeros((8, 4), dtype=np.uint8)
    hot[:, 1] = 1
    hot[6, 2] = 2
    cache = multilabel_cache(tiny_cache, tmp_path, hot)
    with pytest.raises(InputError) as err:
        FeatureCache(cache)
    assert all(part in str(err.value) for part in (str(cache), "/labels", "row 6"))
    hot[6, 2] = 1
    assert FeatureCache(multilabel_cache(tiny_cache, tmp_path / "ok", hot)).labels.shape == (8, 4)


def test_labels_beyond_the_classes_in_use_name_their_row(tmp_path, tiny_cache):
    cache = FeatureCache(copy_of(tiny_cache, tmp_path))
    cache.check_classes(4, "--classes four.txt")  # as many as the cache's labels index
    first = int(np.flatnonzero(cache.labels >= 2)[0])
    with pytest.raises(InputError) as err:
        cache.check_classes(2, "--classes two.txt")
    text = str(err.value)
    assert all(part in text for part in (str(cache.path), "/labels", f"row {first}", "--classes two.txt"))


def test_a_class_file_shorter_than_a_nameless_cache_is_refused_by_train_video(tmp_path, tiny_cache):
    cache = copy_of(tiny_cache, tmp_path)
    with h5py.File(cache, "r+") as h5:
        h5.attrs["class_names"] = "[]"
    classes = tmp_path / "two.txt"
    classes.write_text("a\nb\n")
    args = stage_args("train-video", cache, tmp_path / "run", tmp_path) + ["--classes", str(classes)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert all(flat(part) in flat(result.output) for part in (str(cache), "/labels", str(classes)))


def test_an_empty_cache_opens_where_no_rows_are_needed(tmp_path, tiny_cache):
    cache = copy_of(tiny_cache, tmp_path)
    no_rows(cache)
    assert len(FeatureCache(cache)) == 0  # extract-features appends to it
    with pytest.raises(InputError, match="no rows"):
        FeatureCache(cache, need_rows=True)


def test_non_finite_features_are_found_in_the_reads_not_on_open(tmp_path, tiny_cache):
    cache_path = copy_of(tiny_cache, tmp_path)
    nan_in_row(cache_path, 5)
    cache = FeatureCache(cache_path)  # opening reads no features
    np.testing.assert_array_equal(cache.embeddings(slice(0, 5)), FeatureCache(tiny_cache).embeddings(slice(0, 5)))
    for read in (lambda: cache.embeddings(5), lambda: cache.embeddings(slice(2, 8)), lambda: cache.embeddings([1, 5]),
                 lambda: cache.read_rows(np.array([0, 5, 7]))):
        with pytest.raises(InputError, match=f"{cache_path} is a malformed feature cache: dataset /embeddings row 5 holds"):
            read()


def test_a_bad_row_met_in_a_dataloader_worker_is_still_one_line(tmp_path, tiny_cache, lexicon):
    cache = copy_of(tiny_cache, tmp_path)
    nan_in_row(cache, 5)
    args = stage_args("train-video", cache, tmp_path / "run", lexicon)
    args[args.index("--workers") + 1] = "2"
    result = CliRunner().invoke(app, [*args, "--cache-in-memory", "off"])  # rows read in the workers
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "Caught InputError" not in result.output
    assert flat(f"error: {cache} is a malformed feature cache: dataset /embeddings row 5 holds") in flat(result.output)
    assert not list((tmp_path / "run").glob("*.pt"))


def test_an_append_refuses_an_existing_cache_with_a_non_finite_row_and_keeps_both(tmp_path, tiny_cache):
    from bike_cli.io.feature_cache import Batch, PartWriter, merge, parts_dir_for, scan_parts

    cache = copy_of(tiny_cache, tmp_path)
    nan_in_row(cache, 5)
    before = cache.read_bytes()
    meta = FeatureCache(cache).meta
    parts_dir = parts_dir_for(cache)
    parts_dir.mkdir()
    shape = (1, meta.num_views, meta.frames, meta.embed_dim)
    PartWriter(parts_dir, 0).write(Batch(
        list_index=np.array([0]), video_ids=["new.mp4"], embeddings=np.zeros(shape, np.float16),
        labels=np.array([0]), num_frames=np.array([10]), decoders=["decord"]))
    with pytest.raises(InputError, match=f"{cache} is a malformed feature cache: dataset /embeddings row 5 holds"):
        merge(cache, scan_parts(parts_dir), meta)
    assert cache.read_bytes() == before and scan_parts(parts_dir).done_ids == {"new.mp4"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.h5", "cache.h5.parts"]  # no temp file left


def test_a_video_whose_embeddings_are_not_finite_is_a_failure_not_a_row(tmp_path):
    import torch
    from test_io_feature_cache import make_meta

    from bike_cli.data.clip_dataset import ClipBatch, ClipItem
    from bike_cli.data.video_lists import VideoEntry, VideoList
    from bike_cli.engine.frame_encoder import encode_batch

    meta = make_meta()
    entries = [VideoEntry(f"v{i}.mp4", tmp_path / f"v{i}.mp4", (i,), i + 1) for i in range(3)]
    items = [ClipItem(i, e, None, num_frames=20, decoder="decord") for i, e in enumerate(entries)]

    class Encoder:  # the model gives inf for the second video (an fp16 overflow)
        precision = "fp16"

        def __call__(self, frames: torch.Tensor) -> torch.Tensor:
            emb = torch.ones(3, meta.num_views, meta.frames, meta.embed_dim, dtype=torch.float16)
            emb[1, 0, 2, 1] = float("inf")
            return emb

    frames = torch.zeros(3, meta.num_views, meta.frames, 3, 8, 8, dtype=torch.uint8)
    batch = encode_batch(ClipBatch(items, frames, []), Encoder(), VideoList(entries, tmp_path, "text", False), meta)
    assert batch.video_ids == ["v0.mp4", "v2.mp4"] and batch.labels.tolist() == [0, 2]
    assert batch.embeddings.shape[0] == 2 and np.isfinite(batch.embeddings).all()
    assert batch.list_index.tolist() == [0, 2] and batch.num_frames.tolist() == [20, 20]
    [failure] = batch.failures
    assert failure.video_id == "v1.mp4" and "NaN or infinity" in failure.reason and "fp16" in failure.reason
