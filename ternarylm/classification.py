"""``TernaryLMForSequenceClassification``: the ternary decoder with a classification head.

Hugging Face's ``...ForSequenceClassification`` shape (as ``LlamaForSequenceClassification``):

- ``model``: the same ``TernaryLMModel`` as the language model, under the same parameter names, so a
  causal-LM checkpoint's ``model.*`` weights load directly. With ``precision == "ternary"`` every
  linear in the decoder layers stays a ``BitLinear`` (ternary weights, 8-bit activations, QAT with
  the straight-through estimator) during fine-tuning; the embedding stays full precision.
- ``score``: a full-precision ``nn.Linear(hidden_size, num_labels, bias=False)`` (``TernaryConfig``'s
  default exclude list names ``score``, so ``quantize_`` never ternarises it).
- positions: ``max(cumsum(attention_mask) - 1, 0)``, so a left-padded row sees the same positions as
  unpadded (what the exported graph computes in-graph);
- pooling: the final-norm hidden state of the **last non-padding token** of each row, i.e. the last
  position whose ``attention_mask`` is 1 (works for right and left padding). Without a mask, the last
  position. The decoder is causal, so that token is the only one that has seen the whole input.

``config.num_labels``, ``id2label`` and ``label2id`` carry the label names. Loss: cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForSequenceClassification
from transformers.modeling_outputs import SequenceClassifierOutputWithPast

from ternarylm.configuration import TernaryLMConfig
from ternarylm.modeling import TernaryLMModel, TernaryLMPreTrainedModel



def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` positions ``max(cumsum(mask) - 1, 0)``: padding does not shift the real tokens."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def last_token_index(attention_mask: torch.Tensor | None, batch: int, seq_len: int, device=None) -> torch.Tensor:
    """``(B,)`` index of the last position with ``attention_mask == 1`` in each row (0 for an all-zero
    row; ``seq_len - 1`` without a mask). The export computes the same thing with ArgMax."""
    if attention_mask is None:
        return torch.full((batch,), seq_len - 1, dtype=torch.long, device=device)
    positions = torch.arange(seq_len, device=attention_mask.device)
    return (attention_mask.long() * positions).argmax(dim=-1)


class TernaryLMForSequenceClassification(TernaryLMPreTrainedModel):
    def __init__(self, config: TernaryLMConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = TernaryLMModel(config)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, labels=None,
                **kwargs):
        if position_ids is None and attention_mask is not None:
            position_ids = positions_from_mask(attention_mask)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         inputs_embeds=inputs_embeds, use_cache=False)
        h = out.last_hidden_state  # (B, T, D)
        b, t = h.shape[:2]
        last = last_token_index(attention_mask, b, t, h.device)
        pooled = h[torch.arange(b, device=h.device), last]  # (B, D)
        logits = self.score(pooled).float()  # (B, num_labels)
        loss = F.cross_entropy(logits, labels.to(logits.device).long()) if labels is not None else None
        return SequenceClassifierOutputWithPast(loss=loss, logits=logits)


def load_backbone(model: TernaryLMForSequenceClassification, lm_state: dict) -> None:
    """Copy a causal-LM state dict's ``model.*`` weights into ``model`` (the head keeps its fresh init).

    Raises ``ValueError`` naming the first mismatching weights when the shapes or names disagree.
    """
    backbone = {k: v for k, v in lm_state.items() if k.startswith("model.")}
    try:
        missing, unexpected = model.load_state_dict(backbone, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ValueError(f"the checkpoint's backbone weights do not fit its config: "
                         f"{str(e).strip().splitlines()[-1].strip()[:200]}") from None
    missing = [k for k in missing if not k.startswith("score.")]
    if missing or unexpected:
        raise ValueError(f"the checkpoint's backbone weights do not match its config (missing {missing[:3]}, "
                         f"unexpected {list(unexpected)[:3]})")


AutoModelForSequenceClassification.register(TernaryLMConfig, TernaryLMForSequenceClassification, exist_ok=True)
