"""Tables on stdout, report.json and the PNG charts of a profile run.

Ratios are "how many times better the ternary model is": baseline / ternary for sizes, memory and
latencies, ternary / baseline for tokens per second. A ratio above 1 favours the ternary model.
The PNG charts need matplotlib, an extra (``ternarylm[plots]``) a device may not have: without it the
chart writers return None and the caller prints ``NO_CHART_NOTE`` once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

REPORT_FORMAT = "ternarylm-device-report"
REPORT_VERSION = 1
RATIO_CONVENTION = ("baseline / ternary for bytes, memory and milliseconds; ternary / baseline for "
                    "tokens per second: above 1 favours the ternary model")
LOWER_IS_BETTER = ("model_bytes", "load_s", "peak_rss_mb", "device_memory_mb", "prefill_ms",
                   "decode_ms_p50", "decode_ms_p95")
HIGHER_IS_BETTER = ("prefill_tokens_per_s", "decode_tokens_per_s")
NO_CHART_NOTE = 'no PNG chart (matplotlib not installed); pip install "ternarylm[plots]"'

# (header, key, format) for the results table.
RESULT_COLUMNS = [
    ("model", "model", "{}"), ("prompt", "prompt_len", "{}"), ("status", "status", "{}"),
    ("file MB", "model_bytes", "mb"), ("load s", "load_s", "{:.2f}"), ("peak RSS MB", "peak_rss_mb", "{:.1f}"),
    ("GPU MB", "device_memory_mb", "{:.0f}"), ("prefill ms", "prefill_ms", "{:.1f}"),
    ("prefill tok/s", "prefill_tokens_per_s", "{:.0f}"), ("decode p50 ms", "decode_ms_p50", "{:.2f}"),
    ("p95 ms", "decode_ms_p95", "{:.2f}"), ("decode tok/s", "decode_tokens_per_s", "{:.1f}"),
]
TUNE_COLUMNS = [
    ("candidate", "lowering", "{}"), ("threads", "threads", "{}"), ("status", "status", "{}"),
    ("decode p50 ms", "decode_ms_p50", "{:.2f}"), ("prefill ms", "prefill_ms", "{:.1f}"),
    ("peak RSS MB", "peak_rss_mb", "{:.1f}"), ("rel diff", "max_rel_diff", "{:.4f}"),
    ("argmax", "argmax_agreement", "{:.0%}"), ("pass", "passed", "yn"), ("slow path", "slow_fallback", "flag"),
    ("chosen", "chosen", "star"), ("note", "message", "short"),
]


def ratios(ternary: dict, baseline: dict) -> dict:
    """Every figure both runs have, as a "times better" ratio (see module docstring)."""
    out = {}
    for key in LOWER_IS_BETTER:
        a, b = ternary.get(key), baseline.get(key)
        if a and b:
            out[key] = b / a
    for key in HIGHER_IS_BETTER:
        a, b = ternary.get(key), baseline.get(key)
        if a and b:
            out[key] = a / b
    return out


def _cell(value, fmt: str) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        return value if fmt != "short" or len(value) <= 60 else value[:57] + "..."
    if fmt == "mb":
        return f"{value / 1e6:.2f}"
    if fmt == "yn":
        return "yes" if value else "no"
    if fmt == "flag":
        return "SLOW" if value else ""
    if fmt == "star":
        return "*" if value else ""
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def table_rows(rows: list[dict], columns) -> tuple[list[str], list[list[str]]]:
    """Drop columns no row has a value for; format every cell."""
    used = [c for c in columns if any(r.get(c[1]) is not None for r in rows)]
    return [c[0] for c in used], [[_cell(r.get(key), fmt) for _, key, fmt in used] for r in rows]


def ratio_row(r: dict, columns, label: str) -> dict:
    row = {"model": label, "status": ""}
    for _, key, _ in columns:
        if key in r:
            row[key] = f"{r[key]:.2f}x"
    return row


def format_plain(title: str, headers: list[str], body: list[list[str]]) -> str:
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [title, line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
            for row in body]
    return "\n".join(out)


def _numeric(cell: str) -> bool:
    try:
        float(cell.rstrip("x%"))
        return True
    except ValueError:
        return False


def print_table(title: str, headers: list[str], body: list[list[str]], echo=print) -> None:
    """A rich table when rich is installed (it is not a device dependency), else plain text."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        echo(format_plain(title, headers, body))
        return
    table = Table(title=title, title_justify="left")
    for i, h in enumerate(headers):
        text = any(row[i] not in ("-", "") and not _numeric(row[i]) for row in body)
        table.add_column(h, justify="left" if text else "right", no_wrap=True)
    for row in body:
        table.add_row(*row)
    widths = [max([len(h), *(len(row[i]) for row in body)]) for i, h in enumerate(headers)]
    Console(width=max(len(title), sum(widths) + 3 * len(widths) + 1)).print(table)


