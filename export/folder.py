"""Writer-side files of the export folder that no ternarylm reader needs: genai_config.json (so
onnxruntime-genai can load the folder) and tokenizer_config.json (so transformers can). The folder
contract itself (manifest, format version, atomic write) is ``ternarylm.format.folder``."""

from __future__ import annotations


def genai_config(arch: dict, special: dict, dtype_is_fp16: bool, providers: tuple, shared_kv_buffer: bool = False,
                 max_length: int | None = None) -> dict:
    """onnxruntime-genai's config. ``shared_kv_buffer`` (the fused graph): past and present share one
    ``max_length``-long buffer (``past_present_share_buffer``), so decoding does not copy the cache each
    step; ``max_length`` (prompt + generated tokens, default the context) sizes that buffer."""
    context = arch["max_position_embeddings"]
    max_length = max_length or context
    if not 0 < max_length <= context:
        raise ValueError(f"--max-length must be between 1 and the model's context of {context}, got {max_length}")
    # sdpa_kernel=1 (flash attention): ORT's default cuDNN attention re-plans at every decode step (~35x slower).
    provider_options = [{"cuda": {"sdpa_kernel": "1"}}] if "CUDAExecutionProvider" in providers else []
    eos = special.get("eos")
    return {
        "model": {
            "bos_token_id": special.get("bos") if special.get("bos") is not None else eos,
            "context_length": arch["max_position_embeddings"],
            "eos_token_id": eos,
            "pad_token_id": special.get("pad") if special.get("pad") is not None else eos,
            "type": "llama",
            "vocab_size": arch["vocab_size"],
            "decoder": {
                "filename": "model.onnx",
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": provider_options},
                "head_size": arch["head_dim"],
                "hidden_size": arch["hidden_size"],
                "num_attention_heads": arch["num_attention_heads"],
                "num_hidden_layers": arch["num_hidden_layers"],
                "num_key_value_heads": arch["num_key_value_heads"],
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                           "position_ids": "position_ids", "past_key_names": "past_key_values.%d.key",
                           "past_value_names": "past_key_values.%d.value"},
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
            },
        },
        "search": {"diversity_penalty": 0.0, "do_sample": False, "early_stopping": True, "length_penalty": 1.0,
                   "max_length": max_length, "min_length": 0, "no_repeat_ngram_size": 0,
                   "num_beams": 1, "num_return_sequences": 1, "past_present_share_buffer": bool(shared_kv_buffer),
                   "repetition_penalty": 1.0, "temperature": 1.0, "top_k": 1, "top_p": 1.0},
    }
