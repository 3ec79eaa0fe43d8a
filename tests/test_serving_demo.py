"""The serving demo (demo/serving_demo.py): its pieces, and the whole pipeline on tiny sizes with the packaged assets
(five prompts trained, served on two backbones through the Python API and HTTP, every answer equal to the prompt's
offline prediction), run as docs/serving_demo.md shows it."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from demo.serving_demo import TASKS, Sizes, TaskResult, interleaved, verdict_of, write_report
from promptcore import load_config
from test_docs import run_doc

ROOT = Path(__file__).resolve().parents[1]


def test_tasks_are_three_vision_and_two_text_prompts_on_one_backbone_each():
    from textpt.cli import TextRecipe
    from vpt.cli import VisionRecipe

    assert [t.package for t in TASKS] == ["vpt"] * 3 + ["textpt"] * 2
    for package, recipe in (("vpt", VisionRecipe), ("textpt", TextRecipe)):
        cfgs = [load_config(recipe.config_class, ROOT / t.config) for t in TASKS if t.package == package]
        assert len({repr(c.model) for c in cfgs}) == 1  # one served backbone per package
        assert cfgs[0].model.name in ("asset:efficientnet_lite0", "asset:smollm2_135m")
    groups = load_config(VisionRecipe.config_class, ROOT / "configs/serving_demo/vpt_fashion_groups.yaml").data.class_groups
    assert list(groups) == ["tops", "bottoms", "footwear", "bags"] and sum(len(v) for v in groups.values()) == 10
    assert sorted(p.name for p in (ROOT / "configs/serving_demo").glob("*.yaml")) == sorted(Path(t.config).name for t in TASKS)


def test_requests_interleave_tasks_and_verdicts_read_the_first_word():
    items = interleaved(TASKS[:3], 20)
    assert sorted((t.name, i) for t, i in items) == sorted((t.name, i) for t in TASKS[:3] for i in range(20))
    assert len({t.name for t, _ in items[:10]}) == 3 and interleaved(TASKS[:3], 20) == items  # mixed, seeded
    assert verdict_of(" Fresh. It is") == "fresh" and verdict_of(" rotten") == "rotten" and verdict_of("  ") == ""


def test_report_gives_accuracy_with_its_interval_and_the_matched_requests(tmp_path: Path):
    results = [TaskResult(TASKS[0], [str(i) for i in range(10)], 80, 100, 9, 10, 4, 4, 72.7)]
    table = write_report(results, tmp_path / "r.md", "test machine", {"training": 60.0, "serving": 30.0}, Sizes(), tiny=False)
    assert "| 80.0% [71.1%, 86.7%] of 100 | 9 / 10 | 4 / 4 | 72.7 KB |" in table  # Wilson interval of 80/100
    text = (tmp_path / "r.md").read_text()
    assert "Machine: test machine. Wall time 1.5 min (training 1.0 min, serving 0.5 min)." in text and "--tiny" not in text


@pytest.mark.slow
@pytest.mark.download
def test_the_documented_tiny_run_trains_serves_and_matches_offline_predictions(tmp_path: Path):
    # docs/serving_demo.md's examples, as tests/test_docs.py runs every doc (it leaves this one to this test):
    # `python demo/serving_demo.py --tiny --out tiny-run`, then the server's Python API on the folders it wrote
    run_doc(ROOT / "docs" / "serving_demo.md", tmp_path)
    out = tmp_path / "tiny-run"
    text = (out / "serving_report.md").read_text()  # the run exits 1 when a served answer differed
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [re.match(r"\| `([\w-]+)`", r).group(1) for r in rows] == [t.name for t in TASKS]
    for row in rows:
        python, http = re.findall(r"\| (\d+) / (\d+) ", row)
        assert python[0] == python[1] != "0" and http[0] == http[1] != "0", row
    assert "A `--tiny` run" in text
    for task in TASKS:
        folder = out / "prompts" / task.package / task.name
        assert (folder / "prompt_config.json").is_file()
    with open(out / "data" / "verdict_test.csv", newline="") as f:
        verdicts = {row["verdict"] for row in csv.DictReader(f)}
    assert verdicts == {"fresh", "rotten"}
