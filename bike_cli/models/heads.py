"""Video heads: a temporal module (`encode`: ``none`` or ``transformer``, the paper's "Transf") and a scoring head
(`score`: ``mean``, Eq. 1-2, or ``vcs``, Eq. 5-6) of frames [B, T, D] against classes: cosine logits [B, C].
`bike search` scores cached videos [n, V, T, D] by the same two rules (`RULES`), averaged over the views."""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU
from torch import nn
from torch.utils.checkpoint import checkpoint

HEADS = ("mean", "vcs")
TEMPORALS = ("none", "transformer")
DEFAULT_TAU = 0.01
VCS_CHUNK_ELEMENTS = 1 << 24  # at most this many b*T*M*C similarities at once (64 MiB in fp32)
VCS_BLOCK_ELEMENTS = 1 << 17  # CPU: the softmax and sums over this many at once (512 KiB, in L2 cache)
LN_EPS = 1e-12  # the authors' temporal transformer's LayerNorm eps


class ClassSide(Protocol):
    """What the heads read from the class side (`bike_cli.models.text.ClassTexts` is one)."""

    pooled: torch.Tensor  # [C, D] category embeddings
    tokens: torch.Tensor  # [C, M, D] VCS query token embeddings
    token_mask: torch.Tensor  # [C, M] bool, True = real query token
    # optional: token_weights [C, M] float, rows summing to 1 (several descriptions per class); None: uniform


