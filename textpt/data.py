"""Text data for prompt tuning: where rows come from, how they become token ids, and how ids become batches.

A run's ``data:`` section (:class:`TextDataConfig`) names a source (a record of :data:`textpt.sources.SOURCES`: the
seeded synthetic texts, a Hugging Face dataset, local csv / json / parquet files, a dataset shipped in a package, or
any registered one), the columns to read, and a template that turns a row into the model's input (``"Review:
{text}\nSentiment:"``). :class:`ExampleEncoder` holds what every task does to a row (render the template, map the
label, cut an over-long text) and runs over a split with ``datasets.map(batched=True)`` (cached for datasets read
from files, ``data.num_proc`` processes); the model's task (:mod:`textpt.tasks`) decides what each example holds
and collates them into the batches its steps read.
"""

from __future__ import annotations

import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Literal

from promptcore.errors import UserError
from promptcore.plugins import lookup
from promptcore.recipe import DataBundle
from promptcore.version import __version__

from .loading import model_max_length
from .padding import pad_token_id
from .config import TextDataConfig, template_fields
from .sources import SOURCES, DataError, MissingSplitError, check_utf8, synthetic_class_names
from .tasks import IGNORE_INDEX, TASKS, TextCollator, TextTask


# ----- sources --------------------------------------------------------------------------------------------------
def load_raw(cfg: TextDataConfig) -> dict[str, Any]:
    """The rows of the configured splits as ``datasets.Dataset`` objects, keyed ``"train"`` and ``"eval"``, loaded
    by the configured source (:data:`textpt.sources.SOURCES`).

    Raises:
        KeyError: a configured split is not in the dataset (the message lists the splits it has).
    """
    source = lookup(SOURCES, cfg.source)
    splits = source.load(cfg)
    out = {}
    for role, split in (("train", cfg.train_split), ("eval", cfg.eval_split)):
        if split is None:
            continue
        if split not in splits:
            key = "train_split" if role == "train" else "eval_split"
            raise MissingSplitError(
                f"{source.what(cfg)} has no split {split!r}; it has {sorted(splits)}. Set data.{key} to one of them"
            )
        out[role] = splits[split]
    return _limit(out, cfg)


def _limit(raw: dict[str, Any], cfg: TextDataConfig) -> dict[str, Any]:
    for role, n in (("train", cfg.max_train_samples), ("eval", cfg.max_eval_samples)):
        if n is not None and role in raw and len(raw[role]) > n:
            raw[role] = raw[role].select(range(n))
    return raw


def dataset_label_names(dataset: Any, label_column: str | None) -> list[str] | None:
    """The ``ClassLabel`` names of ``label_column`` in a ``datasets.Dataset``, or None when it has none."""
    feature = getattr(dataset, "features", {}).get(label_column) if label_column else None
    return list(feature.names) if hasattr(feature, "names") else None


# ----- tokenization ---------------------------------------------------------------------------------------------
ROW_COLUMN = "__textpt_row__"  # each row's index in its split, carried through skipping for error messages
TRUNCATED_COLUMN = "__textpt_truncated__"  # whether a row was shortened, counted into EncodeStats
PROGRESS_ROWS = 10_000  # splits this long show datasets' progress bars while they are encoded


@dataclass
class EncodeStats:
    """What :meth:`ExampleEncoder.encode` had to change: truncated and skipped rows."""

    rows: int = 0
    truncated: int = 0
    skipped: int = 0


