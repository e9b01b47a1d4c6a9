"""The in-place KV cache (one past/present buffer per layer, IO binding) against the growing cache and
the NumPy runtime, on real exports.

Tolerances: in-place vs growing on the same session runs the same kernels on the same numbers, so
they must agree to float32 rounding (1e-6 of the largest logit). Against the NumPy runtime the ``fp32``
twin (no activation quantisation, dense weights) agrees to 1e-4 (summation order in BLAS vs MLAS).
"""

from __future__ import annotations

import numpy as np
import pytest
from ternarylm.runtime_py import generate, load_numpy, load_ort

SAME_KERNELS = 1e-6
FP32_VS_NUMPY = 1e-4


@pytest.fixture(scope="module")
def ids(prompt_ids):
    return np.array([prompt_ids], np.int64)


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def _steps(engine, prompt: np.ndarray, n: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Prefill ``prompt`` (B, T), then feed each row's argmax ``n`` times: logits per step and the tokens."""
    engine.reset(prompt.shape[0])
    logits = [engine.forward(prompt, last_only=True)[:, -1]]
    tokens = []
    for _ in range(n):
        nxt = logits[-1].argmax(-1)[:, None]
        tokens.append(nxt)
        logits.append(engine.forward(nxt, last_only=True)[:, -1])
    return logits, np.concatenate(tokens, axis=1)


@pytest.mark.parametrize("name", ["fp32", "ort-cpu"])
def test_in_place_equals_growing_through_buffer_growth(name, export_dir, ids):
    folder = export_dir(name)
    in_place = load_ort(folder, max_length=8)  # the buffer grows 8 -> 16 -> 32 -> 64 during the run
    growing = load_ort(folder, kv_cache="growing")
    assert in_place.kv_cache == "in-place" and growing.kv_cache == "growing"
    got, got_tokens = _steps(in_place, ids, 40)
    ref, ref_tokens = _steps(growing, ids, 40)
    assert np.array_equal(got_tokens, ref_tokens)
    for a, b in zip(got, ref):
        assert rel(a, b) < SAME_KERNELS
    assert in_place.past_length == ids.shape[1] + 40 and in_place._arrays[0].shape[2] == 64


def test_in_place_greedy_equals_numpy_batch_1_and_2(export_dir, prompt_ids):
    folder = export_dir("fp32")
    ort_engine, np_engine = load_ort(folder), load_numpy(folder)
    got, _ = generate(ort_engine, prompt_ids, 24)
    want, _ = generate(np_engine, prompt_ids, 24)
    assert got == want and ort_engine.kv_cache == "in-place"
    batch = np.array([prompt_ids, prompt_ids[::-1]], np.int64)  # two different rows, same length
    got_logits, got_tokens = _steps(ort_engine, batch, 16)
    want_logits, want_tokens = _steps(np_engine, batch, 16)
    assert np.array_equal(got_tokens, want_tokens)
    assert max(rel(a, b) for a, b in zip(got_logits, want_logits)) < FP32_VS_NUMPY


def test_right_padded_batch_rows_equal_their_own_runs(export_dir, prompt_ids):
    engine = load_ort(export_dir("fp32"))
    short = prompt_ids[:-4]
    padded = np.array([prompt_ids, short + [0] * 4], np.int64)
    mask = np.array([[1] * len(prompt_ids), [1] * len(short) + [0] * 4], np.int64)
    both = engine.forward(padded, attention_mask=mask)
    alone = [load_ort(export_dir("fp32")).forward(np.array([row], np.int64))[0] for row in (prompt_ids, short)]
    assert rel(both[0], alone[0]) < FP32_VS_NUMPY
    assert rel(both[1, :len(short)], alone[1]) < FP32_VS_NUMPY
    # one decode step: each row continues from its own last token
    nxt = np.array([[alone[0][-1].argmax()], [alone[1][-1].argmax()]], np.int64)
    step = engine.forward(nxt, attention_mask=np.concatenate([mask, np.ones((2, 1), np.int64)], axis=1))
    for row, prompt in enumerate((prompt_ids, short)):
        solo = load_ort(export_dir("fp32"))
        solo.forward(np.array([prompt], np.int64))
        assert rel(step[row], solo.forward(nxt[row:row + 1])[0]) < FP32_VS_NUMPY


def test_left_padded_batch_is_refused_in_one_line(export_dir, prompt_ids):
    engine = load_ort(export_dir("ort-cpu"))
    padded = np.array([prompt_ids, [0] * 4 + prompt_ids[:-4]], np.int64)
    mask = np.array([[1] * len(prompt_ids), [0] * 4 + [1] * (len(prompt_ids) - 4)], np.int64)
    with pytest.raises(ValueError, match="right padding") as err:
        engine.forward(padded, attention_mask=mask)
    assert "\n" not in str(err.value)


def test_portable_graph_keeps_the_growing_cache(export_dir, ids):
    engine = load_ort(export_dir("portable-2bit"))
    assert engine.kv_cache == "growing"
    with pytest.raises(ValueError, match="max_length 100000 exceeds the model's context"):
        load_ort(export_dir("fp32"), max_length=100_000)


def test_genai_config_shares_the_buffer_on_fused_graphs(export_dir, trained, tmp_path):
    """onnxruntime-genai gets the same in-place cache (``past_present_share_buffer``) where the graph
    allows it; ``--max-length`` sizes it and is refused beyond the context."""
    import json

    from clitools import cli

    def genai(folder):
        return json.loads((folder / "genai_config.json").read_text())["search"]

    assert genai(export_dir("ort-cpu"))["past_present_share_buffer"] is True
    assert genai(export_dir("fp32"))["past_present_share_buffer"] is True
    assert genai(export_dir("portable-2bit"))["past_present_share_buffer"] is False
    _, ckpt = trained
    context = json.loads((export_dir("ort-cpu") / "config.json").read_text())["architecture"]["max_position_embeddings"]
    cli("ternarylm.export.cli", "onnx", ckpt, "--out", tmp_path / "short", "--max-length", "48")
    assert genai(tmp_path / "short")["max_length"] == 48
    proc = cli("ternarylm.export.cli", "onnx", ckpt, "--out", tmp_path / "long", "--max-length", str(context + 1),
               check=False)
    assert proc.returncode == 1 and f"context of {context}" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "long").exists()


