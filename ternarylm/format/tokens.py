"""Which tokens of a tokenizer are bos / eos / pad: found by conventional names, first match wins.

The export folder records these ids (config.json, genai_config.json, a classifier's encoding spec),
and the runtimes encode with them, so training, export and the devices use this one rule. Example:
GPT-2's tokenizer has only ``<|endoftext|>`` (50256) -> ``{"bos": 50256, "eos": 50256, "pad": 50256}``;
a BERT tokenizer -> ``{"bos": 101 ([CLS]), "eos": 102 ([SEP]), "pad": 0 ([PAD])}``.
"""

from __future__ import annotations

EOS_NAMES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "[SEP]", "<eos>")
PAD_NAMES = ("<|pad|>", "[PAD]", "<pad>")
BOS_NAMES = ("[CLS]", "<s>", "<bos>", "<|begin_of_text|>")


def special_token_ids(tok) -> dict[str, int | None]:
    """``{"bos", "eos", "pad"}`` ids of a ``tokenizers.Tokenizer`` found by conventional names; pad
    and bos fall back to eos."""
    eos = _first_id(tok, EOS_NAMES)
    pad = _first_id(tok, PAD_NAMES)
    bos = _first_id(tok, BOS_NAMES)
    return {"bos": eos if bos is None else bos, "eos": eos, "pad": eos if pad is None else pad}


def _first_id(tok, names: tuple[str, ...]) -> int | None:
    for name in names:
        i = tok.token_to_id(name)
        if i is not None:
            return i
    return None


def tokenizer_config(tokenizer_json: str, special: dict, context: int) -> dict:
    """A transformers-style tokenizer_config.json naming the special tokens by their strings."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json)

    def token(i):
        return tok.id_to_token(i) if i is not None else None

    return {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": context,
            "bos_token": token(special.get("bos")), "eos_token": token(special.get("eos")),
            "pad_token": token(special.get("pad")), "unk_token": None, "clean_up_tokenization_spaces": False}
