"""Hugging Face interop, one module per direction (see docs/HF.md):

- ``out``: ``export_hf`` (``ternary-export hf``) writes our checkpoint as a transformers folder;
- ``llama_init``: ``load_llama_init`` (``ternary-train --init-from``) starts a ternary run from a
  full-precision Llama folder;
- ``ternary_in``: ``checkpoint_from_hf`` reads a ternary Hugging Face folder (BitNet b1.58 packed or
  bf16 master weights, transformers' BitNet-quantised Llama, our own ``save_pretrained``) as a checkpoint
  dict, so ``ternary-export onnx|gguf|verify`` take the folder where they take ``ckpt.pt``;
- ``folder``: reading config.json, tokenizer and safetensors, shared by the three.
"""

from ternarylm.hf.folder import HFError
from ternarylm.hf.llama_init import InitSource, llama_architecture, load_llama_init
from ternarylm.hf.out import HFExport, export_hf

__all__ = ["HFError", "HFExport", "InitSource", "export_hf", "llama_architecture", "load_llama_init"]
