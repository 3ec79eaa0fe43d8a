"""Tokenisation helpers shared by every CLIP method: the tokenizer, special token ids, class-name checks.

CLIP's text tower reads ``[SOS, tokens..., EOT, padding]`` and pools at EOT. The methods here build their token
sequences from the tokenizer's own output (never from hard-coded ids), so any open_clip text tower whose tokenizer
puts a start token first and an end token after the text works (OpenAI's BPE ``SimpleTokenizer`` and relatives).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Sequence

import torch

from promptcore.errors import UserError
from promptcore.preflight import check_distinct_ids

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


def prompt_name(name: str) -> str:
    """A class name as the prompts write it: underscores read as spaces (``apple_pie`` -> ``apple pie``), as the
    official code of every CLIP method here does (``name.replace("_", " ")`` in CoOp, CoCoOp, MaPLe, IVLP,
    PromptSRC, KgCoOp and CoOp's zero-shot CLIP), so label names of datasets written with underscores read as
    words."""
    return name.replace("_", " ")


def check_class_names(names: Any, field: str = "class_names") -> list[str]:
    """Checks a class-name list: non-empty strings, no duplicates (also once underscores read as spaces, which
    would give two classes the same prompt). Returns it as a list.

    Raises ValueError("class_names: ...") naming the offending entries.
    """
    if not isinstance(names, (list, tuple)) or not names:
        raise UserError(f"{field}: expected a non-empty list of class names, found {names!r}")
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad:
        raise UserError(f"{field}: every class name must be a non-empty string, found {bad!r}")
    dup = sorted(n for n, c in Counter(names).items() if c > 1)
    if dup:
        raise UserError(f"{field}: duplicate class names {dup}; each class needs a distinct name (its text prompt)")
    same = sorted(n for n, c in Counter(prompt_name(n) for n in names).items() if c > 1)
    if same:
        raise UserError(
            f"{field}: {[n for n in names if prompt_name(n) in same]} give the same prompt text {same} (underscores "
            f"read as spaces); rename one of them"
        )
    return list(names)
