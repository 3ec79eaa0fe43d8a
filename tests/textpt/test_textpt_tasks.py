"""The task strategies (textpt.tasks): one per model task, each stating its batch layout and its metrics, and the
eval step reporting exactly those metrics; the one pad-id policy; prompt sections without a method key."""

from __future__ import annotations

from typing import get_args

import pytest
import torch

import textpt
from promptcore import load_config
from textpt import PromptTuningConfig, TextModelConfig, load_model_and_tokenizer
from textpt.config import TaskName
from textpt.padding import pad_token_id, repad
from textpt.run_config import TextRunConfig
from textpt.tasks import IGNORE_INDEX, TASKS
from tiny_text import TINY_CONFIGS

ROWS = [[5, 6, 7, 8], [9, 10], [11, 12, 13]]


def test_every_task_name_of_the_model_config_has_a_strategy():
    assert sorted(get_args(TaskName)) == TASKS.names()
    with pytest.raises(KeyError, match=r"unknown text model task 'clasify'.*Known: causal_lm, seq2seq, seq_cls"):
        TASKS.get("clasify")


@pytest.mark.parametrize(
    "task, verbalizer, target, layout",
    [
        ("causal_lm", None, "answer", "causal_lm"),
        ("causal_lm", [" a", " b"], None, "classification"),
        ("seq2seq", [" a", " b"], None, "seq2seq"),
        ("seq2seq", None, "answer", "seq2seq"),
        ("seq_cls", None, None, "classification"),
    ],
)
def test_layouts(task, verbalizer, target, layout):
    assert TASKS.get(task).layout(verbalizer, target) == layout


def test_causal_lm_without_verbalizer_or_targets_has_no_layout():
    with pytest.raises(ValueError, match="model.task causal_lm needs prompt.verbalizer .* or data.target_column"):
        TASKS.get("causal_lm").layout(None, None)


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
    torch.manual_seed(0)
    backbone, tok = load_model_and_tokenizer(TextModelConfig(name=f"random:{model_type}", task=task, kwargs=TINY_CONFIGS[model_type]))
    pt = textpt.wrap(backbone, PromptTuningConfig(num_tokens=2, **prompt), tokenizer=tok)
    ids, mask = repad(ROWS, pad_token_id(tok), tok.padding_side, torch.device("cpu"))
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
