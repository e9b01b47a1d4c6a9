"""Fine-tuning TernaryLM checkpoints for sentence and sentence-pair classification (``ternary-finetune``).

One job per module:

- ``encoding``  how text becomes token ids (``[bos] s1 [sep] s2 [eos]``, truncation, padding); torch-free,
                shared with the runtimes (``ternarylm.runtime_py.classifier``)
- ``tasks``     MRPC's TSV files and generic TSV/CSV tables -> labelled examples (clear one-line errors)
- ``hub``       ``--dataset glue/mrpc`` through Hugging Face ``datasets`` (online only)
- ``metrics``   accuracy, F1 (binary: positive class, as GLUE MRPC; macro for more classes), baselines
- ``trainer``   the fine-tuning loop: AdamW, warmup + linear decay, early stopping on dev, best checkpoint
- ``plots``     the dev-curve PNG

Importing this package (and ``encoding``, ``tasks``, ``metrics``) needs no torch.
"""

from __future__ import annotations


class FinetuneError(ValueError):
    """A user mistake in the data or options of a fine-tuning run (one line: what is wrong and the fix)."""
