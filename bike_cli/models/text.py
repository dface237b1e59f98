"""The category side of BIKE's Video branch: frozen CLIP text embeddings of prompted class names.

For each class name and prompt template the frozen text encoder gives

- the pooled embedding (what `encode_text` returns: the row at the EOT position for CLIP), the
  category embedding e_c of Eq. 1;
- the per-token embeddings (every context position through `ln_final` and the text projection),
  whose class-name word tokens are the queries t_n of the VCS saliency (Eq. 5).

`vcs_tokens` chooses which positions are VCS queries:

- ``"words"``: the real tokens of the class name inside the prompt, as in Eq. 5 (the N words of the
  class name); SOT, EOT, padding and the template's own words are masked out;
- ``"all"``: every one of the context positions (SOT, template words, EOT and padding included),
  which is what the authors' released code does (no mask at all).

Only open_clip's `CLIP` class (a built-in text transformer, as in every OpenAI-style model) is
supported: the per-token path mirrors `CLIP.encode_text` of open_clip 3.3 step by step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool
from torch import nn

from bike_cli.errors import InputError, ModelLoadError

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "This is a video about {}"
VCS_TOKENS = ("words", "all")
_TEXT_ATTRS = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection",
               "attn_mask", "text_pool_type")
_POOLS = ("argmax", "eos", "first", "last")  # text_global_pool types that give one row per text

Tokenizer = Callable[[list[str]], torch.Tensor]  # texts -> LongTensor [N, L]


@dataclass
class ClassTexts:
    """Frozen text embeddings of K classes (float32, on the text encoder's device).

    pooled: [K, D] category embeddings e_c. With several templates each template's pooled embedding
        is L2-normalised, these are averaged over the templates and the average renormalised
        (CLIP's prompt-ensemble recipe), so rows have unit norm; consumers normalise anyway.
    tokens: [K, M, D] VCS query token embeddings (not normalised), the templates' query tokens
        concatenated along M, then packed to the front so that M is the largest per-class count.
    token_mask: [K, M] bool, True where `tokens` holds a real query token (False = padding of M).
    """

    pooled: torch.Tensor
    tokens: torch.Tensor
    token_mask: torch.Tensor

    def select(self, indices: torch.Tensor) -> ClassTexts:
        """The rows `indices` [B] (e.g. a batch's labels, for the B x B training matrix)."""
        return ClassTexts(self.pooled[indices], self.tokens[indices], self.token_mask[indices])


def text_token_embeddings(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Per-token text embeddings [N, L, D] of `tokens` [N, L]: `CLIP.encode_text` without the pooling.

    `pool_text_tokens` of the result equals `model.encode_text(tokens)`.
    """
    _check_text_tower(model)
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype)  # [N, L, W]
    x = x + model.positional_embedding.to(cast_dtype)  # [L, W] broadcast
    x = model.transformer(x, attn_mask=model.attn_mask)  # causal mask [L, L]
    x = model.ln_final(x)  # [N, L, W]
    projection = model.text_projection
    if projection is None:
        return x
    if isinstance(projection, nn.Linear):
        return projection(x)  # [N, L, D]
    return x @ projection  # [N, L, W] @ [W, D] -> [N, L, D]


def pool_text_tokens(model: nn.Module, token_embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The pooled rows [N, D] of `token_embeddings` [N, L, D], chosen as `encode_text` chooses them."""
    return text_global_pool(token_embeddings, tokens, model.text_pool_type,
                            eos_token_id=getattr(model, "text_eos_id", None))


def _check_text_tower(model: nn.Module) -> None:
    missing = [a for a in _TEXT_ATTRS if not hasattr(model, a)]
    if missing:
        raise ModelLoadError(
            f"{type(model).__name__} has no built-in CLIP text transformer (missing {', '.join(missing)}); "
            "bike's per-token text embeddings need an open_clip CLIP model (e.g. ViT-B-32, ViT-B-16, ViT-L-14)"
        )
    if model.text_pool_type not in _POOLS:
        raise ModelLoadError(f"text pool type {model.text_pool_type!r} gives no single class embedding; "
                             f"supported: {', '.join(_POOLS)}")


def fill_template(template: str, class_name: str) -> str:
    """`template` with its one `{}` replaced by `class_name` (InputError otherwise)."""
    if template.count("{}") != 1:
        raise InputError(f"prompt template {template!r} must contain exactly one '{{}}' for the class name")
    return template.replace("{}", class_name)


def class_name_spans(tokenizer: Tokenizer, template: str, class_names: Sequence[str]) -> list[tuple[int, int]]:
    """Per class, the token positions [start, end) of the class name inside its tokenized prompt.

    The class name is tokenized alone and its ids are located in the prompt's ids, searching from
    the position just after the template's prefix (so template words equal to a class word are
    not taken). Needs a tokenizer that marks the end of text (`eot_token_id`, as CLIP's BPE does).
    """
    eot = getattr(tokenizer, "eot_token_id", None)
    if eot is None:
        raise ModelLoadError(f"vcs_tokens='words' needs a tokenizer with an end-of-text id "
                             f"(CLIP's BPE); {type(tokenizer).__name__} has none")
    prefix = template.split("{}", 1)[0]
    prompts = tokenizer([fill_template(template, n) for n in class_names])  # [K, L]
    names = tokenizer(list(class_names))  # [K, L]
    start = 1 + len(_content_ids(tokenizer([prefix])[0], eot))  # after SOT and the prefix
    return [_locate(_content_ids(name, eot), prompt.tolist(), start, name_str, template, eot)
            for name, prompt, name_str in zip(names, prompts, class_names)]


def _content_ids(row: torch.Tensor, eot: int) -> list[int]:
    """The ids between SOT (position 0) and the first EOT of one tokenized text."""
    ids = row.tolist()
    return ids[1:ids.index(eot)] if eot in ids else ids[1:]


def _locate(name_ids: list[int], prompt_ids: list[int], start: int, name: str, template: str,
            eot: int) -> tuple[int, int]:
    if not name_ids:
        raise InputError(f"class name {name!r} has no tokens (empty class name?)")
    n = len(name_ids)
    for i in range(start, len(prompt_ids) - n + 1):
        if prompt_ids[i:i + n] == name_ids:
            return i, i + n
    reason = ("the prompt is longer than the text context and was truncated" if eot not in prompt_ids[:-1]
              else "the template joins the class name to its neighbouring characters")
    raise InputError(f"cannot find the tokens of class name {name!r} in prompt template {template!r}: {reason}")


def word_token_mask(tokens: torch.Tensor, spans: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Bool mask [N, L] over `tokens` [N, L]: True at positions [start, end) of each row's span."""
    if len(spans) != tokens.shape[0]:
        raise InputError(f"{len(spans)} class-name spans for {tokens.shape[0]} tokenized prompts")
    positions = torch.arange(tokens.shape[1], device=tokens.device)  # [L]
    bounds = torch.tensor(spans, dtype=torch.long, device=tokens.device).reshape(-1, 2)  # [N, 2]
    return (positions >= bounds[:, :1]) & (positions < bounds[:, 1:])  # [N, L]


@torch.no_grad()
def encode_class_texts(
    model: nn.Module,
    tokenizer: Tokenizer,
    class_names: Sequence[str],
    templates: Sequence[str] = (DEFAULT_TEMPLATE,),
    vcs_tokens: str = "words",
    batch_size: int = 256,
) -> ClassTexts:
    """Encode K class names with the frozen text encoder, one prompt per template (see `ClassTexts`)."""
    if vcs_tokens not in VCS_TOKENS:
        raise InputError(f"vcs_tokens must be one of {', '.join(VCS_TOKENS)}, not {vcs_tokens!r}")
    if not class_names:
        raise InputError("no class names to encode")
    if not templates:
        raise InputError("no prompt templates given")
    _check_text_tower(model)
    device = model.token_embedding.weight.device
    pooled, tokens, masks = [], [], []
    for template in templates:
        prompt_tokens = tokenizer([fill_template(template, n) for n in class_names]).to(device)  # [K, L]
        if vcs_tokens == "words":
            mask = word_token_mask(prompt_tokens, class_name_spans(tokenizer, template, class_names))
        else:
            mask = torch.ones_like(prompt_tokens, dtype=torch.bool)  # [K, L]
        per_token, per_prompt = _encode_batched(model, prompt_tokens, batch_size)
        pooled.append(F.normalize(per_prompt, dim=-1))  # [K, D], unit norm per template
        tokens.append(per_token)
        masks.append(mask)
    mean = F.normalize(torch.stack(pooled).mean(0), dim=-1)  # [K, D]
    packed_tokens, packed_mask = _pack(torch.cat(tokens, 1), torch.cat(masks, 1))  # [K, M, D], [K, M]
    log.info("Encoded %d class names x %d templates (%d VCS query tokens per class at most)",
             len(class_names), len(templates), packed_mask.shape[1])
    return ClassTexts(pooled=mean, tokens=packed_tokens, token_mask=packed_mask)


def _encode_batched(model: nn.Module, tokens: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token [K, L, D] and pooled [K, D] float32 embeddings of `tokens` [K, L], in batches."""
    per_token, pooled = [], []
    for batch in tokens.split(batch_size):
        x = text_token_embeddings(model, batch).float()  # [b, L, D]
        per_token.append(x)
        pooled.append(pool_text_tokens(model, x, batch))  # [b, D]
    return torch.cat(per_token), torch.cat(pooled)


def _pack(tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's masked-in tokens [K, M, D] to the front, in order; drop columns no row uses."""
    counts = mask.sum(1)  # [K]
    width = int(counts.max())
    order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices[:, :width]  # kept first, in order
    packed = tokens.gather(1, order.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))  # [K, width, D]
    packed_mask = torch.arange(width, device=mask.device) < counts.unsqueeze(1)  # [K, width]
    return packed * packed_mask.unsqueeze(-1), packed_mask
