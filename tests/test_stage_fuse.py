"""The fuse stage (weights, alignment checks, the weight search, the metrics JSON) and `bike fuse`."""

from __future__ import annotations

import itertools
import json
import logging

import numpy as np
import pytest
from typer.testing import CliRunner

from bike_cli.cli.app import app
from bike_cli.config.stages import FuseConfig, parse_weights
from bike_cli.errors import InputError
from bike_cli.eval.fusion import simplex_grid
from bike_cli.eval.metrics import mean_average_precision
from bike_cli.io.score_csv import read_score_csv, write_score_csv
from bike_cli.stages.fuse import run_fuse

runner = CliRunner()
CLASSES = ["archery", "bowling", "cooking", "dancing", "eating"]


# ----------------------------------------------------------------------------- helpers


def write(path, ids, labels, scores, classes=CLASSES):
    return write_score_csv(path, list(ids), np.asarray(labels), np.asarray(scores, dtype=np.float64), classes)


def branch_scores(rng, labels, strength, k=5):
    """Softmax probabilities [N, K] where the true class gets a boost of `strength` on average."""
    logits = rng.normal(size=(len(labels), k))
    logits[np.arange(len(labels)), labels] += strength * rng.random(len(labels)) * 2
    e = np.exp(logits)
    return e / e.sum(1, keepdims=True)


@pytest.fixture
def pair(tmp_path):
    """Two complementary single-label branches, test and validation, the second file's rows shuffled."""
    rng = np.random.default_rng(0)
    files = {}
    for split, n in (("test", 80), ("val", 120)):
        labels = rng.integers(0, 5, size=n)
        ids = [f"{split}{i:03d}" for i in range(n)]
        a, b = branch_scores(rng, labels, 1.2), branch_scores(rng, labels, 0.9)
        perm = rng.permutation(n)
        files[split] = (write(tmp_path / f"A_{split}.csv", ids, labels, a),
                        write(tmp_path / f"B_{split}.csv", [ids[i] for i in perm], labels[perm], b[perm]))
    return files


def brute_top1(scores, labels) -> float:
    return 100.0 * float(np.mean([int(np.argmax(row)) == label for row, label in zip(scores, labels)]))


def aligned_scores(first, other):
    """`other`'s scores in `first`'s row order, by a dictionary lookup."""
    row = {vid: i for i, vid in enumerate(other.video_ids)}
    return np.array([other.scores[row[vid]] for vid in first.video_ids], dtype=np.float64)


# ----------------------------------------------------------------------------- weights and alignment


def test_weights_are_applied_hand_checked(tmp_path):
    a = write(tmp_path / "a.csv", ["x", "y"], [0, 1], [[0.9, 0.1], [0.2, 0.8]], ["p", "q"])
    b = write(tmp_path / "b.csv", ["x", "y"], [0, 1], [[0.1, 0.9], [0.6, 0.4]], ["p", "q"])
    run_fuse(FuseConfig([a, b], tmp_path / "f.csv", weights=[0.25, 0.75]))
    fused = read_score_csv(tmp_path / "f.csv")
    # 0.25 * 0.9 + 0.75 * 0.1 = 0.3 ...
    np.testing.assert_allclose(fused.scores, [[0.3, 0.7], [0.5, 0.5]], atol=1e-6)
    assert fused.video_ids == ["x", "y"] and fused.labels.tolist() == [0, 1] and fused.class_names == ["p", "q"]


def test_default_weights_are_equal_and_rows_are_reordered(pair):
    a_path, b_path = pair["test"]
    out = a_path.with_name("f.csv")
    summary = run_fuse(FuseConfig([a_path, b_path], out))
    a, b, fused = read_score_csv(a_path), read_score_csv(b_path), read_score_csv(out)
    assert b.video_ids != a.video_ids  # the fixture shuffled B
    assert summary.weights == [0.5, 0.5]
    assert fused.video_ids == a.video_ids and np.array_equal(fused.labels, a.labels)
    np.testing.assert_allclose(fused.scores, 0.5 * a.scores + 0.5 * aligned_scores(a, b), atol=1e-6)


def test_three_inputs_weighted(tmp_path):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, size=10)
    s = [rng.random((10, 5)) for _ in range(3)]
    paths = [write(tmp_path / f"{i}.csv", [f"v{j}" for j in range(10)], labels, s[i]) for i in range(3)]
    run_fuse(FuseConfig(paths, tmp_path / "f.csv", weights=[0.5, 0.3, 0.2]))
    np.testing.assert_allclose(read_score_csv(tmp_path / "f.csv").scores, 0.5 * s[0] + 0.3 * s[1] + 0.2 * s[2],
                               atol=1e-6)


