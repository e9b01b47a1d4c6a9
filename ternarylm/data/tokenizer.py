"""Tokenizers: train a byte-level BPE, or load one from a file, a folder or the Hugging Face hub.

Everything is a ``tokenizers.Tokenizer`` (its JSON goes into ``ckpt.pt`` and the export folder),
so a device needs only the ``tokenizers`` package. ``transformers`` is imported only to convert a
folder that has no ``tokenizer.json``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from ternarylm.data.errors import DataError, first_line

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
SPECIAL_TOKENS = (EOS_TOKEN, PAD_TOKEN)  # ids 0 and 1 of a trained tokenizer


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2,
                        show_progress: bool = False) -> Tokenizer:
    """Byte-level BPE (GPT-2 style: any text round-trips), ``<|endoftext|>`` 0 and ``<|pad|>`` 1.

    The result may be smaller than ``vocab_size`` when the texts hold fewer frequent pairs: size
    the model from ``tok.get_vocab_size()``.
    """
    minimum = 256 + len(SPECIAL_TOKENS)
    if vocab_size < minimum:
        raise DataError(f"vocab size {vocab_size} is too small for byte-level BPE; "
                        f"use at least {minimum}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=list(SPECIAL_TOKENS), show_progress=show_progress,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def load_tokenizer(path_or_name: str | Path) -> Tokenizer:
    """From a ``tokenizer.json`` file; a folder with ``tokenizer.json``, or ``vocab.json`` +
    ``merges.txt``, or anything ``transformers.AutoTokenizer`` reads; or a hub name (``gpt2``).
    Padding and truncation are turned off (see ``without_padding``)."""
    path = Path(path_or_name).expanduser()
    name = str(path_or_name)
    if path.is_file():
        tok = _from_file(path)
    elif (path / "tokenizer.json").is_file():
        tok = _from_file(path / "tokenizer.json")
    elif path.is_dir():
        tok = _from_folder(path)
    elif name.startswith((".", "/", "~")) or name.endswith(".json") or "\\" in name:
        raise DataError(f"tokenizer path {name} does not exist; "
                        "pass a tokenizer.json file or a folder holding one")
    else:
        tok = _from_hub(name)
    return without_padding(tok)


def without_padding(tok: Tokenizer) -> Tokenizer:
    """``tok`` with padding and truncation off (a copy if they were on): some saved tokenizers,
    BERT's among them, pad every text to 128 and cut at 512, which would corrupt documents."""
    if tok.padding is None and tok.truncation is None:
        return tok
    tok = Tokenizer.from_str(tok.to_str())
    tok.no_padding()
    tok.no_truncation()
    return tok


def _from_file(path: Path) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001 -- tokenizers raises a bare Exception
        raise DataError(f"{path} is not a Hugging Face tokenizers JSON file ({first_line(e)}); "
                        "pass a tokenizer.json saved by tokenizers or transformers") from None


def _from_folder(folder: Path) -> Tokenizer:
    """Convert with transformers; without it, build byte-level BPE from vocab.json + merges.txt."""
    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    has_bpe_files = vocab.is_file() and merges.is_file()
    try:
        from transformers import AutoTokenizer
    except ImportError:
        AutoTokenizer = None
    if AutoTokenizer is not None:
        try:
            # Not GPT2TokenizerFast(vocab_file=...): in transformers 5 that builds an empty one.
            return AutoTokenizer.from_pretrained(str(folder)).backend_tokenizer
        except Exception as e:  # noqa: BLE001 -- transformers' loaders raise many types
            if not has_bpe_files:
                raise DataError(f"folder {folder} has no tokenizer.json (or vocab.json + "
                                "merges.txt) and transformers cannot convert it "
                                f"({first_line(e)}); save one with "
                                "tokenizer.save_pretrained(folder)") from None
    if has_bpe_files:
        return _byte_level_bpe(vocab, merges)
    raise DataError(f"folder {folder} has no tokenizer.json (or vocab.json + merges.txt); "
                    "save one with tokenizer.save_pretrained(folder)")


def _byte_level_bpe(vocab: Path, merges: Path) -> Tokenizer:
    """GPT-2's pipeline around a vocab.json + merges.txt pair."""
    tok = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    if tok.token_to_id(EOS_TOKEN) is not None:
        tok.add_special_tokens([AddedToken(EOS_TOKEN, special=True, normalized=False)])
    return tok


def _from_hub(name: str) -> Tokenizer:
    try:
        return Tokenizer.from_pretrained(name)
    except Exception as e:  # noqa: BLE001 -- network, auth or unknown name: one line for the user
        raise DataError(f"cannot get tokenizer {name!r} from the Hugging Face hub "
                        f"({first_line(e)}); offline, pass a local folder with tokenizer.json "
                        "or vocab.json + merges.txt") from None


def tokenizer_to_json(tok: Tokenizer) -> str:
    """The tokenizers JSON stored in ``ckpt.pt`` (``tokenizer_json``) and the export folder."""
    return tok.to_str()


def tokenizer_from_json(s: str) -> Tokenizer:
    try:
        return Tokenizer.from_str(s)
    except Exception as e:  # noqa: BLE001 -- tokenizers raises a bare Exception
        raise DataError(f"stored tokenizer JSON is unreadable ({first_line(e)}); "
                        "the checkpoint may be corrupt") from None


def tokenizer_sha256(tok: Tokenizer) -> str:
    """Identity of a tokenizer, for token-cache keys: sha256 of its JSON."""
    return hashlib.sha256(tok.to_str().encode("utf-8")).hexdigest()
