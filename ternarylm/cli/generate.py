"""``ternary-generate``: sample text from a checkpoint with PyTorch (Hugging Face ``generate``)."""

from __future__ import annotations

import click

from ternarylm.format.cli_errors import user_errors

EXAMPLES = """
\b
Examples:
  ternary-generate runs/small/ckpt.pt --prompt "Once upon a time"
  ternary-generate runs/small/ckpt.pt --prompt "Lily went" --temperature 0.8 --top-k 40 --top-p 0.95
"""


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--prompt", default="Once upon a time", show_default=True)
@click.option("--max-new-tokens", default=80, show_default=True)
@click.option("--temperature", default=0.0, show_default=True, help="0 = greedy.")
@click.option("--top-k", default=0, show_default=True, help="0 = off.")
@click.option("--top-p", default=1.0, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@user_errors
def main(checkpoint, prompt, max_new_tokens, temperature, top_k, top_p, seed, device):
    """Generate a continuation of --prompt from CHECKPOINT."""
    import torch

    from ternarylm.checkpoint import (
        load_checkpoint,
        model_from_checkpoint,
        tokenizer_from_checkpoint,
    )
    from ternarylm.training.trainer import resolve_device

    if temperature < 0 or not 0 < top_p <= 1 or top_k < 0 or max_new_tokens < 1:
        raise click.BadParameter("need --temperature >= 0, 0 < --top-p <= 1, --top-k >= 0, --max-new-tokens >= 1")
    ckpt = load_checkpoint(checkpoint)
    dev = resolve_device(device)
    model = model_from_checkpoint(ckpt).to(dev)
    tokenizer = tokenizer_from_checkpoint(ckpt)
    ids = tokenizer.encode(prompt).ids
    if not ids:
        raise click.BadParameter("the prompt is empty after tokenization", param_hint="--prompt")
    limit = model.config.max_position_embeddings
    if len(ids) + max_new_tokens > limit:
        raise click.BadParameter(f"prompt ({len(ids)} tokens) + --max-new-tokens exceeds the context of {limit}")
    torch.manual_seed(seed)
    input_ids = torch.tensor([ids], device=dev)
    sampling = dict(do_sample=True, temperature=temperature, top_k=top_k or None, top_p=top_p) \
        if temperature > 0 else dict(do_sample=False)
    out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens,
                         eos_token_id=model.config.eos_token_id, pad_token_id=model.config.pad_token_id,
                         **sampling)
    click.echo(tokenizer.decode(out[0].tolist(), skip_special_tokens=True))


if __name__ == "__main__":
    main()
