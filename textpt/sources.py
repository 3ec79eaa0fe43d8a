"""Where the rows of a text run come from: the values of ``data.source``, each a record of :data:`SOURCES`.

A source is a :class:`TextSource`: a ``load`` function from the ``data:`` section (:class:`textpt.data.TextDataConfig`)
to the source's splits as ``datasets.Dataset`` objects, the config fields it cannot do without, and a few answers
the rest of the pipeline asks of it. The toolkit's own:

- ``synthetic``: :class:`textpt.synthetic.SyntheticTexts` (columns ``text`` and ``label``), made for the configured
  splits; its class keywords are known before loading, so they fill in the verbalizer;
- ``hf``: ``datasets.load_dataset(name, subset)``, a Hub dataset or a local folder of data files;
- ``csv``, ``json``, ``parquet``: local files, one per split (``data_files``);
- ``asset``: ``textpt.assets.load_dataset(name)`` (offline, e.g. ``rotten_tomatoes``), loaded only when the run
  starts; it splits the rows anew when ``test_size`` / ``train_size`` are set.

A new source is one call, ``SOURCES.add("name", TextSource(load))``; ``data.source: name`` then loads through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from promptcore.errors import UserError
from promptcore.registry import Registry, UnknownNameError


if TYPE_CHECKING:
    from .data import TextDataConfig


class DataError(UserError):
    """A row or file of the data cannot be used as configured (empty text, a label outside the classes, a file that
    is not UTF-8 ...)."""


class MissingSplitError(UnknownNameError):
    """A configured split the dataset does not have."""


@dataclass(frozen=True)
class TextSource:
    """One value of ``data.source``: how to load its rows.

    Attributes:
        load: ``load(config) -> {split name: datasets.Dataset}``, holding at least the configured
            ``train_split`` and ``eval_split`` (a missing one is reported with the splits found).
        requires: ``(field, what it holds)`` pairs of config fields the source cannot do without, checked when the
            config is built (``name: source 'hf' needs a dataset name (e.g. name: rotten_tomatoes)``).
        check: further checks of the config, raising ``UserError("field: ...")``; None: none.
        describe: how error messages name the configured data (default ``source 'NAME'``).
        class_names: the class names the source makes from ``data.num_classes``, known without loading any row
            (they fill in the verbalizer, or ``prompt.num_classes``); None for sources whose classes are in the rows.
        resplits: the source splits its rows anew by ``test_size`` / ``train_size`` (other sources refuse them).
        summary: one line for listings.
    """

    load: Callable[["TextDataConfig"], Mapping[str, Any]]
    requires: tuple[tuple[str, str], ...] = ()
    check: Callable[["TextDataConfig"], None] | None = None
    describe: Callable[["TextDataConfig"], str] | None = None
    class_names: Callable[["TextDataConfig"], list[str]] | None = None
    resplits: bool = False
    summary: str = ""

    def check_config(self, cfg: "TextDataConfig") -> None:
        """Raises ``UserError("field: ...")`` for the first required field ``cfg`` leaves empty, then runs
        :attr:`check`."""
        for name, what in self.requires:
            if not getattr(cfg, name):
                raise UserError(f"{name}: source {cfg.source!r} needs {what}")
        if self.check is not None:
            self.check(cfg)

    def what(self, cfg: "TextDataConfig") -> str:
        """The configured data as error messages name it."""
        return self.describe(cfg) if self.describe is not None else f"source {cfg.source!r}"


def check_utf8(path: str) -> None:
    """Raises :class:`DataError` naming ``path``, the encoding detected and the ``iconv`` line that converts it when
    the file is not UTF-8 text (:func:`promptcore.data.check_utf8`)."""
    from promptcore.data import check_utf8 as check_file_encoding  # imports torch: the sources are listed without it

    check_file_encoding(path, DataError)


# ----- the toolkit's sources ------------------------------------------------------------------------------------
SYNTHETIC_KEYWORDS: tuple[str, ...] = (
    "excellent wonderful superb delightful brilliant",
    "terrible awful dreadful boring painful",
    "rocket planet orbit galaxy comet",
    "recipe kitchen flavor baking spice",
    "goal match striker league referee",
    "court judge verdict lawyer trial",
    "guitar melody chorus rhythm concert",
    "forest river mountain valley meadow",
)
"""The keywords of each class of :class:`textpt.synthetic.SyntheticTexts`, in class order (here, free of torch, so
the class names are known when a config is checked)."""


def synthetic_class_keywords(num_classes: int) -> list[list[str]]:
    """The keywords of the first ``num_classes`` synthetic classes.

    Raises:
        UserError: ``num_classes`` is not between 2 and the number of keyword sets.
    """
    if not 2 <= num_classes <= len(SYNTHETIC_KEYWORDS):
        raise UserError(f"num_classes must be between 2 and {len(SYNTHETIC_KEYWORDS)}, got {num_classes}")
    return [k.split() for k in SYNTHETIC_KEYWORDS[:num_classes]]


def synthetic_class_names(cfg: "TextDataConfig") -> list[str]:
    """The synthetic source's class keywords (one per class: a natural verbalizer), without building the data."""
    return [keywords[0] for keywords in synthetic_class_keywords(cfg.num_classes)]


