"""VPT in the vision tower of a vision-language model (``method: vlm_vpt``), with or without prompt rows in the
language model.

The tower must be a ViT that :mod:`vpt` sees as tokens (:func:`vpt.backbones.token_backbone`: LLaVA's
``CLIPVisionModel``, LLaVA-OneVision's and PaliGemma's ``SiglipVisionModel``; its width, depth, layers and prefix tokens are read there,
never assumed). As :mod:`vpt.model` places them, ``num_tokens`` prompts go right after the prefix (class) token before the first encoder layer
(``deep: false``, VPT-shallow), or fresh ones before every layer, replacing the previous layer's prompt outputs
(``deep: true``, VPT-deep). The tower's own code runs every layer; the prompts enter through forward pre-hooks on
its layers, and a forward hook on the tower takes the prompt rows out of every hidden state it returns, so the
model's feature selection (``vision_feature_layer``, the class token dropped) and its projector see the sequence
they were built for, and the number of image features still matches the image placeholders. The hooks are on only
while the prompted model runs the backbone: the backbone alone stays the frozen model.

SigLIP has no class token: there the prompts go first. Qwen2-VL / Qwen2.5-VL's and Idefics3's towers are not ViTs of
that kind: they are refused with the reason (:data:`REFUSED`).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from promptcore import DeepSoftPrompt, SoftPrompt, register_method
from promptcore.errors import UnsupportedModelError
from textpt.config import trainable_dtype

from .config import VLMVisionPromptConfig
from .model import VLMPromptedModel

REFUSED = {
    "Qwen2VisionTransformerPretrainedModel": " (patches of all images packed into one sequence with cu_seqlens, 2 x 2 patch merging after the last layer)",
    "Qwen2_5_VisionTransformerPretrainedModel": " (patches packed with cu_seqlens, windowed attention, 2 x 2 patch merging after the last layer)",
    "Idefics3VisionTransformer": (
        " (each of an image's tiles is masked patch by patch with a pixel attention mask, and the connector's pixel "
        "shuffle folds a fixed square grid of patch outputs into the image tokens)"
    ),
}
"""Why a vision tower :mod:`vpt` does not take cannot hold VPT prompts, by its class name."""


class VLMVisionPromptModel(VLMPromptedModel):
    """VPT prompts in the vision tower of a frozen vision-language model (and optional language-model prompt rows).

    Args:
        backbone: a supported ``...ForConditionalGeneration`` model whose vision tower is a ViT (LLaVA,
            LLaVA-OneVision, PaliGemma).
        config: the method's config.
        name: the backbone's name recorded in prompt files. Other ``context`` a recipe passes is not used.

    Attributes:
        prompts: the tower's prompts, ``[num_tokens, width]`` (``SoftPrompt``) or ``[layers, num_tokens, width]``
            (``DeepSoftPrompt``). lm_prompts: the language model's rows ``[lm_tokens, D]``, or None.

    Raises:
        UnsupportedModelError: a vision tower :mod:`vpt` cannot see as tokens.
    """

    method = "vlm_vpt"
    prompt_module_names = ("prompts", "lm_prompts")

    def __init__(self, backbone: nn.Module, config: VLMVisionPromptConfig, name: str | None = None, **context: Any) -> None:
        super().__init__(backbone, name)
        self.config = config
        self.tower = prompt_tower(backbone, self.backbone_name, self.method)
        generator = torch.Generator().manual_seed(config.seed)
        width, init = self.tower.width, {"init": "normal", "std": config.init_std, "generator": generator}
        if config.deep:
            self.prompts = DeepSoftPrompt(self.tower.depth, config.num_tokens, width, **init)
        else:
            self.prompts = SoftPrompt(config.num_tokens, width, **init)
        self.lm_prompts = SoftPrompt(config.lm_tokens, self.dim, **init) if config.lm_tokens else None
        for module in self.prompt_modules().values():
            module.to(trainable_dtype(backbone))
        self.freeze_backbone()

    @property
    def num_prompt_tokens(self) -> int:
        return self.config.lm_tokens

    def shallow_prompt(self, batch_size: int) -> torch.Tensor:
        if self.lm_prompts is None:
            return self.embedding.weight.new_zeros(batch_size, 0, self.dim)
        return self.lm_prompts(batch_size)

    def prompted_backbone(self) -> contextlib.AbstractContextManager:
        """Within it, the vision tower runs with the prompts (:func:`tower_prompts`): before every layer with
        ``deep``, else before the first."""
        weight = self.prompts.weight if self.config.deep else self.prompts.weight.unsqueeze(0)
        return tower_prompts(self.tower, list(weight))

    def prompt_config(self) -> dict[str, Any]:
        return {
            **super().prompt_config(),
            "vision_tokens": self.config.num_tokens,
            "deep": self.config.deep,
            "vision_width": self.tower.width,
        }


def prompt_tower(backbone: nn.Module, name: str, method: str) -> Any:
    """The vision tower of ``backbone`` seen as tokens (:func:`vpt.backbones.token_backbone`), for ``method``.

    Raises:
        UnsupportedModelError: a tower :mod:`vpt` cannot see as tokens (Qwen2-VL / Qwen2.5-VL's, Idefics3's: :data:`REFUSED`), naming the
            methods that work without one.
    """
    from vpt.backbones import token_backbone

    tower = next((getattr(backbone.model, a) for a in ("vision_tower", "visual", "vision_model") if hasattr(backbone.model, a)), None)
    try:
        if not isinstance(tower, nn.Module):
            raise UnsupportedModelError("no vision tower")
        return token_backbone(tower, f"{name} vision tower")
    except UnsupportedModelError:
        raise UnsupportedModelError(
            f"the vision tower of {type(backbone).__name__} ({type(tower).__name__}) is not a ViT that VPT prompts can "
            f"extend{REFUSED.get(type(tower).__name__, '')}; {method} supports the CLIP and SigLIP towers of LLaVA, "
            f"LLaVA-OneVision and PaliGemma. Use vlm_prompt_tuning or vlm_prefix (prompts in the language model)"
        ) from None


@contextlib.contextmanager
def tower_prompts(tower: Any, prompts: Sequence[torch.Tensor]) -> Iterator[None]:
    """Within it, the ViT ``tower`` (a :func:`vpt.backbones.token_backbone` view) runs with prompt tokens: pre-hooks
    on its layers put ``prompts[i]`` (``[n, width]``, the same ``n`` for all) in after the prefix tokens before
    layer ``i`` (layer 0 inserts them, every later one replaces the previous layer's prompt outputs), and a hook on
    the tower takes them out of every hidden state it returns. Layers from ``len(prompts)`` on run the prompt rows
    the previous layer gave."""
    pre, n = tower.num_prefix_tokens, prompts[0].shape[0]

    def insert(index: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            x = args[0] if args else kwargs["hidden_states"]
            rest = x[:, pre:] if index == 0 else x[:, pre + n :]
            x = torch.cat([x[:, :pre], prompts[index].to(x.dtype).expand(x.shape[0], -1, -1), rest], dim=1)
            return ((x, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": x})

        return hook

    def strip(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[:, :pre], x[:, pre + n :]], dim=1)

    def take_out(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        prompted = output.last_hidden_state.shape[1]
        output.last_hidden_state = strip(output.last_hidden_state)
        if output.hidden_states is not None:
            # the embeddings' output has no prompts yet; states the model does not read may be None
            output.hidden_states = tuple(strip(h) if h is not None and h.shape[1] == prompted else h for h in output.hidden_states)
        return output

    handles = [tower.block(i).register_forward_pre_hook(insert(i), with_kwargs=True) for i in range(len(prompts))]
    handles.append(tower.model.register_forward_hook(take_out, with_kwargs=True))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


register_method(
    "vlm_vpt", VLMVisionPromptConfig, VLMVisionPromptModel, kind="text",
    summary="VPT-shallow / VPT-deep in the vision tower of LLaVA (-OneVision) or PaliGemma, with optional prompt rows in its language model",
)
