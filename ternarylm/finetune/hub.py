"""``--dataset glue/mrpc``: a GLUE task through Hugging Face ``datasets`` (needs internet the first time
and ``pip install "ternarylm[datasets]"``).

Splits, so that the test numbers are never used for model selection (the same as with local files):
train = GLUE's ``train`` minus a seeded ``--dev-fraction`` carved off as dev; test = GLUE's
``validation`` (GLUE's own ``test`` split has hidden labels, -1, and is not used).
"""

from __future__ import annotations

from ternarylm.finetune import FinetuneError
from ternarylm.finetune.tasks import Example, Split, TaskData, carve_dev

GLUE_TEXT_COLUMNS = {
    "mrpc": ("sentence1", "sentence2"), "rte": ("sentence1", "sentence2"), "wnli": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"), "qnli": ("question", "sentence"), "sst2": ("sentence",),
    "cola": ("sentence",),
}


def parse_name(name: str) -> tuple[str, str]:
    """``glue/mrpc`` -> ``("glue", "mrpc")``; ``nyu-mll/glue/mrpc`` -> ``("nyu-mll/glue", "mrpc")``."""
    path, _, config = (name or "").rpartition("/")
    if not path or not config:
        raise FinetuneError(f"--dataset {name!r} must look like glue/mrpc (dataset/config)")
    if config not in GLUE_TEXT_COLUMNS:
        raise FinetuneError(f"--dataset {name}: config {config!r} is not a GLUE classification task this "
                            f"command knows ({', '.join(GLUE_TEXT_COLUMNS)})")
    return path, config


def load_glue(name: str, dev_fraction: float = 0.1, seed: int = 0, expect: str | None = None) -> TaskData:
    """Load ``name`` (e.g. ``glue/mrpc``); ``expect`` (e.g. ``mrpc``) refuses any other GLUE task."""
    path, config = parse_name(name)
    if expect and config != expect:
        raise FinetuneError(f"--dataset {name} is not {expect}; this subcommand fine-tunes on {expect}")
    try:
        import datasets
    except ImportError:
        raise FinetuneError("--dataset needs the datasets package: pip install \"ternarylm[datasets]\"; "
                            "or download the files and pass --data DIR") from None
    try:
        ds = datasets.load_dataset(path, config)
    except Exception as e:  # noqa: BLE001 -- network, hub or cache errors of many types: one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise FinetuneError(f"cannot load {name} with datasets ({type(e).__name__}: {first}); offline, download "
                            "MRPC (msr_paraphrase_train.txt / _test.txt) and pass --data DIR") from None
    for split in ("train", "validation"):
        if split not in ds:
            raise FinetuneError(f"{name} has no {split!r} split (has {', '.join(ds)})")
    text_columns = GLUE_TEXT_COLUMNS[config]
    feature = ds["train"].features.get("label")
    names = list(getattr(feature, "names", None) or [])
    if not names:
        names = [str(i) for i in range(int(max(ds["train"]["label"])) + 1)]

    def examples(split: str) -> list[Example]:
        table = ds[split]
        missing = [c for c in (*text_columns, "label") if c not in table.column_names]
        if missing:
            raise FinetuneError(f"{name} {split} lacks column(s) {', '.join(missing)}")
        cols = [table[c] for c in text_columns]
        out = []
        for i, label in enumerate(table["label"]):
            if not 0 <= int(label) < len(names):
                raise FinetuneError(f"{name} {split} row {i}: label {label} is outside 0..{len(names) - 1}")
            out.append(Example(tuple(str(c[i]) for c in cols), int(label), i + 1))
        return out

    train, dev = carve_dev(examples("train"), dev_fraction, seed)
    return TaskData(name=config, text_columns=text_columns, label_column="label", labels=names,
                    train=Split("train", f"{name}:train", train),
                    dev=Split("dev", f"{name}:train ({dev_fraction:g} carved, seed {seed})", dev),
                    test=Split("test", f"{name}:validation", examples("validation")),
                    notes=[(f"dev split: {len(dev)} examples carved from {name}:train (--dev-fraction "
                           f"{dev_fraction:g}, seed {seed}); test = {name}:validation (GLUE's test labels are "
                           "hidden)")])
