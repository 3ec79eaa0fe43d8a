"""Text data for prompt tuning: where rows come from, how they become token ids, and how ids become batches.

A run's ``data:`` section (:class:`TextDataConfig`) names a source (the seeded synthetic texts, a Hugging Face
dataset, local csv / json / parquet files, or a dataset shipped in a package), the columns to read, and a template
that turns a row into the model's input (``"Review: {text}\\nSentiment:"``). :class:`ExampleEncoder` tokenizes the
rows for one of three layouts, and :class:`TextCollator` pads them into the batches the text models expect:

- ``classification`` (``seq_cls``, and ``causal_lm`` scoring verbalizer words):
  ``{"input_ids": [B, L], "attention_mask": [B, L], "labels": [B]}``;
- ``causal_lm`` (generation training): ``{"input_ids", "attention_mask", "lm_labels": [B, L]}``, the template part
  and the padding of ``lm_labels`` set to -100 so only the target is learned;
- ``seq2seq``: ``{"input_ids", "attention_mask", "lm_labels": [B, T]}`` (the target, -100 on padding), plus
  ``labels`` when the target is a class's verbalizer word.

Each layout adds ``task_ids: [B]`` when ``data.task_column`` is set. Padding follows the tokenizer's
``padding_side``.
"""

from __future__ import annotations

import string
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch.utils.data import Dataset

from promptcore.errors import UserError
from promptcore.recipe import DataBundle

from .loading import model_max_length
from .padding import pad_token_id, repad
from .synthetic import SyntheticTexts
from .tasks import IGNORE_INDEX, TASKS, Layout, label_word_target

Source = Literal["synthetic", "hf", "csv", "json", "parquet", "asset"]


