"""A class file holding the cache's names in another order: labels are mapped by name (issue 19.1)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bike_cli.config.stages import TrainVideoConfig
from bike_cli.data.class_names import read_class_names
from bike_cli.errors import InputError
from bike_cli.stages.train_video import run_train_video

ROOT = Path(__file__).resolve().parents[1]


def _eval(out: Path, run: Path, cache: Path, classes: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "bike_cli", "eval", "--checkpoint", str(run), "--features",
                           str(cache), "--classes", str(classes), "--out", str(out), "--workers", "0"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return json.loads((out / "metrics.json").read_text())["metrics"]["video"]


def test_eval_metrics_do_not_depend_on_the_class_file_order(tmp_path, motion_caches):
    data, train, val = motion_caches
    run = tmp_path / "run"
    run_train_video(TrainVideoConfig(features=train, out=run, epochs=2, batch_size=8, lr=2e-3, warmup_epochs=1,
                                     workers=0, templates=["{}"], temporal_layers=1))
    names = read_class_names(data.classes)
    reordered = tmp_path / "reordered.txt"
    reordered.write_text("\n".join(reversed(names)) + "\n")
    original = _eval(tmp_path / "a", run, val, data.classes)
    shuffled = _eval(tmp_path / "b", run, val, reordered)
    numbers = {k: v for k, v in original.items() if isinstance(v, (int, float))}
    assert numbers
    for key, value in numbers.items():
        np.testing.assert_allclose(shuffled[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


def test_label_order_maps_by_name_and_refuses_a_missing_name():
    from bike_cli.data.class_names import label_order, relabel

    assert label_order(["a", "b"], ["a", "b"], "f", "c") is None
    assert label_order(["a", "b"], [], "f", "c") is None
    order = label_order(["b", "c", "a"], ["a", "b", "c"], "f", "c")
    assert order == [2, 0, 1]
    np.testing.assert_array_equal(relabel(np.array([0, 1, 2, -1]), order, 3), [2, 0, 1, -1])
    np.testing.assert_array_equal(relabel(np.array([[1, 0, 1]]), order, 3), [[0, 1, 1]])
    with pytest.raises(InputError, match="lacks the class 'c'"):
        label_order(["a", "b"], ["a", "b", "c"], "f", "c")


# ----------------------------------------------------------------------------- every other stage


def _reversed_classes(tmp_path: Path, classes: Path) -> Path:
    reordered = tmp_path / "reversed_classes.txt"
    reordered.write_text("\n".join(reversed(read_class_names(classes))) + "\n")
    return reordered


def _numbers(run: Path) -> list[dict]:
    """The numeric entries of each line of a run's metrics.jsonl (times left out)."""
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if isinstance(v, float) and "time" not in k and "second" not in k}
            for line in lines]


def _assert_same_numbers(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected) and any(expected)
    for a, b in zip(got, expected):
        assert a.keys() == b.keys()
        for key in b:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_train_video_does_not_depend_on_the_class_file_order(tmp_path, motion_caches):
    data, train, val = motion_caches
    runs = {}
    for name, classes in (("given", data.classes), ("reversed", _reversed_classes(tmp_path, data.classes))):
        runs[name] = tmp_path / name
        run_train_video(TrainVideoConfig(features=train, val_features=val, classes=classes, out=runs[name], epochs=2,
                                         batch_size=8, lr=2e-3, warmup_epochs=1, workers=0, templates=["{}"],
                                         temporal_layers=1))
    _assert_same_numbers(_numbers(runs["reversed"]), _numbers(runs["given"]))


def _attributes(tmp_path: Path, cache: Path, name: str, **options) -> Path:
    from bike_cli.config.stages import GenAttributesConfig
    from bike_cli.stages.gen_attributes import run_gen_attributes

    lexicon = tmp_path / "phrases.txt"
    lexicon.write_text("a red square\na blue circle\nmoving to the left\nmoving up\na grey background\n")
    out = tmp_path / f"{name}.csv"
    run_gen_attributes(GenAttributesConfig(features=cache, lexicon=str(lexicon), out=out, top_k=2, **options))
    return out