def test_different_videos_are_an_error_naming_files_and_ids(tmp_path):
    a = write(tmp_path / "a.csv", ["v1", "v2", "v3"], [0, 1, 2], np.eye(3, 5))
    b = write(tmp_path / "b.csv", ["v1", "v3", "v9"], [0, 2, 2], np.eye(3, 5))
    with pytest.raises(InputError) as err:
        run_fuse(FuseConfig([a, b], tmp_path / "f.csv"))
    message = str(err.value)
    assert str(a) in message and str(b) in message
    assert "'v2'" in message and "'v9'" in message
    assert not (tmp_path / "f.csv").exists()


def test_different_classes_are_an_error_naming_files_and_classes(tmp_path):
    a = write(tmp_path / "a.csv", ["v1"], [0], [[1, 0, 0, 0, 0]])
    renamed = ["archery", "bowling", "baking", "dancing", "eating"]
    b = write(tmp_path / "b.csv", ["v1"], [0], [[1, 0, 0, 0, 0]], renamed)
    with pytest.raises(InputError, match=r"a\.csv and .*b\.csv differ in their classes: .*b\.csv has the class 'baking', which .*a\.csv lacks"):
        run_fuse(FuseConfig([a, b], tmp_path / "f.csv"))
    c = write(tmp_path / "c.csv", ["v1"], [0], [[1, 0, 0, 0]], CLASSES[:4])
    with pytest.raises(InputError, match=r"a\.csv has 5 classes but .*c\.csv has 4"):
        run_fuse(FuseConfig([a, c], tmp_path / "f.csv"))


def test_different_labels_or_label_kinds_are_errors(tmp_path):
    a = write(tmp_path / "a.csv", ["v1", "v2"], [0, 1], np.eye(2, 5))
    b = write(tmp_path / "b.csv", ["v2", "v1"], [3, 0], np.eye(2, 5))
    with pytest.raises(InputError, match=r"video 'v2' has label 1 in .*a\.csv but 3 in .*b\.csv"):
        run_fuse(FuseConfig([a, b], tmp_path / "f.csv"))
    m = write(tmp_path / "m.csv", ["v1", "v2"], np.eye(2, 5, dtype=np.uint8), np.eye(2, 5))
    with pytest.raises(InputError, match="single-label .* multi-label|multi-label .* single-label"):
        run_fuse(FuseConfig([a, m], tmp_path / "f.csv"))


@pytest.mark.parametrize("kwargs, message", [
    ({"weights": [0.7, 0.4]}, "sum to 1.1, not 1"),
    ({"weights": [1.0]}, "1 weights for 2 input files"),
    ({"weights": [1.5, -0.5]}, "non-negative"),
    ({"search": True}, "one --val file per input"),
    ({"search": True, "weights": [0.5, 0.5]}, "either --weights or --search"),
    ({"grid_step": 0.3, "search": True, "val": ["a", "b"]}, "must divide 1"),
    ({"protocol": "imagenet"}, "not one of full, zero-shot-half, k600-splits"),
])
def test_bad_options_are_refused_before_reading(tmp_path, kwargs, message):
    with pytest.raises(InputError, match=message):
        run_fuse(FuseConfig([tmp_path / "missing_a.csv", tmp_path / "missing_b.csv"], tmp_path / "f.csv", **kwargs))


def test_out_may_not_overwrite_an_input(pair):
    a, b = pair["test"]
    with pytest.raises(InputError, match=r"--out .* is the same file as an input"):
        run_fuse(FuseConfig([a, b], a))
    (a.parent / "link.csv").symlink_to(b)
    with pytest.raises(InputError, match=r"--out .*link.csv is the same file as an input"):
        run_fuse(FuseConfig([a, b], a.parent / "." / "link.csv"))


def test_parse_weights_names_the_bad_item():
    assert parse_weights("0.6, 0.4") == [0.6, 0.4]
    with pytest.raises(InputError, match="'x' is not a number"):
        parse_weights("0.6,x")


# ----------------------------------------------------------------------------- search


