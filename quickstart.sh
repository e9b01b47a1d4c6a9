#!/usr/bin/env bash
# The README quickstart: train the `small` ternary preset on the built-in synthetic stories (CPU, a few
# minutes), evaluate it, sample from it, export it for onnxruntime with its fp32 twin, run the export
# and profile it against the twin. Everything lands in runs/ and exports/ (both git-ignored).
set -euo pipefail
STEPS="${STEPS:-300}"
ternary-train --preset small --out runs/small --max-steps "$STEPS" --eval-every 100 --overwrite
ternary-eval runs/small/ckpt.pt --json runs/small/eval.json
ternary-generate runs/small/ckpt.pt --prompt "Once upon a time" --max-new-tokens 60
ternary-export onnx runs/small/ckpt.pt --out exports/small --target ort-cpu --with-baseline --force
ternary-export verify exports/small --ckpt runs/small/ckpt.pt
ternary-run exports/small --prompt "Once upon a time" --max-new-tokens 60
ternary-run exports/small --prompt "Once upon a time" --max-new-tokens 60 --engine numpy
if python -c "import ternarylm.devices.cli" 2>/dev/null; then
  ternary-profile --device cpu --model exports/small --baseline exports/small-fp32 --out runs/small/profile
fi