class ExampleEncoder:
    """Turns data rows into token ids for a model task, shortening over-long texts to ``max_length`` tokens.

    The encoder does what every task does to a row: check its columns and its text, render the template and
    tokenize it, map its label to a class index (:meth:`label`), cut an over-long text (:meth:`fit`: its end, or its
    beginning with ``truncation_side: left``, then the template is rendered again, so the template's words around
    the text, ``"Sentiment:"`` after it, and the tokenizer's special tokens always stay) and add ``task_ids``. What an
    example holds is the task's (:meth:`textpt.tasks.TextTask.encode_row`); with no task, it is the input alone
    (for generation and prediction).

    Args:
        tokenizer: a Hugging Face tokenizer.
        task: the model task (a name in :data:`textpt.tasks.TASKS`, or its strategy); ``None``: inputs only.
        template: the input template (``{column}`` fields).
        text_column: the field that is shortened and must not be empty.
        max_length: the longest input (for ``causal_lm`` generation: input and target together); None: no limit.
        label_column: the class label column.
        target_column: the target text column (``causal_lm`` generation, ``seq2seq``).
        target_template: how the target is written (default: the task's, as in :class:`TextDataConfig`).
        task_column: the integer task id column, or None.
        verbalizer: one word per class; ``seq2seq`` without a target column learns to write them.
        label_names: class names mapping string labels to class indices (default: the verbalizer).
        num_classes: the number of classes when there is no verbalizer (``seq_cls``).
        num_tasks: the prompt bank's size, to check task ids.
        max_target_length: the longest ``seq2seq`` target (default ``max_length``).
        skip_empty: drop rows with an empty text or target instead of raising :class:`DataError`.
        truncation_side: ``right`` cuts the text field's end, ``left`` its beginning.
        num_proc: processes of ``datasets.map`` (None: this process).
    """

    def __init__(
        self,
        tokenizer: Any,
        task: str | TextTask | None,
        template: str,
        text_column: str,
        max_length: int | None,
        *,
        label_column: str | None = None,
        target_column: str | None = None,
        target_template: str | None = None,
        task_column: str | None = None,
        verbalizer: list[str] | None = None,
        label_names: list[str] | None = None,
        num_classes: int | None = None,
        num_tasks: int = 1,
        max_target_length: int | None = None,
        skip_empty: bool = False,
        truncation_side: Literal["right", "left"] = "right",
        num_proc: int | None = None,
    ) -> None:
        if max_length is not None and max_length <= 0:
            raise UserError(f"max_length must be positive or None, got {max_length}")
        if truncation_side not in ("right", "left"):
            raise UserError(f"truncation_side must be 'right' or 'left', got {truncation_side!r}")
        self.truncation_side = truncation_side
        self.tokenizer = tokenizer
        self.task = TASKS.get(task) if isinstance(task, str) else task
        self.template = template
        self.text_column = text_column
        self.max_length = max_length
        self.label_column = label_column
        self.target_column = target_column
        if target_template is None and target_column is not None and self.task is not None:
            target_template = self.task.target_template(target_column)
        self.target_template = target_template
        self.task_column = task_column
        self.verbalizer = verbalizer
        # String labels name classes: by label_names, else by the verbalizer's words without their leading space.
        self.label_names = label_names or ([w.strip() for w in verbalizer] if verbalizer else None)
        self._label_source = "data.label_names" if label_names else "the verbalizer's words"
        self.num_classes = len(verbalizer) if verbalizer else num_classes
        self.num_tasks = num_tasks
        self.max_target_length = max_target_length or max_length or sys.maxsize
        self.skip_empty = skip_empty
        self.num_proc = num_proc
        if self.task is not None:
            self.task.check_encoder(self)

    @property
    def wants_labels(self) -> bool:
        """Whether each row's class label is read: the task learns classes and ``label_column`` is set."""
        return self.task is not None and self.task.learns_labels(self.target_column) and self.label_column is not None

    # -- rows to ids --
    def encode(self, rows: Any, split: str = "train") -> tuple[Any, EncodeStats]:
        """Encodes a ``datasets.Dataset`` (or a dict of column lists) into a ``datasets.Dataset`` of examples
        (``input_ids``, and what the task adds), with ``datasets.map(batched=True)``.

        Raises:
            DataError: a template field that is not a column, an empty text (unless ``skip_empty``), a missing or
                out-of-range label, a label string outside ``label_names``, a bad task id.
        """
        import datasets

        if not isinstance(rows, datasets.Dataset):
            rows = datasets.Dataset.from_dict(dict(rows))
        self._check_columns(rows.column_names, split)
        n = len(rows)
        rows = rows.add_column(ROW_COLUMN, list(range(n)))
        with _progress_bars(n >= PROGRESS_ROWS):
            kept = rows.filter(_KeepRows(self, split), batched=True, num_proc=self.num_proc, desc=f"checking {split} rows")
            encoded = kept.map(
                _EncodeRows(self, split), batched=True, remove_columns=kept.column_names, num_proc=self.num_proc,
                desc=f"encoding {split} rows",
            )
        stats = EncodeStats(rows=n, truncated=sum(encoded[TRUNCATED_COLUMN]) if len(encoded) else 0, skipped=n - len(kept))
        return encoded.remove_columns(TRUNCATED_COLUMN) if len(encoded) else encoded, stats

    def is_kept(self, row: dict[str, Any], split: str) -> bool:
        """Whether ``row`` has its text (and target); an empty one is dropped with ``skip_empty``, else refused."""
        empty = self._is_empty(row, self.text_column) or (self.target_template and self._is_empty(row, self.target_column))
        if not empty:
            return True
        if self.skip_empty:
            return False
        column = self.text_column if self._is_empty(row, self.text_column) else self.target_column
        raise DataError(
            f"row {row[ROW_COLUMN]} of split {split!r} has an empty {column!r} column; remove the row or set data.skip_empty: true"
        )

    def encode_rows(self, records: list[dict[str, Any]], split: str) -> list[tuple[dict[str, Any], bool]]:
        """Each row's example and whether it was shortened (rows with their ``ROW_COLUMN`` index)."""
        prompt_ids = self.tokenizer([self.render(self.template, row) for row in records], add_special_tokens=True)["input_ids"] if records else []
        out = []
        for row, ids in zip(records, prompt_ids):
            index = row[ROW_COLUMN]
            if self.task is None:
                fitted, truncated = self.fit(row, ids)
                example: dict[str, Any] = {"input_ids": fitted}
            else:
                example, truncated = self.task.encode_row(self, row, index, split, ids)
            if self.task_column is not None:
                example["task_ids"] = self._task_id(row, index, split)
            out.append((example, truncated))
        return out

    def _check_columns(self, names: list[str], split: str) -> None:
        needed = {f: "template" for f in template_fields(self.template)}
        needed[self.text_column] = "data.text_column"
        if self.target_template:
            needed.update({f: "target_template" for f in template_fields(self.target_template)})
        if self.wants_labels:
            needed[self.label_column] = "data.label_column"
        if self.task_column is not None:
            needed[self.task_column] = "data.task_column"
        for column, where in needed.items():
            if column not in names:
                raise DataError(
                    f"{where} names column {column!r}, which split {split!r} does not have; its columns are {names}"
                )

    @staticmethod
    def _is_empty(row: dict, column: str | None) -> bool:
        value = row.get(column)
        return value is None or (isinstance(value, str) and not value.strip())

    @staticmethod
    def render(template: str, row: dict) -> str:
        """``template`` with the row's columns filled in (a missing value as empty text)."""
        return template.format_map({k: "" if v is None else v for k, v in row.items()})

    def label(self, row: dict, i: int, split: str) -> int:
        """The row's class index, from an integer label or a class name (``label_names``, else the verbalizer's
        words).

        Raises:
            DataError: a missing label, a class index out of range, a name that is not a class.
        """
        value = row[self.label_column]
        where = f"row {i} of split {split!r}"
        classes = f"the verbalizer {self.verbalizer}" if self.verbalizer else f"{self.num_classes} classes"
        if value is None:
            raise DataError(f"{where} has no label in column {self.label_column!r}; remove the row or fill in a label")
        if isinstance(value, str):
            if not self.label_names:
                raise DataError(
                    f"{where} has the string label {value!r}, but there are no class names to map it to; set "
                    f"data.label_names (class names in class order) or prompt.verbalizer"
                )
            if value.strip() not in self.label_names:
                raise DataError(
                    f"{where} has label {value!r}, which is not in {self._label_source} {self.label_names}; add it, or set "
                    f"data.label_names to the dataset's class names in class order"
                )
            return self.label_names.index(value.strip())
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < self.num_classes:
            raise DataError(
                f"{where} has label {value!r}, expected a class index 0..{self.num_classes - 1} ({classes}); "
                f"give one verbalizer word (or set prompt.num_classes) per class, or fix the label"
            )
        return value

    def _task_id(self, row: dict, i: int, split: str) -> int:
        value = row[self.task_column]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < self.num_tasks:
            raise DataError(
                f"row {i} of split {split!r} has task id {value!r} in column {self.task_column!r}, expected an "
                f"integer 0..{self.num_tasks - 1} (prompt.num_tasks is {self.num_tasks})"
            )
        return value

    def fit(self, row: dict, ids: list[int], budget: int | None = None) -> tuple[list[int], bool]:
        """The row's input ids within ``budget`` tokens (default ``max_length``) and whether they were cut: the
        text field is cut (its end, or its beginning with ``truncation_side`` left) and the template rendered
        again, until the ids fit."""
        budget = budget if budget is not None else self.max_length or sys.maxsize
        if len(ids) <= budget:
            return list(ids), False
        return self._shorten(row, budget), True

    def _shorten(self, row: dict, budget: int) -> list[int]:
        text = str(row[self.text_column])
        fast = getattr(self.tokenizer, "is_fast", False)
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=fast)
        ids = self.tokenizer(self.render(self.template, row), add_special_tokens=True)["input_ids"]
        total = keep = len(encoded["input_ids"])
        while len(ids) > budget:
            # Re-tokenizing a cut text can merge differently, so the overflow is re-measured after each cut.
            keep -= max(1, len(ids) - budget)
            if keep <= 0:
                raise DataError(
                    f"the template {self.template!r} without its {self.text_column!r} field already takes more than "
                    f"{budget} tokens; shorten the template (or its other fields) or raise data.max_length"
                )
            # Cut the original characters where a fast tokenizer says the kept tokens start or end (unknown words
            # survive); a slow tokenizer has no offsets, so its tokens are decoded back to text.
            if self.truncation_side == "right":
                short = text[: encoded["offset_mapping"][keep - 1][1]] if fast else self._decode(encoded["input_ids"][:keep])
            else:
                short = text[encoded["offset_mapping"][total - keep][0]:] if fast else self._decode(encoded["input_ids"][total - keep:])
            ids = self.tokenizer(self.render(self.template, {**row, self.text_column: short}), add_special_tokens=True)["input_ids"]
        return list(ids)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


