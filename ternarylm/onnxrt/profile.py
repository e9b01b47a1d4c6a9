"""Where a decoded token's time goes: onnxruntime's own profiler over the ``replay`` workload, summed per
operator type (the LM head's MatMul apart from the decoder's, since it is often the largest single node).

It runs on a second session with profiling on, after the timed runs, so it never perturbs them; the
profiler adds its own overhead, so these figures are shares and relative sizes, not the decode speed.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter

import numpy as np

from ternarylm.onnxrt.decoder import OrtDecoder, replay


def _node_key(event: dict) -> str:
    op = event["args"]["op_name"]
    return f"{op} (lm_head)" if "lm_head" in event["name"] else op


def decode_op_profile(settings, config, tokens, prompt_len: int, decode_tokens: int, **decoder_options) -> dict:
    """``{"ms_per_token": {operator: ms}, "run_ms": profiled ms per decode call, "tokens": n}`` for the decode
    steps of one replay (the prefill is left out)."""
    with tempfile.TemporaryDirectory(prefix="ternarylm-prof-") as tmp:
        session = settings.create_session(profile_prefix=os.path.join(tmp, "ort"))
        # the prompt in one call (no slices), so the first model_run is the whole prefill
        decoder = OrtDecoder(session, config, **{**decoder_options, "prefill_chunk": 0})
        replay(decoder, tokens, prompt_len, decode_tokens, keep_logits=False)
        with open(session.end_profiling()) as f:
            events = json.load(f)
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    if len(runs) < 2:
        return {"ms_per_token": {}, "run_ms": None, "tokens": 0}
    prefill_end = runs[0]["ts"] + runs[0]["dur"]
    totals = Counter()
    for event in events:
        if (event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] > prefill_end
                and "op_name" in event.get("args", {})):
            totals[_node_key(event)] += event["dur"]
    steps = len(runs) - 1
    return {"ms_per_token": {op: us / steps / 1000 for op, us in totals.most_common()},
            "run_ms": float(np.mean([r["dur"] for r in runs[1:]])) / 1000, "tokens": steps}
