"""Scoring a prompted vision-language model's evaluation rows: generated answers against reference answers (VQA,
captioning: exact match and token F1), or classes by their words (accuracy), with 95% intervals.

Answers are compared after :func:`normalize_answer` (lower case, punctuation and the articles a / an / the
dropped, spaces collapsed: SQuAD's normalisation). A row with several references takes its best score over them.

- ``exact_match``: the fraction of rows whose normalised answer equals a reference; its interval is Wilson's
  (:func:`promptcore.stats.binomial_interval`).
- ``token_f1``: the mean over rows of the F1 of the answer's words against a reference's words; its interval is
  the normal one of a mean (:func:`promptcore.stats.mean_interval`, from the sum of squares ``token_f1_sq``).
- ``accuracy`` (:class:`ClassScorer`): each class word's log-probability as the answer (its tokens and EOS after the
  input) is the class's score; the best-scoring class is compared with the row's. Wilson's interval.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch

from promptcore.stats import binomial_interval, mean_interval

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """``text`` lower-cased, without punctuation or articles, its words separated by single spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def exact_match(answer: str, references: list[str]) -> float:
    """1.0 when the normalised ``answer`` equals a normalised reference, else 0.0."""
    return float(any(normalize_answer(answer) == normalize_answer(r) for r in references))


def token_f1(answer: str, references: list[str]) -> float:
    """The best F1 over ``references`` of the normalised answer's words against the reference's words (two empty
    answers score 1)."""

    def f1(reference: str) -> float:
        got, want = normalize_answer(answer).split(), normalize_answer(reference).split()
        if not got or not want:
            return float(got == want)
        common = sum((Counter(got) & Counter(want)).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(got), common / len(want)
        return 2 * precision * recall / (precision + recall)

    return max(f1(r) for r in references)


@dataclass
class AnswerScorer:
    """How evaluation generates and scores answers: greedy decoding up to ``max_new_tokens`` (stopping at the
    tokenizer's EOS), decoded without special tokens.

    Set it as a prompted model's ``answer_scorer`` and its ``eval_step`` scores batches that carry references
    (:data:`vlmpt.data.REFERENCE_KEYS`).
    """

    tokenizer: Any
    max_new_tokens: int = 16
    metric_names = ("exact_match", "token_f1")

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: must be a positive number of tokens, got {self.max_new_tokens!r}")

    @property
    def eos_token_id(self) -> int | None:
        return self.tokenizer.eos_token_id

    def decode(self, tokens: torch.Tensor) -> list[str]:
        """Each row of generated ``tokens``, up to its EOS, as text."""
        eos = self.eos_token_id
        texts = []
        for row in tokens.tolist():
            if eos is not None and eos in row:
                row = row[: row.index(eos)]
            texts.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
        return texts

    def evaluate(self, model: Any, batch: dict[str, Any], images: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Sums over the batch's rows: each row's answer generated from ``prompt_ids`` and scored (:meth:`score`)."""
        new = model.generate(self.max_new_tokens, self.eos_token_id, input_ids=batch["prompt_ids"], attention_mask=batch["prompt_mask"], **images)
        return self.score(new, batch["answers"])

    def score(self, tokens: torch.Tensor, references: list[list[str]]) -> dict[str, torch.Tensor]:
        """Sums over the rows of ``exact_match``, ``token_f1`` and ``token_f1_sq`` (for the interval)."""
        answers = self.decode(tokens)
        em = [exact_match(a, r) for a, r in zip(answers, references)]
        f1 = [token_f1(a, r) for a, r in zip(answers, references)]
        return {
            "exact_match": torch.tensor(sum(em), dtype=torch.float64),
            "token_f1": torch.tensor(sum(f1), dtype=torch.float64),
            "token_f1_sq": torch.tensor(sum(x * x for x in f1), dtype=torch.float64),
        }


@dataclass
class ClassScorer:
    """Classification by class words (a verbalizer): each class's score is the summed log-probability of its word's
    tokens and EOS (as :class:`vlmpt.data.VLMEncoder` makes the answer) after the input; a row is right when its
    best class's word is its answer.

    Args:
        tokenizer: the processor's tokenizer.
        class_names: the word of each class, in class order.
    """

    tokenizer: Any
    class_names: list[str]
    metric_names = ("accuracy",)

    def __post_init__(self) -> None:
        from promptcore.preflight import check_distinct_ids

        eos = self.tokenizer.eos_token_id
        self.class_ids = [[*self.tokenizer(name, add_special_tokens=False)["input_ids"], eos] for name in self.class_names]
        check_distinct_ids("task.class_names", self.class_names, self.class_ids, type(self.tokenizer).__name__, "give words the tokenizer tells apart")

    def evaluate(self, model: Any, batch: dict[str, Any], images: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The sum over the batch's rows of ``accuracy``."""
        scores = model.class_scores(batch["prompt_ids"], batch["prompt_mask"], self.class_ids, **images)
        chosen = [self.class_names[c] for c in scores.argmax(-1).tolist()]
        return {"accuracy": torch.tensor(float(sum(c == refs[0] for c, refs in zip(chosen, batch["answers"]))), dtype=torch.float64)}


def with_intervals(metrics: dict[str, Any], confidence: float = 0.95) -> dict[str, Any]:
    """Averaged eval metrics (the trainer's ``{metric: sum / count}``) with ``<metric>_low`` / ``_high`` (95% by
    default) for ``exact_match`` and ``accuracy`` (Wilson's) and ``token_f1`` (``token_f1_sq`` replaced by it);
    other metrics are returned as they are."""
    n = int(metrics["count"])
    out = {k: v for k, v in metrics.items() if k != "token_f1_sq"}
    for key in ("exact_match", "accuracy"):
        if key in metrics:
            out[f"{key}_low"], out[f"{key}_high"] = binomial_interval(round(metrics[key] * n), n, confidence)
    if "token_f1_sq" in metrics:
        out["token_f1_low"], out["token_f1_high"] = mean_interval(metrics["token_f1"] * n, metrics["token_f1_sq"] * n, n, confidence)
    return out


__all__ = ["AnswerScorer", "ClassScorer", "exact_match", "normalize_answer", "token_f1", "with_intervals"]
