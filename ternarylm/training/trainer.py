"""The training loop: AdamW + warmup/cosine, grad accumulation and clipping, periodic evaluation,
atomic checkpoints with exact resume, DDP under torchrun, metrics.jsonl and a loss-curve PNG."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import LambdaLR

import ternarylm
from ternarylm.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ternarylm.configuration import TernaryLMConfig
from ternarylm.data import DataError
from ternarylm.data.loader import RandomWindowSampler, eval_windows
from ternarylm.evaluation import evaluate_nll, perplexity
from ternarylm.format.entries import CAUSAL_LM
from ternarylm.format.tokens import special_token_ids
from ternarylm.modeling import TernaryLMForCausalLM, count_parameters
from ternarylm.training import distributed as dist_utils
from ternarylm.training.args import TrainArgs
from ternarylm.training.plots import plot_loss_curve
from ternarylm.training.prepare import prepare_tokenizer, prepare_tokens
from ternarylm.training.schedule import lr_multiplier

RUN_MARKERS = ("ckpt.pt", "metrics.jsonl")


class TrainError(ValueError):
    """A user mistake in how training was asked for (one line, shown without a traceback)."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError("--device cuda was asked for but CUDA is not available here; use --device cpu")
    return torch.device(name)


def check_run_dir(run_dir: Path, args: TrainArgs):
    holds_run = any((run_dir / m).exists() for m in RUN_MARKERS)
    if args.resume:
        if not (run_dir / "ckpt.pt").is_file():
            raise TrainError(f"--resume: no {run_dir / 'ckpt.pt'} to resume from; drop --resume to start fresh")
    elif holds_run and not args.overwrite:
        raise TrainError(f"{run_dir} already holds a training run; pass --resume to continue it, "
                         "--overwrite to replace it, or choose another --out")


def clear_previous_run(run_dir: Path):
    """``--overwrite``: drop the old run's files, only once the new run's setup has succeeded."""
    for name in ("ckpt.pt", "best.pt", "metrics.jsonl", "loss.png", "train_summary.json"):
        (run_dir / name).unlink(missing_ok=True)
    for old in (run_dir / "checkpoints").glob("step-*.pt"):
        old.unlink()


STALE_TEMP_PATTERNS = (".*.pt.tmp-*", "checkpoints/.*.pt.tmp-*", "data/tokens-*.tmp-*")


def remove_stale_temps(run_dir: Path) -> list[str]:
    """Delete temp files that a killed checkpoint/token-cache write left (their writer pid is gone)."""
    removed = []
    for pattern in STALE_TEMP_PATTERNS:
        for tmp in sorted(run_dir.glob(pattern)):
            if tmp.is_file() and not _pid_alive(tmp.name.rsplit("-", 1)[-1]):
                tmp.unlink(missing_ok=True)
                removed.append(str(tmp.relative_to(run_dir)))
    return removed


def _pid_alive(pid_text: str) -> bool:
    """Whether the process that owns a ``.tmp-<pid>`` file still runs (unparsable: assume it does)."""
    try:
        pid = int(pid_text)
    except ValueError:
        return True
    if pid == os.getpid():
        return False  # this process has written nothing yet: the file is from an earlier one
    if os.name == "nt":
        return True  # there os.kill(pid, 0) sends CTRL_C_EVENT: no probe, keep the file
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, owned by someone else
        return True
    return True


@contextlib.contextmanager
def _removed_on_refusal(run_dir: Path, enabled: bool = True):
    """On any error, delete the files and folders under ``run_dir`` that appeared meanwhile (the token
    cache of data that is then refused), never ones that were there before."""
    before = set(run_dir.rglob("*")) if run_dir.exists() else None
    try:
        yield
    except BaseException:
        if enabled:
            _remove_new(run_dir, before)
        raise


def _remove_new(run_dir: Path, before: set | None):
    if not run_dir.exists():
        return
    for path in sorted(run_dir.rglob("*"), key=lambda p: len(p.parts), reverse=True):  # children first
        if before is not None and path in before:
            continue
        if path.is_dir() and not path.is_symlink():
            with contextlib.suppress(OSError):
                path.rmdir()  # only if empty
        else:
            path.unlink(missing_ok=True)
    if before is None:
        with contextlib.suppress(OSError):
            run_dir.rmdir()


