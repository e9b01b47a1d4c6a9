"""``ternary-run DIR --prompt ...``: generate text from an export folder with onnxruntime or NumPy.

Text streams to stdout token by token (prompt first); timing goes to stderr. The folder's manifest
is verified first (sha256 and size of every file). With ``--engine ort`` the device profile
(``--device``, via ``ternarylm.devices``) picks providers, threads and session config; ``--threads`` and
``--providers`` override it. Never imports torch or transformers.
"""

from __future__ import annotations

import sys

import click

from ternarylm.format.cli_errors import user_errors
from ternarylm.format.entries import SEQUENCE_CLASSIFICATION

EXAMPLES = """
\b
Examples:
  ternary-run export/ --prompt "Once upon a time"
  ternary-run export/ --prompt "Lily went" --temperature 0.8 --top-k 40 --top-p 0.95 --seed 1
  ternary-run export/ --prompt "Tom saw" --engine numpy
  ternary-run export/ --prompt "Tom saw" --device rpi5 --threads 4
"""


class TextStream:
    """Incremental detokenisation: prints only text that can no longer change (no half UTF-8 chars)."""

    def __init__(self, tokenizer, out):
        self.tokenizer, self.out = tokenizer, out
        self.ids: list[int] = []
        self.printed = 0

    def push(self, token: int):
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for the next token
            return
        self.out.write(text[self.printed:])
        self.out.flush()
        self.printed = len(text)

    def close(self):
        text = self.tokenizer.decode(self.ids)
        self.out.write(text[self.printed:] + "\n")
        self.out.flush()


def _split(value: str | None) -> list[str] | None:
    return [p.strip() for p in value.split(",") if p.strip()] if value else None


def build_ort(folder, config, device: str, threads: int | None, providers: list[str] | None, emulate: bool):
    """An OrtDecoder configured by the device profile (``ternarylm.devices``)."""
    from ternarylm.devices.deploy import runtime_settings
    from ternarylm.runtime_py.loader import ort_decoder

    rs = runtime_settings(folder.path, device=device, emulate=emulate, providers=providers, threads=threads,
                          verify=False)  # the folder was verified already
    return ort_decoder(folder, rs.session, config), rs.note


def _load(model_dir, engine, device, threads, providers, emulate, check_weights):
    from ternarylm.runtime_py.loader import check_weights as check
    from ternarylm.runtime_py.loader import load_config, load_numpy, load_tokenizer, open_folder

    folder = open_folder(model_dir)
    if folder.kind == SEQUENCE_CLASSIFICATION:
        raise ValueError(f"{model_dir} is a sequence classifier, not a language model; run it with "
                         "`ternary-finetune predict DIR --text ...`")
    tokenizer = load_tokenizer(folder)
    note = None
    if engine == "numpy":
        decoder = load_numpy(folder)  # config checked against model.onnx
        config = decoder.config
    else:
        config = load_config(folder)  # config checked against model.onnx
        if check_weights:
            check(folder)
        decoder, note = build_ort(folder, config, device, threads, providers, emulate)
    return decoder, tokenizer, config, note


def _ort_errors(fn, *args):
    """onnxruntime's own exceptions (bad graph, missing provider) as one line."""
    try:
        return fn(*args)
    except (click.ClickException, ValueError, OSError):
        raise
    except Exception as e:  # noqa: BLE001 -- onnxruntime raises its own non-ValueError types
        if type(e).__module__.startswith("onnxruntime"):
            raise click.ClickException(f"onnxruntime: {str(e).strip().splitlines()[0][:300]}") from None
        raise


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model_dir", type=click.Path(file_okay=False))
@click.option("--prompt", required=True, help="Text to continue.")
@click.option("--engine", type=click.Choice(["ort", "numpy"]), default="ort", show_default=True)
@click.option("--max-new-tokens", type=click.IntRange(min=0), default=64, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0), default=0.0, show_default=True, help="0 = greedy.")
@click.option("--top-k", type=click.IntRange(min=0), default=0, show_default=True, help="0 = off.")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
              help="1 = off.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=0), default=None,
              help="onnxruntime intra-op threads (default: the device profile's; 0 = all cores).")
@click.option("--device", default="auto", show_default=True,
              help="Device profile for --engine ort: auto, cpu, rpi, rpi4, rpi5, jetson, ...")
@click.option("--emulate", is_flag=True, help="Apply another device's profile on this host.")
@click.option("--providers", default=None, help="Comma-separated execution providers (cpu, cuda, ...); "
                                                "overrides the profile's.")
@click.option("--check-weights/--no-check-weights", default=True, show_default=True,
              help="--engine ort: decode the packed weights once at load to reject codes that are not trits.")
@click.option("--no-stream", is_flag=True, help="Print the text once at the end instead of token by token.")
@user_errors
def main(model_dir, prompt, engine, max_new_tokens, temperature, top_k, top_p, seed, threads, device, emulate,
         providers, check_weights, no_stream):
    """Generate a continuation of --prompt with the export folder MODEL_DIR."""
    from ternarylm.runtime_py.generate import check_prompt, generate

    decoder, tokenizer, config, note = _ort_errors(
        _load, model_dir, engine, device, threads, _split(providers), emulate, check_weights)
    if note:
        click.echo(f"note: {note}", err=True)
    ids = tokenizer.encode(prompt).ids
    if not ids:
        start = config.bos_token_id if config.bos_token_id is not None else config.eos_token_id
        if start is None:
            raise click.BadParameter("the prompt is empty after tokenization", param_hint="--prompt")
        ids = [start]
    check_prompt(ids, config.max_position_embeddings)
    out = sys.stdout
    out.write(prompt)
    out.flush()
    stream = TextStream(tokenizer, out)
    new, stats = _ort_errors(lambda: generate(
        decoder, ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
        eos_id=config.eos_token_id, on_token=None if no_stream else stream.push))
    if no_stream:
        stream.ids = list(new)
    stream.close()
    if stats.stop_reason == "context":
        click.echo(f"note: stopped at the model's context of {config.max_position_embeddings} tokens", err=True)
    click.echo(stats.summary(), err=True)


if __name__ == "__main__":
    main()
