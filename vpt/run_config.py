"""The vision run config: what ``vpt train | eval | predict`` read from YAML.

Sections: ``model`` (:class:`vpt.config.BackboneConfig`), ``prompt`` (a method config, chosen by its ``method``
key: ``vpt_shallow``/``vpt_deep`` token prompts, ``pixel_*`` pixel prompts, or the CLIP prompt learners
``clip_zeroshot``/``coop``/``cocoop``/``maple``/``ivlp`` of :mod:`vpt.clip.config`), ``data``
(:class:`vpt.data.VisionDataConfig`) and ``train`` (:class:`promptcore.train_config.TrainConfig`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from promptcore.config import load_config
from promptcore.train_config import TrainConfig

from .clip.config import CLIPPromptConfig
from .config import BackboneConfig, VPTConfig
from .data import VisionDataConfig
from .pixel import PixelPromptConfig

PromptConfig = VPTConfig | PixelPromptConfig | CLIPPromptConfig


@dataclass
class VisionRunConfig:
    """One vision run: backbone, prompts, data and training.

    Left unset, ``prompt.num_classes`` (pixel prompts) and ``prompt.class_names`` (CLIP methods) are taken from
    the data by the ``vpt`` recipe.
    """

    model: BackboneConfig = field(default_factory=BackboneConfig)
    prompt: PromptConfig = field(default_factory=lambda: PixelPromptConfig())
    data: VisionDataConfig = field(default_factory=VisionDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def load_run_config(source: str | os.PathLike | dict[str, Any] | None = None, overrides: list[str] = ()) -> VisionRunConfig:
    """Loads and validates a :class:`VisionRunConfig` from YAML (or a dict) with ``a.b=value`` overrides."""
    return load_config(VisionRunConfig, source, overrides)
