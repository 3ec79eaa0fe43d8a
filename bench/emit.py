"""The one way a benchmark script hands back its markdown: printed, and appended to ``--write FILE`` when given."""

from __future__ import annotations


def emit(lines: list[str], write: str | None) -> str:
    """Prints ``lines`` as one markdown block and appends it (after a blank line) to ``write``; returns the text."""
    text = "\n".join(lines) + "\n"
    print(text)
    if write:
        with open(write, "a") as f:
            f.write("\n" + text)
    return text