def test_search_picks_the_lambda_a_brute_force_loop_picks(pair):
    a_val, b_val = (read_score_csv(p) for p in pair["val"])
    b_scores = aligned_scores(a_val, b_val)
    best_lam, best_top1, brute = None, -1.0, []
    for step in range(21):
        lam = step / 20
        top1 = brute_top1(lam * a_val.scores.astype(np.float64) + (1 - lam) * b_scores, a_val.labels)
        brute.append(top1)
        if top1 > best_top1:
            best_lam, best_top1 = lam, top1
    out = pair["test"][0].with_name("f.csv")
    summary = run_fuse(FuseConfig(list(pair["test"]), out, search=True, val=list(pair["val"])))
    assert [p.weights[0] for p in summary.grid] == pytest.approx([s / 20 for s in range(21)])
    assert [p.score for p in summary.grid] == pytest.approx(brute)
    assert summary.weights == pytest.approx([best_lam, 1 - best_lam])
    assert 0 < best_lam < 1 and best_top1 > max(brute[0], brute[-1])  # the fixture makes fusion pay off
    a, b = (read_score_csv(p) for p in pair["test"])  # applied to the test files
    np.testing.assert_allclose(read_score_csv(out).scores, best_lam * a.scores + (1 - best_lam) * aligned_scores(a, b),
                               atol=1e-6)


def test_search_multi_label_maximises_map(tmp_path):
    rng = np.random.default_rng(4)
    targets = (rng.random((60, 5)) < 0.3).astype(np.uint8)
    a, b = rng.random((60, 5)) + 0.4 * targets, rng.random((60, 5)) + 0.3 * targets
    ids = [f"v{i}" for i in range(60)]
    val = [write(tmp_path / "a.csv", ids, targets, a), write(tmp_path / "b.csv", ids, targets, b)]
    summary = run_fuse(FuseConfig(val, tmp_path / "f.csv", search=True, val=val, grid_step=0.1))
    a32, b32 = a.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64)
    maps = [mean_average_precision(lam / 10 * a32 + (1 - lam / 10) * b32, targets) for lam in range(11)]
    assert summary.criterion == "mAP"
    assert summary.weights[0] == pytest.approx(int(np.argmax(maps)) / 10)


def test_search_over_three_inputs_uses_a_simplex_grid(tmp_path):
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 5, size=90)
    s = [branch_scores(rng, labels, 0.8) for _ in range(3)]
    ids = [f"v{i}" for i in range(90)]
    paths = [write(tmp_path / f"{i}.csv", ids, labels, s[i]) for i in range(3)]
    summary = run_fuse(FuseConfig(paths, tmp_path / "f.csv", search=True, val=paths, grid_step=0.25))
    s64 = [x.astype(np.float32).astype(np.float64) for x in s]
    best, best_w = -1.0, None
    for w in itertools.product(range(5), repeat=3):  # quarters summing to one, lexicographic order
        if sum(w) == 4:
            top1 = brute_top1(sum(wi / 4 * si for wi, si in zip(w, s64)), labels)
            if top1 > best:
                best, best_w = top1, [wi / 4 for wi in w]
    assert len(summary.grid) == 15
    assert summary.weights == pytest.approx(best_w)


def test_evals_fusion_curve_is_the_searchs_grid(pair):
    """The plot of `bike eval --plots` draws the points `bike fuse --search` scores: one Eq. 4, one grid."""
    from bike_cli.eval.fusion import fusion_curve

    val = list(pair["val"])
    summary = run_fuse(FuseConfig(val, val[0].with_name("f.csv"), search=True, val=val, grid_step=0.1))
    a, b = read_score_csv(val[0]), read_score_csv(val[1])
    lambdas, top1 = fusion_curve(a.scores, aligned_scores(a, b), a.labels, step=0.1)
    assert lambdas.tolist() == pytest.approx([p.weights[0] for p in summary.grid])
    assert top1.tolist() == pytest.approx([p.score for p in summary.grid], abs=1e-9)
    assert top1.tolist() == pytest.approx([brute_top1(lam * a.scores + (1 - lam) * aligned_scores(a, b), a.labels)
                                           for lam in np.linspace(0, 1, 11)], abs=1e-9)


def test_simplex_grid_and_its_limits():
    grid = simplex_grid(2, 0.05)
    assert grid.shape == (21, 2) and np.allclose(grid.sum(1), 1) and np.allclose(grid[:, 0], np.arange(21) / 20)
    assert simplex_grid(4, 0.5).shape == (10, 4)
    with pytest.raises(InputError, match="coarser --grid-step"):
        simplex_grid(6, 0.05)