def test_train_attrs_does_not_depend_on_the_class_file_order(tmp_path, motion_caches):
    from bike_cli.config.stages import TrainAttrsConfig
    from bike_cli.stages.train_attrs import run_train_attrs

    data, train, val = motion_caches
    train_csv, val_csv = _attributes(tmp_path, train, "train"), _attributes(tmp_path, val, "val")
    runs = {}
    for name, classes in (("given", data.classes), ("reversed", _reversed_classes(tmp_path, data.classes))):
        runs[name] = tmp_path / name
        run_train_attrs(TrainAttrsConfig(attributes=train_csv, val_attributes=val_csv, classes=classes,
                                         out=runs[name], model="bike-tiny", pretrained="none", epochs=2,
                                         batch_size=8, lr=3e-3, warmup_epochs=1, val_every=1, templates=["{}"]))
    _assert_same_numbers(_numbers(runs["reversed"]), _numbers(runs["given"]))


def test_gen_attributes_scores_do_not_depend_on_the_class_file_order(tmp_path, motion_caches):
    from bike_cli.io.score_csv import read_score_csv

    data, _, val = motion_caches
    tables = {}
    for name, classes in (("given", data.classes), ("reversed", _reversed_classes(tmp_path, data.classes))):
        _attributes(tmp_path, val, name, classes=classes, scores=tmp_path / f"{name}_scores.csv")
        tables[name] = read_score_csv(tmp_path / f"{name}_scores.csv")
    given, shuffled = tables["given"], tables["reversed"]
    columns = [shuffled.class_names.index(c) for c in given.class_names]
    np.testing.assert_allclose(shuffled.scores[:, columns], given.scores, rtol=1e-5, atol=1e-6)
    assert [shuffled.class_names[k] for k in shuffled.labels] == [given.class_names[k] for k in given.labels]


def test_fuse_maps_the_columns_of_a_score_csv_by_name(tmp_path):
    from bike_cli.config.stages import FuseConfig
    from bike_cli.io.score_csv import write_score_csv
    from bike_cli.stages.fuse import run_fuse

    rng = np.random.default_rng(3)
    names, labels = ["archery", "bowling", "cooking", "dancing"], rng.integers(0, 4, size=30)
    ids = [f"v{i:02d}" for i in range(30)]
    a, b = rng.dirichlet(np.ones(4), size=30), rng.dirichlet(np.ones(4), size=30)
    order = [2, 0, 3, 1]  # column j of the reordered file is class order[j]
    write_score_csv(tmp_path / "a.csv", ids, labels, a, names)
    write_score_csv(tmp_path / "b.csv", ids, labels, b, names)
    write_score_csv(tmp_path / "b_reordered.csv", ids, np.argsort(order)[labels], b[:, order],
                    [names[k] for k in order])
    same = run_fuse(FuseConfig(inputs=[tmp_path / "a.csv", tmp_path / "b.csv"], out=tmp_path / "same.csv"))
    mapped = run_fuse(FuseConfig(inputs=[tmp_path / "a.csv", tmp_path / "b_reordered.csv"],
                                 out=tmp_path / "mapped.csv"))
    assert mapped.fused_metrics.keys() == same.fused_metrics.keys()
    for key, value in same.fused_metrics.items():
        if isinstance(value, float):
            np.testing.assert_allclose(mapped.fused_metrics[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


def test_fuse_refuses_score_csvs_of_different_class_sets(tmp_path):
    from bike_cli.config.stages import FuseConfig
    from bike_cli.io.score_csv import write_score_csv
    from bike_cli.stages.fuse import run_fuse

    scores, labels = np.full((2, 2), 0.5), np.array([0, 1])
    write_score_csv(tmp_path / "a.csv", ["x", "y"], labels, scores, ["archery", "bowling"])
    write_score_csv(tmp_path / "b.csv", ["x", "y"], labels, scores, ["archery", "cooking"])
    with pytest.raises(InputError, match="cooking"):
        run_fuse(FuseConfig(inputs=[tmp_path / "a.csv", tmp_path / "b.csv"], out=tmp_path / "f.csv"))


def test_predict_does_not_depend_on_the_class_file_order(tmp_path, sample_data):
    from bike_cli.config.stages import PredictConfig
    from bike_cli.stages.predict import run_predict

    video = next(sample_data.root.rglob("*.mp4"))
    results = {}
    for name, classes in (("given", sample_data.classes), ("reversed", _reversed_classes(tmp_path, sample_data.classes))):
        results[name] = run_predict(PredictConfig(videos=[video], model="bike-tiny", pretrained="none", classes=classes,
                                                  lexicon="none", top=4, frames=4)).predictions[0]
    given, shuffled = results["given"], results["reversed"]
    assert [n for n, _ in shuffled.top] == [n for n, _ in given.top]
    np.testing.assert_allclose([p for _, p in shuffled.top], [p for _, p in given.top], rtol=1e-5, atol=1e-6)
