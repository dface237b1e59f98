"""Per-token and pooled text embeddings for every kind of open_clip text tower (docs/models.md, "Text side"):
the pooled row is the model's own `encode_text`, the per-token rows go through the same norm and projection."""

from __future__ import annotations

import torch
from open_clip.hf_model import HFTextEncoder
from open_clip.transformer import TextTransformer, text_global_pool
from torch import nn

from bike_cli.errors import ModelLoadError

CLIP_TEXT_PARTS = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection",
                   "attn_mask")
_POOLS = ("argmax", "eos", "first", "last")  # text_global_pool types that give one row per text


def text_tower_kind(model: nn.Module) -> str:
    """clip, transformer, coca or hf for a model (or a `TextTower` copy of its text side); else ModelLoadError."""
    text = getattr(model, "text", None)
    if isinstance(text, TextTransformer):
        return "coca" if text.cls_emb is not None else "transformer"
    if isinstance(text, HFTextEncoder):
        return "hf"
    missing = [a for a in CLIP_TEXT_PARTS if not hasattr(model, a)]
    if missing:
        raise ModelLoadError(f"{type(model).__name__} has no text tower bike knows: no open_clip TextTransformer or "
                             "HFTextEncoder as `.text`, and no built-in CLIP text transformer (missing "
                             f"{', '.join(missing)})")
    return "clip"


def text_width(model: nn.Module) -> int:
    """The text transformer's width (the authors size the temporal transformer's heads by it)."""
    kind = text_tower_kind(model)
    if kind == "clip":
        return int(model.ln_final.weight.shape[0])
    if kind == "hf":
        return int(model.text.transformer.get_input_embeddings().weight.shape[1])
    return int(model.text.width)


def text_device(model: nn.Module) -> torch.device:
    """The device of the text tower's weights."""
    tower = model if text_tower_kind(model) == "clip" else model.text
    return next(tower.parameters()).device


def _project(x: torch.Tensor, projection: nn.Module | torch.Tensor | None) -> torch.Tensor:
    """[..., W] -> [..., D] through a text projection that is a matrix, a module or None."""
    if projection is None:
        return x
    if isinstance(projection, nn.Module):
        return projection(x)
    return x @ projection  # [..., W] @ [W, D]


def _check_pool(pool_type: str) -> None:
    if pool_type not in _POOLS:
        raise ModelLoadError(f"text pool type {pool_type!r} gives no single class embedding; "
                             f"supported: {', '.join(_POOLS)}")


def _clip_tokens(model: nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`CLIP.encode_text` of open_clip 3.3, step by step, keeping every position."""
    _check_pool(model.text_pool_type)
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype)  # [N, L, W]
    x = x + model.positional_embedding.to(cast_dtype)  # [L, W] broadcast
    x = model.transformer(x, attn_mask=model.attn_mask)  # causal mask [L, L]
    per_token = _project(model.ln_final(x), model.text_projection)  # [N, L, D]
    pooled = text_global_pool(per_token, tokens, model.text_pool_type,
                              eos_token_id=getattr(model, "text_eos_id", None))  # [N, D]
    return per_token, pooled


def _transformer_tokens(text: TextTransformer, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`TextTransformer.forward` of open_clip 3.3 (CoCa's CLS variant included), every position kept."""
    x, attn_mask = text._embeds(tokens)  # [N, L(+1), W]; causal / padding / CLS masks as open_clip builds them
    x = text.transformer(x, attn_mask=attn_mask)
    if text.cls_emb is not None:  # CoCa: the appended CLS row is the pooled one, LN after pooling
        per_token = _project(text.ln_final(x[:, :-1]), text.text_projection)  # [N, L, D]
        return per_token, _project(text.ln_final(x[:, -1]), text.text_projection)  # [N, D]
    _check_pool(text.pool_type)
    per_token = _project(text.ln_final(x), text.text_projection)  # [N, L, D]
    pooled = text_global_pool(per_token, tokens, text.pool_type, eos_token_id=getattr(text, "eos_id", None))
    return per_token, pooled


def _hf_tokens(text: HFTextEncoder, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`HFTextEncoder.forward` of open_clip 3.3, with the last hidden state projected per token (a CLS pooler
    that uses the model's `pooler_output` gives a pooled row that is none of the token rows)."""
    attn_mask = (tokens != text.config.pad_token_id).long()  # [N, L]
    out = text.transformer(input_ids=tokens, attention_mask=attn_mask)
    pooled = text.proj(text.pooler(out, attn_mask))  # [N, D]
    return text.proj(out.last_hidden_state), pooled  # [N, L, D], [N, D]


def encode_text_tokens(model: nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token [N, L, D], pooled [N, D]) text embeddings of `tokens` [N, L], not normalised; `pooled` equals
    `model.encode_text(tokens, normalize=False)`."""
    kind = text_tower_kind(model)
    if kind == "clip":
        return _clip_tokens(model, tokens)
    if kind == "hf":
        return _hf_tokens(model.text, tokens)
    return _transformer_tokens(model.text, tokens)
