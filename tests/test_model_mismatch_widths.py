"""`--allow-model-mismatch` never leads to a traceback: where the two models embed in different widths their
vectors cannot meet, so eval, search and train-video refuse in one line naming both models and widths
(flag or not), and no message suggests the flag there. Two attributes CSVs meet only as text: the flag lets
them go on whatever their widths."""

from __future__ import annotations

import logging
import subprocess
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from cli_run import bike as run_bike
from cli_run import one_line
from test_stage_gen_attributes import write_cache

from bike_cli.errors import CacheMismatchError
from bike_cli.io.identity import check_same_model

WIDE = "ViT-S-32-alt"  # an open_clip architecture of 256-d embeddings (bike-tiny: 64-d); never built here
TINY = {"compat": "bike", "model_name": "bike-tiny", "pretrained": "none", "checkpoint_sha256": None,
        "quick_gelu": False, "embed_dim": 64, "image_size": 64}


bike = partial(run_bike, timeout=300, columns=400)



def assert_refused_for_widths(done: subprocess.CompletedProcess, *, allowed: bool) -> None:
    text = one_line(done)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert f"({WIDE})" in text and "(bike-tiny)" in text and "embed in different widths" in text
    assert "embed_dim: " in text and " 256 in " in text and " 64 in " in text
    assert ("not even with --allow-model-mismatch" in text) == allowed
    assert "or --allow-model-mismatch if you know they agree" not in text  # never suggested where it cannot work


@pytest.mark.slow
@pytest.mark.parametrize("allowed", [True, False])
def test_eval_with_a_model_of_another_width_is_one_line(tmp_path, tiny_cache, allowed):
    flag = ["--allow-model-mismatch"] if allowed else []
    done = bike("eval", "--features", str(tiny_cache), "--model", WIDE, "--pretrained", "none", "--out",
                str(tmp_path / "e"), *flag)
    assert_refused_for_widths(done, allowed=allowed)
    assert not (tmp_path / "e" / "metrics.json").exists()


@pytest.mark.slow
def test_search_with_a_model_of_another_width_is_one_line(tiny_cache):
    done = bike("search", "a square", "--features", str(tiny_cache), "--model", WIDE, "--pretrained", "none",
                "--allow-model-mismatch")
    assert_refused_for_widths(done, allowed=True)


@pytest.mark.slow
def test_train_video_validating_on_a_cache_of_another_width_is_one_line(tmp_path, tiny_cache):
    rng = np.random.default_rng(0)
    wide = write_cache(tmp_path / "wide.h5", rng.standard_normal((4, 1, 4, 256)), np.arange(4), model=WIDE)
    done = bike("train-video", "--features", str(tiny_cache), "--val-features", str(wide), "--out",
                str(tmp_path / "run"), "--epochs", "1", "--batch-size", "4", "--workers", "0", "--frames", "4",
                "--temporal-layers", "1", "--allow-model-mismatch")
    assert_refused_for_widths(done, allowed=True)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_a_width_difference_is_refused_even_when_allowed():
    with pytest.raises(CacheMismatchError, match=r"a \(bike-tiny\) and b \(ViT-S-32-alt\) embed in different widths "
                                                 r"\(model_name: .*; embed_dim: 64 in a, 256 in b\)"):
        check_same_model(TINY, "a", {**TINY, "model_name": WIDE, "embed_dim": 256}, "b", allow=True)


def test_attributes_csvs_of_other_widths_go_on_when_allowed(caplog):
    with caplog.at_level(logging.WARNING):
        check_same_model(TINY, "a.csv", {**TINY, "model_name": WIDE, "embed_dim": 256}, "b.csv", allow=True,
                         same_space=False)
    assert "embed_dim: 64 in a.csv, 256 in b.csv" in caplog.text
    with pytest.raises(CacheMismatchError, match="or --allow-model-mismatch if you know they agree"):
        check_same_model(TINY, "a.csv", {**TINY, "model_name": WIDE, "embed_dim": 256}, "b.csv", same_space=False)


def test_the_docs_say_the_flag_does_not_bridge_other_widths():
    root = Path(__file__).resolve().parents[1]
    readme = " ".join((root / "README.md").read_text(encoding="utf-8").split())
    formats = " ".join((root / "docs" / "formats.md").read_text(encoding="utf-8").split())
    assert ("(`--allow-model-mismatch` for experts, where both embed in the same width: models of different widths "
            "are refused naming both") in readme
    assert "`--allow-model-mismatch` makes it a warning, except a different `embed_dim`" in formats
    assert "`--allow-model-mismatch` makes it a warning." not in formats
