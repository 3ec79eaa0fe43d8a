"""The task strategies (textpt.tasks): one per model task, each deciding what its rows learn, its batches and its
metrics, and the eval step reporting exactly those metrics; calls going one way (model -> task); the one pad-id
policy; prompt sections without a method key."""

from __future__ import annotations

import pytest
import torch

import textpt
from promptcore import load_config
from promptcore.config import ConfigError
from textpt import PromptTuningConfig, TextModelConfig, load_model_and_tokenizer
from textpt.config import registered_tasks
from textpt.padding import pad_token_id, repad
from textpt.run_config import TextRunConfig
from textpt.tasks import IGNORE_INDEX, TASKS, SequenceClassification, TextCollator
from tiny_text import TINY_CONFIGS

ROWS = [[5, 6, 7, 8], [9, 10], [11, 12, 13]]


def test_model_task_takes_the_registered_tasks():
    assert registered_tasks() == ("causal_lm", "seq2seq", "seq_cls") == tuple(TASKS.names())
    with pytest.raises(KeyError, match=r"unknown text model task 'clasify'.*Known: causal_lm, seq2seq, seq_cls"):
        TASKS.get("clasify")

    class Renamed(SequenceClassification):
        name = "renamed_cls"

    with pytest.raises(ConfigError, match=r"task: 'renamed_cls' is not one of 'causal_lm', 'seq2seq', 'seq_cls'"):
        load_config(TextModelConfig, {"name": "random:bert", "task": "renamed_cls"})
    with TASKS.temporarily(Renamed.name, Renamed()):
        assert load_config(TextModelConfig, {"name": "random:bert", "task": "renamed_cls"}).task == "renamed_cls"
        assert "renamed_cls" in registered_tasks()


@pytest.mark.parametrize(
    "task, target, learns_labels, labels_aligned",
    [
        ("causal_lm", "answer", False, True),
        ("causal_lm", None, True, True),
        ("seq2seq", None, True, False),
        ("seq2seq", "answer", False, False),
        ("seq_cls", None, True, True),
    ],
)
def test_each_task_decides_what_rows_learn_and_how_batches_pad(task, target, learns_labels, labels_aligned):
    strategy = TASKS.get(task)
    assert strategy.learns_labels(target) is learns_labels
    collate = strategy.collator(0, "left")
    assert isinstance(collate, TextCollator) and collate.labels_aligned is labels_aligned


def test_causal_lm_without_verbalizer_or_targets_is_refused():
    with pytest.raises(ValueError, match="data.target_column: model.task causal_lm needs prompt.verbalizer .* or data.target_column"):
        TASKS.get("causal_lm").check_run(PromptTuningConfig(), None)


def _wrapped(model_type: str, task: str, prompt: dict):
    """A tiny model of ``model_type`` for ``task`` with prompt tuning (``prompt``: more config fields), and ``ROWS``
    padded as its tokenizer pads: ``(model, input_ids, attention_mask)``."""
    torch.manual_seed(0)
    backbone, tok = load_model_and_tokenizer(TextModelConfig(name=f"random:{model_type}", task=task, kwargs=TINY_CONFIGS[model_type]))
    pt = textpt.wrap(backbone, PromptTuningConfig(num_tokens=2, **prompt), tokenizer=tok)
    return (pt, *repad(ROWS, pad_token_id(tok), tok.padding_side, torch.device("cpu")))


class _Tracing:
    """A task strategy's stand-in recording every call that reaches it while another of its calls is running: a
    call from the task back into the model that comes back to the task."""

    def __init__(self, task) -> None:
        self.task, self.depth, self.reentered = task, 0, []

    def __getattr__(self, name):
        attr = getattr(self.task, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            if self.depth:
                self.reentered.append(name)
            self.depth += 1
            try:
                return attr(*args, **kwargs)
            finally:
                self.depth -= 1

        return call


@pytest.mark.parametrize(
    "model_type, task, prompt, tokens",
    [
        ("gpt2", "causal_lm", {}, True),
        ("gpt2", "causal_lm", {"verbalizer": ["good", "bad"]}, False),
        ("gpt2", "causal_lm", {"verbalizer": ["good", "very bad"]}, False),
        ("t5", "seq2seq", {"verbalizer": ["good", "bad"]}, True),
        ("bert", "seq_cls", {"num_classes": 2}, False),
    ],
)
def test_calls_go_from_the_model_to_the_task_and_never_back(model_type, task, prompt, tokens):
    pt, ids, mask = _wrapped(model_type, task, prompt)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 0])}
    if tokens:
        batch = {"input_ids": ids, "attention_mask": mask, "lm_labels": ids.masked_fill(mask == 0, IGNORE_INDEX)}
    pt.strategy = tracing = _Tracing(pt.strategy)
    pt.training_step(batch).backward()
    pt.eval_step(batch)
    pt.metric_names()
    if task != "seq2seq":
        pt(ids, mask)
    if pt.classifies or task == "seq2seq" and prompt.get("verbalizer"):
        pt.class_logits(ids, mask)
    if task != "seq_cls":
        pt.generate(ids, mask, max_new_tokens=2)
    assert tracing.reentered == []


@pytest.mark.parametrize(
    "model_type, task, prompt, metrics",
    [
        ("gpt2", "causal_lm", {}, ("loss", "token_accuracy")),
        ("gpt2", "causal_lm", {"verbalizer": ["good", "bad"]}, ("loss", "accuracy")),
        ("t5", "seq2seq", {"verbalizer": ["good", "bad"]}, ("loss", "token_accuracy")),
        ("bert", "seq_cls", {"num_classes": 2}, ("loss", "accuracy")),
    ],
)
def test_eval_step_reports_the_metrics_the_model_names(model_type, task, prompt, metrics):
    pt, ids, mask = _wrapped(model_type, task, prompt)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 0])}
    if task == "causal_lm" and not prompt:
        batch = {"input_ids": ids, "attention_mask": mask, "lm_labels": ids.masked_fill(mask == 0, IGNORE_INDEX)}
    elif task == "seq2seq":
        batch["lm_labels"] = torch.tensor([[5, 6, IGNORE_INDEX], [7, IGNORE_INDEX, IGNORE_INDEX], [8, 9, 10]])
    assert pt.metric_names() == metrics
    assert set(pt.eval_step(batch)) == {*metrics, "count"}


def test_one_pad_id_policy():
    assert pad_token_id(None) == 0  # a model wrapped without a tokenizer: padding is masked, any id will do
    _, tok = load_model_and_tokenizer(TextModelConfig(name="random:gpt2", kwargs=TINY_CONFIGS["gpt2"]))
    assert pad_token_id(tok) == tok.pad_token_id == tok.eos_token_id  # the loader pads with EOS when there is no pad
    tok.pad_token = None
    assert pad_token_id(tok) == tok.eos_token_id


def test_a_prompt_section_without_method_is_prompt_tuning():
    cfg = load_config(TextRunConfig, {"model": {"name": "random:gpt2"}, "prompt": {"num_tokens": 5}})
    assert type(cfg.prompt) is PromptTuningConfig and cfg.prompt.num_tokens == 5
    assert type(load_config(TextRunConfig, {"model": {"name": "random:gpt2"}}).prompt) is PromptTuningConfig
