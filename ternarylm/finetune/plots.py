"""The dev-curve PNG of a fine-tuning run: dev accuracy and F1 per evaluation, the majority-class
baseline, and the training loss on a second axis."""

from __future__ import annotations

from pathlib import Path


def plot_dev_curve(history: list[dict], png_path: Path, baseline_accuracy: float | None = None,
                   best_step: int | None = None, title: str = "fine-tuning"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if history:
        ax.plot(steps, [h["dev_accuracy"] for h in history], "o-", label="dev accuracy", lw=1.5)
        ax.plot(steps, [h["dev_f1"] for h in history], "s--", label="dev F1", lw=1.2)
    if baseline_accuracy is not None:
        ax.axhline(baseline_accuracy, color="grey", ls=":", label="majority-class accuracy")
    if best_step is not None:
        ax.axvline(best_step, color="green", alpha=0.4, label="best (kept)")
    ax.set_xlabel("step")
    ax.set_ylabel("dev score")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    losses = [(h["step"], h["train_loss"]) for h in history if h.get("train_loss") is not None]
    handles, labels = ax.get_legend_handles_labels()
    if losses:
        ax2 = ax.twinx()
        ax2.plot(*zip(*losses), color="tab:red", alpha=0.6, lw=1, label="train loss")
        ax2.set_ylabel("train loss (cross-entropy)")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="lower right", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    png_path = Path(png_path)
    tmp = png_path.with_name(f".{png_path.name}.tmp")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(png_path)
