"""Data helpers shared by the packages: the seeded K-shot sampler and the seeds of synthetic splits."""

from __future__ import annotations

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
