"""A text data source from outside the package, in one file: seeded one-line reviews made of the synthetic
vocabulary, class 0 with words of dislike and class 1 with words of praise. ``SOURCES.add("toy_reviews",
TOY_REVIEWS)`` makes ``data.source: toy_reviews`` work in configs (the tests register it for their duration)."""

from __future__ import annotations

import random
from typing import Any

import datasets

from textpt.sources import TextSource

WORDS = (("terrible", "awful", "boring"), ("excellent", "wonderful", "superb"))


def load_reviews(cfg: Any) -> dict[str, datasets.Dataset]:
    """``num_samples`` training and ``num_eval_samples`` evaluation reviews, seeded by ``seed``."""
    rng = random.Random(cfg.seed)

    def reviews(n: int) -> datasets.Dataset:
        labels = [rng.randrange(2) for _ in range(n)]
        texts = [f"the film was {rng.choice(WORDS[y])} and {rng.choice(WORDS[y])}" for y in labels]
        return datasets.Dataset.from_dict({"text": texts, "label": labels})

    splits = {cfg.train_split: reviews(cfg.num_samples)}
    if cfg.eval_split is not None:
        splits[cfg.eval_split] = reviews(cfg.num_eval_samples)
    return splits


TOY_REVIEWS = TextSource(load_reviews, summary="seeded one-line reviews (a test's source)")
