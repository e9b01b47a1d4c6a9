"""``ternary-export``: ``onnx`` writes a deployable folder, ``verify`` checks it against PyTorch,
``gguf`` writes one GGUF file for llama.cpp, ``hf`` a Hugging Face transformers folder."""

from __future__ import annotations

import click
from ternarylm.export.verify import DEFAULT_MAX_KLD
from ternarylm.format.targets import TARGETS

from ternarylm.format.cli_errors import user_errors

EXAMPLES = """
\b
Examples:
  ternary-export onnx runs/small/ckpt.pt                          # -> exports/small-ort-cpu
  ternary-export onnx runs/small/ckpt.pt --target portable --packing base3 --out exports/p
  ternary-export onnx runs/small/ckpt.pt --with-baseline           # also the fp32 twin beside it
  ternary-export onnx runs/small/ckpt.pt --keep-precision '*.down_proj=8'   # mixed precision at export
  ternary-export verify exports/small-ort-cpu --ckpt runs/small/ckpt.pt
  ternary-export gguf runs/132m/ckpt.pt --type tq2_0 --out exports/132m-tq2_0.gguf   # for llama.cpp
  ternary-export hf runs/small/ckpt.pt --out hf/small       # AutoModelForCausalLM.from_pretrained("hf/small")
  ternary-export onnx path/to/bitnet-b1.58-2B-4T --out exports/bitnet   # a Hugging Face BitNet folder
  ternary-export verify exports/bitnet --ckpt path/to/bitnet-b1.58-2B-4T  # against transformers' forward
"""


