"""The demo's report (demo/report.py) from fake results: intervals in the table and on the chart, one significance
line per task with the test used and its p-value; and the per-row recording (demo/run_demo.py) that feeds the
paired test, on a toy model through the real trainer."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent / "scripts"))

from demo.report import MethodResult, comparisons, write_report  # noqa: E402
from demo.run_demo import last_evaluation, recording_rows  # noqa: E402
from promptcore import Trainer, TrainConfig  # noqa: E402
from demo.stats import binomial_interval, mcnemar_exact, two_proportion_z_test  # noqa: E402
from toy_prompted import toy_data, toy_model  # noqa: E402


BASELINES = ("linear probe", "probe", "zero-shot")


def _result(task: str, method: str, correct: int, n: int, rows: list[bool] | None = None) -> MethodResult:
    records = [{"split": "train", "step": 1, "loss": 0.7}, {"split": "eval", "step": 1, "accuracy": correct / n}]
    return MethodResult(task, f"{task} title", method, correct / n, n, 100, 10_000, 50, 1.0, records, rows, baseline=method in BASELINES)


def _interval_text(correct: int, n: int) -> str:
    low, high = binomial_interval(correct, n)
    return f"{100 * correct / n:.1f}% [{100 * low:.1f}, {100 * high:.1f}]"


def test_report_shows_intervals_and_whether_each_difference_is_significant(tmp_path):
    prompt_rows = [True] * 814 + [False] * 186  # 9 more rows right than the probe, none fewer: paired p = 2/2^9
    probe_rows = [True] * 805 + [False] * 195
    results = [
        _result("vision", "pixel prompt", 814, 1000, prompt_rows),
        _result("vision", "linear probe", 805, 1000, probe_rows),
        _result("lm", "prompt tuning", 302, 400),  # no per-row outcomes: the unpaired test
        _result("lm", "zero-shot", 298, 400),
    ]
    summary = write_report(results, tmp_path, 1.0, 60.0, 15, "test machine", {"vision": "configs/demo/vision_pixel.yaml"})
    report = (tmp_path / "report.md").read_text()
    assert (tmp_path / "accuracy.png").stat().st_size > 0 and (tmp_path / "curves.png").stat().st_size > 0
    assert "| accuracy [95% interval] | eval rows |" in report
    assert "| vision title | pixel prompt | 81.4% [78.9, 83.7] | 1000 |" in report  # published-style Wilson bounds
    for correct, n in [(805, 1000), (302, 400), (298, 400)]:
        assert f"| {_interval_text(correct, n)} | {n} |" in report
    vision_line = (
        f"- vision title: pixel prompt 81.4% vs linear probe 80.5%, difference +0.9 points: **significant** at 5% "
        f"(McNemar exact test on 1000 paired test rows, p = {mcnemar_exact(9, 0):.3f})"
    )
    lm_line = (
        f"- lm title: prompt tuning 75.5% vs zero-shot 74.5%, difference +1.0 points: **not significant** at 5% "
        f"(two-proportion z test on 400 and 400 test rows, p = {two_proportion_z_test(302, 400, 298, 400):.3f})"
    )
    assert vision_line in report.splitlines() and lm_line in report.splitlines()
    assert vision_line in summary and lm_line in summary  # what the demo prints at the end


def test_each_baseline_is_compared_with_its_tasks_prompt_method():
    results = [_result("a", "prompt", 60, 100), _result("a", "probe", 50, 100), _result("a", "zero-shot", 40, 100), _result("b", "prompt", 9, 10)]
    pairs = comparisons(results)
    assert [(m.method, b.method) for m, b, _ in pairs] == [("prompt", "probe"), ("prompt", "zero-shot")]
    assert pairs[1][2].significant() and pairs[1][2].difference == pytest.approx(0.2)


def test_every_prompt_method_of_a_task_is_compared_with_its_baseline(tmp_path):
    results = [_result("a", "shallow", 60, 100), _result("a", "deep", 70, 100), _result("a", "probe", 50, 100)]
    pairs = comparisons(results)
    assert [(m.method, b.method) for m, b, _ in pairs] == [("shallow", "probe"), ("deep", "probe")]
    assert [round(t.difference, 6) for _, _, t in pairs] == [0.1, 0.2]
    write_report(results, tmp_path, 1.0, 60.0, 15, "test machine", {})
    lines = (tmp_path / "report.md").read_text().splitlines()
    assert sum(line.startswith("- a title: ") for line in lines) == 2


def test_recorded_rows_are_the_last_evaluation_of_a_real_training_run():
    model = toy_model()
    train, val = toy_data(40), toy_data(20, split="validation")
    config = TrainConfig(epochs=2, batch_size=8, lr=0.05, progress_bar=False, tensorboard=False)
    with recording_rows(model) as rows:
        metrics = Trainer(model, config, train, val).fit()["eval"]
    assert len(rows) == 2 * len(val)  # one evaluation per epoch; training steps (with gradients) are not recorded
    assert "forward_batch" not in vars(model)  # the model's own method again
    last = last_evaluation(rows, metrics)
    model.eval()
    with torch.no_grad():
        expected = [int(model.forward_batch({"pixel_values": x["pixel_values"][None]}).argmax(-1)) == x["labels"] for x in val]
    assert last == expected and sum(last) == round(metrics["accuracy"] * metrics["count"])
    assert 0 < sum(last) < len(val)  # a check that could tell right from wrong rows
    # a row missing, or one outcome that disagrees with the accuracy: no paired outcomes (the report says so)
    assert last_evaluation(rows[:-1], metrics) is None
    assert last_evaluation([*rows[:-1], not rows[-1]], metrics) is None