INIT_OVERRIDABLE = ("max_position_embeddings",)  # what --set may change in a model started --init-from


def build_config(args: TrainArgs, vocab_size: int, special: dict,
                 architecture: dict | None = None, keep_precision: dict | None = None) -> TernaryLMConfig:
    """The run's config: the preset (or, with ``--init-from``, the source model's ``architecture``) plus
    --set/--config-json overrides, the quantisation options and the tokenizer's special ids."""
    overrides = dict(args.overrides)
    if architecture is not None:
        fixed = sorted(set(overrides) - set(INIT_OVERRIDABLE))
        if fixed:
            raise TrainError(f"--set {fixed[0]} cannot change a model started with --init-from (its architecture "
                             f"comes from {args.init_from}); only {', '.join(INIT_OVERRIDABLE)} can be set")
        overrides = {**architecture, **overrides}
    overrides.setdefault("vocab_size", vocab_size)
    if overrides["vocab_size"] < vocab_size:
        raise TrainError(f"vocab_size {overrides['vocab_size']} is smaller than the tokenizer's {vocab_size}")
    overrides.setdefault("max_position_embeddings", max(args.seq_len, 256))
    if args.seq_len > overrides["max_position_embeddings"]:
        raise TrainError(f"--seq-len {args.seq_len} exceeds max_position_embeddings "
                         f"{overrides['max_position_embeddings']}")
    quant = dict(granularity=args.granularity, group_size=args.group_size, activation_bits=args.activation_bits,
                 keep_precision={**(keep_precision or {}), **args.keep_precision})  # the source's plan, then --keep-precision
    from ternarylm.quantization import TernaryConfig, check_keep_patterns

    TernaryConfig(**quant)  # validates
    config = TernaryLMConfig.from_preset(args.preset, precision=args.precision, quant=quant,
                                         bos_token_id=special["bos"], eos_token_id=special["eos"],
                                         pad_token_id=special["pad"], **overrides)
    if args.keep_precision:
        if args.precision != "ternary":
            raise TrainError("--keep-precision needs --precision ternary (a full-precision model has no ternary layers)")
        check_keep_patterns(args.keep_precision, config.linear_names())
    return config