# ----------------------------------------------------------------------------- metrics JSON


def test_metrics_json_records_weights_inputs_fused_and_grid(pair):
    out = pair["test"][0].with_name("f.csv")
    run_fuse(FuseConfig(list(pair["test"]), out, search=True, val=list(pair["val"])))
    doc = json.loads(out.with_name("f.metrics.json").read_text())
    a, b = (read_score_csv(p) for p in pair["test"])
    fused = read_score_csv(out)
    assert doc["protocol"] == "full" and doc["videos"] == 80 and doc["classes"] == 5
    assert [i["path"] for i in doc["inputs"]] == [str(p) for p in pair["test"]]
    assert [i["weight"] for i in doc["inputs"]] == doc["weights"] == doc["search"]["best"]["weights"]
    assert doc["inputs"][0]["metrics"]["top1"] == pytest.approx(brute_top1(a.scores, a.labels))
    assert doc["inputs"][1]["metrics"]["top1"] == pytest.approx(brute_top1(b.scores, b.labels))
    assert doc["fused"]["path"] == str(out)
    assert doc["fused"]["metrics"]["top1"] == pytest.approx(brute_top1(fused.scores, fused.labels))
    assert doc["inputs"][0]["scores_look_like_probabilities"] is True
    assert doc["search"]["val"] == [str(p) for p in pair["val"]] and doc["search"]["criterion"] == "top1"
    assert len(doc["search"]["grid"]) == 21
    assert doc["search"]["best"]["top1"] == max(p["top1"] for p in doc["search"]["grid"])


def test_metrics_json_without_search_and_with_a_protocol(pair):
    out = pair["test"][0].with_name("f.csv")
    run_fuse(FuseConfig(list(pair["test"]), out, weights=[0.6, 0.4], protocol="zero-shot-half",
                        protocol_options={"repeats": 4, "seed": 2}))
    doc = json.loads(out.with_name("f.metrics.json").read_text())
    assert doc["search"] is None and doc["weights"] == [0.6, 0.4]
    assert doc["protocol_options"] == {"repeats": 4, "seed": 2}
    fused = doc["fused"]["metrics"]
    assert len(fused["runs"]) == 4 and all(len(r["class_indices"]) == 2 for r in fused["runs"])
    assert fused["top1_mean"] == pytest.approx(np.mean([r["top1"] for r in fused["runs"]]))


def test_unlabelled_inputs_give_null_metrics(tmp_path):
    a = write(tmp_path / "a.csv", ["v1", "v2"], [-1, -1], np.eye(2, 5))
    b = write(tmp_path / "b.csv", ["v1", "v2"], [-1, -1], np.eye(2, 5))
    run_fuse(FuseConfig([a, b], tmp_path / "f.csv"))
    text = (tmp_path / "f.metrics.json").read_text()
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the metrics JSON"))  # strict JSON
    assert doc["fused"]["metrics"]["top1"] is None
    assert doc["videos"] == 2 and doc["fused"]["metrics"]["videos"] == 0  # all videos; the labelled ones


def test_mixed_score_scales_are_warned_about(pair, tmp_path, caplog):
    a = read_score_csv(pair["test"][0])
    cosine = write(tmp_path / "cos.csv", a.video_ids, a.labels, 0.2 + 0.05 * a.scores)  # rows do not sum to 1
    with caplog.at_level(logging.WARNING, logger="bike_cli.stages.fuse"):
        run_fuse(FuseConfig([pair["test"][0], cosine], tmp_path / "f.csv"))
    assert "cos.csv do not" in caplog.text
    doc = json.loads((tmp_path / "f.metrics.json").read_text())
    assert [i["scores_look_like_probabilities"] for i in doc["inputs"]] == [True, False]


# ----------------------------------------------------------------------------- CLI


