"""textpt's calls into transformers and torch raise no warnings: the key paths (the shared-prefix fast path, prefix
tuning, generation, seq2seq, the encoder classifier, gradient checkpointing) run with every warning an error.

A deprecated argument (``past_key_values=`` where transformers now takes ``cache=``) warns once and then breaks in
a later release; this test catches it the day it appears. Warnings that third-party code raises about its own
internals are let through below, each with its reason; none is allowed to come from our calls.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import textpt
from textpt import PrefixConfig, PromptTuningConfig, TextModelConfig, load_model_and_tokenizer
from textpt.fast_prefix import cache_argument, decoder_of
from textpt.padding import repad
from textpt.peft_interop import load_peft_adapter, save_peft_adapter
from tiny_text import TINY_CONFIGS

ROWS = [[5, 6, 7, 8], [9, 10], [11, 12, 13]]

# (message regex, category, module regex, why it is not ours)
THIRD_PARTY: list[tuple[str, type[Warning], str, str]] = [
    (
        "`is_gradient_checkpointing` is deprecated", FutureWarning, "transformers",
        "peft (PeftModel.from_pretrained) reads PreTrainedModel.is_gradient_checkpointing, deprecated in transformers 5",
    ),
]


def load(model_type: str, task: str = "causal_lm", side: str = "left"):
    torch.manual_seed(0)
    return load_model_and_tokenizer(TextModelConfig(name=f"random:{model_type}", task=task, kwargs=TINY_CONFIGS[model_type], padding_side=side))


def batch(tok, side: str, task: str) -> dict[str, torch.Tensor]:
    ids, mask = repad(ROWS, tok.pad_token_id, side, torch.device("cpu"))
    out = {"input_ids": ids, "attention_mask": mask}
    if task == "causal_lm":
        out["lm_labels"] = ids.masked_fill(mask == 0, -100)
    elif task == "seq2seq":
        out["lm_labels"] = torch.tensor([[5, 6, -100], [7, -100, -100], [8, 9, 10]])
    else:
        out["labels"] = torch.tensor([0, 1, 1])
    return out


@pytest.fixture
def strict_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for message, category, module, _reason in THIRD_PARTY:
            warnings.filterwarnings("ignore", message=message, category=category, module=module)
        yield


def train_step(pt, b) -> None:
    pt.train()
    pt.zero_grad()
    pt.training_step(b).backward()
    pt.eval()
    pt.eval_step(b)


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_causal_lm_paths_raise_no_warnings(model_type, strict_warnings):
    backbone, tok = load(model_type)
    b = batch(tok, "left", "causal_lm")
    for config in (PromptTuningConfig(num_tokens=3), PromptTuningConfig(num_tokens=3, fast="off"), PrefixConfig(num_tokens=3)):
        pt = textpt.wrap(backbone, config, tokenizer=tok)
        train_step(pt, b)
        pt.generate(b["input_ids"], b["attention_mask"], max_new_tokens=3, do_sample=False)
    bank = textpt.wrap(backbone, PromptTuningConfig(num_tokens=3, num_tasks=2), tokenizer=tok)
    bank.generate(b["input_ids"], b["attention_mask"], task_ids=torch.tensor([1, 0, 1]), max_new_tokens=3, do_sample=False)
    verbalizer = textpt.wrap(backbone, PromptTuningConfig(num_tokens=3, verbalizer=["good", "very bad"]), tokenizer=tok)
    train_step(verbalizer, {**b, "labels": torch.tensor([0, 1, 0])})
    checkpointed = textpt.wrap(backbone, PrefixConfig(num_tokens=3), tokenizer=tok)
    checkpointed.enable_gradient_checkpointing()
    train_step(checkpointed, b)


def test_seq2seq_and_encoder_paths_raise_no_warnings(strict_warnings):
    t5, tok = load("t5", "seq2seq", "right")
    pt = textpt.wrap(t5, PromptTuningConfig(num_tokens=3, verbalizer=["good", "bad"]), tokenizer=tok)
    b = batch(tok, "right", "seq2seq")
    train_step(pt, b)
    pt.generate(b["input_ids"], b["attention_mask"], max_new_tokens=3, do_sample=False)
    pt.class_logits(b["input_ids"], b["attention_mask"])
    bert, tok = load("bert", "seq_cls", "right")
    train_step(textpt.wrap(bert, PromptTuningConfig(num_tokens=3, num_classes=2), tokenizer=tok), batch(tok, "right", "seq_cls"))


def test_peft_interop_raises_no_warnings_of_ours(strict_warnings, tmp_path):
    peft = pytest.importorskip("peft")
    backbone, tok = load("llama")
    save_peft_adapter(textpt.wrap(backbone, PromptTuningConfig(num_tokens=3), tokenizer=tok), tmp_path / "adapter")
    peft.PeftModel.from_pretrained(load("llama")[0], str(tmp_path / "adapter"))
    load_peft_adapter(load("llama")[0], tmp_path / "adapter", tokenizer=tok).token_logits(torch.tensor([ROWS[0]]))


def test_the_strict_filter_catches_a_deprecated_cache_argument(strict_warnings):
    backbone, tok = load("gpt2")
    with pytest.raises(FutureWarning, match="past_key_values"):
        backbone(input_ids=torch.tensor([[5, 6]]), past_key_values=None)


def test_the_cache_goes_by_the_keyword_the_model_takes():
    class BeforeTheRename(torch.nn.Module):
        def forward(self, input_ids, past_key_values=None, use_cache=None):
            return input_ids

    assert cache_argument(BeforeTheRename()) == "past_key_values"
    backbone, _ = load("llama")
    assert cache_argument(backbone) == "cache" and cache_argument(decoder_of(backbone)) == "cache"
