"""benchmarks/gpu_check.sh --dry-run: the GPU check's own steps, tiny and on the CPU, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_step_and_writes_its_figures(tmp_path):
    out = tmp_path / "figures.json"
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["dry_run"] and figures["pytest_cuda_rc"] == 0
    assert figures["extract"]["videos"] == figures["sizes"]["videos"] and figures["extract"]["failed"] == 0
    assert figures["extract"]["stage_frames_per_s"] > 0 and figures["extract"]["model_frames_per_s"] > 0
    assert figures["train"]["clips_per_s"] > 0 and figures["train"]["rows"] == figures["sizes"]["train_rows"]
    assert figures["eval"]["videos"] == figures["sizes"]["eval_videos"] and figures["eval"]["wall_s"] > 0


def test_gpu_check_refuses_unknown_arguments():
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--fast"], capture_output=True,
                          text=True)
    assert done.returncode == 2 and "unknown argument --fast" in done.stderr
