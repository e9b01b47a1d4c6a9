import json

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from ternarylm.data import DataError, TokenCache, build_token_cache, cached_or_build
from ternarylm.data.token_cache import file_sha256


def _build(tmp_path, docs, tok, name="cache", **kw):
    return build_token_cache(docs, tok, tmp_path / name, eos_id=0, show_progress=False, **kw)


def test_build_and_memmap(tmp_path, bpe, stories):
    cache = _build(tmp_path, iter(stories[:50]), bpe)
    assert (tmp_path / "cache.bin").is_file() and (tmp_path / "cache.json").is_file()
    assert not list(tmp_path.glob("*.tmp*"))
    assert isinstance(cache.tokens, np.memmap) and cache.tokens.dtype == np.uint16
    assert cache.n_documents == 50 and cache.n_tokens == len(cache.tokens)
    expected = [i for s in stories[:50] for i in [*bpe.encode(s).ids, 0]]
    assert cache.tokens.tolist() == expected
    reopened = TokenCache.open(tmp_path / "cache.bin")
    assert reopened.fingerprint == cache.fingerprint == file_sha256(tmp_path / "cache.bin")
    assert TokenCache.open(tmp_path / "cache").n_tokens == cache.n_tokens
    meta = json.loads((tmp_path / "cache.json").read_text())
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == bpe.get_vocab_size()
    assert meta["n_tokens"] == cache.n_tokens and len(meta["tokenizer_sha256"]) == 64
    cache.verify()


def test_fingerprint_stable(tmp_path, bpe, stories):
    a = _build(tmp_path, stories[:20], bpe, "a")
    b = _build(tmp_path, stories[:20], bpe, "b")
    c = _build(tmp_path, stories[:21], bpe, "c")
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_uint32_for_large_vocab(tmp_path):
    words = [f"w{i}" for i in range(70_000)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    cache = _build(tmp_path, ["w69999 w5", "w65536"], tok)
    assert cache.tokens.dtype == np.uint32 and cache.meta["dtype"] == "uint32"
    assert cache.tokens.tolist() == [69999, 5, 0, 65536, 0]
    assert (tmp_path / "cache.bin").stat().st_size == 5 * 4


def test_failed_build_leaves_old_cache_and_no_tmp(tmp_path, bpe, stories):
    old = _build(tmp_path, stories[:5], bpe)

    def broken():
        yield stories[0]
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        _build(tmp_path, broken(), bpe)
    assert not list(tmp_path.glob("*.tmp*"))
    assert TokenCache.open(tmp_path / "cache").fingerprint == old.fingerprint


def test_bad_inputs(tmp_path, bpe):
    with pytest.raises(DataError, match="no documents"):
        _build(tmp_path, ["", "  "], bpe)
    with pytest.raises(DataError, match="outside the tokenizer's vocabulary"):
        build_token_cache(["a"], bpe, tmp_path / "x", eos_id=10**6, show_progress=False)
    assert not list(tmp_path.iterdir())


def test_open_errors(tmp_path, bpe, stories):
    with pytest.raises(DataError, match="missing or incomplete"):
        TokenCache.open(tmp_path / "nothing")
    _build(tmp_path, stories[:5], bpe)
    data = (tmp_path / "cache.bin").read_bytes()
    (tmp_path / "cache.bin").write_bytes(data[:-2])
    with pytest.raises(DataError, match="delete both files and rebuild"):
        TokenCache.open(tmp_path / "cache")
    (tmp_path / "cache.bin").write_bytes(data[:-2] + b"\xff\xff")
    with pytest.raises(DataError, match="does not match its sha256"):
        TokenCache.open(tmp_path / "cache").verify()


def test_split(tmp_path, bpe, stories):
    cache = _build(tmp_path, stories[:40], bpe)
    n = cache.n_tokens
    train, val = cache.split(0.1, seq_len=16)
    assert train == (0, val[0]) and val[1] == n and val[1] - val[0] == -(-n // 10)
    train, val = cache.split(0.0001, seq_len=16)
    assert val == (n - 17, n)  # at least one sequence of seq_len + 1
    assert cache.split(0, seq_len=16) == ((0, n), (n, n))
    with pytest.raises(DataError, match=f"corpus has {n} tokens, fewer than one sequence of {n}"):
        cache.split(0.01, seq_len=n - 1)
    with pytest.raises(DataError, match="lower --seq-len"):
        cache.split(0.5, seq_len=n // 2)
    with pytest.raises(DataError, match=r"\[0, 1\)"):
        cache.split(1.0, seq_len=8)


def test_cached_or_build_reuses(tmp_path, bpe, stories):
    def cached(docs, key):
        return cached_or_build(docs, bpe, tmp_path, key, eos_id=0, show_progress=False)

    first = cached(stories[:10], "stories:10")

    def must_not_iterate():
        raise AssertionError("documents read although the cache exists")
        yield

    again = cached(must_not_iterate(), "stories:10")
    assert again.path == first.path and again.fingerprint == first.fingerprint
    other = cached(stories[:11], "stories:11")
    assert other.path != first.path and other.meta["source"] == "stories:11"
