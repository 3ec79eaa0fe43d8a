"""What the CLIP methods share: the frozen open_clip model, the tokenizer, the class names and the CLIP logits
(:class:`CLIPModel`); and for the prompt learners, the text tower view, the class prompts and the frozen zero-shot
text features that KgCoOp and PromptSRC regularise towards (:class:`CLIPPromptModel`)."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from promptcore import PromptedModel, init_prompt_
from promptcore.errors import UserError

from ..backbones import backbone_name
from .templates import templates_of
from .text import PromptLayout, TextTower
from .tokens import SpecialTokens, Tokenizer, check_class_names, get_tokenizer, text_token_ids


def clip_logits(clip_model: nn.Module, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """CLIP's logits: ``logit_scale.exp()`` times the cosine similarity (plus ``logit_bias`` where the model has
    one). ``text_features`` is ``[C, E]`` (one classifier) or ``[B, C, E]`` (one per image). Computed in float32
    at least (float64 stays float64, so the float64 checks of the paths compare float64 logits)."""
    dtype = torch.promote_types(torch.promote_types(image_features.dtype, text_features.dtype), torch.float32)
    img = F.normalize(image_features.to(dtype), dim=-1)
    txt = F.normalize(text_features.to(dtype), dim=-1)
    sim = img @ txt.T if txt.dim() == 2 else torch.einsum("be,bce->bc", img, txt)
    logits = clip_model.logit_scale.exp().to(dtype) * sim
    bias = getattr(clip_model, "logit_bias", None)
    return logits + bias.to(dtype) if bias is not None else logits


class CLIPModel(PromptedModel):
    """Base of every CLIP method's model: ``forward(pixel_values) -> logits [B, num_classes]``, one class per name
    of ``config.class_names``.

    Args:
        model: a frozen open_clip ``CLIP`` or ``CustomTextCLIP`` (its parameters are frozen by the subclass).
        config: the method config (a :class:`vpt.clip.config.CLIPMethodConfig`); its ``class_names`` must be set.
        tokenizer: a tokenizer object; default: the one ``config.tokenizer`` names (``null``: OpenAI's BPE).
        name: backbone name for prompt files (``open_clip:ViT-B-16:openai``); default:
            :func:`vpt.backbones.backbone_name`.
    """

    method: str = ""

    def __init__(self, model: nn.Module, config: Any, tokenizer: Tokenizer | None = None, name: str | None = None) -> None:
        super().__init__()
        if config.class_names is None:
            raise UserError(
                "class_names: the text prompts need the class names; set prompt.class_names (the CLI fills them from the data)"
            )
        self.config = config
        self.backbone = model
        self.tokenizer = tokenizer or get_tokenizer(config.tokenizer, model.context_length)
        self.name = name or backbone_name(model)
        self.class_names = check_class_names(config.class_names)

    def clip_logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """CLIP's logits for this model (see :func:`clip_logits`)."""
        return clip_logits(self.backbone, image_features, text_features)

    def forward_batch(self, batch: dict[str, Any]) -> torch.Tensor:
        return self(batch["pixel_values"])

    def prompt_config(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "backbone": self.name,
            "num_classes": len(self.class_names),
            "class_names": list(self.class_names),
        }


class CLIPPromptModel(CLIPModel):
    """Base of the CLIP prompt learners with a learned text context (see :class:`CLIPModel` for the arguments).

    Trainable modules live in ``prompts`` (one container per method), the only prompt module. Methods whose config
    has ``templates`` can ask for the frozen zero-shot text features of the current classes
    (:meth:`zeroshot_text_features`, a non-persistent buffer once embedded).
    """

    # Whether each template's text feature is normalised before the average over templates (CLIP's ensembling,
    # KgCoOp) or only the average (PromptSRC): see vpt.clip.zeroshot.zeroshot_weights.
    zeroshot_normalize_each: bool = True

    prompt_module_names = ("prompts",)
    compat_keys = (
        "method",
        "dim",
        "num_tokens",
        "num_layers",
        "class_specific",
        "embed_dim",
        "vision_dim",
        "vision_num_tokens",
        "vision_num_layers",
    )

    def __init__(self, model: nn.Module, config: Any, tokenizer: Tokenizer | None = None, name: str | None = None) -> None:
        text_tower = TextTower(model)  # first: it says clearly why a text tower cannot take prompts
        super().__init__(model, config, tokenizer, name)
        self.text_tower = text_tower
        self.special = SpecialTokens.of(self.tokenizer)
        self.register_buffer("zeroshot_text", None, persistent=False)  # embedded when training first needs it

    # ----- construction helpers ---------------------------------------------------------------------------------
    def _text_path(self, requested: str) -> bool:
        """Resolves ``text_path`` (auto / fast / reference) to whether the fast path runs."""
        issue = self.text_tower.fast_path_issue()
        if requested == "reference":
            return False
        if requested == "fast" and issue:
            raise UserError(f"text_path: 'fast' does not apply to this model: {issue}; use 'auto' or 'reference'")
        return issue is None

    def _context(self, shape: tuple[int, ...], ctx_init: str | None, std: float) -> nn.Parameter:
        """A context parameter ``[..., n_ctx, width]``: the embeddings of ``ctx_init``'s first ``n_ctx`` tokens, or
        N(0, std²). (The rest of ``ctx_init`` stays in the prompt as fixed words: :meth:`_layout`.)"""
        weight = torch.empty(shape)
        n_ctx = shape[-2]
        if ctx_init is None:
            init_prompt_(weight, "normal", std=std)
            return nn.Parameter(weight)
        ids = text_token_ids(self.tokenizer, [ctx_init], self.special)[0]
        if len(ids) < n_ctx:
            raise UserError(
                f"ctx_init: {ctx_init!r} is {len(ids)} tokens but n_ctx is {n_ctx}; give at least {n_ctx} tokens of "
                f"text, set n_ctx: {len(ids)}, or ctx_init: null for a random init"
            )
        init_prompt_(weight, "text", embedding=self.text_tower.token_embedding.weight.float(), token_ids=ids[:n_ctx])
        return nn.Parameter(weight)

    def _layout(self, class_names: Sequence[str], n_ctx: int, position: str = "end", shared: bool = True) -> PromptLayout:
        """The class prompts' layout. The official prompt text is ``ctx_init + " " + name + "."`` with tokens
        ``1 .. n_ctx`` learned: the tokens of ``config.ctx_init`` past the first ``n_ctx`` stay as fixed words."""
        ctx_init = getattr(self.config, "ctx_init", None)
        words = text_token_ids(self.tokenizer, [ctx_init], self.special)[0][n_ctx:] if ctx_init else []
        layout = PromptLayout(
            self.tokenizer, self.special, class_names, n_ctx, position, self.text_tower.context_length, shared, words
        )
        return layout.to(self.text_tower.token_embedding.weight.device)

    def set_class_names(self, class_names: Sequence[str]) -> None:
        """Switches to another set of classes (base-to-new evaluation) without touching the learned prompts."""
        names = check_class_names(list(class_names))
        self.layout = self._layout(names, self.layout.n_ctx, self.layout.position, shared=True)
        self.class_names = names
        self.zeroshot_text = None

    def zeroshot_text_features(self) -> torch.Tensor:
        """``[C, E]`` unit frozen CLIP text features of the current classes over ``config.templates``, embedded on
        first use (on the device training runs on, in float32 whatever the autocast) and kept until the classes
        change."""
        from .zeroshot import zeroshot_weights  # vpt.clip.zeroshot builds on this module

        if self.zeroshot_text is None:
            device = self.text_tower.token_embedding.weight.device
            with torch.autocast(device.type, enabled=False):
                templates = templates_of(self.config.templates)
                self.zeroshot_text = zeroshot_weights(
                    self.backbone, self.tokenizer, self.class_names, templates, normalize_each=self.zeroshot_normalize_each
                )
        return self.zeroshot_text

    # ----- outputs ----------------------------------------------------------------------------------------------
    def prompt_config(self) -> dict[str, Any]:
        return {
            **super().prompt_config(),
            "dim": self.text_tower.width,
            "embed_dim": self.text_tower.embed_dim,
            "context_length": self.text_tower.context_length,
        }

    def _finish(self) -> None:
        """Freezes everything but ``prompts`` and keeps the backbone in eval mode."""
        self.freeze_backbone()
        self.train()
