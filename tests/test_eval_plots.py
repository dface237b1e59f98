"""`bike eval --plots`: the folder never mixes two runs (bike's earlier plots are removed, by name,
nothing else), and the per-class figure stays readable with many classes (the classes with test
videos, sorted, only the worst and best 20 of more)."""

from __future__ import annotations

from functools import partial

import numpy as np
from cli_run import bike as run_bike
from matplotlib.image import imread
from test_stage_search import DIM, make_cache

bike = partial(run_bike, timeout=300, columns=300)


def test_eval_removes_the_plots_an_earlier_eval_left_and_nothing_else(tmp_path, tiny_cache):
    out = tmp_path / "e"
    plots = out / "plots"
    first = bike("eval", "--features", tiny_cache, "--out", out, "--plots", plots)
    assert first.returncode == 0, first.stderr
    figure = plots / "per_class_accuracy.png"
    assert figure.is_file()
    # what an earlier eval with --attributes leaves too, and a file of the user's
    (plots / "fusion_curve.png").write_bytes(figure.read_bytes())
    (plots / "notes.png").write_bytes(b"mine")
    (out / "fusion_curve.png").write_bytes(b"an eval that drew into --plots DIR itself")

    again = bike("eval", "--features", tiny_cache, "--out", out, "--plots", plots)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in plots.iterdir()) == ["notes.png", "per_class_accuracy.png"]
    assert not (out / "fusion_curve.png").exists()

    unplotted = bike("eval", "--features", tiny_cache, "--out", out)
    assert unplotted.returncode == 0, unplotted.stderr
    assert sorted(p.name for p in plots.iterdir()) == ["notes.png"]


def test_the_per_class_figure_of_many_classes_draws_the_worst_and_best_with_test_videos(tmp_path):
    classes, labelled = 400, 300  # 100 classes have no test video
    rng = np.random.default_rng(0)
    cache = make_cache(tmp_path / "many.h5", rng.standard_normal((labelled, 1, 4, DIM)).astype(np.float32),
                       labels=np.arange(labelled), num_frames=8,
                       class_names=[f"class {c:03d}" for c in range(classes)])
    result = bike("eval", "--features", cache, "--out", tmp_path / "e", "--plots", tmp_path / "e" / "plots")
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stderr.split())
    assert ("per_class_accuracy.png shows the 20 worst and 20 best of the 300 classes with test videos, sorted by "
            "video top-1; 100 of the 400 classes have none") in said
    height, width = imread(tmp_path / "e" / "plots" / "per_class_accuracy.png").shape[:2]
    assert width == 800 and height < 1500, (width, height)  # 40 classes drawn, not 4,550 px of 400
