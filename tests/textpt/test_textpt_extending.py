"""Text extensions from outside the package, each trained through the textpt CLI with no other edit: a method (one
config class, one model class, one register_method line; it also saves, evaluates, generates and loads from YAML),
a model task (tests/textpt/toy_task.py: one class, one TASKS.add) and a data source (tests/textpt/toy_source.py:
one load function, one SOURCES.add)."""

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
from textpt.data import TextDataConfig, build_text_data
from textpt.loading import prepare_tokenizer, tiny_tokenizer
from textpt.model import SoftPromptedModel
from textpt.run_config import TextRunConfig
from textpt.sources import SOURCES
from textpt.tasks import TASKS
from toy_source import TOY_REVIEWS, WORDS
from toy_task import ReversedMeanClassification

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


# ----- a model task ------------------------------------------------------------------------------------------------
TOY_TASK = ["--set", "model.task=reversed_mean", "--set", "model.name=random:bert"]


@pytest.fixture
def toy_task():
    with TASKS.temporarily(ReversedMeanClassification.name, ReversedMeanClassification()) as task:
        yield task
    assert "reversed_mean" not in TASKS


def test_a_task_registered_from_a_test_file_encodes_its_own_rows(toy_task):
    tok = prepare_tokenizer(tiny_tokenizer(), "right")
    cfg = TextDataConfig(num_samples=6, eval_split=None)
    ours = build_text_data(cfg, tok, task="reversed_mean", max_length=None, num_classes=2)
    plain = build_text_data(cfg, tok, task="seq_cls", max_length=None, num_classes=2)
    assert [e["input_ids"] for e in ours.train] == [e["input_ids"][::-1] for e in plain.train]
    assert [e["labels"] for e in ours.train] == [e["labels"] for e in plain.train]


def test_a_task_registered_from_a_test_file_runs_through_the_cli(toy_task, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "-c", SMOKE, "-o", str(run), *FAST, *TOY_TASK]) == 0
    assert _json_out(capsys)["step"] == 3
    tensors, meta = load_prompt_files(run / "best")
    assert meta["task"] == "reversed_mean" and meta["head"] == "linear" and tensors["head.weight"].shape == (2, 32)
    assert load_config(TextRunConfig, run / "config.yaml").model.task == "reversed_mean"

    assert main(["eval", "-c", SMOKE, "--prompts", str(run / "best"), *FAST, *TOY_TASK]) == 0
    metrics = _json_out(capsys)
    assert metrics["count"] == 8 and 0 <= metrics["accuracy"] <= 1

    assert main(["generate", "-c", SMOKE, "--prompts", str(run / "best"), "a good movie", *FAST, *TOY_TASK]) == 0
    out = capsys.readouterr().out
    assert "[1] a good movie" in out and "excellent" in out and "terrible" in out  # each class with its probability


def test_the_task_is_gone_once_removed(tmp_path, capsys):
    assert main(["train", "-c", SMOKE, "-o", str(tmp_path / "run"), *FAST, *TOY_TASK]) == 2
    assert "model.task: 'reversed_mean' is not one of 'causal_lm', 'seq2seq', 'seq_cls'" in capsys.readouterr().err


# ----- a data source -----------------------------------------------------------------------------------------------
TOY_SOURCE = ["--set", "data.source=toy_reviews", "--set", "prompt.verbalizer=[' terrible', ' excellent']"]


@pytest.fixture
def toy_source():
    with SOURCES.temporarily("toy_reviews", TOY_REVIEWS) as source:
        yield source
    assert "toy_reviews" not in SOURCES


def test_a_source_registered_from_a_test_file_trains_through_the_cli(toy_source, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "-c", SMOKE, "-o", str(run), *FAST, *TOY_SOURCE]) == 0
    result = _json_out(capsys)
    assert result["step"] == 3 and result["eval"]["count"] == 8
    saved = load_config(TextRunConfig, run / "config.yaml")
    assert saved.data.source == "toy_reviews" and saved.prompt.verbalizer == [" terrible", " excellent"]
    tok = prepare_tokenizer(tiny_tokenizer(), "left")
    bundle = build_text_data(saved.data, tok, task="causal_lm", max_length=64, verbalizer=saved.prompt.verbalizer)
    texts = [tok.decode(e["input_ids"], skip_special_tokens=True) for e in bundle.train]
    assert all(any(w in t for w in WORDS[e["labels"]]) for t, e in zip(texts, bundle.train))  # the source's rows


def test_the_source_is_gone_once_removed(tmp_path, capsys):
    assert main(["train", "-c", SMOKE, "-o", str(tmp_path / "run"), *FAST, *TOY_SOURCE]) == 2
    assert "data.source: unknown text data source 'toy_reviews'" in capsys.readouterr().err