def param_groups(model, weight_decay: float):
    """Decay matrices (linear weights), not norms or embeddings."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim == 2 and "embed" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train(args: TrainArgs) -> dict:
    """Run training as ``args`` says; returns the final summary (also written to train_summary.json)."""
    ctx = dist_utils.setup()
    run_dir = Path(args.out_dir)
    if ctx.is_main:
        check_run_dir(run_dir, args)
    dist_utils.barrier(ctx)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = ctx.device or resolve_device(args.device)
    autocast_dtype = torch.bfloat16 if device.type == "cuda" else None

    with _removed_on_refusal(run_dir, enabled=ctx.is_main):  # a refused setup leaves no files
        resume_state = load_checkpoint(run_dir / "ckpt.pt") if args.resume else None
        if resume_state is not None and resume_state.get("optimizer") is None:
            raise CheckpointError(f"{run_dir / 'ckpt.pt'} holds no optimizer state and cannot be resumed")

        from ternarylm.configuration import PRESETS

        if args.preset not in PRESETS:
            raise TrainError(f"unknown preset {args.preset!r}; choose one of {', '.join(PRESETS)}")
        init = None
        if args.init_from and resume_state is None:  # on resume the checkpoint holds weights and tokenizer
            from ternarylm.hf import load_llama_init

            init = load_llama_init(args.init_from)
        tokenizer = init.tokenizer if init else prepare_tokenizer(
            args, PRESETS[args.preset]["vocab_size"], resume_state["tokenizer_json"] if resume_state else None)
        special = special_token_ids(tokenizer)
        if ctx.is_main:
            cache = prepare_tokens(args, tokenizer, run_dir)
        dist_utils.barrier(ctx)
        if not ctx.is_main:
            cache = prepare_tokens(args, tokenizer, run_dir)
        (train_start, train_end), (val_start, val_end) = cache.split(args.val_fraction, args.seq_len)
        if resume_state and resume_state["meta"].get("data_fingerprint") not in (None, cache.fingerprint):
            raise TrainError("the training data changed since this run started (token cache fingerprint differs); "
                             "resume with the same --data or start a new run")

        config = (TernaryLMConfig(**{k: v for k, v in resume_state["config"].items()
                                     if k not in ("transformers_version", "architectures", "model_type")})
                  if resume_state else build_config(args, tokenizer.get_vocab_size(), special,
                                                    init.architecture if init else None,
                                                    init.keep_precision if init else None))
        torch.manual_seed(args.seed)
        model = TernaryLMForCausalLM(config)
        if init is not None:  # the source's fp weights become the latent weights (BitLinear is in place)
            model.load_state_dict(init.state_dict)
            init.state_dict = None
        model = model.to(device)
        optimizer = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.95),
                                      eps=1e-8)
        scheduler = LambdaLR(optimizer, lambda s: lr_multiplier(s, args.max_steps, args.warmup_steps,
                                                                args.min_lr_ratio, args.schedule))
        sampler = RandomWindowSampler(cache.tokens, train_start, train_end, args.seq_len, args.batch_size,
                                      seed=args.seed, rank=ctx.rank, world_size=ctx.world_size)
        step, tokens_seen, best_val = 0, 0, math.inf
        if resume_state:
            model.load_state_dict(resume_state["model"])
            optimizer.load_state_dict(resume_state["optimizer"])
            scheduler.load_state_dict(resume_state["scheduler"])
            sampler.load_state_dict(resume_state["rng"]["sampler"])
            torch.set_rng_state(resume_state["rng"]["torch"])
            step, tokens_seen = resume_state["step"], resume_state["tokens_seen"]
            best_val = resume_state.get("best_val_loss", math.inf)
    train_model = dist_utils.wrap(model, ctx)

    metrics_path = run_dir / "metrics.jsonl"
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if args.overwrite and not args.resume:
            clear_previous_run(run_dir)
        stale = remove_stale_temps(run_dir)
        if stale:
            print(f"removed {len(stale)} stale temporary file(s) left by an interrupted write: {', '.join(stale)}",
                  flush=True)
        _truncate_metrics(metrics_path, step)
        for note in (init.notes if init else ()):
            print(f"note: {note}", flush=True)
        origin = f"from {args.init_from}" if args.init_from else f"{args.preset} preset"
        print(f"ternarylm {ternarylm.__version__}: {origin}, precision={config.precision}, "
              f"{count_parameters(model):,} parameters, vocab {config.vocab_size}, "
              f"{cache.n_tokens:,} tokens ({train_end - train_start:,} train / {val_end - val_start:,} val), "
              f"device {device}, world size {ctx.world_size}", flush=True)

    def evaluate() -> dict:
        windows = eval_windows(cache.tokens, val_start, val_end, args.seq_len, args.batch_size,
                               max_batches=args.eval_batches)
        nll, n = evaluate_nll(model, windows, device, autocast_dtype)
        return {"val_loss": nll, "val_ppl": perplexity(nll), "val_tokens": n}

    def checkpoint_state(include_optimizer: bool = True) -> dict:
        state = {
            "kind": CAUSAL_LM, "config": json.loads(config.to_json_string()), "tokenizer_json": tokenizer.to_str(),
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "step": step, "tokens_seen": tokens_seen, "best_val_loss": best_val,
            "meta": {"package_version": ternarylm.__version__, "torch_version": str(torch.__version__),
                     "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "train_args": args.to_dict(), "data_fingerprint": cache.fingerprint},
        }
        if include_optimizer:
            state.update(optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                         rng={"torch": torch.get_rng_state(), "sampler": sampler.state_dict()})
        return state

    if step == 0 and ctx.is_main:
        initial = evaluate()
        _append_metrics(metrics_path, {"step": 0, "tokens": 0, **initial})

    tokens_per_step = args.batch_size * args.seq_len * args.grad_accum * ctx.world_size
    progress = _progress(args, ctx, step)
    t_last, tokens_last = time.perf_counter(), tokens_seen
    model.train()
    while step < args.max_steps:
        optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for micro in range(args.grad_accum):
            batch = sampler.next_batch().to(device)
            with dist_utils.no_sync_unless_last(train_model, ctx, micro == args.grad_accum - 1):
                with torch.autocast(device_type="cuda", dtype=autocast_dtype, enabled=autocast_dtype is not None):
                    logits = train_model(input_ids=batch[:, :-1], use_cache=False).logits
                    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
                (loss / args.grad_accum).backward()
            loss_sum += loss.item() / args.grad_accum
        grad_norm = (torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
                     if args.grad_clip else torch.tensor(0.0))
        optimizer.step()
        scheduler.step()
        step += 1
        tokens_seen += tokens_per_step
        now = time.perf_counter()
        tok_s = (tokens_seen - tokens_last) / max(now - t_last, 1e-9)
        t_last, tokens_last = now, tokens_seen
        lr = scheduler.get_last_lr()[0]
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{loss_sum:.3f}", lr=f"{lr:.2e}", tok_s=f"{tok_s:,.0f}")
        record = {"step": step, "tokens": tokens_seen, "loss": loss_sum, "lr": lr,
                  "grad_norm": float(grad_norm), "tokens_per_s": tok_s}
        if step % args.eval_every == 0 or step == args.max_steps:
            evaluation = dist_utils.broadcast_object(evaluate() if ctx.is_main else None, ctx)
            record.update(evaluation)
            if ctx.is_main:
                if evaluation["val_loss"] < best_val:
                    best_val = evaluation["val_loss"]
                    save_checkpoint(checkpoint_state(include_optimizer=False), run_dir / "best.pt")
                _save_rotating(checkpoint_state(), run_dir, step, args.keep_last)
                _append_metrics(metrics_path, record)
                plot_loss_curve(metrics_path, run_dir / "loss.png")
            best_val = dist_utils.broadcast_object(best_val, ctx)
        elif ctx.is_main:
            _append_metrics(metrics_path, record)
    if progress is not None:
        progress.close()

    checksums = dist_utils.all_gather_object(_param_checksum(model), ctx)
    summary = {"step": step, "tokens_seen": tokens_seen, "best_val_loss": best_val,
               "best_val_ppl": perplexity(best_val), "parameters": count_parameters(model),
               "precision": config.precision, "world_size": ctx.world_size,
               "rank_param_checksums": checksums, "checkpoint": str(run_dir / "ckpt.pt")}
    if ctx.is_main:
        (run_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
    dist_utils.teardown(ctx)
    return summary


def _param_checksum(model) -> float:
    with torch.no_grad():
        return float(sum(p.double().sum() * (i + 1) for i, p in enumerate(model.parameters())))


def _save_rotating(state: dict, run_dir: Path, step: int, keep_last: int):
    save_checkpoint(state, run_dir / "ckpt.pt")
    if keep_last:
        folder = run_dir / "checkpoints"
        folder.mkdir(exist_ok=True)
        target = folder / f"step-{step:07d}.pt"
        target.unlink(missing_ok=True)
        os.link(run_dir / "ckpt.pt", target)  # same bytes, no second copy on disk
        for old in sorted(folder.glob("step-*.pt"))[:-keep_last]:
            old.unlink()


def _append_metrics(path: Path, record: dict):
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _truncate_metrics(path: Path, step: int):
    """On resume, drop metrics logged after the checkpoint so the log matches the resumed state."""
    if not path.exists():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def _progress(args: TrainArgs, ctx, step: int):
    if not (args.progress and ctx.is_main):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=args.max_steps, initial=step, desc="train", unit="step", dynamic_ncols=True)


__all__ = ["train", "TrainArgs", "TrainError", "DataError", "CheckpointError"]
