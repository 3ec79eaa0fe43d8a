"""Every inference path builds the backbone the prompts were trained on: ``vpt eval`` / ``vpt predict``, ``textpt
eval`` / ``textpt generate`` and the Python loaders, also when the config's ``train.seed`` differs from the run's
(a random backbone is rebuilt with the seed recorded in the prompt folder, with a warning naming both)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from PIL import Image

import textpt
import vpt
from textpt.cli import main as textpt_main
from vpt.cli import main as vpt_main

ROOT = Path(__file__).resolve().parents[1]
TEXT = str(ROOT / "configs" / "smoke" / "textpt_tiny.yaml")
VISION = str(ROOT / "configs" / "smoke" / "vpt_tiny.yaml")
TEXT_FAST = ["--set", "train.max_steps=2", "--set", "data.num_samples=24", "--set", "data.num_eval_samples=8", "--set", "train.batch_size=8"]
VISION_FAST = ["--set", "train.max_steps=2", "--set", "data.synthetic.num_train=16", "--set", "data.synthetic.num_eval=8", "--set", "train.batch_size=8"]
FOREIGN = "was trained on backbone"  # promptcore.model's warning for prompts on other weights


def caught(run) -> list[str]:
    """The messages of the warnings ``run()`` gives (after asserting it succeeds)."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert run() == 0
    return [str(w.message) for w in seen]


def check_rebuilt(messages: list[str]) -> None:
    assert not [m for m in messages if FOREIGN in m]
    assert [m for m in messages if "built with train.seed 3; building it with that seed, not the config's 0" in m]


def test_textpt_eval_generate_and_load_prompted_meet_the_trained_backbone(tmp_path, capsys):
    run = tmp_path / "run"
    assert textpt_main(["train", "-c", TEXT, "-o", str(run), *TEXT_FAST, "--set", "train.seed=3"]) == 0
    best = str(run / "best")
    check_rebuilt(caught(lambda: textpt_main(["eval", "-c", TEXT, "--prompts", best, *TEXT_FAST])))
    check_rebuilt(caught(lambda: textpt_main(["generate", "-c", TEXT, "--prompts", best, "a good movie", *TEXT_FAST])))
    own = caught(lambda: textpt_main(["eval", "-c", str(run / "config.yaml"), "--prompts", best]))  # seeds as the run did
    assert not [m for m in own if "train.seed" in m or FOREIGN in m]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=f".*{FOREIGN}")
        textpt.load_prompted(best)


def test_vpt_eval_predict_and_load_prompted_meet_the_trained_backbone(tmp_path, capsys):
    run = tmp_path / "run"
    assert vpt_main(["train", "-c", VISION, "-o", str(run), *VISION_FAST, "--set", "train.seed=3"]) == 0
    best = str(run / "best")
    Image.new("RGB", (32, 32), (200, 10, 10)).save(tmp_path / "red.png")
    check_rebuilt(caught(lambda: vpt_main(["eval", "-c", VISION, "--prompts", best, *VISION_FAST])))
    check_rebuilt(caught(lambda: vpt_main(["predict", "-c", VISION, "--prompts", best, str(tmp_path / "red.png")])))
    assert not [m for m in caught(lambda: vpt_main(["predict", "--prompts", best, str(tmp_path / "red.png")])) if FOREIGN in m]
    assert json.loads((run / "best" / "prompt_config.json").read_text())["backbone_seed"] == 3
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=f".*{FOREIGN}")
        vpt.load_prompted(best)
