"""Seeded synthetic images carrying a learnable class signal, for smoke runs and tests (``data.source: synthetic``).

Deterministic in ``seed``; ``split`` picks disjoint samples drawn from the same classes.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch.utils.data import Dataset

from promptcore.data import split_seed
from promptcore.errors import UserError

class SyntheticImages(Dataset):
    """Images of ``num_classes`` classes: each class has a fixed smooth random pattern, each image is that
    pattern plus noise. Items: ``{"pixel_values": float [C, H, W], "labels": int}``.

    Args:
        num_samples: images in this split.
        num_classes: classes (balanced, labels cycle through them).
        image_size: height and width.
        channels: 3 for RGB.
        noise: standard deviation of the per-image noise (the pattern has unit scale).
        seed: class patterns depend on ``seed`` only; images on ``seed`` and ``split``.
        split: ``train``, ``validation`` or ``test``.
    """

    def __init__(
        self,
        num_samples: int = 512,
        num_classes: int = 4,
        image_size: int = 32,
        channels: int = 3,
        noise: float = 0.5,
        seed: int = 0,
        split: Literal["train", "validation", "test"] = "train",
    ) -> None:
        if num_samples <= 0 or num_classes <= 1:
            raise UserError(f"need num_samples > 0 and num_classes > 1, got {num_samples} and {num_classes}")
        g = torch.Generator().manual_seed(seed)
        low = torch.randn(num_classes, channels, 4, 4, generator=g)
        patterns = torch.nn.functional.interpolate(low, size=(image_size, image_size), mode="bilinear", align_corners=False)
        patterns = patterns / patterns.flatten(1).std(1).view(-1, 1, 1, 1)
        gs = torch.Generator().manual_seed(split_seed(seed, split))
        self.labels = torch.arange(num_samples) % num_classes
        self.labels = self.labels[torch.randperm(num_samples, generator=gs)]
        self.images = patterns[self.labels] + noise * torch.randn(num_samples, channels, image_size, image_size, generator=gs)
        self.num_classes = num_classes
        self.class_names = [f"class {i}" for i in range(num_classes)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"pixel_values": self.images[i], "labels": int(self.labels[i])}