@click.group(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Export TernaryLM checkpoints to ONNX (and verify the result) or to GGUF for llama.cpp."""


@main.command("onnx", epilog=EXAMPLES)
@click.argument("checkpoint")
@click.option("--out", "out_dir", help="Output folder (default: exports/<run>-<target>).")
@click.option("--target", type=click.Choice(list(TARGETS)), default="ort-cpu", show_default=True,
              help="; ".join(f"{t.name}: {t.description}" for t in TARGETS.values()))
@click.option("--packing", type=click.Choice(["2bit", "base3"]), default="2bit", show_default=True,
              help="Packing of the canonical TernaryMatMul weights (portable target).")
@click.option("--embedding", type=click.Choice(["auto", "float", "int8", "int4"]), default="auto", show_default=True,
              help="Embedding precision. auto: the smallest of the target's candidates whose export passes "
                   "verify on this checkpoint (the choice and the candidates tried go into config.json).")
@click.option("--lm-head", type=click.Choice(["auto", "float", "int8", "int4"]), default="auto", show_default=True,
              help="LM head precision (auto: as for --embedding; a classifier's score head stays float).")
@click.option("--block-size", type=int, help="MatMulNBits block size (16/32/64/128/256).")
@click.option("--keep-precision", "keep_precision", multiple=True, metavar="PATTERN=BITS",
              help="Post-training mixed precision (repeatable): decoder linears matching PATTERN (full names, "
                   "e.g. 'model.layers.0.*', '*.down_proj') are exported at BITS = 4 or 8 (their latent weights "
                   "quantised here: absmax per 32 inputs, 8-bit activations) or 16 (full precision, no "
                   "quantisation). Overrides the checkpoint's own plan (ternary-train --keep-precision) for "
                   "the layers it matches; that plan applies elsewhere.")
@click.option("--max-length", type=click.IntRange(min=1),
              help="Prompt + generated tokens onnxruntime-genai allows (genai_config.json); its in-place KV "
                   "buffer has this length. Default: the model's context.")
@click.option("--with-baseline", is_flag=True, help="Also write the fp32 twin to <out>-fp32.")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@user_errors
def export_onnx(checkpoint, out_dir, target, packing, embedding, lm_head, block_size, keep_precision,
                max_length, with_baseline, force):
    """Export CHECKPOINT to a deployable ONNX folder. CHECKPOINT: a ckpt.pt from ternary-train, or a ternary
    Hugging Face model folder (BitNet b1.58 packed or bf16, a BitNet-quantised Llama, a TernaryLM
    save_pretrained folder; a hub name when online). See docs/HF.md."""
    from pathlib import Path

    from ternarylm.export.api import export_checkpoint
    from ternarylm.export.source import check_source

    from ternarylm.quantization import parse_keep_precision

    keep_precision = parse_keep_precision(keep_precision)
    check_source(checkpoint)  # before the progress bar prints its label

    if out_dir is None:
        source = Path(checkpoint)
        run = (source.resolve().parent.name if source.is_file() else source.name) or "model"
        out_dir = f"exports/{run}-{target}"
    baseline_dir = f"{out_dir}-fp32"
    if with_baseline and Path(baseline_dir).exists() and not force:
        raise click.ClickException(f"{baseline_dir} already exists; pass --force to replace it")
    with click.progressbar(length=2 if with_baseline else 1, label=f"exporting {target}") as bar:
        path = export_checkpoint(checkpoint, out_dir, target=target, packing=packing, embedding=embedding,
                                 lm_head=lm_head, block_size=block_size, force=force, keep_precision=keep_precision,
                                 max_length=max_length)
        bar.update(1)
        if with_baseline:
            export_checkpoint(checkpoint, baseline_dir, target="fp32", force=force, keep_precision=keep_precision,
                              max_length=max_length)
            bar.update(1)
    _summarise(path)
    if with_baseline:
        _summarise(Path(baseline_dir))


def _summarise(path):
    import json

    from ternarylm.format.folder import model_file_bytes

    manifest = json.loads((path / "manifest.json").read_text())
    size = model_file_bytes(path / "model.onnx")
    export = json.loads((path / "config.json").read_text())["export"]
    kept = export.get("keep_precision") or {}
    mixed = f", {len(kept)} linears kept at {'/'.join(map(str, sorted(set(kept.values()))))} bits" if kept else ""
    click.echo(f"wrote {path} (target {manifest['target']}, model {size / 1e6:.2f} MB{mixed})")
    choice = export.get("precision_choice")
    if choice:
        tried = ", ".join(f"{t['embedding']}/{t['lm_head']} {'pass' if t['passed'] else 'fail'} "
                          f"(agreement {t['greedy_agreement']:.2f}"
                          + (f", KL {t['kl_divergence_mean']:.4f}, top-1 {t['top1_agreement']:.2f}"
                             if t.get("kl_divergence_mean") is not None else "") + ")" for t in choice["tried"])
        verdict = "" if choice["passed"] else "; none passed verify, the largest is used"
        click.echo(f"embedding/lm-head auto: {choice['embedding']}/{choice['lm_head']} [tried {tried}{verdict}]")


@main.command("verify")
@click.argument("export_dir", type=click.Path(file_okay=False))
@click.option("--ckpt", "checkpoint", required=True,
              help="Source: the ckpt.pt, or the Hugging Face folder, the export was made from.")
@click.option("--prompt", "prompts", multiple=True, help="Prompts (default: three built-in ones).")
@click.option("--max-new-tokens", default=16, show_default=True)
@click.option("--engines", default="ort,numpy", show_default=True, help="Comma-separated: ort, numpy.")
@click.option("--logit-tol", type=float, help="Max |logit difference| allowed (default: per target).")
@click.option("--min-agreement", default=0.9, show_default=True, help="Min greedy-token agreement.")
@click.option("--max-kld", default=DEFAULT_MAX_KLD, show_default=True, type=click.FloatRange(min=0.0),
              help="Max mean KL divergence (nats) an int8/int4 head and embedding may cost against float ones.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the report here too.")
@user_errors
def verify(export_dir, checkpoint, prompts, max_new_tokens, engines, logit_tol, min_agreement, max_kld, json_path):
    """Compare PyTorch, onnxruntime and NumPy on the same prompts; non-zero exit beyond tolerance. For a Hugging
    Face source the reference is transformers' own model of that folder."""
    import json

    from ternarylm.export.verify import verify_export
    from ternarylm.format.cli_table import print_table

    engine_list = [e.strip() for e in engines.split(",") if e.strip()]

    report = verify_export(export_dir, checkpoint, prompts=list(prompts) or None, max_new_tokens=max_new_tokens,
                           engines=engine_list, logit_tol=logit_tol, min_agreement=min_agreement, max_kld=max_kld)
    agreement = report["agreement"]
    agreement_label = {"greedy_agreement": "greedy agreement", "argmax_agreement": "label agreement"}[agreement]
    rows = [(e, f"{r['max_logit_diff']:.2e}", f"{r['tolerance']:.1e}", f"{r[agreement]:.3f}",
             "ok" if r["passed"] else "FAIL") for e, r in report["engines"].items()]
    print_table(rows, ("engine", "max |Δlogit| / max |logit|", "tolerance", agreement_label, "result"))
    cost = report.get("precision")
    if cost:
        layers = ", ".join(f"{name} int{q['bits']} (block {q['block_size']})" for name, q in cost["quantized"].items())
        click.echo(f"quantised {layers} against float: mean KL {cost['kl_divergence_mean']:.4f} nats "
                   f"(max {cost['max_kld']}), top-1 agreement {cost['top1_agreement']:.3f}: "
                   f"{'ok' if cost['passed'] else 'FAIL'}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=2)
    if not report["passed"]:
        if not all(r["passed"] for r in report["engines"].values()):
            raise click.ClickException("verification failed: an engine is beyond tolerance (see the table)")
        raise click.ClickException("verification failed: the quantised head/embedding cost more than --max-kld; "
                                   "export with --lm-head/--embedding int8 or float")
    click.echo("verification passed")


@main.command("gguf", epilog=EXAMPLES)
@click.argument("checkpoint")
@click.option("--type", "qtype", type=click.Choice(["tq2_0", "tq1_0", "q4_0"]), required=True,
              help="Type of the ternary decoder linears: tq2_0 (2.06 bits/weight), tq1_0 (1.69), or q4_0 "
                   "(4.5; the exact fallback for sizes that are not multiples of 256 and for group scales).")
@click.option("--lm-head", type=click.Choice(["q8_0", "q4_0", "f16"]), default="q8_0", show_default=True,
              help="LM head type.")
@click.option("--embedding", type=click.Choice(["q8_0", "q4_0", "f16"]), default="q8_0", show_default=True,
              help="Token embedding type.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Output .gguf file.")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@user_errors
def export_gguf(checkpoint, qtype, lm_head, embedding, out_path, force):
    """Write CHECKPOINT (a ternary causal-LM ckpt.pt) as one GGUF file for llama.cpp (llama architecture,
    the same trits; block scales rounded to fp16). See docs/GGUF.md."""
    from ternarylm.export.gguf import export_gguf as write_gguf
    from ternarylm.export.source import check_source

    import gguf  # noqa: F401 -- fail before loading the checkpoint; user_errors names the [train] extra
    check_source(checkpoint)
    result = write_gguf(checkpoint, out_path, qtype=qtype, lm_head=lm_head, embedding=embedding, force=force)
    types = ", ".join(f"{n} {name}" for name, n in result.types.items())
    click.echo(f"wrote {result.path} ({result.n_bytes / 1e6:.2f} MB; tensors: {types}; "
               f"block scales rounded to fp16, max relative change {result.max_scale_rounding:.1e})")


@main.command("hf", epilog=EXAMPLES)
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--layout", type=click.Choice(["packed", "latent"]), default="packed", show_default=True,
              help="packed: 2-bit trits + one scale per layer (transformers' offline BitLinear, the published "
                   "BitNet layout); latent: the float latent weights, ternarised at each forward "
                   "(AutoBitLinear online, fine-tunable in transformers).")
@click.option("--force", is_flag=True, help="Replace an existing Hugging Face folder.")
@user_errors
def export_hf(checkpoint, out_dir, layout, force):
    """Write CHECKPOINT (a causal-LM ckpt.pt) as a Hugging Face folder that
    transformers.AutoModelForCausalLM.from_pretrained loads as a llama model (no trust_remote_code; the
    BitNet layers need accelerate). See docs/HF.md."""
    from ternarylm.checkpoint import check_checkpoint_file
    from ternarylm.hf import export_hf as write_hf

    check_checkpoint_file(checkpoint)
    result = write_hf(checkpoint, out_dir, force=force, layout=layout)
    how = {"packed": "transformers BitLinear, 2-bit packed", "latent": "transformers AutoBitLinear, latent fp32",
           "dense": "plain dense Llama, dequantised weights"}[result.layout]
    counts = (f"{len(result.ternary)} ternary linears, {len(result.float_linears)} float" if result.ternary
              else f"{len(result.float_linears)} linears")
    click.echo(f"wrote {result.path} ({result.n_bytes / 1e6:.2f} MB; {how}; {counts})")


if __name__ == "__main__":
    main()
