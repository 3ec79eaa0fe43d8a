"""Visual prompt tuning (VPT; Jia et al., ECCV 2022) on a frozen ViT-style encoder of timm, open_clip or
transformers.

``VisualPromptModel`` inserts learnable tokens after the encoder's prefix tokens (class, register tokens):

- ``vpt_shallow``: ``num_tokens`` prompts before the first block; they travel through all blocks.
- ``vpt_deep``: fresh prompts before every block; each block's prompt outputs are replaced by the next block's.

The prompts are removed before the final norm and pooling, so the backbone's pooling sees the sequence it was
trained on. A prompt bank (``num_tasks > 1``) holds one prompt set and one head per task; ``task_ids`` picks each
image's, so one batch can mix tasks. VPT-deep runs the exact fast path of :mod:`vpt.fast_deep` where it applies.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from promptcore import DeepSoftPrompt, PromptBank, PromptedModel, SoftPrompt, register_method
from promptcore.errors import UserError

from .backbones import TokenBackbone, token_backbone
from .config import VPTConfig
from .fast_deep import fast_unsupported, run_fast_deep
from .heads import head_named


class VisualPromptModel(PromptedModel):
    """A frozen encoder with VPT prompts and a classification head.

    Args:
        backbone: the library's model (from :func:`vpt.backbones.create_model` or built directly).
        config: the prompt method, prompt sizes and head.
        name: backbone name recorded in prompt files (default: :func:`vpt.backbones.backbone_name`).

    Trainable modules: ``prompts`` (``SoftPrompt``/``DeepSoftPrompt``, or a ``PromptBank`` for several tasks),
    ``prompt_proj`` (with ``projection``) and ``head``.
    """

    prompt_module_names = ("prompts", "prompt_proj", "head")
    compat_keys = (*PromptedModel.compat_keys, "projection")

    def __init__(self, backbone: nn.Module, config: VPTConfig, name: str | None = None) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.tokens: TokenBackbone = token_backbone(backbone, name)
        tb = self.tokens
        self.deep = config.deep
        self.num_layers = tb.depth if self.deep else 1
        prompt_dim = config.projection or tb.width
        init = {"init": config.init}
        if config.init == "xavier":
            init["patch_area"] = tb.patch_size[0] * tb.patch_size[1]
        if config.num_tasks > 1:
            shape = (self.num_layers, config.num_tokens, prompt_dim) if self.deep else (config.num_tokens, prompt_dim)
            self.prompts = PromptBank(config.num_tasks, shape, **init)
        elif self.deep:
            self.prompts = DeepSoftPrompt(self.num_layers, config.num_tokens, prompt_dim, **init)
        else:
            self.prompts = SoftPrompt(config.num_tokens, prompt_dim, **init)
        self.prompt_proj = nn.Linear(prompt_dim, tb.width) if config.projection else None
        # Dropout lives here, not in the prompt modules: one mask per step on the prompt tensor that both the plain
        # and the fast path consume (see vpt.fast_deep).
        self.prompt_dropout = nn.Dropout(config.dropout)
        self.head_spec = head_named(config.head)
        self.head = self.head_spec.build(tb, config)
        self._checkpointing = False
        self.fast = self._fast_path_choice()
        self.freeze_backbone()
        self.backbone.eval()

    # ----- construction -------------------------------------------------------------------------------------------
    def _fast_path_choice(self) -> bool:
        if not self.deep or self.config.fast == "off":
            return False
        reason = fast_unsupported(self.tokens, self._num_fast_layers())
        if reason is not None and self.config.fast == "on":
            raise UserError(f"fast: 'on' but the fast VPT-deep path does not apply to {self.tokens.name}: {reason}; use fast 'auto'")
        return reason is None

    def _num_fast_layers(self) -> int:
        # A head that reads the last block's prompt outputs (prompt_mean) needs that block on the plain path.
        return self.num_layers - 1 if self.head_spec.reads_prompt_outputs else self.num_layers

    # ----- PromptedModel contract ---------------------------------------------------------------------------------
    def prompt_config(self) -> dict[str, Any]:
        cfg, tb = self.config, self.tokens
        return {
            "method": cfg.method,
            "backbone": tb.name,
            "dim": tb.width,
            "num_tokens": cfg.num_tokens,
            "num_layers": self.num_layers,
            "num_classes": cfg.num_classes,
            "head": cfg.head,
            "num_tasks": cfg.num_tasks,
            "projection": cfg.projection,
            "backbone_depth": tb.depth,
            "image_size": list(tb.image_size) if tb.image_size else None,
            "class_names": cfg.class_names,
            "method_config": dataclasses.asdict(cfg),
        }

    def enable_gradient_checkpointing(self) -> None:
        """Recomputes each block's activations in backward (both paths) instead of keeping them."""
        self._checkpointing = True

    def forward_batch(self, batch: dict[str, Any]) -> torch.Tensor:
        return self(batch["pixel_values"], batch.get("task_ids"))

    # ----- forward ------------------------------------------------------------------------------------------------
    def prompt_tokens(self) -> torch.Tensor:
        """This step's prompts ``[sets, layers, num_tokens, width]``: projected, with prompt dropout in training."""
        weight = self.prompts.weight
        if isinstance(self.prompts, PromptBank):
            weight = weight if self.deep else weight.unsqueeze(1)
        else:
            weight = (weight if self.deep else weight.unsqueeze(0)).unsqueeze(0)
        if self.prompt_proj is not None:
            weight = self.prompt_proj(weight)
        return self.prompt_dropout(weight)

    def forward(self, pixel_values: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, num_classes]`` for images ``[B, 3, H, W]``; ``task_ids [B]`` with a prompt bank."""
        x = self._check_images(pixel_values)
        task_ids = self._check_task_ids(task_ids, x.shape[0])
        tokens = self.tokens.embed(x)
        prompts = self.prompt_tokens().to(tokens.dtype)
        prompt_out = None
        if self.fast:
            n_fast = self._num_fast_layers()
            tokens = run_fast_deep(self.tokens, tokens, prompts[:, :n_fast], task_ids, self._checkpoint_fn())
            if n_fast < self.num_layers:
                tokens, prompt_out = self._run_plain(tokens, prompts, task_ids, start=n_fast)
        else:
            tokens, prompt_out = self._run_plain(tokens, prompts, task_ids)
        return self.head(self.head_spec.features(self.tokens, tokens, prompt_out), task_ids)

    def _run_plain(
        self, x: torch.Tensor, prompts: torch.Tensor, task_ids: torch.Tensor | None, start: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference path: prompts concatenated after the prefix, blocks ``start..depth-1`` run as the library
        runs them. Returns the tokens without prompts and the last block's prompt outputs."""
        pre, n = self.tokens.num_prefix_tokens, self.config.num_tokens
        run = self._checkpoint_fn() or (lambda fn, *args: fn(*args))
        for index in range(start, self.tokens.depth):
            if index == start or self.deep:
                layer = prompts[:, index if self.deep else 0]
                p = layer.expand(x.shape[0], -1, -1) if task_ids is None else layer[task_ids]
                rest = x[:, pre:] if index == start else x[:, pre + n :]
                x = torch.cat([x[:, :pre], p, rest], dim=1)
            x = run(lambda h, i=index: self.tokens.run_block(i, h), x)
        return torch.cat([x[:, :pre], x[:, pre + n :]], dim=1), x[:, pre : pre + n]

    def _checkpoint_fn(self):
        if not (self._checkpointing and torch.is_grad_enabled()):
            return None
        return lambda fn, *args: checkpoint(fn, *args, use_reentrant=False)

    def _check_images(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4:
            raise UserError(f"pixel_values must be [batch, channels, height, width], got shape {tuple(images.shape)}")
        size = self.tokens.image_size
        if size is not None and tuple(images.shape[-2:]) != size:
            raise UserError(
                f"image size {images.shape[-2]}x{images.shape[-1]} does not match the input size {size[0]}x{size[1]} "
                f"of backbone {self.tokens.name}; resize the images to {size[0]}x{size[1]} (vpt's data transforms do "
                f"this from the backbone's config) or build the backbone for that size"
            )
        return images

    def _check_task_ids(self, task_ids: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        num_tasks = self.config.num_tasks
        if task_ids is None:
            if num_tasks > 1:
                raise UserError(f"this model has a prompt bank of {num_tasks} tasks; pass task_ids [batch] with each image's task")
            return None
        task_ids = torch.as_tensor(task_ids, device=self.prompts.weight.device)
        if task_ids.shape != (batch,) or task_ids.dtype not in (torch.int32, torch.int64):
            raise UserError(f"task_ids must be {batch} integers (one per image), got {task_ids.dtype} of shape {tuple(task_ids.shape)}")
        if int(task_ids.min()) < 0 or int(task_ids.max()) >= num_tasks:
            raise UserError(
                f"task_ids must lie in [0, {num_tasks - 1}] for {num_tasks} task(s), found {int(task_ids.min())}..{int(task_ids.max())}"
            )
        return task_ids if num_tasks > 1 else None


register_method("vpt_shallow", VPTConfig, VisualPromptModel, kind="vision", summary="VPT-shallow: prompts before the first block")
register_method("vpt_deep", VPTConfig, VisualPromptModel, kind="vision", summary="VPT-deep: fresh prompts before every block")
