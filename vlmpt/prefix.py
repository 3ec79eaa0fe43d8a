"""Deep prompts in the language model of a vision-language model (``method: vlm_prefix``): prefix tuning
(Li & Liang 2021; P-Tuning v2's deep prompts), learned keys and values before the sequence in every layer.

The parameter holds, for each language-model layer, ``num_tokens`` keys and values of the layer's key/value width
(read from a probe run of the frozen model, never assumed: grouped-query layers have fewer key/value heads). They
enter through the transformers Cache API as :mod:`textpt.prefix` feeds a causal LM's prefix
(:func:`textpt.fast_prefix.prefix_cache` in training and scoring, :func:`textpt.fast_prefix.generation_cache` in
generation): the model's own mask code treats them as the first ``num_tokens`` positions of the sequence, before
the chat template and the image placeholders, and every real token attends to them. The positions of the input
are the family's position code run on the sequence with ``num_tokens`` text rows before it
(:meth:`vlmpt.VLMPromptedModel.pack`): on LLaVA 1-D positions from ``num_tokens``, on Qwen2-VL / Qwen2.5-VL the
mRoPE ids ``get_rope_index`` gives that sequence, exactly where the shallow prompt of ``vlm_prompt_tuning`` of the
same length puts the input. A prefix holding the keys and values that a shallow prompt's rows have in each layer
therefore gives the shallow prompt's outputs on a causal language model (the tests check it in float64). On
PaliGemma's prefix LM the prefix positions are prefix tokens too (token type 0), but fixed keys and values: unlike
shallow prompt rows, they do not see the image.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from promptcore import DeepSoftPrompt, register_method
from promptcore.distributed import is_sharded
from promptcore.errors import UserError
from textpt.config import trainable_dtype
from textpt.fast_prefix import KeyValues, cache_argument, joined_to_outputs, num_layers

from .config import VLMPrefixConfig
from .model import VLMPromptedModel


class KeyValuePrefixModel(VLMPromptedModel):
    """A method whose language-model prompts enter only as a key/value prefix of ``config.num_tokens`` positions in
    every layer (none in the input embeddings); a subclass gives :meth:`prefix_key_values`."""

    @property
    def num_prefix_tokens(self) -> int:
        return self.config.num_tokens

    def shallow_prompt(self, batch_size: int) -> torch.Tensor:
        """No prompt rows in the input embeddings: ``[B, 0, D]``."""
        return self.embedding.weight.new_zeros(batch_size, 0, self.dim)


class VLMPrefixModel(KeyValuePrefixModel):
    """Per-layer key/value prefixes in the language model of a frozen vision-language model.

    Args:
        backbone: a supported ``...ForConditionalGeneration`` model (:data:`vlmpt.families.FAMILIES`).
        config: the method's config.
        name: the backbone's name recorded in prompt files. Other ``context`` a recipe passes is not used.

    Attributes:
        prompts: a :class:`promptcore.DeepSoftPrompt` ``[2 * layers, num_tokens, kv_heads * head_dim]``: layer
            ``i``'s keys in row ``2i``, its values in row ``2i + 1``.
    """

    method = "vlm_prefix"

    def __init__(self, backbone: nn.Module, config: VLMPrefixConfig, name: str | None = None, **context: Any) -> None:
        super().__init__(backbone, name)
        self.config = config
        with torch.no_grad():
            probe = row_key_values(self, self.embedding.weight[self.fill_id : self.fill_id + 1].unsqueeze(0))
        shapes = {tuple(k.shape[1:]) for k, _ in probe}
        if len(shapes) != 1:
            raise UserError(f"layers of {self.backbone_name} have different key/value shapes {sorted(shapes)}; vlm_prefix needs one shape")
        self.kv_heads, _, self.head_dim = next(iter(shapes))
        self.num_layers = len(probe)
        generator = torch.Generator().manual_seed(config.seed)
        self.prompts = DeepSoftPrompt(2 * self.num_layers, config.num_tokens, self.kv_heads * self.head_dim, init="normal", std=config.init_std, generator=generator)
        self.prompts.to(trainable_dtype(backbone))
        self.freeze_backbone()

    def prefix_key_values(self, batch_size: int) -> KeyValues:
        weight = self.prompts().to(self.embedding.weight.dtype)  # [2L, n, width]
        n = weight.shape[1]
        per = weight.view(self.num_layers, 2, n, self.kv_heads, self.head_dim).transpose(2, 3)  # [L, 2, heads, n, hd]
        return [(per[i, 0].expand(batch_size, -1, -1, -1), per[i, 1].expand(batch_size, -1, -1, -1)) for i in range(self.num_layers)]

    def prompt_config(self) -> dict[str, Any]:
        return {**super().prompt_config(), "num_tokens": self.config.num_tokens, "num_layers": self.num_layers, "kv_width": self.kv_heads * self.head_dim}


def row_key_values(model: VLMPromptedModel, embeds: torch.Tensor) -> KeyValues:
    """Every language-model layer's keys and values ``[1, kv_heads, n, head_dim]`` of the rows ``embeds``
    ``[1, n, D]`` run alone as text at the start of a sequence (the family's positions) through ``model``'s
    backbone. Differentiable: gradients reach ``embeds`` through them."""
    from transformers.cache_utils import Cache

    from textpt.cache_layers import RecordingLayer

    n = embeds.shape[1]
    ids = torch.full((1, n), model.fill_id, dtype=torch.long, device=embeds.device)
    mask = torch.ones_like(ids)
    positions, _ = model.family.positions(model.backbone, ids, mask, {})
    cache = Cache(layers=[RecordingLayer() for _ in range(num_layers(model.backbone))])
    sharded = is_sharded(model.backbone)
    out = model.backbone(
        inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True, output_hidden_states=sharded,
        **{cache_argument(model.backbone): cache},
    )
    kv = [(layer.keys, layer.values) for layer in cache.layers]
    # every layer's output: a deep method's hooks may replace one in the next layer's input (vlm_coupled)
    return joined_to_outputs(kv, [*out.hidden_states, out.logits]) if sharded else kv


register_method(
    "vlm_prefix", VLMPrefixConfig, VLMPrefixModel, kind="text",
    summary="prefix tuning (deep prompts) in the language model of LLaVA (-OneVision) / Qwen2-VL / Qwen2.5-VL / PaliGemma / Idefics3",
)
