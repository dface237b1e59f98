"""The Attributes branch (Sec. 2.2, Eq. 3 and 8): attribute sentences scored against class prompts, by a 2-layer
MLP on each side of the frozen text encoder (``head``, the authors' `sentence_text_logit`) or by a fine-tuned copy
of the encoder reading the sentences (``full``, Table 6e)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from bike_cli.models.authors import GroupRule, decay_exempt_groups, scaled_row_scores
from bike_cli.models.loss import LogitScale, gather_with_grad, paper_contrastive_loss, same_label_targets
from bike_cli.models.text_towers import CLIP_TEXT_PARTS, encode_text_tokens, text_tower_kind

TUNES = ("head", "full")


class TextTower(nn.Module):
    """CLIP's text encoder alone (a deep copy, so the original stays frozen): tokens [N, L] -> [N, D]; CLIP's
    built-in tower copied part by part (`token_embedding.*`, ...), any other whole as `text.*`."""

    def __init__(self, clip_model: nn.Module) -> None:
        super().__init__()
        if text_tower_kind(clip_model) != "clip":
            self.text = copy.deepcopy(clip_model.text)
            return
        for name in CLIP_TEXT_PARTS:
            value = copy.deepcopy(getattr(clip_model, name))
            if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
                self.register_buffer(name, value, persistent=False)
            else:
                setattr(self, name, value)
        self.text_pool_type = getattr(clip_model, "text_pool_type", "argmax")
        self.text_eos_id = getattr(clip_model, "text_eos_id", None)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return encode_text_tokens(self, tokens)[1]  # [N, D]


def _mlp(dim: int) -> nn.Sequential:
    mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))
    for layer in (mlp[0], mlp[2]):
        nn.init.normal_(layer.weight, std=0.02)
        nn.init.zeros_(layer.bias)
    return mlp


class AttributesBranch(nn.Module):
    """Attribute inputs, sentence embeddings [b, D] (``head``) or tokens [b, L] (``full``) -> cosine logits against
    the frozen class embeddings [K, D], and the Eq. 8 training loss."""

    def __init__(self, tune: str, embed_dim: int, logit_scale: LogitScale, text: TextTower | None = None,
                 loss_fn=paper_contrastive_loss) -> None:
        super().__init__()
        if tune not in TUNES:
            raise ValueError(f"tune must be one of {', '.join(TUNES)}, not {tune!r}")
        if tune == "full" and text is None:
            raise ValueError("tune 'full' needs the text encoder")
        self.tune = tune
        self.logit_scale = logit_scale
        self.loss_fn = loss_fn  # Eq. 8 by default; `models.authors.LOSSES` names the others
        if tune == "head":
            self.sentence_fc, self.query_fc = _mlp(embed_dim), _mlp(embed_dim)
        else:
            self.text = text

    def encode_attributes(self, inputs: torch.Tensor) -> torch.Tensor:
        """[b, D] embeddings or [b, L] tokens -> attribute embeddings e_a [b, D] (not normalised); ``head``
        normalises the input first, as the authors' (with trained biases the MLP is not scale-invariant)."""
        if self.tune == "head":
            return self.sentence_fc(F.normalize(inputs, dim=-1))
        return self.text(inputs)

    def logits(self, attributes: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Cosine logits [b, K] between encoded attributes [b, D] and classes [K, D] (``head``: through `query_fc`)."""
        classes = self.query_fc(classes) if self.tune == "head" else classes  # [K, D]
        return F.normalize(attributes, dim=-1) @ F.normalize(classes, dim=-1).T

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Eq. 8 on the global batch: B x B against the batch's own class prompts (single-label) or
        B x K against every class (multi-hot targets)."""
        encoded = gather_with_grad(self.encode_attributes(inputs).float())  # [B, D]
        targets = gather_with_grad(targets)
        if targets.ndim == 1:
            logits, positives = self.logits(encoded, classes[targets]), same_label_targets(targets)
        else:
            logits, positives = self.logits(encoded, classes), targets
        return self.loss_fn(logits.float(), positives.float(), self.logit_scale())

    @torch.no_grad()
    def class_probabilities(self, inputs: torch.Tensor, classes: torch.Tensor, rule=scaled_row_scores) -> torch.Tensor:
        """S_A [b, K]: `rule` of the cosine logits [b, K] and exp(logit scale) (default: the softmax
        over classes of the scaled logits)."""
        logits = self.logits(self.encode_attributes(inputs).float(), classes)
        return rule(logits, self.logit_scale().exp())

    def param_groups(self, lr: float, clip_lr_ratio: float, weight_decay: float,
                     rule: GroupRule = decay_exempt_groups) -> list[dict]:
        """AdamW groups by `rule`: new layers (MLPs, logit scale) at `lr`; the fine-tuned text encoder at
        `lr * clip_lr_ratio` (`decay_all_groups`: the logit scale with CLIP's layers, decay on all)."""
        return rule(self, "text.", "logit_scale.", lr, clip_lr_ratio, weight_decay)
