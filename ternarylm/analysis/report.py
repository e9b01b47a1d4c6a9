"""Outputs of an analysis: the console table, ``analysis.json`` and ``analysis.png`` (atomic writes)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ternarylm.analysis.plan import SCORE_FIELD, scores
from ternarylm.analysis.stats import MODULE_TYPES

PLAN_COLOR, KEPT_COLOR = "magenta", "lime"
TABLE_HEADERS = ("layer", "bits", "gamma", "zeros", "-1 / 0 / +1", "rel err", "dL fp-alone",
                 "dL tern-alone", "rank", "plan")


def table_rows(doc: dict) -> list[tuple]:
    plan = doc.get("plan") or {}
    planned = plan.get("layers", {})
    rank = {name: i + 1 for i, name in enumerate(plan.get("ranking", []))}
    out = []
    for r in doc["layers"]:
        g = r["gamma"]
        gamma = f"{g['mean']:.4f}" if g["min"] == g["max"] else f"{g['mean']:.4f} [{g['min']:.3f}-{g['max']:.3f}]"
        t = r["trits"]
        s = r.get("sensitivity")
        out.append((
            r["name"], "fp16" if r["weight_bits"] == 16 else r["weight_bits"], gamma,
            f"{r['zero_fraction']:.3f}", f"{t['-1']:.2f} / {t['0']:.2f} / {t['+1']:.2f}",
            f"{r['rel_error']:.3f}",
            f"{s['fp_alone_delta']:+.4f}" if s else "-", f"{s['ternary_alone_delta']:+.4f}" if s else "-",
            rank.get(r["name"], "-"), planned.get(r["name"], ""),
        ))
    return out


def write_atomic(path: Path, data: bytes):
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def json_bytes(doc: dict) -> bytes:
    return (json.dumps(_finite(doc), indent=2, allow_nan=False) + "\n").encode()


def _finite(value):
    """NaN/inf become null so that analysis.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _grid(rows: list[dict], value) -> tuple[list, list[str], list[list[float]]]:
    """Matrix ``[layer index][module type]`` of ``value(row)`` (NaN where there is no such layer)."""
    depth = sorted({r["layer"] for r in rows if r["layer"] is not None})
    modules = [m for m in MODULE_TYPES if any(r["module"] == m for r in rows)]
    modules += sorted({r["module"] for r in rows} - set(modules))
    grid = [[math.nan] * len(modules) for _ in depth]
    for r in rows:
        if r["layer"] is None:
            continue
        v = value(r)
        grid[depth.index(r["layer"])][modules.index(r["module"])] = math.nan if v is None else v
    return depth, modules, grid


