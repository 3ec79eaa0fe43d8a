"""Data helpers shared by the packages: the seeded K-shot sampler and the seeds of synthetic splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Sequence

import torch

from .errors import UserError

_SPLIT_OFFSET = {"train": 0, "validation": 1, "test": 2}


def split_seed(seed: int, split: str) -> int:
    """The generator seed of one split of a seeded synthetic source: the splits of one ``seed`` draw disjoint
    samples from the same classes.

    Raises:
        ValueError: ``split`` is not ``train``, ``validation`` or ``test``.
    """
    if split not in _SPLIT_OFFSET:
        raise UserError(f"split must be one of {', '.join(_SPLIT_OFFSET)}, got {split!r}")
    return seed * 1000 + 17 + _SPLIT_OFFSET[split]


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
        raise UserError(f"shots: K must be a positive integer, found {shots}")
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
                raise UserError(f"class {c}{name} has {len(items)} image(s), fewer than shots={shots}")
            chosen.extend(items)
            continue
        chosen.extend(items[int(j)] for j in torch.randperm(len(items), generator=g)[:shots])
    return sorted(chosen)


# Byte order marks, longest first (UTF-32-LE's starts with UTF-16-LE's): encoding, how iconv names it, in words.
BOMS: tuple[tuple[bytes, str, str], ...] = (
    (b"\xff\xfe\x00\x00", "utf-32", "UTF-32 (little-endian, with a byte order mark)"),
    (b"\x00\x00\xfe\xff", "utf-32", "UTF-32 (big-endian, with a byte order mark)"),
    (b"\xff\xfe", "utf-16", "UTF-16 (little-endian, with a byte order mark)"),
    (b"\xfe\xff", "utf-16", "UTF-16 (big-endian, with a byte order mark)"),
)
SNIFF_BYTES = 4096


def detect_encoding(head: bytes) -> tuple[str, str] | None:
    """``(iconv name, description)`` of the wide encoding the first bytes of a file show: a UTF-16/UTF-32 byte order
    mark, or, without one, text whose every other byte (every fourth of four) is NUL, as ASCII-range UTF-16
    (UTF-32) is; ``None`` when neither (a UTF-8 byte order mark is UTF-8, which the readers take)."""
    for bom, name, words in BOMS:
        if head.startswith(bom):
            return name, words
    head = head[: len(head) // 4 * 4]
    if len(head) < 4 or head.count(0) < len(head) // 4:
        return None
    for width, name in ((4, "utf-32"), (2, "utf-16")):
        for endian, text_at in (("le", 0), ("be", width - 1)):
            units = [head[i:i + width] for i in range(0, len(head), width)]
            if sum(u[text_at] != 0 and u.count(0) == width - 1 for u in units) >= 0.9 * len(units):
                order = "little" if endian == "le" else "big"
                return f"{name}{endian}", f"{name.upper()} ({order}-endian, without a byte order mark)"
    return None


def check_utf8(path: str, error: type[UserError] = UserError) -> None:
    """Raises ``error`` naming ``path`` when the file is not UTF-8 text (the csv and json readers would fail deep
    inside, with no file name): the encoding detected (UTF-16/UTF-32 with or without a byte order mark, else the
    first offending byte and the likely 8-bit encoding) and the ``iconv`` line that converts it. A UTF-8 byte order
    mark is fine; a missing file is left to the reader."""
    import codecs

    target = Path(path)
    fix = "and point data.data_files at it"
    converted = target.with_name(f"{target.stem}.utf8{target.suffix}")
    try:
        with open(path, "rb") as f:
            wide = detect_encoding(f.read(SNIFF_BYTES))
            if wide is not None:
                name, words = wide
                raise error(
                    f"{path} is {words} text, and the readers take UTF-8; convert it with "
                    f"iconv -f {name} -t utf-8 {path} > {converted} {fix}"
                )
            f.seek(0)
            decoder = codecs.getincrementaldecoder("utf-8")()
            offset = 0
            while chunk := f.read(1 << 20):
                decoder.decode(chunk)
                offset += len(chunk)
            decoder.decode(b"", final=True)
    except FileNotFoundError:
        return
    except UnicodeDecodeError as e:
        where = offset + e.start
        # 0x80-0x9f are control codes in Latin-1 and letters and signs (curly quotes, euro) in Windows-1252
        name, words = ("cp1252", "Windows-1252") if any(0x80 <= b <= 0x9F for b in e.object) else ("latin1", "Latin-1 (ISO-8859-1)")
        raise error(
            f"{path} is not UTF-8 text: byte {where} is {e.object[e.start:e.start + 1]!r} ({e.reason}); it is likely "
            f"{words}: convert it with iconv -f {name} -t utf-8 {path} > {converted} {fix}"
        ) from None


def load_with_datasets(error: type[UserError], read: tuple[str, str], load: tuple[str, str], *args: Any, **kwargs: Any) -> Any:
    """``datasets.load_dataset(*args, **kwargs)``, its failures raised as one ``error`` (a :class:`UserError`).

    Args:
        read: ``(what, fix)`` for a file the reader cannot parse, or an empty one: "could not read WHAT: the
            reader's error; FIX".
        load: ``(what, settings)`` for a dataset or file that is not there (or an offline hub): "could not load WHAT
            (the error); check SETTINGS and that the files hold rows".
    """
    import datasets

    try:
        return datasets.load_dataset(*args, **kwargs)
    except (datasets.exceptions.DatasetGenerationError, StopIteration) as e:  # a file the reader cannot parse, or empty
        cause = e.__cause__ or e
        raise error(f"could not read {read[0]}: {type(cause).__name__}: {str(cause).strip() or 'a file holds no rows'}; {read[1]}") from None
    except (ValueError, OSError) as e:  # no such dataset or file, an offline hub, files without rows
        raise error(
            f"could not load {load[0]} ({type(e).__name__}: {e}); check {load[1]} and that the files hold rows (a hub "
            f"dataset must be in the local cache on offline machines)"
        ) from None
