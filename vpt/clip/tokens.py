"""Tokenisation helpers shared by every CLIP method: the tokenizer, special token ids, class-name checks.

CLIP's text tower reads ``[SOS, tokens..., EOT, padding]`` and pools at EOT. The methods here build their token
sequences from the tokenizer's own output (never from hard-coded ids), so any open_clip text tower whose tokenizer
puts a start token first and an end token after the text works (OpenAI's BPE ``SimpleTokenizer`` and relatives).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

import torch

from promptcore.errors import UserError
from promptcore.preflight import check_distinct_ids

from .config import check_class_names, prompt_name  # noqa: F401 - defined free of torch there, for the configs

Tokenizer = Callable[[list[str]], torch.Tensor]


@lru_cache(maxsize=8)
def get_tokenizer(name: str | None, context_length: int) -> Tokenizer:
    """The tokenizer for a text tower (cached: building the BPE tables takes a noticeable fraction of a second).

    Args:
        name: an open_clip model name (``"ViT-B-16"``) for ``open_clip.get_tokenizer``; ``None`` gives OpenAI's BPE
            ``SimpleTokenizer``, which ships with open_clip and works offline (every OpenAI-vocabulary CLIP).
        context_length: the text tower's context length (read it from the model).
    """
    import open_clip

    if name is None:
        return open_clip.SimpleTokenizer(context_length=context_length)
    return open_clip.get_tokenizer(name, context_length=context_length)


@dataclass(frozen=True)
class SpecialTokens:
    """The start and end token ids, read from the tokenizer's output for an empty text."""

    sos: int
    eot: int
    pad: int

    @classmethod
    def of(cls, tokenizer: Tokenizer) -> "SpecialTokens":
        ids = tokenizer([""])[0].tolist()
        if len(ids) < 3 or ids[0] == ids[1]:
            raise UserError(
                f"the tokenizer gives {ids[:3]}... for an empty text, expected [start, end, padding...]: CLIP prompt "
                f"methods need a tokenizer that puts a start token first and an end token after the text "
                f"(OpenAI's BPE SimpleTokenizer, the default with tokenizer: null)"
            )
        return cls(sos=ids[0], eot=ids[1], pad=ids[2])


def text_token_ids(
    tokenizer: Tokenizer, texts: Sequence[str], special: SpecialTokens, classes: Sequence[str] | None = None
) -> list[list[int]]:
    """The tokens of each text without start, end or padding: ``[[ids...], ...]``.

    Raises ValueError naming the text (and its class, when ``classes`` gives one per text) when the tokenizer had
    to truncate it (it filled the whole context).
    """
    out = []
    rows = tokenizer(list(texts))
    for i, (text, row) in enumerate(zip(texts, rows.tolist())):
        owner = f"class {classes[i]!r}: " if classes is not None else ""
        if special.eot not in row[1:]:
            raise UserError(f"{owner}text {text!r} has no end token after tokenization; the tokenizer does not fit CLIP prompting")
        end = row.index(special.eot, 1)
        if row[-1] != special.pad:
            raise UserError(
                f"{owner}{text!r} tokenizes beyond the text context length ({len(row)} tokens, truncated by the "
                f"tokenizer); shorten it"
            )
        out.append(row[1:end])
    return out


def check_distinct_token_ids(names: Sequence[str], ids: Sequence[Sequence[int]], field: str = "class_names") -> None:
    """Raises :class:`promptcore.UserError` when two class names tokenize to the same ids (CLIP's tokenizer
    lowercases and collapses whitespace: ``Cat`` and ``cat`` are one text to it): their prompts, and so their
    logits, would be equal and the two classes could never be told apart."""
    check_distinct_ids(field, names, ids, "the CLIP tokenizer (it lowercases and collapses whitespace)", "rename one of them")
