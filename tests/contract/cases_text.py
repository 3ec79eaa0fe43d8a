"""Contract cases of the text methods, on a tiny random GPT-2 (causal LM) with its built-in tokenizer.

GPT-2 runs wholly in the dtype it is given (Llama's RMSNorm upcasts to float32 inside, even in a float64 model), so
the fast and plain paths can be compared at float64 precision.
"""

from __future__ import annotations

from typing import Any

import torch

import textpt
from harness import CASES, MethodCase
from promptcore import PromptedModel
from textpt import TextModelConfig, TextPromptConfig, load_model_and_tokenizer
from textpt.data import TextCollator
from textpt.loading import TINY_CONFIGS


def gpt2() -> tuple[torch.nn.Module, Any]:
    torch.manual_seed(1234)  # the same frozen backbone for every seed of the prompts
    return load_model_and_tokenizer(TextModelConfig(name="random:gpt2", task="causal_lm", kwargs=TINY_CONFIGS["gpt2"]))


def rows(model: PromptedModel) -> tuple[list[dict[str, Any]], Any]:
    """Eight token sequences of different lengths, each its own LM target (left padding, as the tokenizer says)."""
    g = torch.Generator().manual_seed(7)
    items = []
    for length in (5, 3, 6, 4, 5, 2, 6, 3):
        ids = torch.randint(5, 100, (length,), generator=g).tolist()
        items.append({"input_ids": ids, "lm_labels": ids})
    return items, TextCollator(model.tokenizer.pad_token_id, model.tokenizer.padding_side)


def token_logits(model: PromptedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The next-token logits of every real input position."""
    mask = batch["attention_mask"]
    return model.token_logits(batch["input_ids"], mask)[mask.bool()]


def fast_flag(fast: bool | None) -> str:
    return "auto" if fast is None else "on" if fast else "off"


def build(method: str, seed: int, fast: bool | None, num_tokens: int = 3) -> PromptedModel:
    backbone, tokenizer = gpt2()
    config = TextPromptConfig(method=method, num_tokens=num_tokens, seed=seed, fast=fast_flag(fast) if method != "prefix" else "auto")
    return textpt.wrap(backbone, config, tokenizer=tokenizer)


for method in ("prompt_tuning", "p_tuning", "prefix"):
    CASES.add(method, MethodCase(
        build=lambda seed, fast, m=method: build(m, seed, fast),
        data=rows,
        foreign=lambda seed, m=method: build(m, seed, None, num_tokens=4),
        outputs=token_logits,
        fast_spy="textpt.prompt_tuning.prompt_key_values" if method != "prefix" else None,
    ))
