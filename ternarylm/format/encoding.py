"""How a classifier's input text becomes token ids: one definition for fine-tuning, PyTorch inference,
onnxruntime and the NumPy runtime (this module needs numpy and ``tokenizers`` only, never torch). It is
part of the folder contract: a classifier export stores its ``EncodingSpec`` in config.json.

Template (the tokenizer's own special tokens; ids are stored in the ``EncodingSpec``):

    one text:   [bos] s [eos]
    two texts:  [bos] s1 [sep] s2 [eos]

``bos`` / ``eos`` are the ids ``ternarylm.format.tokens.special_token_ids`` finds (bos falls back to
eos). ``sep`` is the tokenizer's separator token when it has one (``[SEP]``, ``<sep>``, ``<|sep|>``),
otherwise **eos doubles as the separator** (ternarylm's byte-level BPE has only ``<|endoftext|>`` and
``<|pad|>``: a pair then reads ``<|endoftext|> s1 <|endoftext|> s2 <|endoftext|>``). Each text is
tokenized without the tokenizer's own post-processor (``add_special_tokens=False``), so a BERT
tokenizer gives ``[CLS] s1 [SEP] s2 [SEP]`` and nothing twice.

Truncation to ``max_len`` tokens (specials included) is longest-first: one token at a time is cut
from the end of the currently longest text (on a tie, from the later text) until the example fits.
It is never silent: ``encode`` returns how many examples were cut and callers report it.

Batches are right-padded with ``pad_token_id``; ``attention_mask`` is 1 on real tokens. The model
pools the last position whose mask is 1, so left padding gives the same logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ternarylm.format.tokens import special_token_ids

SEP_NAMES = ("[SEP]", "<sep>", "<|sep|>")
SPEC_VERSION = 1


@dataclass(frozen=True)
class EncodingSpec:
    text_columns: tuple[str, ...]  # the table columns read, in order (1 = sentence, 2 = sentence pair)
    max_len: int  # tokens per example, specials included
    bos_token_id: int
    sep_token_id: int
    eos_token_id: int
    pad_token_id: int
    truncation: str = "longest_first"
    padding_side: str = "right"
    pooling: str = "last_non_pad"
    version: int = SPEC_VERSION

    def __post_init__(self):
        object.__setattr__(self, "text_columns", tuple(self.text_columns))
        if len(self.text_columns) not in (1, 2):
            raise ValueError(f"a classifier reads 1 or 2 text columns, got {len(self.text_columns)}")
        if not isinstance(self.max_len, int) or self.max_len < self.n_special + len(self.text_columns):
            raise ValueError(f"max_len {self.max_len!r} is too small: the template alone takes {self.n_special} "
                             "tokens; use --max-len 16 or more")
        for name in ("bos_token_id", "sep_token_id", "eos_token_id", "pad_token_id"):
            if not isinstance(getattr(self, name), int):
                raise ValueError(f"encoding spec {name} must be a token id, got {getattr(self, name)!r}; "  # noqa: TRY004
                                 "the tokenizer needs an end-of-text token")
        if self.version > SPEC_VERSION:
            raise ValueError(f"encoding spec version {self.version} is newer than this ternarylm reads "
                             f"({SPEC_VERSION}); upgrade ternarylm")

    @property
    def pair(self) -> bool:
        return len(self.text_columns) == 2

    @property
    def n_special(self) -> int:
        return 3 if self.pair else 2

    @property
    def template(self) -> str:
        return "[bos] s1 [sep] s2 [eos]" if self.pair else "[bos] s [eos]"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["text_columns"] = list(self.text_columns)
        d["template"] = self.template
        return d

    @classmethod
    def from_dict(cls, d: dict) -> EncodingSpec:
        if not isinstance(d, dict):
            raise ValueError("the encoding spec is missing; re-run ternary-finetune / re-export the classifier")  # noqa: TRY004
        fields = set(cls.__dataclass_fields__)
        missing = sorted({"text_columns", "max_len", "bos_token_id", "sep_token_id", "eos_token_id",
                          "pad_token_id"} - set(d))
        if missing:
            raise ValueError(f"the encoding spec lacks {', '.join(missing)}; re-run ternary-finetune")
        return cls(**{k: v for k, v in d.items() if k in fields})

    @classmethod
    def for_tokenizer(cls, tokenizer, text_columns: Sequence[str], max_len: int) -> EncodingSpec:
        """The spec for ``tokenizer`` (a ``tokenizers.Tokenizer``): its bos/eos/pad, sep or eos."""
        special = special_token_ids(tokenizer)
        if special["eos"] is None:
            raise ValueError("the tokenizer has no end-of-text token (<|endoftext|>, </s>, [SEP] or <eos>); "
                             "a classifier needs one to mark where the input ends")
        sep = next((tokenizer.token_to_id(n) for n in SEP_NAMES if tokenizer.token_to_id(n) is not None),
                   special["eos"])
        return cls(text_columns=tuple(text_columns), max_len=int(max_len), bos_token_id=special["bos"],
                   sep_token_id=sep, eos_token_id=special["eos"], pad_token_id=special["pad"])


def truncate_lengths(lengths: Sequence[int], budget: int) -> list[int]:
    """Longest-first: cut the longest text (ties: the later one) until the lengths sum to ``budget``."""
    lengths = list(lengths)
    excess = sum(lengths) - budget
    while excess > 0:
        i = max(range(len(lengths)), key=lambda j: (lengths[j], j))
        second = max((n for j, n in enumerate(lengths) if j != i), default=0)
        step = max(1, min(excess, lengths[i] - second))
        lengths[i] -= step
        excess -= step
    return lengths


def encode(tokenizer, rows: Sequence[Sequence[str]], spec: EncodingSpec) -> tuple[list[list[int]], int]:
    """Token ids of each row (one string per text column) and the number of rows that were truncated."""
    n = len(spec.text_columns)
    for i, row in enumerate(rows):
        if isinstance(row, str) or len(row) != n:
            raise ValueError(f"input {i}: expected {n} text(s) ({', '.join(spec.text_columns)}), got "
                             f"{1 if isinstance(row, str) else len(row)}")
    columns = [tokenizer.encode_batch([str(row[c]) for row in rows], add_special_tokens=False)
               for c in range(n)] if rows else [[] for _ in range(n)]
    budget = spec.max_len - spec.n_special
    out, truncated = [], 0
    for i in range(len(rows)):
        parts = [columns[c][i].ids for c in range(n)]
        lengths = truncate_lengths([len(p) for p in parts], budget)
        if lengths != [len(p) for p in parts]:
            truncated += 1
        parts = [p[:k] for p, k in zip(parts, lengths)]
        ids = [spec.bos_token_id, *parts[0]]
        if spec.pair:
            ids += [spec.sep_token_id, *parts[1]]
        out.append(ids + [spec.eos_token_id])
    return out, truncated


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to the longest sequence: ``(input_ids, attention_mask)``, both int64 ``(B, T)``."""
    t = max((len(s) for s in seqs), default=0)
    ids = np.full((len(seqs), t), pad_id, np.int64)
    mask = np.zeros((len(seqs), t), np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return ids, mask


def last_token_index(attention_mask: np.ndarray) -> np.ndarray:
    """``(B,)`` index of the last position whose mask is 1 (0 for an all-zero row): the pooled token."""
    mask = np.asarray(attention_mask, np.int64)
    return (mask * np.arange(mask.shape[1], dtype=np.int64)).argmax(axis=1)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