def _load_synthetic(cfg: "TextDataConfig") -> dict[str, Any]:
    import datasets

    from .synthetic import SyntheticTexts

    sizes = {cfg.train_split: cfg.num_samples}
    if cfg.eval_split is not None:
        sizes.setdefault(cfg.eval_split, cfg.num_eval_samples)
    out = {}
    for split, n in sizes.items():
        synth = SyntheticTexts(
            num_samples=n, num_classes=cfg.num_classes, length=cfg.text_length,
            keywords_per_text=cfg.keywords_per_text, seed=cfg.seed, split=split,
        )
        features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=synth.class_names)})
        out[split] = datasets.Dataset.from_dict({"text": synth.texts, "label": synth.labels.tolist()}, features=features)
    return out


def _load_asset(cfg: "TextDataConfig") -> Any:
    from . import assets

    split = {"test_size": cfg.test_size} if cfg.test_size is not None else {}
    if cfg.test_size is not None or cfg.train_size is not None:
        split.update(train_size=cfg.train_size, seed=cfg.seed)
    return assets.load_dataset(cfg.name, **split)


def _load_with_datasets(cfg: "TextDataConfig", *args: Any, **kwargs: Any) -> Any:
    """``datasets.load_dataset(*args, **kwargs)``, its failures reported as a :class:`DataError`."""
    what = SOURCES.get(cfg.source).what(cfg)
    fix = f"fix the file at the line or row named (a {cfg.source} file needs the same columns on every row)"
    from promptcore.data import load_with_datasets

    return load_with_datasets(DataError, (what, fix), (what, "data.name / data.data_files"), *args, **kwargs)


def _load_hf(cfg: "TextDataConfig") -> Any:
    return _load_with_datasets(cfg, cfg.name, cfg.subset)


def _load_files(cfg: "TextDataConfig") -> Any:
    if cfg.source in ("csv", "json"):
        for path in cfg.data_files.values():
            check_utf8(path)
            if Path(path).is_file() and not Path(path).read_bytes().strip():  # the json reader fails on no rows
                raise DataError(f"{path} is empty; a {cfg.source} data file needs rows (check data.data_files)")
    return _load_with_datasets(cfg, cfg.source, data_files=dict(cfg.data_files))


def _check_data_files(cfg: "TextDataConfig") -> None:
    wanted = [s for s in (cfg.train_split, cfg.eval_split) if s is not None]
    missing = [s for s in wanted if s not in cfg.data_files]
    if missing:
        raise UserError(
            f"data_files: source {cfg.source!r} needs a file for split(s) {missing}, found splits "
            f"{sorted(cfg.data_files) or 'none'}; e.g. data_files: {{train: train.{cfg.source}, test: test.{cfg.source}}}"
        )


def _named_dataset(cfg: "TextDataConfig") -> str:
    return f"dataset {cfg.name!r}"


def _data_files(cfg: "TextDataConfig") -> str:
    return f"{cfg.source} files {dict(cfg.data_files)}"


_NAME = (("name", "a dataset name (e.g. name: rotten_tomatoes)"),)

SOURCES: Registry[TextSource] = Registry("text data source")
"""``data.source`` name -> its :class:`TextSource`."""
SOURCES.add("synthetic", TextSource(
    _load_synthetic, class_names=synthetic_class_names, summary="seeded texts with class keywords (textpt.synthetic)"
))
SOURCES.add("hf", TextSource(_load_hf, _NAME, describe=_named_dataset, summary="datasets.load_dataset(name, subset)"))
for _format in ("csv", "json", "parquet"):
    SOURCES.add(_format, TextSource(
        _load_files, check=_check_data_files, describe=_data_files, summary=f"local {_format} files, one per split (data_files)"
    ))
SOURCES.add("asset", TextSource(
    _load_asset, _NAME, describe=_named_dataset, resplits=True, summary="an offline dataset asset (textpt.assets)"
))

__all__ = [
    "DataError",
    "MissingSplitError",
    "SOURCES",
    "SYNTHETIC_KEYWORDS",
    "TextSource",
    "check_utf8",
    "synthetic_class_keywords",
    "synthetic_class_names",
]
