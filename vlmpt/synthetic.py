"""Tiny random vision-language models and batches, built offline from configs (no hub download): for tests, the
documentation's examples and smoke runs. A tiny model's outputs mean nothing; its shapes and code paths are the
real architecture's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from promptcore.errors import UserError

from .families import FAMILIES

VOCAB = 99
IMAGE, VIDEO, VISION_START, VISION_END = 95, 96, 97, 98
TEXT_IDS = (3, 90)  # ordinary text tokens are drawn from this range; 0-2 are pad / bos / eos
_TEXT = dict(
    vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
    num_key_value_heads=1, max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2,
)
_VISION_QWEN = dict(patch_size=4, spatial_merge_size=2, temporal_patch_size=2, in_chans=3, depth=2, num_heads=2)
LLAVA_IMAGE_SIZE, LLAVA_PATCH = 16, 4


def tiny_backbone(model_type: str, seed: int = 0) -> nn.Module:
    """A tiny random ``...ForConditionalGeneration`` of ``model_type`` (``llava``, ``qwen2_vl``, ``qwen2_5_vl``):
    hidden width 32, 2 layers in the language model and in the vision tower, eval mode."""
    import transformers

    if model_type not in FAMILIES:
        raise UserError(f"model_type: {model_type!r} has no tiny model; one of {FAMILIES.names()}")
    torch.manual_seed(seed)
    if model_type == "llava":
        config = transformers.LlavaConfig(
            text_config=dict(model_type="llama", **_TEXT),
            vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                               num_attention_heads=2, image_size=LLAVA_IMAGE_SIZE, patch_size=LLAVA_PATCH),
            image_token_id=IMAGE, vision_feature_layer=-1, vision_feature_select_strategy="default",
        )
        return transformers.LlavaForConditionalGeneration(config).eval()
    text = dict(_TEXT, rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0})
    ids = dict(image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=VISION_START, vision_end_token_id=VISION_END)
    if model_type == "qwen2_vl":
        vision = dict(_VISION_QWEN, embed_dim=32, hidden_size=32, mlp_ratio=2)
        return transformers.Qwen2VLForConditionalGeneration(transformers.Qwen2VLConfig(text_config=text, vision_config=vision, **ids)).eval()
    vision = dict(_VISION_QWEN, hidden_size=32, out_hidden_size=32, intermediate_size=37, window_size=16, fullatt_block_indexes=[1])
    return transformers.Qwen2_5_VLForConditionalGeneration(transformers.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)).eval()


def tiny_examples(backbone: nn.Module, num_examples: int = 2, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``num_examples`` examples of text, one image's placeholders, text, of different lengths (and, on Qwen,
    images of different sizes): each a dict of ``input_ids`` ``[L]`` and the image inputs of that one example."""
    generator = torch.Generator().manual_seed(seed)
    model_type = backbone.config.model_type
    examples = []
    for i in range(num_examples):
        before = torch.randint(*TEXT_IDS, (2 + i,), generator=generator)
        after = torch.randint(*TEXT_IDS, (3 + 2 * i,), generator=generator)
        if model_type == "llava":
            n = (LLAVA_IMAGE_SIZE // LLAVA_PATCH) ** 2
            ids = torch.cat([before, torch.full((n,), IMAGE), after])
            pixels = torch.randn(1, 3, LLAVA_IMAGE_SIZE, LLAVA_IMAGE_SIZE, generator=generator)
            examples.append({"input_ids": ids, "pixel_values": pixels})
            continue
        vision = backbone.config.vision_config
        grid = torch.tensor([[1, 4, 4 + 4 * (i % 2)]])
        n = int(grid.prod()) // vision.spatial_merge_size**2
        ids = torch.cat([before, torch.tensor([VISION_START]), torch.full((n,), IMAGE), torch.tensor([VISION_END]), after])
        patch = vision.in_chans * vision.temporal_patch_size * vision.patch_size**2
        pixels = torch.randn(int(grid.prod()), patch, generator=generator)
        examples.append({"input_ids": ids, "pixel_values": pixels, "image_grid_thw": grid})
    return examples


def collate_examples(examples: list[dict[str, torch.Tensor]], padding_side: str = "left", pad_id: int = 0) -> dict[str, Any]:
    """A batch of :func:`tiny_examples`' examples as a processor returns one: ``input_ids`` and ``attention_mask``
    padded on ``padding_side``, image inputs concatenated (Qwen's patches and grids) or stacked (LLaVA's images)."""
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e["input_ids"])
        where = slice(width - n, width) if padding_side == "left" else slice(0, n)
        ids[row, where], mask[row, where] = e["input_ids"], 1
    batch: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
    for key in examples[0]:
        if key != "input_ids":
            batch[key] = torch.cat([e[key] for e in examples])
    return batch


def tiny_batch(backbone: nn.Module, num_examples: int = 2, padding_side: str = "left", seed: int = 0) -> dict[str, Any]:
    """:func:`collate_examples` of :func:`tiny_examples`."""
    return collate_examples(tiny_examples(backbone, num_examples, seed), padding_side)
