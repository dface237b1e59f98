"""The category side of the Video branch: frozen CLIP text embeddings of prompted class names, pooled (e_c, Eq. 1)
and per token, whose VCS queries (Eq. 5) `vcs_tokens` picks: ``words``, the name's own tokens, or ``all``
positions as the authors' code (but padding). Prompts that are not valid raise `PromptError`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bike_cli.config.stages import DEFAULT_TEMPLATE
from bike_cli.models.text_towers import encode_text_tokens, text_device

log = logging.getLogger(__name__)

VCS_TOKENS = ("words", "all")

Tokenizer = Callable[[list[str]], torch.Tensor]  # texts -> LongTensor [N, L]


class PromptError(ValueError):
    """Class names, templates or a `vcs_tokens` choice that give no valid prompt or queries: a template
    without one `{}`, an empty or too long name, none given."""


@dataclass
class ClassTexts:
    """Frozen text embeddings of K classes (float32, on the text encoder's device)."""

    # [K, D] e_c: each prompt's (template x description) pooled embedding unit, averaged per class, renormalised
    pooled: torch.Tensor
    tokens: torch.Tensor  # [K, M, D] VCS query tokens (not unit) of all templates, packed to the front
    token_mask: torch.Tensor  # [K, M] bool, True = a real query token (False = padding of M)
    # [K, M] rows summing to 1, with several descriptions: 1 / (n_desc x the description's n_tokens), so that
    # the saliency is the mean of the descriptions' saliencies; None: the plain mean over `token_mask`
    token_weights: torch.Tensor | None = None

    def select(self, indices: torch.Tensor) -> ClassTexts:
        """The rows `indices` [B] (e.g. a batch's labels, for the B x B training matrix)."""
        weights = None if self.token_weights is None else self.token_weights[indices]
        return ClassTexts(self.pooled[indices], self.tokens[indices], self.token_mask[indices], weights)


def fill_template(template: str, class_name: str) -> str:
    """`template` with its one `{}` replaced by `class_name` (PromptError otherwise)."""
    if template.count("{}") != 1:
        raise PromptError(f"prompt template {template!r} must contain exactly one '{{}}' for the class name")
    return template.replace("{}", class_name)


def check_templates(templates: Sequence[str]) -> None:
    """PromptError unless there is at least one template and each has exactly one `{}`."""
    if not templates:
        raise PromptError("no prompt templates given")
    for template in templates:
        fill_template(template, "")


def attribute_sentence(attributes: Sequence[str], template: str = DEFAULT_TEMPLATE, separator: str = ",") -> str:
    """The attribute sentence: `template` filled with the attributes joined by `separator`."""
    return fill_template(template, separator.join(attributes))


def class_name_spans(tokenizer: Tokenizer, template: str, class_names: Sequence[str]) -> list[tuple[int, int]]:
    """Per class, the token positions [start, end) of the name in its prompt: between the common prefix and suffix
    of the prompt tokenized with the name and with an empty one (any tokenizer; "{}s" gives the glued tokens)."""
    base = _real_ids(tokenizer, [fill_template(template, "")])[0]
    prompts = _real_ids(tokenizer, [fill_template(template, n) for n in class_names])
    return [_changed_span(ids, base, name) for ids, name in zip(prompts, class_names)]


def _pad_id(tokenizer: Tokenizer) -> int | None:
    """The pad id of a tokenizer that pads with a pad token (open_clip's HFTokenizer, SigLipTokenizer)."""
    return getattr(getattr(tokenizer, "tokenizer", None), "pad_token_id", None)


def _real_length(ids: list[int], fill: int, eos: int | None) -> int:
    """Positions before the trailing run of `fill` ids (the end-of-text kept when it equals `fill`)."""
    n = len(ids)
    while n and ids[n - 1] == fill:
        n -= 1
    return min(len(ids), n + 1) if eos is not None and eos == fill and n < len(ids) else n


def _real_ids(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Each text's ids without padding, tokenized with 4x the context so truncation shows (PromptError)."""
    context = tokenizer(texts[:1]).shape[1]
    try:
        long = tokenizer(texts, context_length=4 * context)  # [N, 4L] (open_clip tokenizers take it)
    except TypeError:  # a plain callable: texts -> [N, L]
        long = tokenizer(texts)
    pad = _pad_id(tokenizer)
    fill = 0 if pad is None else pad  # CLIP's BPE fills with 0 after its end-of-text
    eos = getattr(getattr(tokenizer, "tokenizer", None), "eos_token_id", None)
    rows = [row[:_real_length(row, fill, eos)] for row in long.tolist()]
    for row, text in zip(rows, texts):
        if len(row) > context:
            raise PromptError(f"the prompt {text!r} is {len(row)} tokens, longer than the text context "
                             f"({context}): it would be truncated")
    return rows


def _changed_span(ids: list[int], base: list[int], name: str) -> tuple[int, int]:
    """[start, end) of `ids` between its common prefix and common suffix with `base`."""
    start = 0
    while start < min(len(ids), len(base)) and ids[start] == base[start]:
        start += 1
    suffix = 0
    while suffix < min(len(ids), len(base)) - start and ids[-1 - suffix] == base[-1 - suffix]:
        suffix += 1
    end = len(ids) - suffix
    if end <= start:
        raise PromptError(f"class name {name!r} has no tokens (empty class name?)")
    return start, end


def padding_free_mask(tokenizer: Tokenizer, tokens: torch.Tensor) -> torch.Tensor:
    """Bool [N, L]: every position except the pad tokens of a tokenizer that pads with one (CLIP's BPE has no pad
    token, its zeros are "!": every position kept, as the authors' code)."""
    pad = _pad_id(tokenizer)
    if pad is None:
        return torch.ones_like(tokens, dtype=torch.bool)
    eos = getattr(tokenizer.tokenizer, "eos_token_id", None)
    lengths = torch.tensor([_real_length(row, pad, eos) for row in tokens.tolist()], device=tokens.device)
    return torch.arange(tokens.shape[1], device=tokens.device) < lengths.unsqueeze(1)  # [N, L]


def word_token_mask(tokens: torch.Tensor, spans: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Bool mask [N, L] over `tokens` [N, L]: True at positions [start, end) of each row's span."""
    positions = torch.arange(tokens.shape[1], device=tokens.device)  # [L]
    bounds = torch.tensor(spans, dtype=torch.long, device=tokens.device).reshape(-1, 2)  # [N, 2]
    return (positions >= bounds[:, :1]) & (positions < bounds[:, 1:])  # [N, L]


@torch.no_grad()
def encode_class_texts(model: nn.Module, tokenizer: Tokenizer, class_names: Sequence[str],
                       templates: Sequence[str] = (DEFAULT_TEMPLATE,), vcs_tokens: str = "words", batch_size: int = 256,
                       descriptions: Sequence[Sequence[str]] | None = None) -> ClassTexts:
    """Encode K classes with the frozen text encoder, one prompt per template and description (see `ClassTexts`);
    descriptions: per class, its texts, each filling the templates in the name's place; None: the class name."""
    if vcs_tokens not in VCS_TOKENS:
        raise PromptError(f"vcs_tokens must be one of {', '.join(VCS_TOKENS)}, not {vcs_tokens!r}")
    if not class_names:
        raise PromptError("no class names to encode")
    check_templates(templates)
    texts = [[name] for name in class_names] if descriptions is None else [list(d) for d in descriptions]
    if len(texts) != len(class_names) or not all(texts):
        raise PromptError(f"{len(class_names)} classes need at least one description each "
                          f"({len(texts)} lists given, {sum(not d for d in texts)} empty)")
    flat = [text for class_texts in texts for text in class_texts]  # P prompts' texts, class by class
    device = text_device(model)
    pooled, tokens, masks = [], [], []
    for template in templates:
        prompt_tokens = tokenizer([fill_template(template, t) for t in flat]).to(device)  # [P, L]
        if vcs_tokens == "words":
            mask = word_token_mask(prompt_tokens, class_name_spans(tokenizer, template, flat))
        else:
            mask = padding_free_mask(tokenizer, prompt_tokens)  # [P, L]
        per_token, per_prompt = _encode_batched(model, prompt_tokens, batch_size)
        pooled.append(F.normalize(per_prompt, dim=-1))  # [P, D], unit norm per template
        tokens.append(per_token)
        masks.append(mask)
    prompt_mean = torch.stack(pooled).mean(0)  # [P, D]: each description's mean over the templates
    packed_tokens, packed_mask = _pack(torch.cat(tokens, 1), torch.cat(masks, 1))  # [P, M, D], [P, M]
    if len(flat) == len(class_names):  # one description per class: the plain masked mean
        mean, weights = F.normalize(prompt_mean, dim=-1), None  # [K, D]
    else:
        mean, packed_tokens, packed_mask, weights = _per_class(texts, prompt_mean, packed_tokens, packed_mask)
    log.info("Encoded %d classes (%d descriptions) x %d templates (%d VCS query tokens per class at most)",
             len(class_names), len(flat), len(templates), packed_mask.shape[1])
    return ClassTexts(pooled=mean, tokens=packed_tokens, token_mask=packed_mask, token_weights=weights)


def _per_class(texts: list[list[str]], prompt_mean: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The P descriptions' pooled [P, D], tokens [P, M, D] and mask [P, M] gathered into K classes: pooled [K, D]
    (renormalised mean), tokens [K, M', D], mask [K, M'] and token weights [K, M'] (see `ClassTexts`)."""
    device = prompt_mean.device
    owner = torch.tensor([k for k, d in enumerate(texts) for _ in d], device=device)  # [P]
    slot = torch.tensor([j for d in texts for j in range(len(d))], device=device)  # [P]
    n_desc = torch.tensor([len(d) for d in texts], device=device)  # [K]
    classes, most, width, dim = len(texts), int(n_desc.max()), mask.shape[1], tokens.shape[-1]
    summed = torch.zeros(classes, prompt_mean.shape[1], device=device, dtype=prompt_mean.dtype)
    pooled = F.normalize(summed.index_add_(0, owner, prompt_mean) / n_desc.unsqueeze(1), dim=-1)  # [K, D]
    counts = mask.sum(1, keepdim=True).clamp(min=1)  # [P, 1] query tokens of each description
    weights = mask.to(tokens.dtype) / (n_desc[owner].unsqueeze(1) * counts).to(tokens.dtype)  # [P, M]
    grid = torch.zeros(classes, most, width, dim, device=device, dtype=tokens.dtype)  # [K, n, M, D]
    grid_mask = torch.zeros(classes, most, width, device=device, dtype=torch.bool)
    grid_weights = torch.zeros(classes, most, width, device=device, dtype=tokens.dtype)
    grid[owner, slot], grid_mask[owner, slot], grid_weights[owner, slot] = tokens, mask, weights
    packed, packed_mask, packed_weights = _pack(grid.flatten(1, 2), grid_mask.flatten(1, 2),
                                                grid_weights.flatten(1, 2))
    return pooled, packed, packed_mask, packed_weights


def _encode_batched(model: nn.Module, tokens: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token [K, L, D] and pooled [K, D] float32 embeddings of `tokens` [K, L], in batches."""
    per_token, pooled = [], []
    for batch in tokens.split(batch_size):
        x, pooled_rows = encode_text_tokens(model, batch)  # [b, L, D], [b, D]
        per_token.append(x.float())
        pooled.append(pooled_rows.float())
    return torch.cat(per_token), torch.cat(pooled)


def _pack(tokens: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None):
    """Move each row's masked-in tokens [K, M, D] to the front, in order, dropping unused columns: tokens
    [K, width, D], mask [K, width], and the `weights` [K, M] moved alike when given."""
    counts = mask.sum(1)  # [K]
    width = int(counts.max())
    order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices[:, :width]  # kept first, in order
    packed = tokens.gather(1, order.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))  # [K, width, D]
    packed_mask = torch.arange(width, device=mask.device) < counts.unsqueeze(1)  # [K, width]
    if weights is None:
        return packed * packed_mask.unsqueeze(-1), packed_mask
    return packed * packed_mask.unsqueeze(-1), packed_mask, weights.gather(1, order) * packed_mask
