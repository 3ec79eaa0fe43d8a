"""A text method added from outside the package: one config class, one model class, one register_method line, and
it trains, saves, evaluates and generates through the textpt CLI and loads from YAML, with no other edit."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
import torch

from promptcore import METHODS, SoftPrompt, load_config, load_prompt_files, register_method
from textpt.cli import main
from textpt.config import SoftPromptConfig
from textpt.model import SoftPromptedModel
from textpt.run_config import TextRunConfig

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "smoke" / "textpt_tiny.yaml")
FAST = ["--set", "train.max_steps=3", "--set", "data.num_samples=24", "--set", "data.num_eval_samples=8", "--set", "train.batch_size=8"]
TOY = ["--set", "prompt={method: toy_repeat, num_tokens: 4, scale: 0.5}"]


@dataclass
class RepeatConfig(SoftPromptConfig):
    """One trained vector repeated ``num_tokens`` times, times ``scale``."""

    method: Literal["toy_repeat"] = "toy_repeat"
    scale: float = 1.0


class RepeatModel(SoftPromptedModel):
    method = "toy_repeat"

    def __init__(self, backbone: torch.nn.Module, config: RepeatConfig, tokenizer: Any = None, task: str | None = None, name: str | None = None) -> None:
        super().__init__(backbone, config, tokenizer, task, name)
        generator = torch.Generator().manual_seed(config.seed)
        self.prompts = SoftPrompt(1, self.dim, init="normal", std=config.init_std, generator=generator).to(backbone.dtype)
        self.freeze_backbone()

    def shallow_prompt(self, task_ids: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        return self.prompts(batch_size).expand(-1, self.config.num_tokens, -1) * self.config.scale


@pytest.fixture
def toy_method():
    record = register_method("toy_repeat", RepeatConfig, RepeatModel, kind="text", summary="a test method")
    yield record
    METHODS.remove("text:toy_repeat")


def _json_out(capsys) -> dict:
    out = capsys.readouterr().out
    return json.loads(out[out.index("{"):])


def test_a_method_registered_from_a_test_file_runs_through_the_cli(toy_method, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "-c", SMOKE, "-o", str(run), *FAST, *TOY]) == 0
    assert _json_out(capsys)["step"] == 3
    tensors, meta = load_prompt_files(run / "best")
    assert meta["method"] == "toy_repeat" and meta["num_tokens"] == 4
    assert set(tensors) == {"prompts.weight"} and tensors["prompts.weight"].shape == (1, 32)
    saved = load_config(TextRunConfig, run / "config.yaml")
    assert isinstance(saved.prompt, RepeatConfig) and saved.prompt.scale == 0.5

    assert main(["eval", "-c", SMOKE, "--prompts", str(run / "best"), *FAST, *TOY]) == 0
    metrics = _json_out(capsys)
    assert metrics["count"] == 8 and 0 <= metrics["accuracy"] <= 1

    assert main(["generate", "-c", SMOKE, "--prompts", str(run / "best"), "a good movie", *FAST, *TOY]) == 0
    assert "[1] a good movie" in capsys.readouterr().out


def test_the_method_is_gone_once_removed(tmp_path, capsys):
    assert "text:toy_repeat" not in METHODS
    assert main(["train", "-c", SMOKE, "-o", str(tmp_path / "run"), *FAST, *TOY]) == 2
    assert "prompt.method: unknown text method 'toy_repeat'" in capsys.readouterr().err
