"""Contract cases of the text methods, on a tiny random GPT-2 (causal LM) with its built-in tokenizer, and for the
baselines a tiny random BERT (linear probe) and the GPT-2 scoring two label words (zero-shot); prefix tuning also on a
tiny BERT and T5 (variants ``text:prefix/bert``, ``text:prefix/t5``).

GPT-2 runs wholly in the dtype it is given (Llama's RMSNorm upcasts to float32 inside, even in a float64 model), so
the fast and plain paths can be compared at float64 precision.
"""

from __future__ import annotations

from typing import Any

import torch

import textpt
from harness import CASES, MethodCase
from promptcore import PromptedModel
from textpt import LinearProbeConfig, TextModelConfig, ZeroShotConfig, load_model_and_tokenizer
from textpt.data import TextCollator

from tiny_text import TINY_CONFIGS, method_config  # noqa: E402


def backbone(model_type: str = "gpt2", task: str = "causal_lm") -> tuple[torch.nn.Module, Any]:
    torch.manual_seed(1234)  # the same frozen backbone for every seed of the prompts
    return load_model_and_tokenizer(TextModelConfig(name=f"random:{model_type}", task=task, kwargs=TINY_CONFIGS[model_type]))


def rows(model: PromptedModel) -> tuple[list[dict[str, Any]], Any]:
    """Eight token sequences of different lengths, each its own LM target (left padding, as the tokenizer says)."""
    g = torch.Generator().manual_seed(7)
    items = []
    for length in (5, 3, 6, 4, 5, 2, 6, 3):
        ids = torch.randint(5, 100, (length,), generator=g).tolist()
        items.append({"input_ids": ids, "lm_labels": ids})
    return items, TextCollator(model.tokenizer.pad_token_id, model.tokenizer.padding_side)


def labelled_rows(model: PromptedModel) -> tuple[list[dict[str, Any]], Any]:
    """The same sequences with class labels 0, 1, 0, 1, ... instead of LM targets."""
    items, collate = rows(model)
    return [{"input_ids": it["input_ids"], "labels": i % 2} for i, it in enumerate(items)], collate


def token_logits(model: PromptedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The next-token logits of every real input position."""
    mask = batch["attention_mask"]
    return model.token_logits(batch["input_ids"], mask)[mask.bool()]


def fast_flag(fast: bool | None) -> dict[str, str]:
    return {"fast": "auto" if fast is None else "on" if fast else "off"}


def build(method: str, seed: int, fast: bool | None, num_tokens: int = 3) -> PromptedModel:
    model, tokenizer = backbone()
    config = method_config(method, num_tokens=num_tokens, seed=seed, **(fast_flag(fast) if method != "prefix" else {}))
    return textpt.wrap(model, config, tokenizer=tokenizer)


for method in ("prompt_tuning", "p_tuning", "prefix"):
    CASES.add(f"text:{method}", MethodCase(
        build=lambda seed, fast, m=method: build(m, seed, fast),
        data=rows,
        foreign=lambda seed, m=method: build(m, seed, None, num_tokens=4),
        outputs=token_logits,
        fast_spy="textpt.prompt_tuning.prompt_key_values" if method != "prefix" else None,
    ))


def encoder_prefix(model_type: str, task: str, seed: int, num_tokens: int = 3) -> PromptedModel:
    model, tokenizer = backbone(model_type, task)
    fields = {"num_classes": 2} if task == "seq_cls" else {"verbalizer": ["good", "bad"]}
    return textpt.wrap(model, method_config("prefix", num_tokens=num_tokens, seed=seed, init_std=1.0, **fields), tokenizer=tokenizer)


# Prefix tuning inside the attention calls of an encoder (BERT, class logits of its head) and an encoder-decoder (T5,
# the verbalizer words' scores as decoder targets): variants of the registered method, "<method>/<backbone>".
for model_type, task in (("bert", "seq_cls"), ("t5", "seq2seq")):
    CASES.add(f"text:prefix/{model_type}", MethodCase(
        build=lambda seed, fast, t=model_type, k=task: encoder_prefix(t, k, seed),
        data=labelled_rows,
        foreign=lambda seed, t=model_type, k=task: encoder_prefix(t, k, seed, num_tokens=4),
    ))


def linear_probe(seed: int, num_classes: int = 2) -> PromptedModel:
    model, tokenizer = backbone("bert", "seq_cls")
    return textpt.wrap(model, LinearProbeConfig(num_classes=num_classes, seed=seed), tokenizer=tokenizer)


CASES.add("text:linear_probe", MethodCase(
    build=lambda seed, fast: linear_probe(seed),
    data=labelled_rows,
    foreign=lambda seed: linear_probe(seed, num_classes=3),
))


def zero_shot(words: list[str]) -> PromptedModel:
    model, tokenizer = backbone()
    return textpt.wrap(model, ZeroShotConfig(verbalizer=words), tokenizer=tokenizer)


CASES.add("text:zero_shot", MethodCase(
    build=lambda seed, fast: zero_shot(["good", "bad"]),
    data=labelled_rows,
    foreign=lambda seed: zero_shot(["good", "bad", "fine"]),
))


# ----- DePT: a prompt and a low-rank update of the input embeddings (no fast path) -----------------------------------
from textpt import DePTConfig  # noqa: E402


def dept(seed: int, num_tokens: int = 3) -> PromptedModel:
    model, tokenizer = backbone()
    pt = textpt.wrap(model, DePTConfig(num_tokens=num_tokens, rank=2, max_length=8, seed=seed), tokenizer=tokenizer)
    with torch.no_grad():  # B starts at zero; a nonzero B makes the update (and its save/load) show in the outputs
        pt.lora.B.copy_(torch.randn(pt.lora.B.shape, generator=torch.Generator().manual_seed(seed)))
    return pt


CASES.add("text:dept", MethodCase(
    build=lambda seed, fast: dept(seed),
    data=rows,
    foreign=lambda seed: dept(seed, num_tokens=4),
    outputs=token_logits,
))
