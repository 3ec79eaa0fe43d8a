"""Seeded synthetic texts carrying a learnable class signal, for smoke runs and tests (``data.source: synthetic``).

Deterministic in ``seed``; ``split`` picks disjoint samples drawn from the same classes.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch.utils.data import Dataset

from promptcore.data import split_seed
from promptcore.errors import UserError

from .sources import SYNTHETIC_KEYWORDS, synthetic_class_keywords

_FILLER = (
    "the a of and to in is it that was for on with as this but his by from they at be one have not all are an "
    "what so out there about which when up their who would if some time her could into more very story film people"
).split()
SYNTHETIC_WORDS: tuple[str, ...] = tuple(dict.fromkeys((*_FILLER, *" ".join(SYNTHETIC_KEYWORDS).split())))
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
        keywords = synthetic_class_keywords(num_classes)
        if num_samples <= 0:
            raise UserError(f"num_samples must be positive, got {num_samples}")
        g = torch.Generator().manual_seed(split_seed(seed, split))
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
