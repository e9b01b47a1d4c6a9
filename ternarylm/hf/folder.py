"""Reading a Hugging Face model folder (local, or a hub name for online users): config.json, the tokenizer,
safetensors weights. Every failure is an ``HFError`` with one line saying what is wrong and the fix."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

from ternarylm.data.errors import first_line

_quote = partial(first_line, with_type=False, limit=200)  # a library error's message, in one line
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
HUB_PATTERNS = ["config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
                "tokenizer*", "special_tokens_map.json", "vocab.json", "merges.txt"]


FOLDER = "a Hugging Face model folder (config.json + model.safetensors + tokenizer.json)"


class HFError(ValueError):
    """A checkpoint or folder this interop cannot take (one line: what is wrong and the fix)."""


def looks_like_hub_name(name: str) -> bool:
    """``org/model`` or ``model`` (no path syntax): what a user types for a hub download."""
    return bool(name.strip()) and name.count("/") <= 1 and not name.startswith((".", "/", "~")) and "\\" not in name


def resolve_model_folder(name: str, what: str = "--init-from") -> Path:
    """A local folder as is; a hub name downloaded (config, weights, tokenizer) into the hub cache.
    ``what`` names the option or command in the messages."""
    path = Path(name).expanduser()
    if path.is_file():
        raise HFError(f"{name} is a file; {what} takes {FOLDER} - to continue a ternarylm run use --resume")
    if path.is_dir():
        return path
    if not looks_like_hub_name(name):
        raise HFError(f"{name} does not exist; {what} takes {FOLDER} or a hub name")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=name, allow_patterns=HUB_PATTERNS))
    except Exception as e:  # noqa: BLE001 -- network, auth, unknown repo: one line for the user
        raise HFError(f"{name} is not a local folder and cannot be downloaded from the Hugging Face hub "
                      f"({_quote(e)}); offline, pass a local folder saved with save_pretrained") from None


def read_config(folder: Path) -> dict:
    """config.json as a dict; ``HFError`` when the folder is not a model folder."""
    path = folder / "config.json"
    if not path.is_file():
        raise HFError(f"{folder} is not a Hugging Face model folder (no config.json); pass a folder written by "
                      "model.save_pretrained (config.json + model.safetensors + tokenizer.json) or a ckpt.pt")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HFError(f"{path} is not readable JSON ({_quote(e)})") from None
    if not isinstance(cfg, dict):
        raise HFError(f"{path} does not hold a model configuration object")
    return cfg


def read_tokenizer(folder: Path, why: str = "--init-from trains with the model's own tokenizer"):
    """The folder's tokenizer (``tokenizers.Tokenizer``); ``why`` says in the error what needs it."""
    from ternarylm.data.errors import DataError
    from ternarylm.data.tokenizer import load_tokenizer

    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise HFError(f"{folder} has no tokenizer (tokenizer.json); {why} - save it there with "
                      "tokenizer.save_pretrained(folder)")
    try:
        return load_tokenizer(folder)
    except DataError as e:
        raise HFError(f"the tokenizer of {folder} cannot be read: {_quote(e)}") from None


def read_weights(folder: Path) -> dict:
    """Every tensor of the folder's safetensors file(s) (sharded ones through their index), as torch tensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    if (folder / "model.safetensors").is_file():
        files = [folder / "model.safetensors"]
    elif index.is_file():
        try:
            files = sorted({folder / f for f in json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise HFError(f"{index} is not a safetensors index ({_quote(e)})") from None
    else:
        files = sorted(folder.glob("*.safetensors"))
    if not files:
        bins = sorted(p.name for p in folder.glob("*.bin"))
        hint = (f" (it has {bins[0]}: re-save it with model.save_pretrained(folder), which writes safetensors)"
                if bins else "")
        raise HFError(f"{folder} has no model.safetensors{hint}; ternarylm reads safetensors weights")
    state = {}
    for f in files:
        try:
            state.update(load_file(str(f)))
        except (OSError, SafetensorError) as e:
            raise HFError(f"{f} is not a readable safetensors file ({_quote(e)})") from None
    return state


