"""Text-to-video search scores over cached frame embeddings [n, V, T, D] (`bike search`), averaged over views.

``mean``: the cosine of the mean-pooled frames with the pooled query (one dot product with `video_vectors`'
row, what the search index stores). ``vcs``: `heads.vcs` with the query as its one class and e_v
renormalised (the head does not renormalise, as the authors' code; across videos a cosine compares fairly).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from bike_cli.models.heads import DEFAULT_TAU, vcs

RULES = ("vcs", "mean")


def _tensor(embeddings: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(embeddings) if not torch.is_tensor(embeddings) else embeddings).float()


@torch.no_grad()
def video_vectors(embeddings: np.ndarray | torch.Tensor) -> torch.Tensor:
    """float32 [n, D]: the mean over views of unit(mean over T of the frames) of [n, V, T, D] embeddings.

    Its dot product with a unit query is the mean over views of the per-view cosines (the mean rule)."""
    per_view = F.normalize(_tensor(embeddings).mean(2), dim=-1)  # [n, V, D]
    return per_view.mean(1)  # [n, D], unit for one view


@torch.no_grad()
def vcs_scores(embeddings: np.ndarray | torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor,
               pooled: torch.Tensor, tau: float = DEFAULT_TAU, weights: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """VCS scores [n] (mean over views) and saliency S [n, V, T] of one query against [n, V, T, D] videos.

    tokens [M, D] / mask [M]: the query's word tokens (True = real token); pooled [D]; weights [M]: the
    tokens' weights in S's mean (`ClassTexts.token_weights`, a query of several descriptions), None: 1/N. The head's own
    `heads.vcs` with the query as its one class, e_v renormalised (a cosine)."""
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
