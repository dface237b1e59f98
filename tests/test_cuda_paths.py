"""The CUDA paths (run by benchmarks/gpu_check.sh as `pytest -m cuda`; skipped without a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bike_cli.config.stages import EvalConfig, TrainVideoConfig
from bike_cli.data.cached_clips import CachedClips, MemoryClips
from bike_cli.engine.frame_encoder import FrameEncoder
from bike_cli.io.checkpoints import load_video_checkpoint
from bike_cli.io.feature_cache import FeatureCache
from bike_cli.io.score_csv import read_score_csv
from bike_cli.models.clip import load_clip
from bike_cli.stages.evaluate import run_eval
from bike_cli.stages.train_video import run_train_video

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
CUDA = torch.device("cuda")


def test_batches_of_a_cache_held_on_the_gpu_equal_those_held_in_ram(motion_caches):
    _, train, _ = motion_caches
    source = CachedClips(FeatureCache(train), 4, train=True, seed=2)
    on_cpu, on_gpu = MemoryClips(source, torch.device("cpu")), MemoryClips(source, CUDA)
    assert on_gpu.emb.device.type == "cuda"
    for epoch in (1, 2):
        on_cpu.set_epoch(epoch)
        on_gpu.set_epoch(epoch)
        positions = np.random.default_rng(epoch).permutation(len(on_cpu))[:16].tolist()
        (a, ta), (b, tb) = on_cpu.batch(positions), on_gpu.batch(positions)
        assert b.device.type == "cuda" and torch.equal(a, b.cpu()) and torch.equal(ta, tb)


def test_frame_encoder_under_autocast_and_channels_last_matches_fp32_on_the_cpu():
    torch.manual_seed(0)
    model, spec = load_clip("bike-tiny", "none", device=torch.device("cpu"))
    frames = torch.randint(0, 256, (2, 4, 3, spec.image_size, spec.image_size), dtype=torch.uint8)
    want = FrameEncoder(model, spec, torch.device("cpu"), "fp32")(frames).float()
    got = FrameEncoder(model, spec, CUDA, "auto")(frames).float()  # bf16/fp16 autocast, channels-last
    assert got.shape == want.shape and got.device.type == "cpu"
    cosine = torch.nn.functional.cosine_similarity(got.flatten(0, 1), want.flatten(0, 1), dim=-1)
    assert cosine.min() > 0.99


def test_training_from_a_gpu_held_cache_matches_the_dataloader_path(tmp_path, motion_caches):
    _, train, val = motion_caches
    checkpoints = {}
    for mode in ("off", "on"):
        cfg = TrainVideoConfig(features=train, val_features=val, out=tmp_path / mode, epochs=2, batch_size=8,
                               lr=2e-3, warmup_epochs=1, workers=0, templates=["{}"], temporal_layers=2,
                               precision="fp32", cache_in_memory=mode)
        summary = run_train_video(cfg)
        assert np.isfinite(summary.last_metrics["train_loss"])
        checkpoints[mode] = load_video_checkpoint(tmp_path / mode / "last.pt").state_dict
    for key, value in checkpoints["off"].items():
        torch.testing.assert_close(checkpoints["on"][key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_eval_on_the_gpu_scores_as_on_the_cpu(tmp_path, motion_caches):
    _, train, val = motion_caches
    run_train_video(TrainVideoConfig(features=train, out=tmp_path / "run", epochs=1, batch_size=8, workers=0,
                                     templates=["{}"], temporal_layers=2, precision="fp32"))
    tables = {}
    for device in ("cpu", "cuda"):
        run_eval(EvalConfig(out=tmp_path / device, checkpoint=tmp_path / "run" / "last.pt", features=val,
                            device=device))
        tables[device] = read_score_csv(tmp_path / device / "video_scores.csv")
    assert tables["cpu"].video_ids == tables["cuda"].video_ids
    np.testing.assert_allclose(tables["cuda"].scores, tables["cpu"].scores, atol=1e-4)