@contextmanager
def _progress_bars(show: bool) -> Iterator[None]:
    """``datasets``' progress bars on only when ``show`` (and not turned off by the user)."""
    from datasets.utils import logging as datasets_logging

    hide = not show and datasets_logging.is_progress_bar_enabled()
    if hide:
        datasets_logging.disable_progress_bar()
    try:
        yield
    finally:
        if hide:
            datasets_logging.enable_progress_bar()


def _records(batch: dict[str, list]) -> list[dict[str, Any]]:
    """A ``datasets.map`` batch (column -> values) as rows (column -> value)."""
    names = list(batch)
    return [dict(zip(names, values)) for values in zip(*batch.values())]


class _KeepRows:
    """``datasets.filter`` function: which rows of a batch have their text (see :meth:`ExampleEncoder.is_kept`)."""

    def __init__(self, encoder: ExampleEncoder, split: str) -> None:
        self.encoder, self.split = encoder, split

    def __call__(self, batch: dict[str, list]) -> list[bool]:
        return [self.encoder.is_kept(row, self.split) for row in _records(batch)]


class _EncodeRows:
    """``datasets.map`` function: a batch of rows to a batch of examples, with a column of truncation flags.

    ``datasets`` names its cache file by a hash of this object's state (the encoder's settings, its tokenizer and
    task), not of the library's code: the toolkit's version is part of the state, so a new release encodes afresh.
    """

    def __init__(self, encoder: ExampleEncoder, split: str) -> None:
        self.encoder, self.split, self.version = encoder, split, __version__

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        encoded = self.encoder.encode_rows(_records(batch), self.split)
        columns: dict[str, list] = {key: [e[key] for e, _ in encoded] for key in encoded[0][0]}
        columns[TRUNCATED_COLUMN] = [truncated for _, truncated in encoded]
        return columns


