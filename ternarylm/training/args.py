"""``TrainArgs``: every training option, validated in one place, JSON round-trippable (stored in ckpt.pt)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass
class TrainArgs:
    out_dir: str = "runs/small"
    preset: str = "small"
    precision: str = "ternary"  # or "fp": the full-precision twin, same code
    overrides: dict = field(default_factory=dict)  # TernaryLMConfig field overrides
    data: list = field(default_factory=list)  # local .txt/.jsonl files or folders
    dataset: str | None = None  # Hugging Face datasets name (online users)
    dataset_config: str | None = None
    dataset_split: str = "train"
    text_field: str = "text"
    stories: int = 20000  # size of the built-in synthetic corpus when no data is given
    tokenizer: str | None = None  # path or hub name; default: train a byte-level BPE
    init_from: str | None = None  # full-precision Llama HF folder (or hub name): its shapes, weights, tokenizer
    vocab_size: int | None = None  # for the trained BPE; default: the preset's vocab size
    seq_len: int = 128
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    max_steps: int = 500
    schedule: str = "cosine"  # or "onecycle"
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_batches: int = 20
    val_fraction: float = 0.05
    seed: int = 1337
    device: str = "auto"
    threads: int | None = None
    keep_last: int = 2
    granularity: str = "tensor"
    group_size: int | None = None
    activation_bits: int = 8
    keep_precision: dict = field(default_factory=dict)  # {module pattern: 4 | 8 | 16}, see TernaryConfig
    resume: bool = False
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self):
        checks = [
            (self.precision in ("ternary", "fp"), "--precision must be 'ternary' or 'fp'"),
            (self.seq_len >= 8, "--seq-len must be at least 8"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.grad_accum >= 1, "--grad-accum must be at least 1"),
            (0 < self.lr < 1, "--lr must be in (0, 1)"),
            (0 <= self.min_lr_ratio <= 1, "--min-lr-ratio must be in [0, 1]"),
            (self.warmup_steps >= 0, "--warmup-steps must be >= 0"),
            (self.max_steps >= 1, "--max-steps must be at least 1"),
            (self.schedule in ("cosine", "onecycle"), "--schedule must be 'cosine' or 'onecycle'"),
            (self.weight_decay >= 0, "--weight-decay must be >= 0"),
            (self.grad_clip >= 0, "--grad-clip must be >= 0 (0 disables clipping)"),
            (self.eval_every >= 1, "--eval-every must be at least 1"),
            (self.eval_batches >= 1, "--eval-batches must be at least 1"),
            (0 < self.val_fraction < 0.5, "--val-fraction must be in (0, 0.5)"),
            (self.keep_last >= 0, "--keep-last must be >= 0"),
            (self.stories >= 1, "--stories must be at least 1"),
            (self.vocab_size is None or 260 <= self.vocab_size <= 1_000_000,
             "--vocab-size must be between 260 and 1,000,000"),
            (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
             "--device must be auto, cpu or cuda[:N]"),
            (not (self.data and self.dataset), "give either --data or --dataset, not both"),
            (not (self.init_from and self.tokenizer),
             "--init-from trains with the model's own tokenizer; drop --tokenizer"),
            (not (self.init_from and self.vocab_size),
             "--init-from takes the vocabulary of the model's tokenizer; drop --vocab-size"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def to_dict(self) -> dict:
        return asdict(self)


def run_args_for_eval(ckpt: dict, data=(), dataset: str | None = None, dataset_config: str | None = None):
    """The ``TrainArgs`` a checkpoint was trained with, pointed at ``data``/``dataset`` when given:
    evaluation tools (ternary-eval, ternary-analyze) tokenise and split text exactly as training did.
    Unknown keys (a checkpoint from a newer ternarylm) are ignored rather than fatal."""
    known = {f.name for f in fields(TrainArgs)}
    run_args = {k: v for k, v in dict((ckpt.get("meta") or {}).get("train_args", {})).items() if k in known}
    run_args.update(resume=False, overwrite=False, progress=False)
    if data:
        run_args.update(data=list(data), dataset=None)
    elif dataset:
        run_args.update(data=[], dataset=dataset, dataset_config=dataset_config)
    return TrainArgs(**run_args)
