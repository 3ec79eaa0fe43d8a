"""``vpt sweep`` and :func:`promptcore.sweep.run_sweep`: one run per grid point and seed, ranked by the final
evaluation; a preset's ``sweep:`` grid and ``source:`` provenance are validated with the run config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from promptcore.config import ConfigError, grid_points
from promptcore.sweep import parse_grid, run_sweep
from vpt import load_run_config
from vpt.cli import VisionRecipe, main

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke" / "vpt_tiny.yaml"
QUICK = ["train.epochs=1", "train.max_steps=2", "data.synthetic.num_train=64", "data.synthetic.num_eval=32"]


def test_grid_points_are_the_product_as_typed_overrides() -> None:
    points = grid_points({"train.lr": [0.5, 1.0e-4], "train.weight_decay": [0.0, 0.01]})
    assert points == [
        ["train.lr=0.5", "train.weight_decay=0.0"], ["train.lr=0.5", "train.weight_decay=0.01"],
        ["train.lr=0.0001", "train.weight_decay=0.0"], ["train.lr=0.0001", "train.weight_decay=0.01"],
    ]
    cfg = load_run_config(SMOKE, points[2])
    assert cfg.train.lr == 1.0e-4 and cfg.train.weight_decay == 0.0


@pytest.mark.slow
def test_the_sweep_runs_every_point_and_seed_and_ranks_by_the_final_metric(tmp_path: Path, capsys) -> None:
    argv = ["sweep", "-c", str(SMOKE), *[a for o in QUICK for a in ("--set", o)], "--grid", "train.lr=[1.0e-6, 0.05]",
            "--seeds", "0", "1", "-o", str(tmp_path / "sweep")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert [p["name"] for p in result["points"]] == ["train.lr=1.0e-06", "train.lr=0.05"]
    assert all([r["seed"] for r in p["runs"]] == [0, 1] for p in result["points"])
    means = [p["mean"] for p in result["points"]]
    assert result["best"]["name"] == result["points"][means.index(max(means))]["name"]
    assert means[1] > means[0]  # a rate of 1e-6 learns nothing in two steps
    for point in result["points"]:
        for run in point["runs"]:
            recorded = yaml.safe_load((Path(run["run_dir"]) / "config.yaml").read_text())
            assert recorded["train"]["seed"] == run["seed"] and recorded["train"]["lr"] == float(point["name"].split("=")[1])
    assert "best: --set train.lr=0.05" in out and "| train.lr=0.05 (best) |" in (tmp_path / "sweep" / "sweep.md").read_text()


def test_a_presets_own_grid_runs_without_grid_arguments(tmp_path: Path) -> None:
    config = yaml.safe_load(SMOKE.read_text())
    config["sweep"] = {"train.weight_decay": [0.0, 0.1]}
    config["source"] = {"train.weight_decay": "local: a test grid", "sweep": "local: a test grid"}
    result = run_sweep(VisionRecipe(), config, QUICK)
    assert [p["overrides"] for p in result["points"]] == [["train.weight_decay=0.0"], ["train.weight_decay=0.1"]]
    assert [len(p["runs"]) for p in result["points"]] == [1, 1] and result["points"][0]["runs"][0]["run_dir"] is None


def test_grid_and_source_mistakes_are_reported(tmp_path: Path) -> None:
    config = yaml.safe_load(SMOKE.read_text())
    with pytest.raises(ConfigError, match=r"sweep.train.lrr: not a field of the run config") as e:
        load_run_config({**config, "sweep": {"train.lrr": [0.1], "train.lr": []}})
    assert "sweep.train.lr: give a non-empty list" in str(e.value)
    with pytest.raises(ConfigError, match=r"source.prompt.num_tokenz: not a field of the run config"):
        load_run_config({**config, "source": {"prompt.num_tokenz": "KMnP/vpt configs/base-prompt.yaml"}})
    with pytest.raises(ConfigError, match=r"source.train.lr: give the value's origin"):
        load_run_config({**config, "source": {"train.lr": " "}})
    with pytest.raises(ConfigError, match=r"--grid 'train.lr=0.1': give the values to try as a list"):
        parse_grid(["train.lr=0.1"])
    assert main(["sweep", "-c", str(SMOKE), "--grid", "train.seed=[1, 2]"]) == 2  # seeds go to --seeds: one error line


def test_without_a_grid_the_seeds_alone_are_swept() -> None:
    result = run_sweep(VisionRecipe(), SMOKE, QUICK, seeds=[3, 4])
    assert [p["name"] for p in result["points"]] == ["config"] and [r["seed"] for r in result["points"][0]["runs"]] == [3, 4]