def mean_logits(frames: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """Mean-pooling head: cosine logits [B, C] of frames [B, T, D] against classes [C, D]."""
    video = F.normalize(frames.mean(1), dim=-1)  # mean over T, then unit (as the authors' DP head): [B, D]
    return video @ F.normalize(pooled, dim=-1).T  # [B, D] @ [D, C] -> [B, C]


def _unit(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """x / max(|x|, 1e-12) / scale over the last dim: F.normalize, by one reciprocal per row and a product."""
    return x * (torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-12) * scale).reciprocal()


class Spotting(NamedTuple):
    """What `vcs` returns: logits [B, C] (None without `pooled`), saliency S [B, C, T] (None unless kept)."""

    logits: torch.Tensor | None
    saliency: torch.Tensor | None


def vcs(frames: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, pooled: torch.Tensor | None = None,
        tau: float = DEFAULT_TAU, *, renormalise: bool = False, keep_saliency: bool = False,
        chunk_elements: int | None = None) -> Spotting:
    """Video Concept Spotting (Eq. 5-6) of frames [B, T, D] against C classes (or queries): the one place.

    tokens [C, M, D] / mask [C, M] (True = real query token; or float: each token's weight in the mean
    over m, rows summing to 1) / pooled [C, D] (or None: saliency only); all L2-normalised here.
    Eq. 5: S[b,c,t] = mean over the masked-in m of softmax_t(tok[c,m] . frame[b,t] / tau) (0 for a class
    without query tokens). Eq. 6: logits[b,c] = e_v . class[c] with e_v = sum_t S[b,c,t] frame[b,t],
    computed as sum_t S[b,c,t] (frame[b,t] . class[c]) without the [B, C, D] embeddings. `renormalise`:
    cos(e_v, class) (search), |e_v| from e_v when C <= T, else sqrt(S G S) with the frame Gram G [T, T];
    the head (as the authors' code) does not renormalise (across videos a cosine compares fairly).
    About `chunk_elements` (`VCS_CHUNK_ELEMENTS`) similarities exist at once; the kept saliency is a view."""
    steps, dim = frames.shape[1:]
    classes, per_class = mask.shape
    grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (frames, tokens, pooled))
    dtype = torch.promote_types(frames.dtype, tokens.dtype)
    # the token side once per call, 1/tau folded in, m-major rows (row m*C + c = token m of class c)
    words = _unit(tokens.to(dtype).transpose(0, 1).reshape(per_class * classes, dim), tau)  # [M*C, D]
    # [M, C]: the real tokens' mean weights; a float `mask` holds them itself (rows summing to 1, 0 = no
    # token): `ClassTexts.token_weights`, the mean over a class's several descriptions
    weights = (mask if mask.is_floating_point() else mask / mask.sum(1, keepdim=True).clamp(min=1)).T.to(dtype)
    unit_pooled = None if pooled is None else _unit(pooled.to(dtype))  # [C, D]
    cpu = frames.device.type == "cpu"
    per_clip = max(1, steps * per_class * classes)
    rows = max(1, (chunk_elements or VCS_CHUNK_ELEMENTS) // per_clip)
    rows = -(-len(frames) // -(-len(frames) // rows)) if len(frames) else rows  # equal chunks, no runt
    block = max(1, VCS_BLOCK_ELEMENTS // per_clip) if cpu else rows
    logits, saliency = [frames.new_zeros(0, classes, dtype=dtype)], [frames.new_zeros(0, steps, classes, dtype=dtype)]
    for clips in frames.split(rows):  # [b, T, D]
        b = clips.shape[0]
        unit = _unit(clips.to(dtype))  # [b, T, D]
        flat = unit.reshape(b * steps, dim)  # [b*T, D]
        sims = (flat @ words.T).view(b, steps, per_class, classes)  # [b, T, M, C]
        frame_class = None if unit_pooled is None else (flat @ unit_pooled.T).view(b, steps, 1, classes)  # [b, T, 1, C]
        for at in range(0, b, block):  # the elementwise work a cache-sized block of clips at a time
            sim, unit_b = sims[at:at + block], unit[at:at + block]
            soft = sim.softmax(1)  # over t, contiguous [T, M*C] blocks (torch's vectorised kernel)
            s = (soft * weights).sum(2) if keep_saliency or renormalise else None  # S: [b', T, C]
            if keep_saliency:
                saliency.append(s)
            if frame_class is None:
                continue
            fc = frame_class[at:at + block]  # frame . class: [b', T, 1, C]
            # sum_t S[t] fc[t] = sum_m weight[m] sum_t soft[t, m] fc[t]: no [b', T, C] saliency needed
            spotted = (soft * fc if grad else soft.mul_(fc)).sum(1)  # [b', M, C]
            out = torch.linalg.vecdot(spotted, weights, dim=1)  # sum over m: [b', C]
            if renormalise:  # / |e_v| (floored as F.normalize): from e_v for few classes, else S G S
                norm = ((s.transpose(1, 2) @ unit_b).norm(dim=-1) if classes <= steps  # e_v: [b', C, D]
                        else ((unit_b @ unit_b.transpose(1, 2) @ s) * s).sum(1).sqrt())  # G: [b', T, T]
                out = out / norm.clamp_min(1e-12)
            logits.append(out)
    return Spotting(torch.cat(logits) if unit_pooled is not None else None,
                    torch.cat(saliency).transpose(1, 2) if keep_saliency else None)


def vcs_saliency(frames: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, tau: float = DEFAULT_TAU,
                 chunk_elements: int | None = None) -> torch.Tensor:
    """Temporal saliency S [B, C, T] of Eq. 5 of frames [B, T, D], tokens [C, M, D], mask [C, M] (`vcs`)."""
    return vcs(frames, tokens, mask, None, tau, keep_saliency=True, chunk_elements=chunk_elements).saliency


def vcs_logits(frames: torch.Tensor, classes: ClassSide, tau: float = DEFAULT_TAU) -> torch.Tensor:
    """VCS head (Eq. 5-6): logits [B, C] = (sum_t S[b,c,t] * frame[b,t]) . class[c], frames and class unit,
    e_v not renormalised (`vcs`)."""
    weights = getattr(classes, "token_weights", None)  # [C, M] float where classes have several descriptions
    return vcs(frames, classes.tokens, classes.token_mask if weights is None else weights, classes.pooled, tau).logits


class ResidualBlock(nn.Module):
    """CLIP's pre-LN block: x + attn(LN(x)), then x + MLP(LN(x)) with a 4 x width QuickGELU MLP; parameter
    names as the authors' released temporal transformer, so that their checkpoints load as they are."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = nn.LayerNorm(width, eps=LN_EPS)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, 4 * width)), ("gelu", QuickGELU()), ("c_proj", nn.Linear(4 * width, width)),
        ]))
        self.ln_2 = nn.LayerNorm(width, eps=LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, width]
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class TemporalTransformer(nn.Module):
    """The paper's "Transf" as the authors' code: out = transformer(x + pos[:T]) + x for frames x [B, T, width],
    a learned position table [max_frames, width] on the input only; init N(0, 0.02), zero biases."""

    def __init__(self, width: int, layers: int = 6, heads: int | None = None, max_frames: int = 77) -> None:
        super().__init__()
        heads = heads if heads is not None else max(1, width // 64)
        if heads < 1 or width % heads:
            raise ValueError(f"temporal transformer width {width} is not divisible into {heads} heads")
        if layers < 1 or max_frames < 1:
            raise ValueError(f"temporal transformer needs layers >= 1 and max_frames >= 1, "
                             f"not {layers} and {max_frames}")
        self.frame_position_embeddings = nn.Embedding(max_frames, width)  # [max_frames, width]
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.Sequential(*[ResidualBlock(width, heads) for _ in range(layers)])
        self.grad_checkpointing = False  # train-video --grad-checkpointing sets it
        nn.init.normal_(self.frame_position_embeddings.weight, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.MultiheadAttention):  # its input projection is a bare parameter
                nn.init.normal_(module.in_proj_weight, std=0.02)
                nn.init.zeros_(module.in_proj_bias)

    @property
    def max_frames(self) -> int:
        return self.frame_position_embeddings.num_embeddings

    def check_frames(self, steps: int) -> None:
        """ValueError unless clips of `steps` frames fit the position table."""
        if steps > self.max_frames:
            raise ValueError(f"{steps} frames per clip, but the temporal transformer was built for at most "
                             f"{self.max_frames} (max_frames)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, width] -> [B, T, width]."""
        steps = x.shape[1]
        self.check_frames(steps)
        h = x + self.frame_position_embeddings.weight[:steps]  # position on the input only
        for block in self.transformer.resblocks:
            if self.grad_checkpointing and self.training:
                h = checkpoint(block, h, use_reentrant=False)
            else:
                h = block(h)
        return h + x


class VideoHead(nn.Module):
    """Temporal module + scoring head: frames [B, T, D] x classes -> cosine logits [B, C]."""

    def __init__(self, embed_dim: int, head: str = "mean", temporal: str = "none", tau: float = DEFAULT_TAU,
                 max_frames: int = 77, layers: int = 6, heads: int | None = None) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown video head {head!r}; choose one of {', '.join(HEADS)}")
        if temporal not in TEMPORALS:
            raise ValueError(f"unknown temporal module {temporal!r}; choose one of {', '.join(TEMPORALS)}")
        if tau <= 0:
            raise ValueError(f"VCS temperature tau must be > 0, not {tau}")
        self.head, self.tau = head, tau
        self.temporal = (TemporalTransformer(embed_dim, layers=layers, heads=heads, max_frames=max_frames)
                         if temporal == "transformer" else nn.Identity())

    def check_frames(self, steps: int) -> None:
        """ValueError unless this head takes clips of `steps` frames (the temporal transformer's table)."""
        if isinstance(self.temporal, TemporalTransformer):
            self.temporal.check_frames(steps)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """The temporal module: frames [B, T, D] -> [B, T, D] (identity for temporal='none')."""
        return self.temporal(frames)

    def score(self, frames: torch.Tensor, classes: ClassSide) -> torch.Tensor:
        """The head on encoded frames [B, T, D]: cosine logits [B, C]."""
        if self.head == "vcs":
            return vcs_logits(frames, classes, self.tau)
        return mean_logits(frames, classes.pooled)

    def forward(self, frames: torch.Tensor, classes: ClassSide) -> torch.Tensor:
        """Frames [B, T, D], classes (pooled [C, D], tokens [C, M, D], token_mask [C, M]) -> [B, C]."""
        return self.score(self.encode(frames), classes)


RULES = ("vcs", "mean")  # `bike search --rule`


def _tensor(embeddings: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(embeddings) if not torch.is_tensor(embeddings) else embeddings).float()


@torch.no_grad()
def video_vectors(embeddings: np.ndarray | torch.Tensor) -> torch.Tensor:
    """float32 [n, D]: the mean over views of unit(mean over T) of [n, V, T, D] embeddings; its dot product with a
    unit query is the mean over views of the per-view cosines (the mean rule)."""
    per_view = F.normalize(_tensor(embeddings).mean(2), dim=-1)  # [n, V, D]
    return per_view.mean(1)  # [n, D], unit for one view


@torch.no_grad()
def vcs_scores(embeddings: np.ndarray | torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor,
               pooled: torch.Tensor, tau: float = DEFAULT_TAU, weights: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """VCS scores [n] (mean over views, e_v renormalised) and saliency S [n, V, T] of one query against [n, V, T, D]
    videos: tokens [M, D] / mask [M] (True = real token), pooled [D], weights [M] (`ClassTexts.token_weights`)."""
    frames = _tensor(embeddings)
    n, views, steps, dim = frames.shape
    scores, saliency = vcs(frames.reshape(n * views, steps, dim), tokens[None].float(),
                           (mask if weights is None else weights.float())[None],
                           pooled[None].float(), tau, renormalise=True, keep_saliency=True)  # [nV, 1], [nV, 1, T]
    return scores.view(n, views).mean(1), saliency.reshape(n, views, steps)


@torch.no_grad()
def frame_cosines(embeddings: np.ndarray | torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """[n, V, T]: each frame's cosine with the pooled query (the mean rule's most telling frame)."""
    return F.normalize(_tensor(embeddings), dim=-1) @ F.normalize(pooled.float(), dim=-1)
