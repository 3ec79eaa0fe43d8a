"""Seeded synthetic data carrying a learnable class signal, for smoke runs and tests.

Both sources are deterministic in ``seed``; ``split`` picks disjoint samples drawn from the same classes.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch.utils.data import Dataset

_SPLIT_OFFSET = {"train": 0, "validation": 1, "test": 2}


def _split_seed(seed: int, split: str) -> int:
    if split not in _SPLIT_OFFSET:
        raise ValueError(f"split must be one of {', '.join(_SPLIT_OFFSET)}, got {split!r}")
    return seed * 1000 + 17 + _SPLIT_OFFSET[split]


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
            raise ValueError(f"need num_samples > 0 and num_classes > 1, got {num_samples} and {num_classes}")
        g = torch.Generator().manual_seed(seed)
        low = torch.randn(num_classes, channels, 4, 4, generator=g)
        patterns = torch.nn.functional.interpolate(low, size=(image_size, image_size), mode="bilinear", align_corners=False)
        patterns = patterns / patterns.flatten(1).std(1).view(-1, 1, 1, 1)
        gs = torch.Generator().manual_seed(_split_seed(seed, split))
        self.labels = torch.arange(num_samples) % num_classes
        self.labels = self.labels[torch.randperm(num_samples, generator=gs)]
        self.images = patterns[self.labels] + noise * torch.randn(num_samples, channels, image_size, image_size, generator=gs)
        self.num_classes = num_classes
        self.class_names = [f"class {i}" for i in range(num_classes)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"pixel_values": self.images[i], "labels": int(self.labels[i])}


_FILLER = (
    "the a of and to in is it that was for on with as this but his by from they at be one have not all are an "
    "what so out there about which when up their who would if some time her could into more very story film people"
).split()
_KEYWORDS = (
    "excellent wonderful superb delightful brilliant",
    "terrible awful dreadful boring painful",
    "rocket planet orbit galaxy comet",
    "recipe kitchen flavor baking spice",
    "goal match striker league referee",
    "court judge verdict lawyer trial",
    "guitar melody chorus rhythm concert",
    "forest river mountain valley meadow",
)

SYNTHETIC_WORDS: tuple[str, ...] = tuple(dict.fromkeys((*_FILLER, *" ".join(_KEYWORDS).split())))
"""Every word :class:`SyntheticTexts` can emit (tiny offline tokenizers include them)."""


class SyntheticTexts(Dataset):
    """Short texts of ``num_classes`` classes (at most 8): filler words with a few class keywords mixed in.
    Items: ``{"text": str, "labels": int}``; ``class_names`` holds one keyword per class (a verbalizer)."""

    def __init__(
        self,
        num_samples: int = 512,
        num_classes: int = 2,
        length: int = 12,
        keywords_per_text: int = 2,
        seed: int = 0,
        split: Literal["train", "validation", "test"] = "train",
    ) -> None:
        if not 2 <= num_classes <= len(_KEYWORDS):
            raise ValueError(f"num_classes must be between 2 and {len(_KEYWORDS)}, got {num_classes}")
        if num_samples <= 0:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        keywords = [k.split() for k in _KEYWORDS[:num_classes]]
        g = torch.Generator().manual_seed(_split_seed(seed, split))
        self.labels = (torch.arange(num_samples) % num_classes)[torch.randperm(num_samples, generator=g)]
        self.texts = []
        for label in self.labels.tolist():
            words = [_FILLER[int(i)] for i in torch.randint(0, len(_FILLER), (length,), generator=g)]
            for _ in range(keywords_per_text):
                pos = int(torch.randint(0, len(words) + 1, (1,), generator=g))
                kw = keywords[label][int(torch.randint(0, len(keywords[label]), (1,), generator=g))]
                words.insert(pos, kw)
            self.texts.append(" ".join(words))
        self.num_classes = num_classes
        self.class_names = [k[0] for k in keywords]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"text": self.texts[i], "labels": int(self.labels[i])}


def few_shot_indices(
    labels: Sequence[int],
    shots: int,
    seed: int,
    class_names: Sequence[str] | None = None,
    *,
    classes: Sequence[int] | None = None,
    among: Sequence[int] | None = None,
    on_short: Literal["error", "all"] = "error",
) -> list[int]:
    """Indices of ``shots`` items per class, drawn without replacement with ``seed`` (sorted; same seed, same items).

    Args:
        labels: the label of every item.
        shots: K, items per class.
        seed: the draw depends on it and the labels only.
        class_names: class names by label, for messages; when given, every class must have items.
        classes: draw only for these classes (e.g. CoCoOp's base classes); default: every class named in
            ``class_names``, else every label present.
        among: draw only from these indices (e.g. what a validation hold-out left).
        on_short: a class with fewer than K items is an ``error`` (default), or gives ``all`` its items.

    Raises:
        ValueError: K not positive, or (``on_short: error``) a class with fewer than K items, named with its count.
    """
    if shots <= 0:
        raise ValueError(f"shots: K must be a positive integer, found {shots}")
    pool = range(len(labels)) if among is None else among
    by_class: dict[int, list[int]] = {}
    for i in pool:
        by_class.setdefault(int(labels[i]), []).append(int(i))
    if classes is None:
        classes = range(len(class_names)) if class_names is not None else sorted(by_class)
    g = torch.Generator().manual_seed(seed)
    chosen: list[int] = []
    for c in classes:
        items = by_class.get(int(c), [])
        if len(items) < shots:
            if on_short == "error":
                name = f" ({class_names[c]!r})" if class_names is not None and c < len(class_names) else ""
                raise ValueError(f"class {c}{name} has {len(items)} image(s), fewer than shots={shots}")
            chosen.extend(items)
            continue
        chosen.extend(items[int(j)] for j in torch.randperm(len(items), generator=g)[:shots])
    return sorted(chosen)
