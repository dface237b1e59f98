"""Each rule of the authors' released code, written out here from its formula, against bike's output.

Frame indices (datasets/video.py), crop boxes (test.py + datasets/transforms.py), the view rule
(test.py), the Attributes-branch head (train_attributes.py + modules/video_clip.py) and the loss
(utils/NCELoss.py), compared to 1e-5.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as TV
from PIL import Image

from bike_cli.data.sampling import (
    authors_crop_boxes,
    authors_resized_size,
    authors_scale_size,
    authors_test_indices,
    authors_train_indices,
    authors_views,
)
from bike_cli.eval.authors_zero_shot import authors_frame_scores, authors_zero_shot_half
from bike_cli.models.attrs_branch import AttributesBranch
from bike_cli.models.authors import authors_attrs_scores, authors_kl_loss, authors_view_scores
from bike_cli.models.loss import LogitScale


@pytest.mark.parametrize("n,t,c", [(300, 8, 1), (300, 8, 4), (17, 8, 4), (5, 8, 2), (64, 16, 3), (7, 3, 10)])
def test_test_indices_are_tick_linspace_modulo(n, t, c):
    tick = n / t
    starts = [int(v) for v in np.linspace(0, tick - 1, c)]  # truncated towards zero, as numpy 1.x cast it
    expected = [[int(s + tick * x) % n for x in range(t)] for s in starts]
    assert authors_test_indices(n, t, c).tolist() == expected


@pytest.mark.parametrize("n,t", [(300, 8), (9, 8), (3, 8), (100, 16), (9, 16)])
def test_train_indices_fall_in_their_rounded_segments(n, t):
    seg = (n - 1) / t
    rng = np.random.default_rng(0)
    for _ in range(20):
        got = authors_train_indices(n, t, rng)
        for i, frame in enumerate(got.tolist()):
            assert round(seg * i) <= frame <= round(seg * (i + 1))  # Python's and numpy's round agree on halves


@pytest.mark.parametrize("height,width,size", [(240, 320, 224), (320, 240, 224), (96, 128, 64), (480, 854, 336),
                                               (256, 256, 224), (101, 203, 64)])
def test_crop_boxes_are_those_of_their_transforms(height, width, size):
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (height, width, 3), dtype=np.uint8))
    scale = 256 if size == 224 else size
    resized = TV.Resize(scale, TV.InterpolationMode.BICUBIC)(img)
    assert authors_resized_size(height, width, authors_scale_size(size)) == (resized.size[1], resized.size[0])
    w, h = resized.size
    # one crop: torchvision's CenterCrop (rounded offsets)
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    assert authors_crop_boxes(h, w, size, 1) == [(top, left)]
    # three crops: GroupFullResSample without flips, left / right / centre
    ws, hs = (w - size) // 4, (h - size) // 4
    assert authors_crop_boxes(h, w, size, 3) == [(2 * hs, 0), (2 * hs, 4 * ws), (2 * hs, 2 * ws)]
    # and the pixels of bike's transform are those crops of the PIL bicubic resize
    frames = torch.from_numpy(np.array(img)).unsqueeze(0)  # [1, H, W, 3]
    views = authors_views(frames, size, 3)  # [3, 1, 3, s, s]
    centre = np.asarray(resized.crop((2 * ws, 2 * hs, 2 * ws + size, 2 * hs + size)))
    np.testing.assert_array_equal(views[2, 0].permute(1, 2, 0).numpy(), centre)
    one = authors_views(frames, size, 1)[0, 0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(one, np.asarray(TV.CenterCrop(size)(resized)))


def test_view_rule_is_softmax_mean_softmax():
    logits = torch.randn(3, 12, 7) * 0.3  # [b, V, K] unscaled cosines
    expected = torch.empty(3, 7)
    for b in range(3):
        per_view = [torch.exp(row) / torch.exp(row).sum() for row in logits[b]]
        mean = sum(per_view) / len(per_view)
        expected[b] = torch.exp(mean) / torch.exp(mean).sum()
    torch.testing.assert_close(authors_view_scores(logits), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(authors_attrs_scores(logits[0]), torch.exp(logits[0]) / torch.exp(logits[0]).sum(1, keepdim=True))


def test_zero_shot_frame_scorer_keeps_frames_unnormalised():
    frames, classes = torch.randn(4, 6, 8) * 3, torch.randn(5, 8)
    unit = classes / classes.norm(dim=-1, keepdim=True)
    expected = torch.stack([torch.stack([(100 * f @ unit.T).softmax(-1) for f in video]).mean(0) for video in frames])
    torch.testing.assert_close(authors_frame_scores(frames, classes), expected, atol=1e-5, rtol=0)


def test_attributes_head_normalises_the_sentence_embedding_first():
    torch.manual_seed(0)
    branch = AttributesBranch("head", 16, LogitScale())
    with torch.no_grad():  # trained-looking weights: non-zero biases make the MLP scale-dependent
        for p in branch.parameters():
            p.normal_(0, 0.5)
    sentences, classes = torch.randn(5, 16) * 7, F.normalize(torch.randn(3, 16), dim=-1)

    def mlp(x, seq):
        return torch.relu(x @ seq[0].weight.T + seq[0].bias) @ seq[2].weight.T + seq[2].bias

    s = mlp(sentences / sentences.norm(dim=-1, keepdim=True), branch.sentence_fc)
    q = mlp(classes, branch.query_fc)
    expected = (s / s.norm(dim=-1, keepdim=True)) @ (q / q.norm(dim=-1, keepdim=True)).T
    with torch.no_grad():
        got = branch.logits(branch.encode_attributes(sentences), classes)
        raw = mlp(sentences, branch.sentence_fc)  # the old input: not normalised
        old = F.normalize(raw, dim=-1) @ F.normalize(q, dim=-1).T
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert (got - old).abs().max() > 1e-3  # the fix changes the logits


def test_authors_loss_value_and_gradient():
    torch.manual_seed(0)
    labels = torch.tensor([0, 1, 0, 2, 1, 1])
    targets = (labels[:, None] == labels[None, :]).float()
    logits = (torch.rand(6, 6) * 2 - 1).requires_grad_()
    scale = torch.tensor(math.log(30.0), requires_grad=True)

    def reference(lg, sc):
        def one(pred, gt):  # KLDivLoss(reduction='mean')(log_softmax(pred), softmax(10 gt)) * B
            p = torch.exp(10 * gt) / torch.exp(10 * gt).sum(1, keepdim=True)
            logq = pred - torch.logsumexp(pred, 1, keepdim=True)
            return (p * (torch.log(p) - logq)).mean() * len(pred)
        scaled = torch.exp(sc) * lg
        return (one(scaled, targets) + one(scaled.T, targets)) / 2

    expected = reference(logits, scale)
    got = authors_kl_loss(logits, targets, scale)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    g_ref = torch.autograd.grad(expected, [logits, scale])
    g_got = torch.autograd.grad(authors_kl_loss(logits, targets, scale), [logits, scale])
    for a, b in zip(g_got, g_ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)



@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss")
@pytest.mark.parametrize("batch, classes", [(6, 4), (3, 7)])
def test_authors_loss_on_non_square_multi_label_logits_is_their_kl_written_out(batch, classes):
    """[B, K] logits (multi-label scores against K classes): each direction's KLDivLoss(mean) is
    multiplied by its own prediction's first dimension (their KLLoss: `batch_size = prediction.shape[0]`),
    B for the videos and K for the transpose."""
    torch.manual_seed(1)
    targets = (torch.rand(batch, classes) < 0.4).float()
    logits = torch.rand(batch, classes) * 2 - 1
    scale = torch.tensor(math.log(20.0))
    kl = torch.nn.KLDivLoss(reduction="mean")

    def their_kl_loss(prediction, label):
        return kl(F.log_softmax(prediction, 1), F.softmax(label * 10, 1)) * prediction.shape[0]

    scaled = scale.exp() * logits
    expected = (their_kl_loss(scaled, targets) + their_kl_loss(scaled.T, targets.T)) / 2
    torch.testing.assert_close(authors_kl_loss(logits, targets, scale), expected, atol=1e-5, rtol=1e-5)


def test_zero_shot_half_uses_their_scorer_and_their_seeded_draws():
    torch.manual_seed(0)
    frames, classes = torch.randn(40, 8, 16) * 2, torch.randn(12, 16)  # [N, T, D], [K, D]
    labels = np.random.default_rng(0).integers(0, 12, 40)
    labels[:12] = np.arange(12)
    unit = classes / classes.norm(dim=-1, keepdim=True)

    def accuracy(vis, text, label):  # their compute_accuracy + utils.accuracy, written out
        sim = (100.0 * vis @ text.T).softmax(-1).mean(1)
        pred = sim.topk(5, 1).indices
        hit = pred == torch.as_tensor(label)[:, None]
        return 100 * hit[:, 0].float().mean().item(), 100 * hit.any(1).float().mean().item()

    expected = []
    for split in range(10):
        np.random.seed(split)
        chosen = np.random.permutation(12)[:6]
        sel = np.array([lab in chosen for lab in labels])
        sub = np.unique(labels[sel])
        tl = np.array([int(np.where(lab == sub)[0][0]) for lab in labels[sel]])
        expected.append(accuracy(frames[torch.from_numpy(sel)], unit[torch.from_numpy(sub)], tl))
    got = authors_zero_shot_half(frames, classes, labels)
    np.testing.assert_allclose([(r["top1"], r["top5"]) for r in got["runs"]], expected, atol=1e-4)
    assert got["top1_mean"] == pytest.approx(np.mean([e[0] for e in expected]), abs=1e-4)
    assert got["top1_std"] == pytest.approx(np.std([e[0] for e in expected]), abs=1e-4)
    np.testing.assert_allclose((got["full_top1"], got["full_top5"]), accuracy(frames, unit, labels), atol=1e-4)
