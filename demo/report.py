"""The demo's report: a markdown table of what each method measured, an accuracy chart and training curves."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptcore.io import atomic_path, atomic_write_text


@dataclass
class MethodResult:
    """What one method measured on one task.

    Attributes:
        task / title: the task's short name and heading.
        method: how the method is named in the report.
        accuracy: accuracy on the evaluation rows after training (the last evaluation, not the best one: the
            evaluation rows are test rows, so picking the best would flatter the method).
        eval_rows: evaluation rows behind the accuracy.
        trainable: parameters trained (prompt and head).
        total: all parameters of the model (frozen backbone included).
        train_rows: training rows seen per epoch (0 for a method that trains nothing).
        wall_s: seconds for the method: building, training and evaluating.
        records: the trainer's metrics records (``metrics.jsonl``) for the curves; empty when nothing trained.
    """

    task: str
    title: str
    method: str
    accuracy: float
    eval_rows: int
    trainable: int
    total: int
    train_rows: int
    wall_s: float
    records: list[dict[str, Any]]


def _params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def results_table(results: list[MethodResult]) -> str:
    """The markdown table: one row per task and method."""
    lines = [
        "| task | method | accuracy | eval rows | trainable params | of total | train rows | wall time |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        share = f"{100 * r.trainable / r.total:.3f}%" if r.total else "-"
        lines.append(
            f"| {r.title} | {r.method} | {100 * r.accuracy:.1f}% | {r.eval_rows} | {_params(r.trainable)} | {share} "
            f"| {r.train_rows} | {r.wall_s:.0f} s |"
        )
    return "\n".join(lines)


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def plot_accuracy(results: list[MethodResult], path: Path) -> None:
    """Bar chart: accuracy per method, grouped by task."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tasks = list(dict.fromkeys(r.task for r in results))
    fig = Figure(figsize=(4 * len(tasks), 4), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    for ax, task in zip(axes, tasks):
        rows = [r for r in results if r.task == task]
        bars = ax.bar(range(len(rows)), [100 * r.accuracy for r in rows], color=["tab:blue", "tab:gray"][: len(rows)])
        ax.bar_label(bars, fmt="%.1f%%")
        ax.set_xticks(range(len(rows)), [r.method.replace(" + ", "\n+ ").replace(" (", "\n(") for r in rows], fontsize=8)
        ax.set_ylim(0, 105)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(rows[0].title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def plot_curves(results: list[MethodResult], path: Path) -> None:
    """Per task: training loss over steps (lines) and evaluation accuracy (markers, right axis), per method."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tasks = list(dict.fromkeys(r.task for r in results))
    fig = Figure(figsize=(5 * len(tasks), 4), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    for ax, task in zip(axes, tasks):
        acc_ax = ax.twinx()
        for color, r in zip(["tab:blue", "tab:gray"], [r for r in results if r.task == task]):
            train = [x for x in r.records if x.get("split") == "train" and "loss" in x]
            evals = [x for x in r.records if x.get("split") == "eval" and "accuracy" in x]
            if train:
                ax.plot([x["step"] for x in train], [x["loss"] for x in train], color=color, label=f"{r.method}: train loss")
            if evals:
                acc_ax.plot([x["step"] for x in evals], [100 * x["accuracy"] for x in evals], "o--", color=color)
            elif not r.records:  # nothing trained: its accuracy as a flat reference line
                acc_ax.axhline(100 * r.accuracy, color=color, linestyle=":", label=f"{r.method}: accuracy")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("train loss (lines)")
        acc_ax.set_ylabel("eval accuracy % (markers)")
        ax.set_title(next(r.title for r in results if r.task == task), fontsize=9)
        handles = ax.get_legend_handles_labels()[0] + acc_ax.get_legend_handles_labels()[0]
        ax.legend(handles=handles, fontsize=7, loc="best")
    fig.tight_layout()
    _save(fig, path)


def write_report(
    results: list[MethodResult],
    out: Path,
    fetch_s: float,
    total_s: float,
    budget_minutes: float,
    machine: str,
    configs: dict[str, str],
    hub: bool = False,
) -> str:
    """Writes ``report.md``, ``accuracy.png`` and ``curves.png`` under ``out``; returns the results table."""
    out.mkdir(parents=True, exist_ok=True)
    plot_accuracy(results, out / "accuracy.png")
    plot_curves(results, out / "curves.png")
    table = results_table(results)
    source = "hub model names (--hub)" if hub else "packaged assets (promptcore.assets), no model hub"
    lines = [
        "# prompttune demo report",
        "",
        f"Measured by `make demo` (`demo/run_demo.py`) on {machine}; models from {source}. Every number is what this",
        "run measured. Accuracy is the last evaluation after training, on held-out test rows.",
        "",
        table,
        "",
        f"Total wall time {total_s / 60:.1f} min (budget {budget_minutes:g} min), of which fetching and preparing the "
        f"assets {fetch_s:.0f} s.",
        "",
        "![accuracy per method](accuracy.png)",
        "",
        "![training curves](curves.png)",
        "",
        "Run configs (sizes, learning rates, seeds):",
        "",
        *[f"- `{name}`: `{path}`" for name, path in configs.items()],
        "",
        "Baselines: `linear probe` trains only the head on the frozen features (the same model with the prompt taken",
        "out); `zero-shot` scores the verbalizer words after the same template with nothing trained (demo/baselines.py).",
        "Runs (prompts, metrics, curves) are under `demo/runs/`.",
        "",
    ]
    atomic_write_text(out / "report.md", "\n".join(lines))
    return table