@pytest.mark.parametrize("name", ["ort-cpu", "fp32", "portable-2bit"])
def test_logits_to_keep_runs_the_head_for_the_last_positions(name, export_dir, ids):
    """The optional input ``logits_to_keep``: a client that leaves it out (plain onnxruntime, genai) gets every
    position's logits; 1 gives the last position's, equal to the full run's; a prefill through the engine
    (``last_only``) uses it and the decode that follows is unchanged."""
    import onnxruntime as ort

    folder = export_dir(name)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert "logits_to_keep" in {i.name for i in session.get_overridable_initializers()}
    assert "logits_to_keep" not in {i.name for i in session.get_inputs()}  # optional: nobody must feed it
    t = ids.shape[1]
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": np.arange(t)[None]}
    for i in session.get_inputs():
        if i.name.startswith("past_key_values"):
            shape = [1, i.shape[1] if isinstance(i.shape[1], int) else 2, 0, i.shape[3] if isinstance(i.shape[3], int) else 16]
            feed[i.name] = np.zeros(shape, np.float16 if "16" in i.type else np.float32)
    full = session.run(["logits"], feed)[0]
    last = session.run(["logits"], {**feed, "logits_to_keep": np.array(1, np.int64)})[0]
    two = session.run(["logits"], {**feed, "logits_to_keep": np.array(2, np.int64)})[0]
    assert full.shape[1] == t and last.shape[1] == 1 and two.shape[1] == 2
    assert rel(last[:, 0], full[:, -1]) < SAME_KERNELS and rel(two, full[:, -2:]) < SAME_KERNELS

    engine = load_ort(folder)
    engine.reset()
    everything = engine.forward(ids)
    step_full = engine.forward(everything[:, -1:].argmax(-1))
    engine.reset()
    only_last = engine.forward(ids, last_only=True)
    step_kept = engine.forward(only_last.argmax(-1))
    assert only_last.shape[1] == 1 and rel(only_last[:, 0], everything[:, -1]) < SAME_KERNELS
    assert rel(step_kept, step_full) < SAME_KERNELS
    # a later call that wants every position gets them all (the in-place binding does not keep the last 1)
    engine.reset()
    engine.forward(ids[:, :3], last_only=True)
    rest = engine.forward(ids[:, 3:])
    assert rest.shape[1] == t - 3 and rel(rest, everything[:, 3:]) < SAME_KERNELS


@pytest.mark.parametrize("name", ["fp32", "ort-cpu"])
def test_chunked_prefill_equals_one_call(name, export_dir, ids):
    """A last-only prompt fed in slices (``prefill_chunk``) gives the one-call prefill's next-token logits and
    cache: the decode steps after it agree too. A prompt beyond the context is refused before any slice runs."""
    folder = export_dir(name)
    whole, sliced = load_ort(folder), load_ort(folder)
    whole.prefill_chunk, sliced.prefill_chunk = 0, 2  # the fixture prompt is short; 2 makes several slices
    assert ids.shape[1] > 4
    ref, ref_tokens = _steps(whole, ids, 8)
    calls, real = [], sliced.session
    sliced.session = type("Counting", (), {"__getattr__": lambda _, a: getattr(real, a),
                                           "run_with_iobinding": lambda _, b: calls.append(1) or real.run_with_iobinding(b)})()
    got, got_tokens = _steps(sliced, ids, 8)
    assert len(calls) == -(-ids.shape[1] // 2) + 8  # ceil(T / 2) prefill slices, then one call per step
    assert sliced.past_length == whole.past_length == ids.shape[1] + 8
    assert np.array_equal(got_tokens, ref_tokens)
    for a, b in zip(got, ref):
        assert rel(a, b) < FP32_VS_NUMPY  # attention over a cache vs within one call: another summation order
    sliced.reset()
    too_long = np.zeros((1, sliced.context + 1), np.int64)
    with pytest.raises(ValueError, match="exceed the model's context"):
        sliced.forward(too_long, last_only=True)
    assert sliced.past_length == 0