def png_bytes(doc: dict) -> bytes:
    """Heatmaps by depth (rows: decoder layer, columns: module type) and the sensitivity ranking."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = doc["layers"]
    plan = doc.get("plan") or {}
    planned = plan.get("layers", {})
    sensitive = any(r.get("sensitivity") for r in rows)
    panels = [("zero fraction", lambda r: r["zero_fraction"], "viridis", ".2f"),
              ("rel. quantisation error\n||W-Q(W)|| / ||W||", lambda r: r["rel_error"], "magma", ".2f"),
              ("scale gamma (mean)", lambda r: r["gamma"]["mean"], "cividis", ".3f")]
    if sensitive:
        panels += [("dL fp-alone: loss change with\nthe layer alone full precision",
                    lambda r: r["sensitivity"]["fp_alone_delta"] if r["sensitivity"] else None,
                    "coolwarm", ".3f"),
                   ("dL tern-alone: loss change with\nthe layer alone ternary (rest fp)",
                    lambda r: r["sensitivity"]["ternary_alone_delta"] if r["sensitivity"] else None,
                    "coolwarm", ".3f")]
    n_depth = len({r["layer"] for r in rows if r["layer"] is not None}) or 1
    cell_h = 0.32 if n_depth > 8 else 0.45
    heat_h = max(2.6, cell_h * n_depth + 1.6)
    fig_h = heat_h + (3.2 if sensitive else 0) + 0.8
    fig = plt.figure(figsize=(3.3 * len(panels) + 0.4, fig_h), dpi=100)
    grid_spec = fig.add_gridspec(2 if sensitive else 1, len(panels),
                                 height_ratios=[heat_h, 3.2] if sensitive else None)
    annotate = n_depth <= 24
    for i, (title, value, cmap, fmt) in enumerate(panels):
        ax = fig.add_subplot(grid_spec[0, i])
        depth, modules, grid = _grid(rows, value)
        data = np.ma.masked_invalid(np.array(grid, dtype=float))
        norm = None
        if cmap == "coolwarm":  # signed loss change: white = 0, red = loss up, blue = loss down
            limit = float(np.abs(data).max()) if data.count() else 0.0
            norm = matplotlib.colors.Normalize(-limit or -1e-9, limit or 1e-9)
            fmt = "+.3f" if limit >= 0.01 else "+.4f"
        im = ax.imshow(data, cmap=cmap, norm=norm, aspect="auto")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        ax.set_xticks(range(len(modules)), modules)
        ax.set_yticks(range(len(depth)), [str(d) for d in depth])
        ax.set_title(title, fontsize=9)
        if i == 0:
            ax.set_ylabel("decoder layer")
        if annotate:
            for y, row in enumerate(grid):
                for x, v in enumerate(row):
                    if math.isfinite(v):
                        r, g, b, _ = im.cmap(im.norm(v))
                        color = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
                        ax.text(x, y, format(v, fmt), ha="center", va="center", fontsize=6, color=color)
        for r in rows:  # outline the layers the plan keeps, and those the checkpoint already keeps
            if r["layer"] is None:
                continue
            y, x = depth.index(r["layer"]), modules.index(r["module"])
            if r["name"] in planned or r["weight_bits"] != 2:
                ax.add_patch(plt.Rectangle((x - 0.45, y - 0.45), 0.9, 0.9, fill=False, lw=2,
                                           ec=PLAN_COLOR if r["name"] in planned else KEPT_COLOR))
    if sensitive:
        ax = fig.add_subplot(grid_spec[1, :])
        field = SCORE_FIELD[plan.get("rank_by", "fp")]
        values = [(scores(r) or {}).get(field, 0.0) for r in rows]
        colors = [plt.cm.tab10(MODULE_TYPES.index(r["module"]) if r["module"] in MODULE_TYPES else 9)
                  for r in rows]
        bars = ax.bar(range(len(rows)), values, color=colors)
        for bar, r in zip(bars, rows):
            if r["name"] in planned:
                bar.set_edgecolor("black")
                bar.set_linewidth(1.5)
                bar.set_hatch("//")
        labels = [f"{r['layer']}.{r['module']}" if r["layer"] is not None else r["name"] for r in rows]
        ax.set_xticks(range(len(rows)), labels, rotation=90, fontsize=6 if len(rows) > 30 else 8)
        ax.set_xlim(-0.7, len(rows) - 0.3)
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_ylabel(f"{field} (nats/token)")
        title = (f"ranking score {field} = |dL {'fp' if field.startswith('fp') else 'tern'}-alone| "
                 "per layer, by depth")
        if planned:
            title += f" (hatched: the plan keeps {len(planned)} at {plan['bits']} bits)"
        ax.set_title(title, fontsize=9)
        handles = [plt.Rectangle((0, 0), 1, 1, color=plt.cm.tab10(i)) for i, m in enumerate(MODULE_TYPES)
                   if any(r["module"] == m for r in rows)]
        ax.legend(handles, [m for m in MODULE_TYPES if any(r["module"] == m for r in rows)],
                  ncol=len(handles), fontsize=7, loc="best", framealpha=0.8)
        ax.grid(axis="y", alpha=0.3)
    ck = doc["checkpoint"]
    base = doc.get("baselines") or {}
    subtitle = f"{Path(ck['path']).name} (step {ck.get('step')})"
    if base:
        subtitle += (f" - val loss as trained {base['as_trained']['loss']:.4f}, all fp "
                     f"{base['all_fp']['loss']:.4f}, {doc['evaluation']['tokens']:,} tokens")
    fig.suptitle(f"ternary-analyze: {subtitle}\nboxes: magenta = kept by the plan, green = already "
                 "kept in the checkpoint", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_report(doc: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write ``analysis.json`` and ``analysis.png`` into ``out_dir`` (created here, at the end)."""
    out_dir = Path(out_dir)
    png = png_bytes(doc)
    data = json_bytes(doc)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "analysis.json", "png": out_dir / "analysis.png"}
    write_atomic(paths["png"], png)
    write_atomic(paths["json"], data)
    return paths
