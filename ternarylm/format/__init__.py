"""The export-folder contract, in one torch-free package that the writer (``ternarylm.export``) and the
readers (``ternarylm.runtime_py``, ``ternarylm.devices``) share, so they cannot disagree about it.
It imports nothing of ternarylm outside itself (numpy, onnx, click and tokenizers-compatible objects only).

- ``trits.py``       absmean ternarisation and the 2bit / base3 trit packings
- ``codecs.py``      MatMulNBits encode/decode, LSB-first code packing (int4 nibbles), symmetric block quantisation
- ``entries.py``     config.json's vocabulary: model kinds, weight-map entry kinds, ``is_ternary_entry``
- ``folder.py``      the folder itself: manifest, format version, atomic write, ``ModelFolder``, config-vs-graph check
- ``architecture.py`` config.json's ``architecture`` as a checked ``ModelConfig`` (every reader sizes from it)
- ``targets.py``     the export-target registry (lowering, default precisions, kinds, verify tolerance)
- ``compare.py``     the logits metric every check uses (relative max difference, argmax agreement)
- ``hashing.py``     ``sha256_file`` (manifests, checkpoints, token caches, device plans)
- ``onnx_names.py``  opset and operator domains of the graph
- ``custom_op.py``   ``ai.ternarylm::TernaryMatMul``: schema and function body
- ``lowering.py``    graph rewrites of the canonical model for a runtime (exporter and device tuner)
- ``relower.py``     ``lower``: re-lowering an existing export to other MatMulNBits settings
- ``tokens.py``      which tokens are bos / eos / pad
- ``encoding.py``    a classifier's text -> token ids (its ``EncodingSpec`` is stored in config.json)
- ``cli_errors.py``  ``user_errors``: bad input -> one line, exit 1, for every command
- ``cli_table.py``   ``print_table`` for command output
"""