def write_json(data: dict, path: Path) -> Path:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def optional_pyplot():
    """pyplot on the Agg backend, or None where matplotlib is not installed (not a device dependency)."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bars(ax, groups: list[str], series: dict[str, list[float | None]], ylabel: str):
    import numpy as np

    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for i, (name, values) in enumerate(series.items()):
        vals = [v if v is not None else 0.0 for v in values]
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, label=name)
        ax.bar_label(bars, labels=[f"{v:.3g}" if v else "-" for v in vals], fontsize=7)
    ax.set_xticks(x, groups)
    ax.set_ylabel(ylabel)
    if series:
        ax.legend(fontsize=8)


def write_chart(results: list[dict], path: Path, title: str, prompt_len: int) -> Path | None:
    """Bars ternary vs baseline: memory (file, peak RSS, GPU) and latency (prefill, decode p50).

    Returns None, writing nothing, where matplotlib is not installed.
    """
    plt = optional_pyplot()
    if plt is None:
        return None
    rows = {f"{r['model']} ({r.get('target', '?')})": r for r in results if r.get("prompt_len") == prompt_len and r.get("status") == "ok"}
    mem_keys = [("file", "model_bytes", 1e-6), ("peak RSS", "peak_rss_mb", 1.0)]
    if any(r.get("device_memory_mb") for r in rows.values()):
        mem_keys.append(("GPU", "device_memory_mb", 1.0))
    lat_keys = [("prefill", "prefill_ms", 1.0), ("decode p50", "decode_ms_p50", 1.0)]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, keys, ylabel in ((ax1, mem_keys, "MB"), (ax2, lat_keys, "ms")):
        series = {name: [(r.get(k) * f) if r.get(k) is not None else None for _, k, f in keys]
                  for name, r in rows.items()}
        _bars(ax, [label for label, _, _ in keys], series, ylabel)
    ax1.set_title("memory (lower is better)")
    ax2.set_title(f"latency, prompt {prompt_len} (lower is better)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_tune_chart(rows: list[dict], path: Path, title: str) -> Path | None:
    """Decode ms/token per candidate; failing candidates grey, slow-path hatched, the winner marked.

    Returns None, writing nothing, where matplotlib is not installed.
    """
    plt = optional_pyplot()
    if plt is None:
        return None
    ok = [r for r in rows if r.get("decode_ms_p50") is not None]
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(ok) + 2), 4))
    colors = ["tab:green" if r.get("chosen") else "tab:blue" if r.get("passed") else "lightgrey" for r in ok]
    bars = ax.bar(range(len(ok)), [r["decode_ms_p50"] for r in ok], color=colors)
    for b, r in zip(bars, ok):
        if r.get("slow_fallback"):
            b.set_hatch("//")
    ax.set_xticks(range(len(ok)), [f"{r['lowering']} t{r['threads']}" for r in ok], rotation=60, ha="right",
                  fontsize=7)
    ax.set_ylabel("decode ms/token (p50)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
