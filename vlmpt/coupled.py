"""Coupled cross-modal prompts (``method: vlm_coupled``): language prompts in the first ``depth`` layers of a
vision-language model's language model, and vision prompts in the first ``depth`` layers of its vision tower
projected from them, as MaPLe couples CLIP's two towers; optional free vision prompts beside them, as M2PT has.
On LLaVA (CLIP), LLaVA-OneVision and PaliGemma (SigLIP), Qwen2-VL and Qwen2.5-VL (their packed towers).

Language side. ``num_tokens`` prompt rows sit before each sequence (before the chat template and the image
placeholders, as ``vlm_prompt_tuning`` places its rows). Before language-model layers ``1 .. depth - 1`` their
hidden states are replaced by that layer's own prompts (MaPLe's deep text prompts, VPT-deep's replacement); later
layers run the rows the previous layer gave. Every real token attends to the rows and the rows, placed first under a
causal mask, attend to nothing else: each layer's keys and values of the rows are a function of the prompts alone.
So the rows are computed once per forward, run alone at positions ``0 .. n-1`` with the replacements
(:func:`vlmpt.prefix.row_key_values`), and enter the sequence as a prefix through the cache, as ``vlm_prefix``'s keys
and values do (the same positions, mask and cached generation; the tests check the result against the rows placed
in the sequence with the replacement done there, in float64).

Vision side. The vision prompts of layer ``i < depth`` are ``Linear_i(language prompts of layer i)``
(:func:`vpt.clip.maple.coupling_projections`, the maps MaPLe builds for CLIP: the first its own ``nn.Linear``, the
deeper ones copies of one), followed by ``vision_tokens`` free prompts of that layer when set. They go in before
layer 0 and replace the previous layer's prompt outputs before layers ``1 .. depth - 1``, where ``vlm_vpt`` puts its
prompts (:func:`vlmpt.vision_prompts.tower_prompts`: after the class token of a ViT; on Qwen's packed towers one
copy per image, beside each attention segment of the image, windows included, unrotated); the tower's output loses
them again, so the projector (Qwen's patch merger) and the image placeholders see the features they were built for.

How it follows and departs from the papers:

- MaPLe (Khattak et al., CVPR 2023): followed for the coupling (one linear map per prompted layer, language ->
  vision, the same ``depth`` J on both towers, its defaults ``num_tokens: 2``, ``depth: 9``, prompts drawn from a
  normal of std 0.02, maps with ``nn.Linear``'s own initialisation). Departs in the language tower: MaPLe's first
  text prompt is a context inside a class-name template (``ctx_init: "a photo of a"``); a generative model has no
  class-name template, so the rows are free vectors before the chat template, drawn at random.
- M2PT (Wang et al., EMNLP 2024, "M2PT: Multimodal Prompt Tuning for Zero-shot Instruction Learning"): its visual
  prompts in every vision-encoder layer are the ``vision_tokens`` free prompts here, and its textual prompts in every
  LLM layer the language prompts (its official script uses 10 of each). One ``depth`` counts on both towers, so the
  nearest placement is ``num_tokens: 10``, ``vision_tokens: 10`` and ``depth`` the layers of the shallower tower
  (24 on LLaVA-1.5's CLIP-L: M2PT's prompts in LLM layers 25-32 have no counterpart), and the projected vision
  prompts stay beside the free ones. Departs in the cross-modality interaction: M2PT trains LLaVA's multimodal
  projector (mapping visual features into the language space) and the LM head beside the prompts; here the
  backbone stays frozen, the vision prompt rows leave the tower before the projector (the image features stay as
  many as the placeholders), and the interaction is MaPLe's learned projection from language to vision prompts.
  The default ``vision_tokens: 0`` is MaPLe.

The towers are ``vlm_vpt``'s (the float64 reference tests cover LLaVA, Qwen2-VL and Qwen2.5-VL); Idefics3's tiled
one is refused, as ``vlm_vpt`` refuses it.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn

from promptcore import DeepSoftPrompt, register_method
from promptcore.errors import UserError
from textpt.config import trainable_dtype
from textpt.fast_prefix import KeyValues, num_layers
from vpt.clip.maple import coupling_projections

from .config import VLMCoupledConfig
from .prefix import KeyValuePrefixModel, row_key_values
from .vision_prompts import prompt_tower, tower_prompts, with_hidden_states


class VLMCoupledModel(KeyValuePrefixModel):
    """Language prompts in a frozen vision-language model's language model and vision prompts projected from them in
    its vision tower.

    Args:
        backbone: a supported ``...ForConditionalGeneration`` model whose vision tower ``vlm_vpt`` takes (LLaVA,
            LLaVA-OneVision, PaliGemma, Qwen2-VL, Qwen2.5-VL).
        config: the method's config.
        name: the backbone's name recorded in prompt files. Other ``context`` a recipe passes is not used.

    Attributes:
        prompts: ``text`` (:class:`promptcore.DeepSoftPrompt` ``[depth, num_tokens, D]``: layer ``i``'s language
            prompts), ``proj`` (``depth`` linear maps ``D -> tower width``) and, with ``vision_tokens``, ``vision``
            (``[depth, vision_tokens, tower width]``).

    Raises:
        UnsupportedModelError: a vision tower ``vlm_vpt`` does not take (Idefics3's).
        UserError: ``depth`` above the layers of either side.
    """

    method = "vlm_coupled"

    def __init__(self, backbone: nn.Module, config: VLMCoupledConfig, name: str | None = None, **context: Any) -> None:
        super().__init__(backbone, name)
        self.config = config
        self.tower = prompt_tower(backbone, self.backbone_name, self.method)
        lm_layers = num_layers(backbone)
        if config.depth > min(lm_layers, self.tower.depth):
            raise UserError(
                f"depth: {config.depth} is more than the layers of {self.backbone_name} ({lm_layers} in the language model, "
                f"{self.tower.depth} in the vision tower); use at most {min(lm_layers, self.tower.depth)}"
            )
        generator = torch.Generator().manual_seed(config.seed)
        init = {"init": "normal", "std": config.init_std, "generator": generator}
        self.prompts = nn.Module()
        self.prompts.text = DeepSoftPrompt(config.depth, config.num_tokens, self.dim, **init)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)  # nn.Linear draws its initial weights from the global generator
            self.prompts.proj = coupling_projections(self.dim, self.tower.width, config.depth)
        if config.vision_tokens:
            self.prompts.vision = DeepSoftPrompt(config.depth, config.vision_tokens, self.tower.width, **init)
        self.prompts.to(trainable_dtype(backbone))
        self.freeze_backbone()

    def prefix_key_values(self, batch_size: int) -> KeyValues:
        """Each language-model layer's keys and values of the prompt rows run alone, layer ``i < depth``'s input
        replaced by its prompts, repeated over the batch."""
        text = self.prompts.text.weight.to(self.embedding.weight.dtype)
        with self.deep_language_prompts(text[1:]):
            kv = row_key_values(self, text[:1])
        return [(k.expand(batch_size, -1, -1, -1), v.expand(batch_size, -1, -1, -1)) for k, v in kv]

    @contextlib.contextmanager
    def deep_language_prompts(self, prompts: torch.Tensor) -> Iterator[None]:
        """Within it, the hidden states entering language-model layer ``i + 1`` are ``prompts[i]`` (for a run of the
        prompt rows alone, ``[1, num_tokens, D]``)."""

        def replace(prompt: torch.Tensor):
            def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
                return with_hidden_states(args, kwargs, prompt.unsqueeze(0))

            return hook

        layers = self.backbone.get_decoder().layers
        handles = [layers[i + 1].register_forward_pre_hook(replace(p), with_kwargs=True) for i, p in enumerate(prompts)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def vision_prompts(self) -> list[torch.Tensor]:
        """The tower's prompts ``[num_tokens + vision_tokens, width]`` of each prompted layer: the projection of that
        layer's language prompts, then its free vision prompts."""
        text = self.prompts.text.weight
        coupled = [proj(t) for proj, t in zip(self.prompts.proj, text)]
        if not self.config.vision_tokens:
            return coupled
        return [torch.cat([c, v]) for c, v in zip(coupled, self.prompts.vision.weight)]

    def prompted_backbone(self) -> contextlib.AbstractContextManager:
        """Within it, the vision tower runs with :meth:`vision_prompts` (:func:`vlmpt.vision_prompts.tower_prompts`)."""
        return tower_prompts(self.tower, self.vision_prompts())

    def prompt_config(self) -> dict[str, Any]:
        c = self.config
        return {
            **super().prompt_config(),
            "num_tokens": c.num_tokens,
            "num_layers": c.depth,
            "vision_tokens": c.num_tokens + c.vision_tokens,
            "vision_width": self.tower.width,
        }


register_method(
    "vlm_coupled", VLMCoupledConfig, VLMCoupledModel, kind="text",
    summary="MaPLe-style coupled prompts in the language model and vision tower of LLaVA (-OneVision), PaliGemma, Qwen2-VL or Qwen2.5-VL (vision prompts projected from the language prompts)",
)