# ----- one call for a run ---------------------------------------------------------------------------------------
def build_text_data(
    cfg: TextDataConfig,
    tokenizer: Any,
    *,
    task: str,
    max_length: int | None,
    verbalizer: list[str] | None = None,
    num_classes: int | None = None,
    num_tasks: int = 1,
    raw: dict[str, Any] | None = None,
) -> DataBundle:
    """Loads, tokenizes and collates the configured splits for a model task (the five-line Python form of what
    ``textpt train`` does with the ``data:`` section).

    Args:
        cfg: the data config.
        tokenizer: the model's tokenizer (its ``padding_side`` decides the padding side).
        task: the model's task (a name in :data:`textpt.tasks.TASKS`: ``causal_lm``, ``seq2seq``, ``seq_cls`` ...),
            which encodes the rows and collates the batches.
        max_length: the longest tokenized input (see :func:`input_budget`); None: no limit.
        verbalizer: one word per class (``prompt.verbalizer``).
        num_classes: classes without a verbalizer (``seq_cls``).
        num_tasks: the prompt bank's size (checks ``task_column`` values).
        raw: the rows, when already loaded with :func:`load_raw` or given explicitly: ``{"train": Dataset, "eval":
            Dataset}`` (``eval`` optional) with the columns ``cfg`` names; ``cfg``'s source, splits and sample
            limits are then not used (docs/textpt.md, "Your own train and eval splits").

    Returns:
        A :class:`~promptcore.recipe.DataBundle` of ``datasets.Dataset`` splits; ``info`` holds ``task``,
        ``max_length`` and, per split, the ``rows``, ``truncated`` and ``skipped`` counts.
    """
    strategy = TASKS.get(task)
    raw = load_raw(cfg) if raw is None else raw
    label_names = cfg.label_names or dataset_label_names(raw["train"], cfg.label_column)
    encoder = ExampleEncoder(
        tokenizer,
        strategy,
        cfg.template,
        cfg.text_column,
        max_length,
        label_column=cfg.label_column,
        target_column=cfg.target_column,
        target_template=cfg.target_template,
        task_column=cfg.task_column,
        verbalizer=verbalizer,
        label_names=label_names,
        num_classes=num_classes,
        num_tasks=num_tasks,
        skip_empty=cfg.skip_empty,
        truncation_side=cfg.truncation_side,
        num_proc=cfg.num_proc,
    )
    encoded: dict[str, Any] = {}
    info: dict[str, Any] = {"task": task, "max_length": max_length}
    for role, rows in raw.items():
        split = cfg.train_split if role == "train" else cfg.eval_split
        encoded[role], stats = encoder.encode(rows, split)
        info[role] = {"rows": stats.rows, "truncated": stats.truncated, "skipped": stats.skipped}
    truncated = {role: info[role] for role in encoded if info[role]["truncated"]}
    if truncated:
        counts = ", ".join(f"{v['truncated']} of {v['rows']} {role}" for role, v in truncated.items())
        warnings.warn(
            f"shortened {counts} examples longer than {max_length} tokens (data.max_length, or the model's maximum "
            f"less the prompt); raise data.max_length if the model allows, or shorten the texts",
            stacklevel=2,
        )
    return DataBundle(
        train=encoded["train"],
        eval=encoded.get("eval"),
        collate_fn=strategy.collator(pad_token_id(tokenizer), getattr(tokenizer, "padding_side", "right")),
        class_names=list(label_names or verbalizer or []) or None,
        info=info,
    )


