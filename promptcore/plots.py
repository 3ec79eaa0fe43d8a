"""``curves.png``: training loss and the eval metric over optimizer steps, drawn from ``metrics.jsonl`` records."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .io import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def draw_curves(records: list[dict[str, Any]], metric: str) -> Figure:
    """The figure of :func:`plot_curves`: train loss (left) and eval ``metric`` (right) against the step.

    Series of few points have markers, so a run with a single logged point (one train line, one evaluation)
    still shows it.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    train = [r for r in records if r.get("split") == "train" and "loss" in r]
    evals = [r for r in records if r.get("split") == "eval"]
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_metric = fig.subplots(1, 2)
    # Markers on the train curve only where there are few points (a line of thousands of markers is a smear).
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], "o-" if len(train) < 50 else "-", ms=3, label="train loss")
    if evals and "loss" in evals[0]:
        ax_loss.plot([r["step"] for r in evals], [r["loss"] for r in evals], "o-", label="eval loss")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    points = [(r["step"], r[metric]) for r in evals if metric in r]
    if points:
        ax_metric.plot(*zip(*points), "o-", color="tab:green")
    else:
        ax_metric.text(0.5, 0.5, "no evaluation", ha="center", va="center", transform=ax_metric.transAxes)
    ax_metric.set_xlabel("step")
    ax_metric.set_ylabel(f"eval {metric}")
    fig.tight_layout()
    return fig


def plot_curves(records: list[dict[str, Any]], path: str | os.PathLike, metric: str) -> None:
    """Draws :func:`draw_curves` and writes it as a PNG atomically.

    Uses matplotlib's Agg canvas directly, so the caller's matplotlib backend is left alone.
    """
    fig = draw_curves(records, metric)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
