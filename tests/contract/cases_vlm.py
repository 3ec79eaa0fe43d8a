"""Contract cases of the vision-language methods (:mod:`vlmpt`), on a tiny random Qwen2-VL whose examples carry
images of two sizes (its mRoPE positions are the hardest placement the package supports); ``vlm_vpt`` and
``vlm_coupled``, whose prompts live in a ViT tower, on a tiny random LLaVA. ``vlm_prompt_tuning`` and ``vlm_prefix``
also run on the other families (variants ``/paligemma``: its prefix-LM mask, ``/idefics3``, ``/llava_onevision``).

The sharded contract runs every case under FSDP2 and under DDP (docs/vlm.md, "Scale"), and ``vlm_prompt_tuning`` on an
nf4 language model under FSDP2 (:data:`NF4`).
"""

from __future__ import annotations

from typing import Any

import torch

import promptcore
import vlmpt
from harness import CASES, MethodCase
from promptcore import PromptedModel
from vlmpt.loading import quantize_language_model
from vlmpt.synthetic import collate_examples, tiny_backbone, tiny_examples


def build(seed: int, num_tokens: int = 3, config: Any = vlmpt.VLMPromptTuningConfig, model_type: str = "qwen2_vl") -> PromptedModel:
    backbone = tiny_backbone(model_type, seed=1234)  # the same frozen backbone for every seed of the prompts
    return promptcore.wrap(backbone, config(num_tokens=num_tokens, seed=seed, init_std=1.0))


def data(model: PromptedModel) -> tuple[list[dict[str, torch.Tensor]], Any]:
    """Eight examples (text, one image's placeholders, text) of different lengths, each its own LM target."""
    return tiny_examples(model.backbone, num_examples=8, seed=7), collate_examples


def logits(model: PromptedModel, batch: dict[str, Any]) -> torch.Tensor:
    """The next-token logits of every real input position."""
    return model(**batch)[batch["attention_mask"].bool()]


NF4_TEXT = dict(hidden_size=256, intermediate_size=512, num_attention_heads=2, num_key_value_heads=2)
"""A tiny LLaVA language model whose every linear weight nf4 stores and FSDP2 shards over 2 processes: a whole
number of 64 x 256-value blocks per process (the projector maps the 32-wide vision tower into it)."""


def build_nf4(seed: int, num_tokens: int = 3) -> PromptedModel:
    """``vlm_prompt_tuning`` on a tiny LLaVA (:data:`NF4_TEXT`) whose language model is nf4 (``model.quantization:
    nf4``), quantized from float64 (a cast after quantizing would dequantize)."""
    backbone = tiny_backbone("llava", seed=1234, **NF4_TEXT).double()
    quantize_language_model(backbone, "nf4")
    return promptcore.wrap(backbone, vlmpt.VLMPromptTuningConfig(num_tokens=num_tokens, seed=seed, init_std=1.0))


NF4 = MethodCase(build=lambda seed, fast: build_nf4(seed), data=data, foreign=lambda seed: build_nf4(seed, num_tokens=4), outputs=logits)
"""An nf4 language model, for the sharded contract (``vlm_nf4``); not a registered case: one vision-language method
on it is enough there, and tests/vlmpt/test_vlm_scale.py checks it against its dequantized weights."""

CASES.add("text:vlm_prompt_tuning", MethodCase(
    build=lambda seed, fast: build(seed),
    data=data,
    foreign=lambda seed: build(seed, num_tokens=4),
    outputs=logits,
))

CASES.add("text:vlm_prefix", MethodCase(
    build=lambda seed, fast: build(seed, config=vlmpt.VLMPrefixConfig),
    data=data,
    foreign=lambda seed: build(seed, num_tokens=4, config=vlmpt.VLMPrefixConfig),
    outputs=logits,
))

CASES.add("text:vlm_vpt", MethodCase(  # VPT-deep in LLaVA's CLIP tower (Qwen2.5-VL's packed tower: the variant below)
    build=lambda seed, fast: build(seed, config=lambda **kw: vlmpt.VLMVisionPromptConfig(deep=True, **kw), model_type="llava"),
    data=data,
    foreign=lambda seed: build(seed, num_tokens=4, config=lambda **kw: vlmpt.VLMVisionPromptConfig(deep=True, **kw), model_type="llava"),
    outputs=logits,
))

CASES.add("text:vlm_coupled", MethodCase(  # language prompts in both LLaVA layers, vision prompts projected from them and free ones
    build=lambda seed, fast: build(seed, config=lambda **kw: vlmpt.VLMCoupledConfig(depth=2, vision_tokens=1, **kw), model_type="llava"),
    data=data,
    foreign=lambda seed: build(seed, num_tokens=4, config=lambda **kw: vlmpt.VLMCoupledConfig(depth=2, vision_tokens=1, **kw), model_type="llava"),
    outputs=logits,
))

for family in ("paligemma", "idefics3", "llava_onevision"):
    for method, config in (("vlm_prompt_tuning", vlmpt.VLMPromptTuningConfig), ("vlm_prefix", vlmpt.VLMPrefixConfig)):
        CASES.add(f"text:{method}/{family}", MethodCase(
            build=lambda seed, fast, family=family, config=config: build(seed, config=config, model_type=family),
            data=data,
            foreign=lambda seed, family=family, config=config: build(seed, num_tokens=4, config=config, model_type=family),
            outputs=logits,
        ))

CASES.add("text:vlm_vpt/qwen2_5_vl", MethodCase(  # VPT-deep in Qwen2.5-VL's packed tower: images of two sizes, windowed and full blocks
    build=lambda seed, fast: build(seed, config=lambda **kw: vlmpt.VLMVisionPromptConfig(deep=True, **kw), model_type="qwen2_5_vl"),
    data=data,
    foreign=lambda seed: build(seed, num_tokens=4, config=lambda **kw: vlmpt.VLMVisionPromptConfig(deep=True, **kw), model_type="qwen2_5_vl"),
    outputs=logits,
))
