"""Text embeddings in batches, and the top-k cosine search of queries against many keys."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bike_cli.models.text import Tokenizer

SENTENCE_BATCH = 512  # attribute sentences per text-encoder call (train-attrs, eval)


@torch.no_grad()
def encode_texts(model: nn.Module, tokenizer: Tokenizer, texts: Sequence[str], batch_size: int) -> torch.Tensor:
    """L2-normalised float32 [N, D] `encode_text` embeddings of `texts`, on the model's device.

    Filled into one preallocated tensor: batch results joined at the end pinned the heap (1.1 GB for
    50,000 phrases with bike-tiny, measured) and held the result twice."""
    device = next(model.parameters()).device
    out: torch.Tensor | None = None
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer(list(texts[start:start + batch_size])).to(device)  # [b, L]
        rows = F.normalize(model.encode_text(tokens).float(), dim=-1)  # [b, D]
        if out is None:
            out = torch.empty((len(texts), rows.shape[1]), dtype=torch.float32, device=device)
        out[start:start + rows.shape[0]] = rows
    if out is None:
        raise ValueError("encode_texts needs at least one text")
    return out


def topk_cosine(queries: torch.Tensor, keys: torch.Tensor, k: int, *, exclude: torch.Tensor | None = None,
                max_elements: int = 1 << 25) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest of `queries` [n, D] @ `keys`.T [P, D]: values [n, k] (descending) and indices [n, k].

    Keys are taken in blocks so that no block of scores exceeds `max_elements` entries (at least k
    keys per block). `exclude` [m, 2] lists (row, key index) pairs that may not be chosen.
    """
    n, num_keys = queries.shape[0], keys.shape[0]
    block = max(k, max_elements // max(n, 1))
    best_values = queries.new_empty((n, 0))
    best_indices = torch.empty((n, 0), dtype=torch.long, device=queries.device)
    for start in range(0, num_keys, block):
        scores = queries @ keys[start:start + block].T  # [n, b]
        if exclude is not None:
            inside = exclude[(exclude[:, 1] >= start) & (exclude[:, 1] < start + scores.shape[1])]
            scores[inside[:, 0], inside[:, 1] - start] = float("-inf")
        values, indices = scores.topk(min(k, scores.shape[1]), dim=1)  # [n, k']
        merged_values = torch.cat([best_values, values], dim=1)  # [n, k + k']
        merged_indices = torch.cat([best_indices, indices + start], dim=1)
        best_values, order = merged_values.topk(min(k, merged_values.shape[1]), dim=1)  # [n, k]
        best_indices = merged_indices.gather(1, order)
        del scores  # before the next block is allocated: one block of scores alive at a time
    return best_values, best_indices
