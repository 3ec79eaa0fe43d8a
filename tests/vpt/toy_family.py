"""A backbone family written outside the library: a tiny CNN of its own, with its own image config.

Registering it is one line, ``FAMILIES.add("toyfamily", ToyFamily())``; ``toyfamily:<anything>`` then builds a
:class:`ToyCNN` from the run config's ``model.kwargs``, and pixel prompts, the linear probe and the data pipeline
ask this file (never the library) how to read it.
"""

from __future__ import annotations

import torch
from torch import nn

from vpt.backbones import BackboneFamily, ImageConfig


class ToyCNN(nn.Module):
    """Conv -> ReLU -> global average pool (the pooled features) -> linear classifier."""

    def __init__(self, image_size: int = 24, width: int = 8, num_classes: int = 4) -> None:
        super().__init__()
        self.image_size, self.width, self.num_classes = image_size, width, num_classes
        self.conv = nn.Conv2d(3, width, kernel_size=3, padding=1)
        self.fc = nn.Linear(width, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(images)).mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(images))


class ToyFamily(BackboneFamily):
    describe = "the tests' toy CNNs"

    def create(self, model_name: str, cfg) -> nn.Module:
        return ToyCNN(**cfg.kwargs)

    def owns(self, model: nn.Module) -> bool:
        return isinstance(model, ToyCNN)

    def default_name(self, model: nn.Module) -> str:
        return "toyfamily:unnamed"

    def image_config(self, model: nn.Module) -> ImageConfig:
        size = (model.image_size, model.image_size)
        return ImageConfig(size=size, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), source="toy family", family=self)

    def pooled_features(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return model.features(images)

    def feature_width(self, model: nn.Module, image: ImageConfig) -> int:
        return model.width

    def classifier_classes(self, model: nn.Module, image: ImageConfig) -> int:
        return model.num_classes
