"""The demo's report: a markdown table of what each method measured, with 95% intervals, whether each prompt
method's difference from its baseline is significant, an accuracy chart with error bars and training curves."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptcore.io import atomic_path, atomic_write_text
from demo.stats import Comparison, binomial_interval, compare_accuracies

LEVEL = 0.05  # significance level of the report's comparisons; the intervals are at 1 - LEVEL


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
        rows_correct: per evaluation row, in the evaluation set's order, whether the method got it right (for the
            paired significance test); None when not recorded.
        baseline: whether this is a baseline (head only or zero-shot) that the task's prompt methods are compared with.
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
    rows_correct: list[bool] | None = None
    baseline: bool = False

    @property
    def correct(self) -> int:
        """Rows classified correctly (the accuracy is a mean over ``eval_rows`` rows)."""
        return round(self.accuracy * self.eval_rows)

    def interval(self) -> tuple[float, float]:
        """The accuracy's Wilson interval at ``1 - LEVEL``, as fractions."""
        return binomial_interval(self.correct, self.eval_rows, 1 - LEVEL)


def _params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def _accuracy(r: MethodResult) -> str:
    low, high = r.interval()
    return f"{100 * r.accuracy:.1f}% [{100 * low:.1f}, {100 * high:.1f}]"


def results_table(results: list[MethodResult]) -> str:
    """The markdown table: one row per task and method, each accuracy with its 95% interval."""
    lines = [
        "| task | method | accuracy [95% interval] | eval rows | trainable params | of total | train rows | wall time |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        share = f"{100 * r.trainable / r.total:.3f}%" if r.total else "-"
        lines.append(
            f"| {r.title} | {r.method} | {_accuracy(r)} | {r.eval_rows} | {_params(r.trainable)} | {share} "
            f"| {r.train_rows} | {r.wall_s:.0f} s |"
        )
    return "\n".join(lines)


def comparisons(results: list[MethodResult]) -> list[tuple[MethodResult, MethodResult, Comparison]]:
    """Per task, each prompt method against each of the task's baselines: McNemar's exact test when both per-row
    outcomes were recorded, else the two-proportion z-test."""
    pairs = []
    for task in dict.fromkeys(r.task for r in results):
        rows = [r for r in results if r.task == task]
        for method in (r for r in rows if not r.baseline):
            for base in (r for r in rows if r.baseline):
                test = compare_accuracies(method.correct, method.eval_rows, base.correct, base.eval_rows,
                                          method.rows_correct, base.rows_correct)  # fmt: skip
                pairs.append((method, base, test))
    return pairs


def _colors(rows: list[MethodResult]) -> list[str]:
    """Prompt methods in colours, baselines in grey."""
    prompts = iter(["tab:blue", "tab:green", "tab:orange", "tab:purple"])
    return ["tab:gray" if r.baseline else next(prompts, "tab:blue") for r in rows]


def _p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def significance_lines(results: list[MethodResult]) -> list[str]:
    """One markdown bullet per comparison of :func:`comparisons`: the difference, whether it is significant at
    ``LEVEL`` and the p-value."""
    lines = []
    for method, base, test in comparisons(results):
        verdict = "significant" if test.significant(LEVEL) else "not significant"
        paired = test.test == "McNemar exact"
        rows = f"{method.eval_rows} paired test rows" if paired else f"{method.eval_rows} and {base.eval_rows} test rows"
        lines.append(
            f"- {method.title}: {method.method} {100 * method.accuracy:.1f}% vs {base.method} {100 * base.accuracy:.1f}%, "
            f"difference {100 * test.difference:+.1f} points: **{verdict}** at {100 * LEVEL:g}% "
            f"({test.test} test on {rows}, p = {_p(test.p_value)})"
        )
    return lines


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def plot_accuracy(results: list[MethodResult], path: Path) -> None:
    """Bar chart: accuracy per method, grouped by task, with each accuracy's 95% interval as an error bar."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tasks = list(dict.fromkeys(r.task for r in results))
    fig = Figure(figsize=(max(4, 1.4 * max(sum(r.task == t for r in results) for t in tasks)) * len(tasks), 4), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    for ax, task in zip(axes, tasks):
        rows = [r for r in results if r.task == task]
        acc = [100 * r.accuracy for r in rows]
        intervals = [(100 * low, 100 * high) for low, high in (r.interval() for r in rows)]
        errors = [[a - low for a, (low, _) in zip(acc, intervals)], [high - a for a, (_, high) in zip(acc, intervals)]]
        bars = ax.bar(range(len(rows)), acc, color=_colors(rows), yerr=errors, capsize=6, ecolor="black")
        labels = [f"{a:.1f}%\n[{low:.1f}, {high:.1f}]\nn={r.eval_rows}" for a, (low, high), r in zip(acc, intervals, rows)]
        ax.bar_label(bars, labels=labels, label_type="center", fontsize=8, color="white")
        ax.set_xticks(range(len(rows)), [r.method.replace(" + ", "\n+ ").replace(" (", "\n(") for r in rows], fontsize=8)
        ax.set_ylim(0, 105)
        ax.set_ylabel(f"accuracy (%), {100 * (1 - LEVEL):g}% interval")
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
        rows = [r for r in results if r.task == task]
        for color, r in zip(_colors(rows), rows):
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
    """Writes ``report.md``, ``accuracy.png`` and ``curves.png`` under ``out``; returns the results table and the
    significance lines.

    Per task, each prompt method is compared with each baseline (:func:`comparisons`).
    """
    out.mkdir(parents=True, exist_ok=True)
    plot_accuracy(results, out / "accuracy.png")
    plot_curves(results, out / "curves.png")
    table = results_table(results)
    significance = significance_lines(results)
    source = "hub model names (--hub)" if hub else "packaged assets (promptcore.assets), no model hub"
    lines = [
        "# prompttune demo report",
        "",
        f"Measured by `make demo` (`demo/run_demo.py`) on {machine}; models from {source}. Every number is what this",
        "run measured. Accuracy is the last evaluation after training, on held-out test rows; the brackets give its",
        f"{100 * (1 - LEVEL):g}% Wilson interval over the test rows (demo.stats.binomial_interval).",
        "",
        table,
        "",
        f"Is each prompt method's difference from its baseline significant at {100 * LEVEL:g}%? Both ran on the same",
        "test rows: McNemar's exact test on the rows the two classify differently (a two-proportion z-test where the",
        "per-row outcomes were not recorded; each line names its test):",
        "",
        *significance,
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
        "Baselines: `linear probe` trains only a head on the frozen backbone's pooled features (the library's",
        "`linear_probe` method); `zero-shot` scores the verbalizer words after the same template with nothing trained",
        "(textpt's `zero_shot` method).",
        "Runs (prompts, metrics, curves) are under `demo/runs/`.",
        "",
    ]
    atomic_write_text(out / "report.md", "\n".join(lines))
    return "\n".join([table, "", *significance])
