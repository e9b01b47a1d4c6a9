import sys

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

import ternarylm.data.tokenizer as tokmod
from ternarylm.data import (
    DataError,
    load_tokenizer,
    special_token_ids,
    tokenizer_from_json,
    tokenizer_sha256,
    tokenizer_to_json,
    train_bpe_tokenizer,
)

from .conftest import SHARED

TEXT = 'Once upon a time, "héllo" 🙂 naïve   spaces\n\tand tabs <|endoftext|>'


def test_bpe_round_trips_and_specials(bpe, stories):
    assert bpe.token_to_id("<|endoftext|>") == 0 and bpe.token_to_id("<|pad|>") == 1
    assert bpe.get_vocab_size() <= 400
    for text in stories[:20]:
        assert bpe.decode(bpe.encode(text).ids) == text
    ids = bpe.encode(TEXT.removesuffix(" <|endoftext|>")).ids
    assert bpe.decode(ids) == TEXT.removesuffix(" <|endoftext|>")  # unseen bytes still round-trip
    assert bpe.encode("<|endoftext|>").ids == [0]
    assert len(bpe.encode(stories[0]).ids) < 0.6 * len(stories[0])  # it learned merges
    assert special_token_ids(bpe) == {"bos": 0, "eos": 0, "pad": 1}


def test_training_is_deterministic(stories, bpe):
    assert tokenizer_sha256(train_bpe_tokenizer(stories, vocab_size=400)) == tokenizer_sha256(bpe)


def test_vocab_too_small():
    with pytest.raises(DataError, match="at least 258"):
        train_bpe_tokenizer(["abc"], vocab_size=100)


def test_load_file_and_folder(tmp_path, bpe):
    bpe.save(str(tmp_path / "tokenizer.json"))
    for source in (tmp_path / "tokenizer.json", tmp_path, str(tmp_path)):
        assert load_tokenizer(source).encode(TEXT).ids == bpe.encode(TEXT).ids


@pytest.mark.parametrize("hide_transformers", [False, True])
def test_load_vocab_and_merges_folder(tmp_path, bpe, monkeypatch, hide_transformers):
    if hide_transformers:
        monkeypatch.setitem(sys.modules, "transformers", None)
    bpe.model.save(str(tmp_path))  # vocab.json + merges.txt, no tokenizer.json
    tok = load_tokenizer(tmp_path)
    text = TEXT.removesuffix(" <|endoftext|>")
    assert tok.encode(text).ids == bpe.encode(text).ids
    assert tok.decode(tok.encode(text).ids) == text


def test_load_turns_off_padding_and_truncation(tmp_path, bpe):
    padded = Tokenizer.from_str(bpe.to_str())
    padded.enable_padding(pad_id=1, pad_token="<|pad|>", length=64)
    padded.enable_truncation(4)
    padded.save(str(tmp_path / "tokenizer.json"))
    tok = load_tokenizer(tmp_path)
    assert tok.padding is None and tok.truncation is None
    assert tok.encode(TEXT).ids == bpe.encode(TEXT).ids


def test_load_errors(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="does not exist"):
        load_tokenizer(str(tmp_path / "missing"))
    with pytest.raises(DataError, match="has no tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DataError, match="not a Hugging Face tokenizers JSON"):
        load_tokenizer(tmp_path / "broken.json")


def test_hub_failure_suggests_local_folder(monkeypatch):
    class Offline:
        @staticmethod
        def from_pretrained(name):
            raise OSError("Name or service not known\nmore")

    monkeypatch.setattr(tokmod, "Tokenizer", Offline)
    with pytest.raises(DataError) as e:
        load_tokenizer("some-org/some-tokenizer")
    assert "some-org/some-tokenizer" in str(e.value) and "local folder" in str(e.value)
    assert "\n" not in str(e.value)


def test_json_round_trip(bpe):
    s = tokenizer_to_json(bpe)
    assert tokenizer_from_json(s).encode(TEXT).ids == bpe.encode(TEXT).ids
    with pytest.raises(DataError, match="unreadable"):
        tokenizer_from_json("{")


def _word_level(words):
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=words[-1]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


def test_special_token_names():
    bert_like = {"bos": 1, "eos": 2, "pad": 0}
    assert special_token_ids(_word_level(["[PAD]", "[CLS]", "[SEP]", "a"])) == bert_like
    assert special_token_ids(_word_level(["<pad>", "<s>", "</s>", "a"])) == bert_like
    assert special_token_ids(_word_level(["a", "<eos>"])) == {"bos": 1, "eos": 1, "pad": 1}
    assert special_token_ids(_word_level(["a", "b"])) == {"bos": None, "eos": None, "pad": None}


@pytest.mark.skipif(not (SHARED / "tokenizers").is_dir(), reason="shared/tokenizers not present")
def test_shared_tokenizers():
    bert = load_tokenizer(SHARED / "tokenizers" / "bert-base-uncased")
    assert special_token_ids(bert) == {"bos": 101, "eos": 102, "pad": 0}
    assert bert.encode("Hello world").tokens == ["[CLS]", "hello", "world", "[SEP]"]
    gpt2 = load_tokenizer(SHARED / "tokenizers" / "gpt2")
    assert gpt2.get_vocab_size() == 50257
    assert special_token_ids(gpt2) == {"bos": 50256, "eos": 50256, "pad": 50256}