# Config keys giving a model's position count, read when its tokenizer states no maximum.
POSITION_KEYS = ("max_position_embeddings", "n_positions")


def model_input_budget(model: Any, max_length: int | None = None) -> int | None:
    """The longest tokenized input of a wrapped text model (:class:`textpt.model.TextPromptedModel`), as
    ``textpt train`` cuts its data.

    ``max_length`` when given; else the model's limit (:func:`textpt.loading.model_max_length`: the position table
    of absolute-position models, else the tokenizer's stated maximum) less the prompt's tokens. A model whose
    tokenizer states no maximum falls back to its config's position count (``max_position_embeddings`` or
    ``n_positions``), with a warning: otherwise one long row would pad its whole batch to its length. Never more
    than the method's own limit (:meth:`textpt.config.TextMethodConfig.input_limit`, DePT's ``max_length``).
    ``None``: no limit at all.
    """
    limit = model_max_length(model.backbone, model.tokenizer)
    fallback = limit is None and max_length is None
    if fallback:
        config = model.backbone.config
        limit = next((v for k in POSITION_KEYS if isinstance(v := getattr(config, k, None), int) and v > 0), None)
    budget = input_budget(limit, model.prompt_positions, max_length)
    method_limit = model.config.input_limit()
    if method_limit is not None and (budget is None or budget > method_limit):
        return method_limit
    if fallback and limit is not None:
        warnings.warn(
            f"the tokenizer of {model.backbone_name} states no maximum length; inputs are cut to the model's {limit} "
            f"positions (its config's {'/'.join(POSITION_KEYS)}) less the prompt's {model.prompt_positions}. Set "
            f"data.max_length to choose the length",
            stacklevel=2,
        )
    return budget


def input_budget(model_limit: int | None, num_prompt_tokens: int, max_length: int | None = None) -> int | None:
    """The longest tokenized input of a prompted model: ``max_length`` when given, else the model's limit
    (:func:`textpt.loading.model_max_length`) less the prompt's tokens, which take positions too; ``None`` when
    the model has no limit.

    Raises:
        ValueError: the prompt leaves no room for input.
    """
    if max_length is not None or model_limit is None:
        return max_length
    budget = model_limit - num_prompt_tokens
    if budget <= 0:
        raise UserError(
            f"the prompt's {num_prompt_tokens} tokens fill the model's maximum of {model_limit} positions; "
            f"use fewer prompt tokens (prompt.num_tokens)"
        )
    return budget


__all__ = [
    "DataError",
    "EncodeStats",
    "ExampleEncoder",
    "IGNORE_INDEX",
    "MissingSplitError",
    "TextCollator",
    "TextDataConfig",
    "build_text_data",
    "check_utf8",
    "dataset_label_names",
    "input_budget",
    "load_raw",
    "model_input_budget",
    "pad_token_id",
    "synthetic_class_names",
    "template_fields",
]
