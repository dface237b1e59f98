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
  which is what the authors' released code does (no mask at all) with CLIP's BPE; for tokenizers
  that pad with a pad token (Hugging Face and SentencePiece ones), every position but the padding.

Every open_clip text tower is supported (`bike_cli.models.text_towers`: CLIP's built-in tower,
`TextTransformer`, CoCa, Hugging Face towers), and any open_clip tokenizer: the class name's
positions are found by tokenising the prompt with and without the name (`class_name_spans`).

A prompt that cannot be built from the given names and templates raises `PromptError` (a ValueError):
the stage or loader that took them from the user reports it as the user's input error.
"""

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
    """Per-token text embeddings [N, L, D] of `tokens` [N, L], projected like `encode_text`'s output.

    Any open_clip text tower (see `bike_cli.models.text_towers`)."""
    return encode_text_tokens(model, tokens)[0]


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
    """Per class, the token positions [start, end) of the class name inside its tokenized prompt.

    Found from the tokenizer itself, for any tokenizer (CLIP's BPE, SentencePiece, byte-level BPE,
    with or without start/end tokens): the prompt is tokenized with the class name and with an empty
    name; the positions between their common prefix and their common suffix are the name's tokens
    (a template that glues the name to its neighbours, as in "{}s", gives the glued tokens).
    """
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
    """Bool [N, L]: every position except the pad tokens of a tokenizer that pads with one.

    CLIP's BPE fills with zeros after its end-of-text but has no pad token (id 0 is "!"): there every
    position is kept, as in the authors' code (`vcs_tokens="all"`)."""
    pad = _pad_id(tokenizer)
    if pad is None:
        return torch.ones_like(tokens, dtype=torch.bool)
    eos = getattr(tokenizer.tokenizer, "eos_token_id", None)
    lengths = torch.tensor([_real_length(row, pad, eos) for row in tokens.tolist()], device=tokens.device)
    return torch.arange(tokens.shape[1], device=tokens.device) < lengths.unsqueeze(1)  # [N, L]


def word_token_mask(tokens: torch.Tensor, spans: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Bool mask [N, L] over `tokens` [N, L]: True at positions [start, end) of each row's span."""
    if len(spans) != tokens.shape[0]:
        raise ValueError(f"{len(spans)} class-name spans for {tokens.shape[0]} tokenized prompts")
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
    """Encode K class names with the frozen text encoder, one prompt per template (see `ClassTexts`).

    PromptError for names, templates or a `vcs_tokens` that give no valid prompt or queries."""
    if vcs_tokens not in VCS_TOKENS:
        raise PromptError(f"vcs_tokens must be one of {', '.join(VCS_TOKENS)}, not {vcs_tokens!r}")
    if not class_names:
        raise PromptError("no class names to encode")
    check_templates(templates)
    device = text_device(model)
    pooled, tokens, masks = [], [], []
    for template in templates:
        prompt_tokens = tokenizer([fill_template(template, n) for n in class_names]).to(device)  # [K, L]
        if vcs_tokens == "words":
            mask = word_token_mask(prompt_tokens, class_name_spans(tokenizer, template, class_names))
        else:
            mask = padding_free_mask(tokenizer, prompt_tokens)  # [K, L]
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
        x, pooled_rows = encode_text_tokens(model, batch)  # [b, L, D], [b, D]
        per_token.append(x.float())
        pooled.append(pooled_rows.float())
    return torch.cat(per_token), torch.cat(pooled)


def _pack(tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's masked-in tokens [K, M, D] to the front, in order; drop columns no row uses."""
    counts = mask.sum(1)  # [K]
    width = int(counts.max())
    order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices[:, :width]  # kept first, in order
    packed = tokens.gather(1, order.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))  # [K, width, D]
    packed_mask = torch.arange(width, device=mask.device) < counts.unsqueeze(1)  # [K, width]
    return packed * packed_mask.unsqueeze(-1), packed_mask
