"""Video heads: aggregate frame embeddings [B, T, D] and score them against class embeddings.

A `VideoHead` is an optional temporal module (`encode`) followed by a parameter-free scoring head
(`score`), which returns cosine-similarity logits [B, C] (no logit scale):

- ``mean``: the baseline of Eq. 1-2. Frames averaged over T, then L2-normalised; cosine
  with each L2-normalised class embedding.
- ``vcs``: Video Concept Spotting (Eq. 5-6). The class's word-token embeddings query the frames;
  the temporal saliency weights the normalised frames; the weighted sum (not renormalised) is
  dotted with the normalised class embedding, as in the authors' code.

Temporal modules: ``none`` (identity) or ``transformer`` (`TemporalTransformer`, the paper's
"Transf"), applied to the raw frame embeddings before the head.

For training on the B x B matrix of Eq. 7, gather `encode`'s output over processes
(`bike_cli.models.gather.gather_with_grad`) and `score` it against the gathered batch's classes.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from bike_cli.errors import InputError

HEADS = ("mean", "vcs")
TEMPORALS = ("none", "transformer")
DEFAULT_TAU = 0.01
VCS_CHUNK_ELEMENTS = 1 << 24  # at most this many B*c*M*T similarities at once (64 MiB in fp32)


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


def vcs_saliency(frames: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, tau: float = DEFAULT_TAU,
                 chunk_elements: int = VCS_CHUNK_ELEMENTS) -> torch.Tensor:
    """Temporal saliency S [B, C, T] of Eq. 5 (each row sums to 1 over T).

    frames [B, T, D] and tokens [C, M, D] are L2-normalised here; sim[b,c,m,t] = tok[c,m] . frame[b,t];
    softmax over t at temperature tau; mean over the masked-in m of `mask` [C, M] (a class with no
    query token gets S = 0). A float `mask` holds the weights of that mean itself (rows summing to 1,
    0 = no query token): `ClassTexts.token_weights`, the mean over a class's descriptions. Time and memory are O(B*C*M*T) (plus O((B*T + C*M)*D) for the products):
    the [B, c, M, T] similarities are built for a chunk of c classes at a time, so that at most
    about `chunk_elements` exist at once in inference (autograd keeps every chunk's softmax).
    """
    f = F.normalize(frames, dim=-1)  # [B, T, D]
    w = F.normalize(tokens, dim=-1)  # [C, M, D]
    weights = mask.to(f.dtype) if mask.is_floating_point() else \
        mask.to(f.dtype) / mask.sum(1, keepdim=True).clamp(min=1).to(f.dtype)  # [C, M], rows sum to 1
    batch, steps = f.shape[:2]
    chunk = max(1, chunk_elements // max(1, batch * w.shape[1] * steps))
    out = []
    for w_c, weights_c in zip(w.split(chunk), weights.split(chunk)):
        sim = torch.einsum("btd,cmd->bcmt", f, w_c) / tau  # [B, c, M, T]
        out.append(torch.einsum("bcmt,cm->bct", sim.softmax(-1), weights_c))  # masked mean over m: [B, c, T]
    return torch.cat(out, 1)  # [B, C, T]


def vcs_logits(frames: torch.Tensor, classes: ClassSide, tau: float = DEFAULT_TAU) -> torch.Tensor:
    """VCS head (Eq. 5-6): logits [B, C] = (sum_t S[b,c,t] * frame[b,t]) . class[c], frames and class unit.

    Computed as sum_t S[b,c,t] * (frame[b,t] . class[c]), which is the same number without building
    the [B, C, D] enhanced video embeddings e_v.
    """
    weights = getattr(classes, "token_weights", None)  # [C, M] float where classes have several descriptions
    saliency = vcs_saliency(frames, classes.tokens, classes.token_mask if weights is None else weights, tau)
    f = F.normalize(frames, dim=-1)  # [B, T, D]
    c = F.normalize(classes.pooled, dim=-1)  # [C, D]
    frame_class = torch.einsum("btd,cd->bct", f, c)  # [B, C, T]
    return (saliency * frame_class).sum(-1)  # [B, C]


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): CLIP's activation, used by the authors' temporal transformer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualBlock(nn.Module):
    """CLIP's pre-LN block: x + attn(LN(x)), then x + MLP(LN(x)) with a 4 x width QuickGELU MLP.

    Parameter names (`attn`, `ln_1`, `mlp.c_fc`, `mlp.c_proj`, `ln_2`) are those of the authors'
    released temporal transformer, so their checkpoints load as they are.
    """

    def __init__(self, width: int, heads: int, ln_eps: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = nn.LayerNorm(width, eps=ln_eps)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, 4 * width)), ("gelu", QuickGELU()), ("c_proj", nn.Linear(4 * width, width)),
        ]))
        self.ln_2 = nn.LayerNorm(width, eps=ln_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, width]
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class TemporalTransformer(nn.Module):
    """The paper's "Transf": out = transformer(x + pos[:T]) + x for frames x [B, T, width].

    As in the authors' code: `layers` CLIP-style pre-LN blocks (`ResidualBlock`, QuickGELU,
    LayerNorm eps 1e-12), heads = the CLIP text width / 64, a learned frame position embedding
    (`frame_position_embeddings`, [max_frames, width], 77 rows like theirs) added to the input only,
    not to the residual. Init: position embedding and every linear map N(0, 0.02), zero biases.
    """

    def __init__(self, width: int, layers: int = 6, heads: int | None = None, max_frames: int = 77,
                 ln_eps: float = 1e-12, grad_checkpointing: bool = False) -> None:
        super().__init__()
        heads = heads if heads is not None else max(1, width // 64)
        if heads < 1 or width % heads:
            raise InputError(f"temporal transformer width {width} is not divisible into {heads} heads")
        if layers < 1 or max_frames < 1:
            raise InputError(f"temporal transformer needs layers >= 1 and max_frames >= 1, "
                             f"not {layers} and {max_frames}")
        self.frame_position_embeddings = nn.Embedding(max_frames, width)  # [max_frames, width]
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.Sequential(*[ResidualBlock(width, heads, ln_eps) for _ in range(layers)])
        self.grad_checkpointing = grad_checkpointing
        self._init_weights()

    def _init_weights(self) -> None:
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, width] -> [B, T, width]."""
        steps = x.shape[1]
        if steps > self.max_frames:
            raise InputError(f"{steps} frames per clip, but the temporal transformer was built for at most "
                             f"{self.max_frames} (max_frames)")
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
            raise InputError(f"unknown video head {head!r}; choose one of {', '.join(HEADS)}")
        if temporal not in TEMPORALS:
            raise InputError(f"unknown temporal module {temporal!r}; choose one of {', '.join(TEMPORALS)}")
        if tau <= 0:
            raise InputError(f"VCS temperature tau must be > 0, not {tau}")
        self.head, self.tau = head, tau
        self.temporal = (TemporalTransformer(embed_dim, layers=layers, heads=heads, max_frames=max_frames)
                         if temporal == "transformer" else nn.Identity())

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