def test_cli_fuses_and_prints_the_tables(pair):
    out = pair["test"][0].with_name("cli.csv")
    result = runner.invoke(app, ["fuse", *map(str, pair["test"]), "--search", "--val", str(pair["val"][0]),
                                 "--val", str(pair["val"][1]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "weight search" in result.output and "fused" in result.output
    assert out.is_file() and out.with_name("cli.metrics.json").is_file()


def test_cli_weights_option(pair):
    out = pair["test"][0].with_name("cli.csv")
    result = runner.invoke(app, ["fuse", *map(str, pair["test"]), "--weights", "0.8,0.2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.with_name("cli.metrics.json").read_text())["weights"] == [0.8, 0.2]


@pytest.mark.parametrize("extra, message", [
    (["--weights", "0.6,0.6"], "sum to 1.2, not 1"),
    (["--weights", "0.6,abc"], "'abc' is not a number"),
    (["--search"], "one --val file per input"),
    (["--protocol", "full", "--seed", "3"], "takes no option 'seed'"),
])
def test_cli_bad_options_exit_1_with_a_message(pair, tmp_path, extra, message):
    result = runner.invoke(app, ["fuse", *map(str, pair["test"]), "--out", str(tmp_path / "f.csv"), *extra])
    assert result.exit_code == 1
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "f.csv").exists()


def test_cli_mismatched_files_exit_1_naming_them(tmp_path):
    a = write(tmp_path / "a.csv", ["v1", "v2"], [0, 1], np.eye(2, 5))
    b = write(tmp_path / "b.csv", ["v1", "v3"], [0, 1], np.eye(2, 5))
    result = runner.invoke(app, ["fuse", str(a), str(b), "--out", str(tmp_path / "f.csv")])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "a.csv" in text and "b.csv" in text and "'v2'" in text and "'v3'" in text


# ----------------------------------------------------------------------------- ties in the search


def tie_files(tmp_path, wrong: float):
    """Validation files where branch A alone is right and B puts `wrong` on another class: every lambda above
    a threshold gives 100 % top-1, every lambda below it 0 %."""
    labels = np.array([0, 1, 2, 3, 4, 0, 1, 2])
    a = np.full((8, 5), 0.05)
    a[np.arange(8), labels] = 0.8
    b = np.full((8, 5), (1 - wrong) / 4)
    b[np.arange(8), (labels + 1) % 5] = wrong
    ids = [f"v{i}" for i in range(8)]
    return [write(tmp_path / "a.csv", ids, labels, a), write(tmp_path / "b.csv", ids, labels, b)]


@pytest.mark.parametrize("wrong, chosen", [(0.6, 0.5), (0.9, 0.55)])
def test_search_on_a_partial_tie_takes_the_best_point_nearest_the_default(tmp_path, wrong, chosen):
    val = tie_files(tmp_path, wrong)
    summary = run_fuse(FuseConfig(val, tmp_path / "f.csv", search=True, val=val))
    best = max(p.score for p in summary.grid)
    tied = [p.weights[0] for p in summary.grid if p.score == best]
    assert len(tied) > 1 and min(tied) <= chosen < max(tied), "the case is a partial tie around the choice"
    assert summary.weights == pytest.approx([chosen, 1 - chosen])
    assert summary.grid_tied is False


@pytest.mark.parametrize("compat, default", [("bike", [0.5, 0.5]), ("authors", [0.7, 0.3])])
def test_search_where_every_point_ties_keeps_the_default_weights_and_says_so(tmp_path, caplog, compat, default):
    ids, labels = [f"v{i}" for i in range(6)], np.array([0, 1, 2, 3, 4, 0])
    scores = branch_scores(np.random.default_rng(3), labels, 1.0)
    val = [write(tmp_path / "a.csv", ids, labels, scores), write(tmp_path / "b.csv", ids, labels, scores)]
    for path in val:
        (path.parent / (path.name + ".meta.json")).write_text(json.dumps(
            {"kind": "bike-csv-meta", "schema_version": 1, "compat": compat}))
    out = tmp_path / "f.csv"
    with caplog.at_level(logging.INFO):
        summary = run_fuse(FuseConfig(val, out, search=True, val=val, compat=compat))
    assert len({p.score for p in summary.grid}) == 1, "the same scores twice: every lambda gives one result"
    assert summary.weights == pytest.approx(default) and summary.grid_tied is True
    assert "tied" in caplog.text
    doc = json.loads(out.with_name("f.metrics.json").read_text())
    assert doc["search"]["tied"] is True and doc["search"]["best"]["weights"] == pytest.approx(default)
    assert doc["weights"] == pytest.approx(default)
    printed = runner.invoke(app, ["fuse", *map(str, val), "--out", str(tmp_path / "g.csv"), "--search",
                                  "--val", str(val[0]), "--val", str(val[1]), "--compat", compat])
    assert printed.exit_code == 0, printed.output
    assert "every point of the grid ties" in " ".join(printed.output.split())
