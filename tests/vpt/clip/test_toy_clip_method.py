"""A CLIP method registered from a test file (tests/vpt/clip/toy_clip_method.py) runs through ``vpt train`` and
``vpt base2new`` like the library's own; ``base2new`` refuses a method that is not a CLIP method."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptcore import METHODS, register_method
from toy_clip_method import ToyCLIP, ToyCLIPConfig
from vpt.cli import main

SMOKE = str(Path(__file__).resolve().parents[3] / "configs" / "clip" / "smoke_coop_tiny.yaml")
TOY = ["--set", "prompt={method: toy_clip, n_ctx: 2}", "--set", "train.max_steps=2"]


@pytest.fixture
def toy_clip():
    register_method("toy_clip", ToyCLIPConfig, ToyCLIP, kind="vision", summary="a test's CLIP method")
    yield
    METHODS.remove("vision:toy_clip")


def test_vpt_train_runs_the_toy_clip_method(toy_clip, tmp_path, capsys):
    assert main(["train", "-c", SMOKE, *TOY, "-o", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    meta = json.loads((tmp_path / "run" / "last" / "prompt_config.json").read_text())
    assert meta["method"] == "toy_clip" and meta["class_names"] == ["class 0", "class 1", "class 2", "class 3"]  # from the data


def test_vpt_base2new_runs_the_toy_clip_method(toy_clip, tmp_path, capsys):
    assert main(["base2new", "-c", SMOKE, *TOY, "--seeds", "1", "-o", str(tmp_path / "b2n")]) == 0
    assert "| mean ± std |" in capsys.readouterr().out
    result = json.loads((tmp_path / "b2n" / "base2new.json").read_text())
    assert result["method"] == "toy_clip" and [r["seed"] for r in result["seeds"]] == [1]
    assert (tmp_path / "b2n" / "seed1" / "last" / "prompts.safetensors").is_file()


def test_base2new_without_an_output_folder_writes_its_results_and_says_where(toy_clip, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["base2new", "-c", SMOKE, *TOY, "--seeds", "1"]) == 0
    written = sorted(tmp_path.glob("runs/vpt-base2new-smoke_coop_tiny-*/base2new.json"))
    assert len(written) == 1 and json.loads(written[0].read_text())["method"] == "toy_clip"
    assert f"base2new: results written to {written[0].relative_to(tmp_path)}" in capsys.readouterr().err


def test_base2new_refuses_a_method_that_is_not_a_clip_method(tmp_path, capsys):
    argv = ["base2new", "-c", SMOKE, "--set", "prompt={method: vpt_deep, num_tokens: 2}", "--seeds", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "base2new works on CLIP methods (" in err and "not 'vpt_deep'" in err and "coop" in err
