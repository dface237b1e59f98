"""The Eq. 7 loss, its targets, the logit scale, and the gradient-carrying distributed gather."""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bike_cli.models.heads import VideoHead
from bike_cli.models.loss import (
    MAX_LOG_SCALE,
    LogitScale,
    gather_with_grad,
    paper_contrastive_loss,
    same_label_targets,
)

WORLD = 2


def _eq7(logits: list[list[float]], labels: list[int], tau: float) -> float:
    """Eq. 7 written out: s(c_j, v_i) = logits[i][j] (video i against the prompt of video j)."""
    b = len(labels)

    def s(c: int, v: int) -> float:
        return logits[v][c] / tau

    def positives(i: int) -> list[int]:
        return [k for k in range(b) if labels[k] == labels[i]]

    v2c = -sum(sum(math.log(math.exp(s(i, k)) / sum(math.exp(s(i, j)) for j in range(b))) for k in positives(i))
               / len(positives(i)) for i in range(b)) / b
    c2v = -sum(sum(math.log(math.exp(s(k, i)) / sum(math.exp(s(j, i)) for j in range(b))) for k in positives(i))
               / len(positives(i)) for i in range(b)) / b
    return (v2c + c2v) / 2


def test_loss_equals_eq7_by_hand():
    logits = [[0.9, 0.1, -0.3], [0.2, 0.5, 0.4], [-0.1, 0.3, 0.8]]
    labels = [0, 0, 1]
    scale = torch.tensor(math.log(2.0))  # exp(scale) = 2 = 1 / tau
    got = paper_contrastive_loss(torch.tensor(logits), same_label_targets(torch.tensor(labels)), scale)
    assert got.item() == pytest.approx(_eq7(logits, labels, tau=0.5), abs=1e-6)


def test_loss_skips_rows_and_columns_without_positives():
    logits = torch.tensor([[0.9, 0.1, -0.3], [0.2, 0.5, 0.4]])  # 2 videos x 3 classes
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])  # video 1 and class 1: no positive
    row = torch.log_softmax(logits[0], 0)
    video_to_text = -(row[0] + row[2]) / 2  # only row 0 counts
    columns = torch.log_softmax(logits, 0)
    text_to_video = -(columns[0, 0] + columns[0, 2]) / 2  # columns 0 and 2 (video 1 a negative)
    got = paper_contrastive_loss(logits, targets, torch.tensor(0.0))
    assert got.item() == pytest.approx(((video_to_text + text_to_video) / 2).item(), abs=1e-6)


def test_loss_shape_mismatch_raises_value_error():
    """A tensor-contract violation inside models/ (no user input reaches it): ValueError (issue 27, item 3)."""
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        paper_contrastive_loss(torch.zeros(2, 3), torch.zeros(2, 2), torch.tensor(0.0))


def test_same_label_targets_mark_every_positive_pair():
    expected = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]])
    assert torch.equal(same_label_targets(torch.tensor([3, 1, 3, 0])), expected)


def test_logit_scale_starts_from_clip_and_is_capped():
    clip = torch.nn.Module()
    clip.logit_scale = torch.nn.Parameter(torch.tensor(2.6593))
    scale = LogitScale(clip.logit_scale)
    assert scale().item() == pytest.approx(2.6593)
    assert scale.log_scale.data_ptr() != clip.logit_scale.data_ptr()  # its own parameter
    with torch.no_grad():
        scale.log_scale.fill_(7.0)
    assert scale().item() == pytest.approx(math.log(100.0)) == pytest.approx(MAX_LOG_SCALE)


def test_gather_is_identity_without_process_group():
    x = torch.randn(3, 2)
    assert gather_with_grad(x) is x


class _Classes(NamedTuple):
    pooled: torch.Tensor
    tokens: torch.Tensor
    token_mask: torch.Tensor


def _problem() -> tuple[torch.Tensor, torch.Tensor, _Classes]:
    """A fixed global batch: frames [8, 4, 16], labels [8], a bank of 4 classes."""
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(8, 4, 16, generator=g)
    labels = torch.tensor([0, 1, 2, 0, 1, 1, 3, 0])
    mask = torch.tensor([[True, True, False], [True, False, False], [True, True, True], [True, True, False]])
    bank = _Classes(torch.randn(4, 16, generator=g), torch.randn(4, 3, 16, generator=g), mask)
    return frames, labels, bank


def _loss_and_grads(frames: torch.Tensor, labels: torch.Tensor, bank: _Classes) -> tuple[float, dict]:
    """Each process: encode its frames, gather, score against the gathered batch's own classes."""
    torch.manual_seed(0)
    head, scale = VideoHead(16, head="vcs", temporal="transformer", layers=2, max_frames=4), LogitScale()
    encoded = gather_with_grad(head.encode(frames))  # [B, T, D] over all processes
    batch_labels = gather_with_grad(labels)  # [B]
    classes = _Classes(*(t[batch_labels] for t in bank))  # the B x B matrix: the batch's own prompts
    logits = head.score(encoded, classes)
    loss = paper_contrastive_loss(logits, same_label_targets(batch_labels), scale())
    loss.backward()
    grads = {n: p.grad for n, p in [*head.named_parameters(), ("log_scale", scale.log_scale)]}
    return loss.item(), grads


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        frames, labels, bank = _problem()
        half = frames.shape[0] // WORLD
        own = slice(rank * half, (rank + 1) * half)
        loss, grads = _loss_and_grads(frames[own], labels[own], bank)
        for g in grads.values():  # what DDP does: average the gradients over processes
            dist.all_reduce(g)
            g /= WORLD
        try:
            gather_with_grad(torch.zeros(rank + 1, 2))
            error = ""
        except ValueError as e:
            error = str(e)
        torch.save({"loss": loss, "grads": grads, "error": error}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_gather_gives_single_process_loss_and_gradients(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=WORLD, join=True)
    frames, labels, bank = _problem()
    loss, grads = _loss_and_grads(frames, labels, bank)
    for rank in range(WORLD):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert result["loss"] == pytest.approx(loss, abs=1e-5)
        assert result["grads"].keys() == grads.keys()
        for name, g in grads.items():
            torch.testing.assert_close(result["grads"][name], g, atol=1e-5, rtol=1e-4, msg=name)
        assert "same tensor shape on every rank" in result["error"] and "(1, 2)" in result["error"]
