"""Pixel prompts: a learnable pattern added to the input image, for any image model, CNNs included.

Bahng et al. 2022, "Exploring visual prompts for adapting large-scale models"; VPT (Jia et al. 2022) §4.5
applies the same idea to ConvNets. The backbone stays frozen; the prompt and a head train.

- ``pixel_pad``: a border of width ``prompt_size`` around the image (Bahng et al.'s default, 30 px at 224).
- ``pixel_fixed_patch``: a ``prompt_size`` x ``prompt_size`` square at the top-left corner.
- ``pixel_random_patch``: the same square at a random position, drawn anew at every training forward (one position
  per batch, from torch's global generator, so a seeded run repeats). In evaluation it sits at the top-left corner,
  so predictions are deterministic.

The prompt is stored as exactly the prompted pixels, ``[num_tasks, channels, pixels]``, and added with one
``index_add`` over the flattened image; with ``num_tasks > 1`` each image takes its task's prompt and head
(``task_ids``), so one batch can mix tasks.

Heads: ``linear`` (default) on the frozen model's pooled features, or ``backbone``: the model's own classifier,
kept frozen, when its class count is the task's. Both come from the family that owns the model
(:meth:`vpt.backbones.BackboneFamily.pooled_features`, :meth:`~vpt.backbones.BackboneFamily.classify`): timm's
``forward_head(pre_logits=True)``, open_clip's image embedding, a transformers model's ``pooler_output`` ...
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from promptcore import PromptBank, PromptedModel, register_method
from promptcore.errors import UserError
from promptcore.model import COMPAT_LABELS

from .backbones import backbone_name, family_of
from .config import PixelMethod, PixelPromptConfig
from .data import resolve_image_config
from .heads import TaskLinearHead


def prompt_pixel_index(method: PixelMethod, size: int, height: int, width: int) -> torch.Tensor:
    """Flat (``row * width + col``) positions of the prompted pixels, for a patch at the top-left corner.

    Raises:
        ValueError: when the prompt does not fit the image.
    """
    rows = torch.arange(height).view(-1, 1).expand(height, width)
    cols = torch.arange(width).view(1, -1).expand(height, width)
    if method == "pixel_pad":
        if 2 * size >= min(height, width):
            raise UserError(
                f"prompt_size: a pad of {size} px leaves no image inside a {height}x{width} input "
                f"(needs 2 * prompt_size < {min(height, width)}); use a smaller prompt_size"
            )
        mask = (rows < size) | (rows >= height - size) | (cols < size) | (cols >= width - size)
    else:
        if size > min(height, width):
            raise UserError(f"prompt_size: a {size} px patch does not fit a {height}x{width} input; use at most {min(height, width)}")
        mask = (rows < size) & (cols < size)
    return mask.flatten().nonzero().flatten()


class PixelPromptModel(PromptedModel):
    """A frozen image model with a learnable pixel prompt and a head (:class:`PixelPromptConfig`).

    Args:
        backbone: the library's model (timm, open_clip or transformers; any CNN or ViT; a plain torch model with
            ``image_size`` set and head ``backbone``).
        config: the prompt config; ``num_classes`` must be set (or come from the model with ``head: backbone``).
        name: the backbone name recorded in prompt files (default: :func:`vpt.backbones.backbone_name`).
    """

    def __init__(self, backbone: nn.Module, config: PixelPromptConfig, name: str | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = config
        self.name = name or backbone_name(backbone)
        self.family = family_of(backbone)
        image = resolve_image_config(backbone, config.image_size)
        self.image_size: tuple[int, int] = image.size
        self.channels = image.channels
        index = prompt_pixel_index(config.method, config.prompt_size, *self.image_size)
        self.register_buffer("pixel_index", index, persistent=False)
        self.prompts = PromptBank(config.num_tasks, (self.channels, index.numel()), init=config.init, std=config.init_scale, init_range=config.init_scale)
        if config.head == "backbone":
            n = self.family.classifier_classes(backbone, image)
            if config.num_classes is not None and config.num_classes != n:
                raise UserError(
                    f"num_classes: {config.num_classes} does not match the {n} classes of the model's own classifier "
                    f"(head 'backbone'); use head 'linear' to train a new {config.num_classes}-way head"
                )
            self.num_classes, self.feature_dim, self.head = n, None, None
        else:
            if config.num_classes is None:
                raise UserError("num_classes: the 'linear' head needs the number of classes (vpt train fills it from the data)")
            dim = self.family.feature_width(backbone, image)
            self.num_classes, self.feature_dim = config.num_classes, dim
            self.head = TaskLinearHead(dim, config.num_classes, config.num_tasks, init="linear")
        self.freeze_backbone()
        self.backbone.eval()

    compat_keys = (*COMPAT_LABELS, "image_size", "prompt_size", "channels")

    def prompt_config(self) -> dict[str, Any]:
        return {
            "method": self.config.method,
            "backbone": self.name,
            "image_size": list(self.image_size),
            "prompt_size": self.config.prompt_size,
            "channels": self.channels,
            "dim": self.feature_dim,
            "num_classes": self.num_classes,
            "num_tasks": self.config.num_tasks,
            "head": self.config.head,
            "method_config": dataclasses.asdict(self.config),
        }

    def _index(self) -> torch.Tensor:
        if self.config.method != "pixel_random_patch" or not self.training:
            return self.pixel_index
        h, w = self.image_size
        p = self.config.prompt_size
        # torch's global generator (seeded by the trainer; its state is checkpointed), so runs repeat and resume.
        top = int(torch.randint(0, h - p + 1, ()))
        left = int(torch.randint(0, w - p + 1, ()))
        return self.pixel_index + (top * w + left)

    def apply_prompt(self, pixel_values: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The prompted images: ``pixel_values`` plus each image's task prompt at the prompted pixels."""
        b, c, h, w = pixel_values.shape
        if (h, w) != self.image_size or c != self.channels:
            raise UserError(
                f"pixel prompts were laid out for {self.channels}x{self.image_size[0]}x{self.image_size[1]} images, "
                f"got {c}x{h}x{w}; resize the images to the backbone's size (vpt.data.build_transform does) or set "
                f"prompt.image_size"
            )
        if task_ids is None:
            task_ids = torch.zeros(b, dtype=torch.long, device=pixel_values.device)
        prompt = self.prompts(task_ids).to(pixel_values.dtype)
        return pixel_values.flatten(2).index_add(2, self._index(), prompt).view_as(pixel_values)

    def forward(self, pixel_values: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, num_classes]``; ``task_ids [B]`` picks each image's prompt and head (default task 0)."""
        if task_ids is None:
            task_ids = torch.zeros(pixel_values.shape[0], dtype=torch.long, device=pixel_values.device)
        x = self.apply_prompt(pixel_values, task_ids)
        if self.head is None:
            return self.family.classify(self.backbone, x)
        return self.head(self.family.pooled_features(self.backbone, x), task_ids)

    def forward_batch(self, batch: dict[str, Any]) -> torch.Tensor:
        return self(batch["pixel_values"], batch.get("task_ids"))


register_method("pixel_pad", PixelPromptConfig, PixelPromptModel, kind="vision", summary="pixel prompt: a learned border")
register_method("pixel_fixed_patch", PixelPromptConfig, PixelPromptModel, kind="vision", summary="pixel prompt: a learned corner patch")
register_method("pixel_random_patch", PixelPromptConfig, PixelPromptModel, kind="vision", summary="pixel prompt: a learned patch at a random place")
