"""Run an export folder without torch: a pure-NumPy reference runtime and an onnxruntime engine with
the same interface, one sampler and one ``generate`` loop for both, and the ``ternary-run`` CLI.

    from ternarylm.runtime_py import load_numpy, load_ort, load_tokenizer, generate
    engine = load_numpy("export/")            # or load_ort("export/", threads=2)
    tok = load_tokenizer("export/")
    ids, stats = generate(engine, tok.encode("Once upon a time").ids, max_new_tokens=32)
    print(tok.decode(ids), stats.decode_tokens_per_s)

    clf = load_classifier("export-mrpc/", engine="numpy")   # a sequence-classification export
    probs = clf.predict([("He said so.", "So he said.")])   # (N, num_labels); clf.labels names them

Engines: ``forward(input_ids (B, T), position_ids=None, attention_mask=None, last_only=False) ->
logits (B, T, V)``, appending to their KV cache; ``reset(batch_size=1)``; ``past_length``; ``config``.
Importing this package imports numpy and onnx only (onnxruntime when an OrtDecoder is built, tokenizers
when a tokenizer is loaded); never torch or transformers.
"""

from __future__ import annotations

from ternarylm.runtime_py.generate import ContextError, GenerationStats, generate
from ternarylm.runtime_py.loader import (check_weights, load_classifier, load_config, load_engine, load_numpy,
                                         load_ort, load_tokenizer, open_folder)
from ternarylm.format.architecture import ModelConfig
from ternarylm.onnxrt.decoder import OrtDecoder
from ternarylm.runtime_py.model import NumpyDecoder
from ternarylm.runtime_py.sampling import SamplingConfig, sample_next

__all__ = ["ContextError", "GenerationStats", "ModelConfig", "NumpyDecoder", "OrtDecoder", "SamplingConfig",
           "check_weights", "generate", "load_classifier", "load_config", "load_engine", "load_numpy", "load_ort",
           "load_tokenizer", "open_folder", "sample_next"]
