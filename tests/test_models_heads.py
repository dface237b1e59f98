"""Video heads: mean pooling, VCS (Eq. 5-6), the temporal transformer, VideoHead."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bike_cli.models import heads
from bike_cli.models.heads import TemporalTransformer, VideoHead, mean_logits, vcs, vcs_logits, vcs_saliency
from bike_cli.models.loss import LogitScale, paper_contrastive_loss, same_label_targets
from bike_cli.models.text import ClassTexts


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_classes(c: int, m: int, d: int, seed: int = 1) -> ClassTexts:
    g = _gen(seed)
    mask = torch.rand(c, m, generator=g) < 0.6
    mask[:, 0] = True
    return ClassTexts(torch.randn(c, d, generator=g), torch.randn(c, m, d, generator=g), mask)


def _hand_example():
    """T=2 frames, D=2, one class with two word tokens and one padding token."""
    frames = torch.tensor([[[3.0, 0.0], [0.0, 0.5]]])  # [1, 2, 2]: normalise to (1,0), (0,1)
    tokens = torch.tensor([[[2.0, 0.0], [0.6, 0.8], [0.0, 9.0]]])  # [1, 3, 2]: (1,0), (.6,.8), pad
    mask = torch.tensor([[True, True, False]])
    pooled = torch.tensor([[0.0, 5.0]])  # normalises to (0, 1)
    return frames, ClassTexts(pooled, tokens, mask)


def test_vcs_saliency_matches_eq5_by_hand():
    frames, classes = _hand_example()
    tau = 0.5
    # token (1,0): sims to frames (1, 0); token (.6,.8): sims (.6, .8); softmax over frames at tau
    p1 = [math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(0)), math.exp(0) / (math.exp(1 / tau) + 1)]
    z2 = math.exp(0.6 / tau) + math.exp(0.8 / tau)
    p2 = [math.exp(0.6 / tau) / z2, math.exp(0.8 / tau) / z2]
    expected = torch.tensor([[[(p1[0] + p2[0]) / 2, (p1[1] + p2[1]) / 2]]])  # mean over the N=2 words
    got = vcs_saliency(frames, classes.tokens, classes.token_mask, tau)
    torch.testing.assert_close(got, expected)


def test_vcs_logit_matches_eq6_by_hand():
    frames, classes = _hand_example()
    tau = 0.5
    s = vcs_saliency(frames, classes.tokens, classes.token_mask, tau)[0, 0]
    # e_v = S1 * (1,0) + S2 * (0,1) (not renormalised); class (0,1) -> logit = S2
    assert vcs_logits(frames, classes, tau)[0, 0].item() == pytest.approx(s[1].item(), abs=1e-6)
    renormalised = s[1] / s.norm()  # what a renormalised e_v would give
    assert abs(renormalised.item() - s[1].item()) > 0.1


def test_vcs_padding_tokens_do_not_count():
    frames, classes = _hand_example()
    other_pad = classes.tokens.clone()
    other_pad[0, 2] = torch.tensor([-4.0, 1.0])
    changed = ClassTexts(classes.pooled, other_pad, classes.token_mask)
    torch.testing.assert_close(vcs_logits(frames, changed), vcs_logits(frames, classes))
    unmasked = ClassTexts(classes.pooled, classes.tokens, torch.ones_like(classes.token_mask))
    assert not torch.allclose(vcs_logits(frames, unmasked, 0.5), vcs_logits(frames, classes, 0.5))


def test_vcs_saliency_is_a_distribution_over_frames_and_chunking_agrees():
    frames = torch.randn(3, 5, 8, generator=_gen())
    classes = _random_classes(7, 4, 8)
    whole = vcs_saliency(frames, classes.tokens, classes.token_mask)
    chunked = vcs_saliency(frames, classes.tokens, classes.token_mask, chunk_elements=3 * 2 * 4 * 5)
    assert whole.shape == (3, 7, 5)
    torch.testing.assert_close(whole.sum(-1), torch.ones(3, 7))
    torch.testing.assert_close(chunked, whole)


def _einsum_vcs(frames, classes, tau):
    """Eq. 5-6 as the head computed them before `vcs`: [B, C, M, T] einsums, softmax over the last dim."""
    f, w = F.normalize(frames, dim=-1), F.normalize(classes.tokens, dim=-1)
    weights = classes.token_mask.float() / classes.token_mask.sum(1, keepdim=True).clamp(min=1)  # [C, M]
    sim = torch.einsum("btd,cmd->bcmt", f, w) / tau  # [B, C, M, T]
    saliency = torch.einsum("bcmt,cm->bct", sim.softmax(-1), weights)  # [B, C, T]
    frame_class = torch.einsum("btd,cd->bct", f, F.normalize(classes.pooled, dim=-1))  # [B, C, T]
    return (saliency * frame_class).sum(-1), saliency  # [B, C], [B, C, T]


@pytest.mark.parametrize(("chunk_elements", "block_elements"), [(None, None), (1, None), (3 * 8 * 5 * 2, None),
                                                               (None, 3 * 8 * 5 * 4), (3 * 8 * 5 * 5, 3 * 8 * 5 * 2)])
def test_vcs_equals_the_einsum_formula_to_float32_round_off(chunk_elements, block_elements, monkeypatch):
    if block_elements is not None:  # blocks of clips within a chunk, a runt at the end
        monkeypatch.setattr(heads, "VCS_BLOCK_ELEMENTS", block_elements)
    frames = torch.randn(13, 8, 64, generator=_gen(4)) * 3  # not unit: vcs normalises
    classes = _random_classes(5, 3, 64, seed=5)
    classes.token_mask[2] = False  # a class with no query token: S = 0
    want_logits, want_saliency = _einsum_vcs(frames, classes, 0.05)
    with torch.no_grad():  # inference: the in-place path
        got = vcs(frames, classes.tokens, classes.token_mask, classes.pooled, 0.05, keep_saliency=True,
                  chunk_elements=chunk_elements)
    torch.testing.assert_close(got.logits, want_logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.saliency, want_saliency, rtol=1e-5, atol=1e-6)
    assert not got.saliency[:, 2].any()
    torch.testing.assert_close(vcs_logits(frames, classes, 0.05), want_logits, rtol=1e-5, atol=1e-6)


def test_vcs_gradients_equal_the_einsum_formulas(monkeypatch):
    monkeypatch.setattr(heads, "VCS_BLOCK_ELEMENTS", 5 * 3 * 4)  # one clip a block
    frames = torch.randn(6, 5, 32, generator=_gen(6), requires_grad=True)
    classes = _random_classes(4, 3, 32, seed=7)
    classes.tokens.requires_grad_(True)
    classes.pooled.requires_grad_(True)
    upstream = torch.randn(6, 4, generator=_gen(8))
    inputs = (frames, classes.tokens, classes.pooled)
    want = torch.autograd.grad((_einsum_vcs(frames, classes, 0.1)[0] * upstream).sum(), inputs)
    got_logits = vcs(frames, classes.tokens, classes.token_mask, classes.pooled, 0.1, chunk_elements=2 * 5 * 3 * 4)
    got = torch.autograd.grad((got_logits.logits * upstream).sum(), inputs)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("num_classes", [2, 11])  # C <= T: |e_v| of e_v itself; C > T: of the frames' Gram matrix
def test_vcs_renormalised_is_the_cosine_of_the_enhanced_embedding(num_classes, monkeypatch):
    monkeypatch.setattr(heads, "VCS_BLOCK_ELEMENTS", 2 * 6 * 3 * num_classes)  # two clips a block
    frames = torch.randn(7, 6, 32, generator=_gen(9))
    classes = _random_classes(num_classes, 3, 32, seed=10)
    saliency = _einsum_vcs(frames, classes, 0.2)[1]  # [B, C, T]
    enhanced = saliency @ F.normalize(frames, dim=-1)  # e_v: [B, C, D]
    want = F.normalize(enhanced, dim=-1) @ F.normalize(classes.pooled, dim=-1).T  # [B, C, C]
    want = want.diagonal(dim1=1, dim2=2)  # cos(e_v[b, c], class c): [B, C]
    got = vcs(frames, classes.tokens, classes.token_mask, classes.pooled, 0.2, renormalise=True).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_vcs_default_tau_picks_the_best_matching_frame():
    frames = torch.tensor([[[1.0, 0.0], [0.8, 0.6]]])
    tokens = torch.tensor([[[1.0, 0.0]]])
    s = vcs_saliency(frames, tokens, torch.ones(1, 1, dtype=torch.bool))  # tau = 0.01
    assert s[0, 0, 0].item() > 0.99999  # exp(-0.2 / 0.01) ~ 2e-9


def test_mean_head_by_hand():
    frames = torch.tensor([[[3.0, 0.0], [0.0, 1.0]]])  # mean (1.5, .5) -> unit (3, 1) / sqrt(10)
    pooled = torch.tensor([[2.0, 0.0], [0.0, -1.0]])
    expected = torch.tensor([[3 / math.sqrt(10), -1 / math.sqrt(10)]])
    torch.testing.assert_close(mean_logits(frames, pooled), expected)


@pytest.mark.parametrize("head", ["mean", "vcs"])
@pytest.mark.parametrize("temporal", ["none", "transformer"])
def test_video_head_output_shape_and_cosine_range(head, temporal):
    torch.manual_seed(0)
    module = VideoHead(64, head=head, temporal=temporal, layers=2)
    logits = module(torch.randn(4, 8, 64, generator=_gen()), _random_classes(5, 3, 64))
    assert logits.shape == (4, 5)
    assert logits.abs().max().item() <= 1 + 1e-5


def test_video_head_without_transformer_has_no_parameters():
    assert not list(VideoHead(64, head="vcs").parameters())


def test_bad_head_names_raise_value_error():  # the builder makes them a user's InputError (test_models_build)
    with pytest.raises(ValueError, match="'max'"):
        VideoHead(64, head="max")
    with pytest.raises(ValueError, match="'lstm'"):
        VideoHead(64, temporal="lstm")
    with pytest.raises(ValueError, match="tau"):
        VideoHead(64, head="vcs", tau=0.0)


def test_transformer_is_residual_with_position_on_the_input_only():
    torch.manual_seed(0)
    module = TemporalTransformer(64, layers=2, max_frames=8)
    x = torch.randn(2, 5, 64, generator=_gen())
    expected = module.transformer.resblocks(x + module.frame_position_embeddings.weight[:5]) + x
    torch.testing.assert_close(module(x), expected)


def test_transformer_position_embedding_breaks_permutation_equivariance():
    torch.manual_seed(0)
    module = TemporalTransformer(64, layers=2, max_frames=8)
    with torch.no_grad():
        module.frame_position_embeddings.weight.mul_(50)  # make the position signal large against the N(0, 0.02) weights
    x = torch.randn(1, 4, 64, generator=_gen())
    flip = [3, 2, 1, 0]
    assert not torch.allclose(module(x[:, flip]), module(x)[:, flip], atol=1e-5)
    with torch.no_grad():
        module.frame_position_embeddings.weight.zero_()
    torch.testing.assert_close(module(x[:, flip]), module(x)[:, flip], atol=1e-5, rtol=1e-5)


def test_transformer_init_and_heads():
    torch.manual_seed(0)
    module = TemporalTransformer(256, layers=1)
    assert module.transformer.resblocks[0].attn.num_heads == 4  # width // 64
    assert TemporalTransformer(32, layers=1).transformer.resblocks[0].attn.num_heads == 1
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3  # attention out-projection and the two MLP layers
    for weight in [m.weight for m in linears] + [module.transformer.resblocks[0].attn.in_proj_weight]:
        assert weight.std().item() == pytest.approx(0.02, rel=0.1)
    biases = [m.bias for m in linears] + [module.transformer.resblocks[0].attn.in_proj_bias]
    assert all(not b.any() for b in biases)


def test_transformer_refuses_too_many_frames_and_bad_heads():
    with pytest.raises(ValueError, match="max_frames"):
        TemporalTransformer(64, layers=1, max_frames=4)(torch.zeros(1, 5, 64))
    with pytest.raises(ValueError, match="max_frames"):
        VideoHead(64, temporal="transformer", layers=1, max_frames=4).check_frames(5)
    VideoHead(64, max_frames=4).check_frames(5)  # no temporal module: any frame count
    with pytest.raises(ValueError, match="heads"):
        TemporalTransformer(96, layers=1, heads=5)


def test_gradient_reaches_transformer_and_logit_scale():
    torch.manual_seed(0)
    module = VideoHead(64, head="vcs", temporal="transformer", layers=2)
    scale = LogitScale()
    labels = torch.tensor([0, 1, 0, 2])
    classes = _random_classes(3, 3, 64).select(labels)
    loss = paper_contrastive_loss(module(torch.randn(4, 6, 64, generator=_gen()), classes),
                                 same_label_targets(labels), scale())
    loss.backward()
    assert scale.log_scale.grad is not None and scale.log_scale.grad.abs().item() > 0
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum().item() > 0, name


def test_vcs_of_no_clips_is_empty():
    classes = _random_classes(3, 2, 16)
    got = vcs(torch.zeros(0, 8, 16), classes.tokens, classes.token_mask, classes.pooled, keep_saliency=True)
    assert got.logits.shape == (0, 3) and got.saliency.shape == (0, 3, 8)