@dataclass
class TextDataConfig:
    """The ``data:`` section of a text run config.

    Attributes:
        source: ``synthetic`` (:class:`textpt.synthetic.SyntheticTexts`: keyword-bearing texts, columns ``text`` and
            ``label``), ``hf`` (``datasets.load_dataset(name, subset)``), ``csv`` / ``json`` / ``parquet`` (local
            files in ``data_files``) or ``asset`` (``textpt.assets.load_dataset(name)``, e.g. ``rotten_tomatoes``).
        name: the dataset name for ``hf`` and ``asset``.
        subset: the dataset's configuration name for ``hf`` (``load_dataset(name, subset)``).
        data_files: for ``csv`` / ``json`` / ``parquet``: split name -> file path (``{train: a.csv, test: b.csv}``).
        train_split: the split trained on.
        eval_split: the split evaluated on, or ``null`` for none.
        text_column: the column holding the text; it is the field that is shortened when an input is too long (see
            ``truncation_side``) and that must not be empty.
        label_column: the column holding class labels (integers ``0..C-1``, or strings mapped by ``label_names``
            or else by the verbalizer's words); ``null`` for unlabelled data.
        target_column: the column holding target texts for generation (``causal_lm``) or ``seq2seq`` training.
            A ``seq2seq`` run without it learns to write the class's verbalizer word.
        task_column: a column of integer task ids (``0..num_tasks-1``) for a prompt bank.
        template: how a row becomes the input, with ``{column}`` fields (``"Review: {text}\\nSentiment:"``);
            default ``"{<text_column>}"``. Write literal braces as ``{{`` and ``}}``.
        target_template: how a row becomes the target (``causal_lm`` and ``seq2seq`` with ``target_column``);
            default ``" {<target_column>}"`` for ``causal_lm`` (a space after the prompt, as BPE vocabularies
            expect) and ``"{<target_column>}"`` for ``seq2seq``.
        label_names: class names in class order, mapping string labels to class indices (``[rotten, fresh]``);
            default: the dataset's ``ClassLabel`` names, else the verbalizer's words.
        max_length: the longest tokenized input (prompt tokens not counted); ``null``: ``model.max_length``, else
            the model's maximum less the prompt length (:func:`model_input_budget`). A longer input is shortened by
            cutting its ``text_column`` field only, so the template's other words (an instruction before it, the
            ``"Sentiment:"`` after it that a causal LM's verbalizer follows) and the model's special tokens always
            stay; one warning per run counts the shortened rows. What is cut, by task: ``causal_lm``
            classification and ``seq_cls``: the text field of the input; ``causal_lm`` generation training: the
            target keeps at most half of ``max_length`` when input and target do not fit together, then the input's
            text field is cut to the rest; ``seq2seq``: the input's text field (the target is limited separately,
            keeping its end-of-sequence token).
        truncation_side: which end of the text field is cut: ``right`` (keep its beginning, as T5's and Hugging
            Face tokenizers' truncation do) or ``left`` (keep its end).
        max_train_samples: use only the first N training rows.
        max_eval_samples: use only the first N evaluation rows.
        skip_empty: drop rows whose text (or target) is empty, counting them in the bundle's ``info``, instead of
            raising an error naming the first such row.
        test_size: ``source: asset`` only: split the dataset's rows anew, this fraction (``0.1``) or number of rows
            (``500``) into ``test`` (:func:`textpt.assets.load_dataset`, stratified by label, seeded by ``seed``);
            ``null``: the asset's default split (80/20, seed 0). A whole number is a row count, a number below 1
            a fraction.
        train_size: ``source: asset`` only: likewise for ``train`` (``null``: every row not in ``test``).
        num_samples: synthetic training rows.
        num_eval_samples: synthetic evaluation rows.
        num_classes: synthetic classes (2 to 8).
        text_length: synthetic filler words per text.
        keywords_per_text: synthetic class keywords mixed into each text (more: an easier task).
        seed: the synthetic data's seed, and the seed of an asset's split when ``test_size`` or ``train_size`` is set.
    """

    source: Source = "synthetic"
    name: str | None = None
    subset: str | None = None
    data_files: dict[str, str] = field(default_factory=dict)
    train_split: str = "train"
    eval_split: str | None = "test"
    text_column: str = "text"
    label_column: str | None = "label"
    target_column: str | None = None
    task_column: str | None = None
    template: str | None = None
    target_template: str | None = None
    label_names: list[str] | None = None
    max_length: int | None = None
    truncation_side: Literal["right", "left"] = "right"
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    skip_empty: bool = False
    test_size: int | float | None = None
    train_size: int | float | None = None
    num_samples: int = 512
    num_eval_samples: int = 256
    num_classes: int = 2
    text_length: int = 12
    keywords_per_text: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.source in ("hf", "asset") and not self.name:
            raise UserError(f"name: source {self.source!r} needs a dataset name (e.g. name: rotten_tomatoes)")
        if self.source in ("csv", "json", "parquet"):
            wanted = [s for s in (self.train_split, self.eval_split) if s is not None]
            missing = [s for s in wanted if s not in self.data_files]
            if missing:
                raise UserError(
                    f"data_files: source {self.source!r} needs a file for split(s) {missing}, found splits "
                    f"{sorted(self.data_files) or 'none'}; e.g. data_files: {{train: train.{self.source}, test: test.{self.source}}}"
                )
        if self.template is None:
            self.template = "{" + self.text_column + "}"
        fields = template_fields(self.template, "template")
        if not fields:
            raise UserError(f"template: {self.template!r} has no {{column}} field; e.g. 'Review: {{{self.text_column}}}'")
        if self.target_template is not None:
            template_fields(self.target_template, "target_template")
        for name in ("max_length", "max_train_samples", "max_eval_samples", "num_samples", "num_eval_samples", "text_length", "keywords_per_text"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UserError(f"{name}: must be positive, got {value}")
        for name in ("test_size", "train_size"):
            value = getattr(self, name)
            if value is None:
                continue
            if self.source != "asset":
                raise UserError(
                    f"{name}: splits a packaged dataset's rows anew (source: asset); source {self.source!r} brings its "
                    f"own splits, chosen with train_split / eval_split"
                )
            if not (isinstance(value, int) and value >= 1) and not (isinstance(value, float) and 0 < value < 1):
                raise UserError(f"{name}: give a fraction between 0 and 1 (0.2) or a number of rows (500), got {value!r}")


def template_fields(template: str, what: str = "template") -> list[str]:
    """The ``{field}`` names of a format string; raises ``ValueError("<what>: ...")`` on a malformed one."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise UserError(f"{what}: {template!r} is not a valid template ({e}); write literal braces as {{{{ and }}}}") from None
    fields = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name or any(c in name for c in ".[]"):
            raise UserError(f"{what}: field {{{name}}} in {template!r} must name a column, e.g. {{text}}")
        if spec or conversion:
            raise UserError(f"{what}: field {{{name}}} in {template!r} has a format spec or conversion; use plain {{column}} fields")
        fields.append(name)
    return fields


# ----- sources --------------------------------------------------------------------------------------------------
def load_raw(cfg: TextDataConfig) -> dict[str, Any]:
    """The rows of the configured splits as ``datasets.Dataset`` objects, keyed ``"train"`` and ``"eval"``.

    Raises:
        KeyError: a configured split is not in the dataset (the message lists the splits it has).
    """
    import datasets

    if cfg.source == "synthetic":
        splits = {"train": (cfg.train_split, cfg.num_samples)}
        if cfg.eval_split is not None:
            splits["eval"] = (cfg.eval_split, cfg.num_eval_samples)
        out = {}
        for role, (split, n) in splits.items():
            synth = SyntheticTexts(
                num_samples=n, num_classes=cfg.num_classes, length=cfg.text_length,
                keywords_per_text=cfg.keywords_per_text, seed=cfg.seed, split=split,
            )
            features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=synth.class_names)})
            out[role] = datasets.Dataset.from_dict({"text": synth.texts, "label": synth.labels.tolist()}, features=features)
        return _limit(out, cfg)
    if cfg.source == "asset":
        from . import assets

        split = {"test_size": cfg.test_size} if cfg.test_size is not None else {}
        if cfg.test_size is not None or cfg.train_size is not None:
            split.update(train_size=cfg.train_size, seed=cfg.seed)
        dd = assets.load_dataset(cfg.name, **split)
    else:
        if cfg.source in ("csv", "json"):
            for path in cfg.data_files.values():
                check_utf8(path)
        try:
            if cfg.source == "hf":
                dd = datasets.load_dataset(cfg.name, cfg.subset)
            else:
                dd = datasets.load_dataset(cfg.source, data_files=dict(cfg.data_files))
        except (ValueError, OSError) as e:  # no such dataset or file, an offline hub, files without rows
            where = f"dataset {cfg.name!r}" if cfg.source == "hf" else f"{cfg.source} files {dict(cfg.data_files)}"
            raise DataError(
                f"could not load {where} ({type(e).__name__}: {e}); check data.name / data.data_files and that the "
                f"files hold rows (a hub dataset must be in the local cache on offline machines)"
            ) from None
    what = f"dataset {cfg.name!r}" if cfg.source in ("hf", "asset") else f"{cfg.source} files {dict(cfg.data_files)}"
    out = {}
    for role, split in (("train", cfg.train_split), ("eval", cfg.eval_split)):
        if split is None:
            continue
        if split not in dd:
            key = "train_split" if role == "train" else "eval_split"
            raise MissingSplitError(f"{what} has no split {split!r}; it has {sorted(dd)}. Set data.{key} to one of them")
        out[role] = dd[split]
    return _limit(out, cfg)


def check_utf8(path: str) -> None:
    """Raises :class:`DataError` naming ``path`` and the first offending byte when the file is not UTF-8 text (the
    csv and json readers would fail deep inside with no file name). A missing file is left to the reader."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                decoder.decode(chunk)
                offset += len(chunk)
            decoder.decode(b"", final=True)
    except FileNotFoundError:
        return
    except UnicodeDecodeError as e:
        where = offset + e.start
        raise DataError(
            f"{path} is not UTF-8 text: byte {where} is {e.object[e.start:e.start + 1]!r} ({e.reason}); save the file as "
            f"UTF-8 (e.g. iconv -f latin1 -t utf-8 {path} > utf8.csv) and point data.data_files at it"
        ) from None


def _limit(raw: dict[str, Any], cfg: TextDataConfig) -> dict[str, Any]:
    for role, n in (("train", cfg.max_train_samples), ("eval", cfg.max_eval_samples)):
        if n is not None and role in raw and len(raw[role]) > n:
            raw[role] = raw[role].select(range(n))
    return raw


def synthetic_class_names(cfg: TextDataConfig) -> list[str]:
    """The synthetic source's class keywords (one per class: a natural verbalizer), without building the data."""
    return SyntheticTexts(num_samples=1, num_classes=cfg.num_classes, seed=cfg.seed).class_names


def dataset_label_names(dataset: Any, label_column: str | None) -> list[str] | None:
    """The ``ClassLabel`` names of ``label_column`` in a ``datasets.Dataset``, or None when it has none."""
    feature = getattr(dataset, "features", {}).get(label_column) if label_column else None
    return list(feature.names) if hasattr(feature, "names") else None


# ----- tokenization ---------------------------------------------------------------------------------------------
class DataError(UserError):
    """A row or file of the data cannot be used as configured (empty text, a label outside the classes, a file that
    is not UTF-8 ...)."""


class MissingSplitError(UserError, KeyError):
    """A configured split the dataset does not have."""

    def __str__(self) -> str:  # KeyError quotes its message; show it as written
        return str(self.args[0]) if self.args else ""


class TokenizedTexts(Dataset):
    """Encoded examples (dicts of ``input_ids`` and ``labels`` / ``lm_labels`` / ``task_ids``) ready to collate."""

    def __init__(self, examples: list[dict[str, Any]]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.examples[i]


@dataclass
class EncodeStats:
    """What :meth:`ExampleEncoder.encode` had to change: truncated and skipped rows."""

    rows: int = 0
    truncated: int = 0
    skipped: int = 0


class ExampleEncoder:
    """Turns data rows into token ids for one layout, shortening over-long texts to ``max_length`` tokens.

    Over-long inputs are shortened by cutting the text field (its end, or its beginning with ``truncation_side:
    left``) and rendering the template again, so the template's words around the text (``"Sentiment:"`` after it)
    and the tokenizer's special tokens always stay. A ``causal_lm`` target keeps at most half of ``max_length``
    when prompt and target do not fit together; a ``seq2seq`` target is cut to ``max_target_length`` keeping its
    final end-of-sequence token.

    Args:
        tokenizer: a Hugging Face tokenizer.
        layout: ``classification``, ``causal_lm``, ``seq2seq`` (see the module docstring) or ``inputs`` (the
            input alone, for generation and prediction).
        template: the input template (``{column}`` fields).
        text_column: the field that is shortened and must not be empty.
        max_length: the longest input (for ``causal_lm``: input and target together); None: no limit.
        label_column: the class label column (``classification``; ``seq2seq`` without ``target_column``).
        target_column: the target text column (``causal_lm``; ``seq2seq`` when given).
        target_template: how the target is written (default as in :class:`TextDataConfig`).
        task_column: the integer task id column, or None.
        verbalizer: one word per class; ``seq2seq`` without a target column learns to write them.
        label_names: class names mapping string labels to class indices (default: the verbalizer).
        num_classes: the number of classes when there is no verbalizer (``seq_cls``).
        num_tasks: the prompt bank's size, to check task ids.
        max_target_length: the longest ``seq2seq`` target (default ``max_length``).
        skip_empty: drop rows with an empty text or target instead of raising :class:`DataError`.
        truncation_side: ``right`` cuts the text field's end, ``left`` its beginning.
    """

    def __init__(
        self,
        tokenizer: Any,
        layout: Layout,
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
    ) -> None:
        if max_length is not None and max_length <= 0:
            raise UserError(f"max_length must be positive or None, got {max_length}")
        if truncation_side not in ("right", "left"):
            raise UserError(f"truncation_side must be 'right' or 'left', got {truncation_side!r}")
        self.truncation_side = truncation_side
        self.tokenizer = tokenizer
        self.layout = layout
        self.template = template
        self.text_column = text_column
        self.max_length = max_length
        self.label_column = label_column
        self.target_column = target_column
        if target_template is None and target_column is not None:
            target_template = (" {%s}" if layout == "causal_lm" else "{%s}") % target_column
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
        if layout == "causal_lm" and target_column is None:
            raise UserError("causal_lm generation training needs data.target_column (the text the model learns to write)")
        if layout == "seq2seq" and target_column is None and not verbalizer:
            raise UserError(
                "seq2seq needs data.target_column (target texts) or a verbalizer (prompt.verbalizer: one word per class) "
                "for the model to write"
            )
        if layout == "classification" and self.num_classes is None:
            raise UserError("classification needs the number of classes: set prompt.num_classes or prompt.verbalizer")

    # -- rows to ids --
    def encode(self, rows: Any, split: str = "train") -> tuple[TokenizedTexts, EncodeStats]:
        """Encodes a ``datasets.Dataset`` (or a dict of column lists) into a :class:`TokenizedTexts`.

        Raises:
            DataError: a template field that is not a column, an empty text (unless ``skip_empty``), a missing or
                out-of-range label, a label string outside ``label_names``, a bad task id.
        """
        columns = rows.to_dict() if hasattr(rows, "to_dict") else dict(rows)
        names = list(columns)
        n = len(columns[names[0]]) if names else 0
        self._check_columns(names, split)
        stats = EncodeStats(rows=n)
        examples: list[dict[str, Any]] = []
        records = [{c: columns[c][i] for c in names} for i in range(n)]
        prompts: list[str] = []
        kept: list[int] = []
        for i, row in enumerate(records):
            if self._is_empty(row, self.text_column) or (self.target_template and self._is_empty(row, self.target_column)):
                if self.skip_empty:
                    stats.skipped += 1
                    continue
                column = self.text_column if self._is_empty(row, self.text_column) else self.target_column
                raise DataError(
                    f"row {i} of split {split!r} has an empty {column!r} column; remove the row or set data.skip_empty: true"
                )
            prompts.append(self._render(self.template, row))
            kept.append(i)
        prompt_ids = self.tokenizer(prompts, add_special_tokens=True)["input_ids"] if prompts else []
        for i, ids in zip(kept, prompt_ids):
            row = records[i]
            example: dict[str, Any] = {}
            label = self._label(row, i, split) if self._wants_label() else None
            if label is not None:
                example["labels"] = label
            target_ids = self._target_ids(row, label)
            budget, truncated = self.max_length or sys.maxsize, False
            if self.layout == "causal_lm":
                if len(ids) + len(target_ids) > budget and len(target_ids) > budget // 2:
                    target_ids, truncated = target_ids[: budget // 2], True
                budget -= len(target_ids)
            if len(ids) > budget:
                ids, truncated = self._shorten(row, budget), True
            stats.truncated += truncated
            if self.layout == "causal_lm":
                example["input_ids"] = list(ids) + target_ids
                example["lm_labels"] = [IGNORE_INDEX] * len(ids) + target_ids
            else:
                example["input_ids"] = list(ids)
                if self.layout == "seq2seq":
                    example["lm_labels"] = target_ids
            if self.task_column is not None:
                example["task_ids"] = self._task_id(row, i, split)
            examples.append(example)
        return TokenizedTexts(examples), stats

    def _check_columns(self, names: list[str], split: str) -> None:
        needed = {f: "template" for f in template_fields(self.template)}
        needed[self.text_column] = "data.text_column"
        if self.target_template:
            needed.update({f: "target_template" for f in template_fields(self.target_template)})
        if self._wants_label():
            needed[self.label_column] = "data.label_column"
        if self.task_column is not None:
            needed[self.task_column] = "data.task_column"
        for column, where in needed.items():
            if column not in names:
                raise DataError(
                    f"{where} names column {column!r}, which split {split!r} does not have; its columns are {names}"
                )

    def _wants_label(self) -> bool:
        if self.layout == "classification":
            return self.label_column is not None
        return self.layout == "seq2seq" and self.target_column is None

    @staticmethod
    def _is_empty(row: dict, column: str | None) -> bool:
        value = row.get(column)
        return value is None or (isinstance(value, str) and not value.strip())

    @staticmethod
    def _render(template: str, row: dict) -> str:
        return template.format_map({k: "" if v is None else v for k, v in row.items()})

    def _label(self, row: dict, i: int, split: str) -> int:
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

    def _target_ids(self, row: dict, label: int | None) -> list[int]:
        if self.layout == "causal_lm":
            ids = self.tokenizer(self._render(self.target_template, row), add_special_tokens=False)["input_ids"]
            eos = self.tokenizer.eos_token_id
            return list(ids) + ([eos] if eos is not None else [])
        if self.layout != "seq2seq":
            return []
        if self.target_column:
            ids = list(self.tokenizer(self._render(self.target_template, row), add_special_tokens=True)["input_ids"])
        else:
            ids = label_word_target(self.tokenizer, self.verbalizer[label])
        if len(ids) > self.max_target_length:
            ids = ids[: self.max_target_length - 1] + ids[-1:]
        return ids

    def _shorten(self, row: dict, budget: int) -> list[int]:
        """The row's input ids within ``budget``: cut the text field (its end, or its beginning with
        ``truncation_side`` left), render the template again, repeat."""
        text = str(row[self.text_column])
        fast = getattr(self.tokenizer, "is_fast", False)
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=fast)
        ids = self.tokenizer(self._render(self.template, row), add_special_tokens=True)["input_ids"]
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
            ids = self.tokenizer(self._render(self.template, {**row, self.text_column: short}), add_special_tokens=True)["input_ids"]
        return list(ids)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


# ----- batching -------------------------------------------------------------------------------------------------
@dataclass
class TextCollator:
    """Pads encoded examples into a batch of tensors.

    Args:
        pad_token_id: the id written into padded input positions (masked out by ``attention_mask``).
        padding_side: ``left`` or ``right`` for ``input_ids`` (and ``lm_labels`` aligned with them).
        labels_aligned: ``lm_labels`` run along ``input_ids`` (causal LM) and are padded on the same side; else
            they are a separate target sequence (seq2seq), padded on the right.
    """

    pad_token_id: int
    padding_side: Literal["left", "right"] = "right"
    labels_aligned: bool = True

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if self.padding_side not in ("left", "right"):
            raise UserError(f"padding_side must be 'left' or 'right', got {self.padding_side!r}")
        input_ids, attention_mask = repad([e["input_ids"] for e in examples], self.pad_token_id, self.padding_side, torch.device("cpu"))
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "lm_labels" in examples[0]:
            side = self.padding_side if self.labels_aligned else "right"
            batch["lm_labels"] = repad([e["lm_labels"] for e in examples], IGNORE_INDEX, side, torch.device("cpu"))[0]
        for key in ("labels", "task_ids"):
            if key in examples[0]:
                batch[key] = torch.tensor([e[key] for e in examples], dtype=torch.long)
        return batch


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
        task: the model's task (``causal_lm``, ``seq2seq``, ``seq_cls``).
        max_length: the longest tokenized input (see :func:`input_budget`); None: no limit.
        verbalizer: one word per class (``prompt.verbalizer``).
        num_classes: classes without a verbalizer (``seq_cls``).
        num_tasks: the prompt bank's size (checks ``task_column`` values).
        raw: the rows, when already loaded with :func:`load_raw`.

    Returns:
        A :class:`~promptcore.recipe.DataBundle`; ``info`` holds ``layout``, ``max_length`` and, per split, the
        ``rows``, ``truncated`` and ``skipped`` counts.
    """
    raw = load_raw(cfg) if raw is None else raw
    layout = TASKS.get(task).layout(verbalizer, cfg.target_column)
    label_names = cfg.label_names or dataset_label_names(raw["train"], cfg.label_column)
    encoder = ExampleEncoder(
        tokenizer,
        layout,
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
    )
    encoded: dict[str, TokenizedTexts] = {}
    info: dict[str, Any] = {"layout": layout, "max_length": max_length}
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
    collate = TextCollator(pad_token_id(tokenizer), getattr(tokenizer, "padding_side", "right"), layout != "seq2seq")
    return DataBundle(
        train=encoded["train"],
        eval=encoded.get("eval"),
        collate_fn=collate,
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
    "TextCollator",
    "TextDataConfig",
    "TokenizedTexts",
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
