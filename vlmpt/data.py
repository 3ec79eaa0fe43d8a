"""Vision-language data: rows of an image and texts, through the model's own processor and chat template, into
examples whose labels hold the answer only.

A run's ``data:`` section (:class:`VLMDataConfig`) names a source: ``synthetic`` (:func:`vlmpt.synthetic.synthetic_rows`)
or one of the text package's file and hub sources (:data:`textpt.sources.SOURCES`: ``hf``, ``csv``, ``json`` (JSON
Lines too), ``parquet``), loaded through :func:`promptcore.data.load_with_datasets`. The image column holds a
decoded image (a ``datasets`` ``Image`` feature) or the path of an image file, relative to ``data.image_dir``
(default: the folder of the row's data file).

Each row becomes (:class:`VLMEncoder`): the user turn ``[image, template text]`` put through
``processor.apply_chat_template`` with the generation prompt (a processor without a chat template: the image token,
a space, the text; the family's :attr:`vlmpt.families.Family.text_layout`), then the processor on that text and the
image (which expands the image placeholders), then the answer as the tokenizer alone tokenizes it, and the
tokenizer's EOS token. ``labels`` are ``-100`` on everything before the answer (a prefix LM's ``token_type_ids``, as
PaliGemma's processor returns them, 1 on the answer: its suffix); the model masks padding and image placeholder rows
as well (:meth:`vlmpt.VLMPromptedModel.targets`). Rows are encoded when the trainer asks for them
(:class:`VLMExamples`), so images are never all in memory at once. With ``data.max_length``, an over-long example's
answer is cut (keeping its EOS) and a row whose input alone leaves no room for an answer is refused; one pass over
the rows before training (``datasets.map``, batched) counts the cut rows for a one-line warning and finds a refused
row before any model work.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from promptcore.data import few_shot_indices
from promptcore.errors import UserError
from promptcore.recipe import DataBundle
from textpt.sources import SOURCES, DataError, MissingSplitError

from .config import FILE_SOURCES, VLMDataConfig  # noqa: F401 - the data section, defined free of torch there
from .families import family_of_processor

IGNORE = -100
REFERENCE_KEYS = ("prompt_ids", "prompt_mask", "answers")
"""Batch keys of evaluation examples: the input without its answer (what generation starts from) and the reference
answers."""


def load_splits(cfg: VLMDataConfig, classify: bool = False) -> dict[str, Any]:
    """``{split: datasets.Dataset}`` holding at least the train split (and the eval split when set), with the
    columns a generation run (or with ``classify``, a classification run) reads.

    Raises:
        MissingSplitError: a configured split the data does not have, named with the splits found.
        DataError: data that cannot be read, or rows without a configured column.
    """
    import datasets

    if cfg.source == "synthetic":
        from .synthetic import COLOURS, synthetic_rows

        sizes = {cfg.train_split: cfg.num_samples}
        if cfg.eval_split is not None:
            sizes.setdefault(cfg.eval_split, cfg.num_eval_samples)
        features = datasets.Features({
            "image": datasets.Image(), "question": datasets.Value("string"), "answer": datasets.Value("string"),
            "caption": datasets.Value("string"), "label": datasets.ClassLabel(names=list(COLOURS)),
        })
        splits = {s: datasets.Dataset.from_dict(synthetic_rows(n, cfg.seed, s), features=features) for s, n in sizes.items()}
    else:
        splits = dict(SOURCES.get(cfg.source).load(cfg))
    what = "the synthetic data" if cfg.source == "synthetic" else SOURCES.get(cfg.source).what(cfg)
    for split in (cfg.train_split, cfg.eval_split):
        if split is not None and split not in splits:
            raise MissingSplitError(f"data: split {split!r} not found in {what}; found {sorted(splits)} (set data.train_split / data.eval_split)")
        if split is not None:
            missing = [c for c in cfg.columns(split == cfg.eval_split, classify) if c not in splits[split].column_names]
            if missing:
                raise DataError(
                    f"data: split {split!r} has no column {', '.join(map(repr, missing))} (columns: {splits[split].column_names}); "
                    f"set data.image_column / question_column / answer_column / references_column / label_column or the template's fields"
                )
    return splits


def load_image(value: Any, base: Path, where: str):
    """The RGB ``PIL.Image`` of an image column's value: an image, a ``{"bytes", "path"}`` dict (an undecoded
    ``Image`` feature) or a path (relative to ``base``)."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if isinstance(value, dict) and value.get("bytes") is not None:
        import io

        return Image.open(io.BytesIO(value["bytes"])).convert("RGB")
    path = value.get("path") if isinstance(value, dict) else value
    if not isinstance(path, str) or not path:
        raise DataError(f"{where}: the image column holds {type(value).__name__} {value!r:.60}; give an image or the path of an image file")
    file = Path(path).expanduser()
    file = file if file.is_absolute() else base / file
    try:
        return Image.open(file).convert("RGB")
    except FileNotFoundError:
        raise DataError(f"{where}: image file {file} does not exist; image paths are relative to data.image_dir (or the data file's folder)") from None
    except UnidentifiedImageError:
        raise DataError(f"{where}: {file} is not an image file PIL can read") from None


def references(value: Any, where: str) -> list[str]:
    """The reference answers of an answer column's value: a string, or a non-empty list of strings (or of
    ``{"answer": text}`` records, as VQAv2 stores its annotators' answers)."""
    refs = [value] if isinstance(value, str) else value
    if isinstance(refs, (list, tuple)):
        refs = [r["answer"] if isinstance(r, dict) and "answer" in r else r for r in refs]
    if not isinstance(refs, (list, tuple)) or not refs or not all(isinstance(r, str) for r in refs):
        raise DataError(f"{where}: the answer column holds {value!r:.80}; give a string or a list of reference strings")
    if not refs[0].strip():
        raise DataError(f"{where}: the answer is empty; every row needs an answer to learn")
    return list(refs)


class VLMEncoder:
    """Turns a row into an example: ``input_ids``, ``labels`` (``-100`` before the answer), the image inputs the
    processor returns (``pixel_values``, and ``image_grid_thw`` on Qwen, ``pixel_attention_mask`` on Idefics3,
    ``image_sizes`` on LLaVA-OneVision), PaliGemma's ``token_type_ids`` and, with references, ``prompt_ids`` (the
    input without its answer) and ``answers`` (every reference).

    Args:
        processor: the model's processor (``AutoProcessor``: a tokenizer, an image processor, a chat template).
        cfg: the data section (columns and template).
        base: the folder relative image paths start from.
        class_names: for classification, the word of each class: a row's answer is the word of its
            ``label_column`` class; None: the answer column.
    """

    def __init__(self, processor: Any, cfg: VLMDataConfig, base: Path = Path("."), class_names: list[str] | None = None) -> None:
        self.processor = processor
        self.class_names = class_names
        self.tokenizer = processor.tokenizer
        self.cfg = cfg
        self.base = base
        if self.tokenizer.eos_token_id is None:
            raise UserError(f"the tokenizer of {type(processor).__name__} has no EOS token to end the answer with; set tokenizer.eos_token")

    def instruction(self, row: dict[str, Any], where: str = "input") -> str:
        """The user turn's text: the template filled with the row's fields."""
        try:
            return self.cfg.template.format_map({k: v for k, v in row.items() if k != self.cfg.image_column})
        except (KeyError, IndexError, ValueError) as e:
            raise DataError(f"{where}: data.template {self.cfg.template!r} cannot be filled ({type(e).__name__}: {e}); its fields must be columns of the data") from None

    def prompt_text(self, instruction: str) -> str:
        """The chat-template text up to where the answer starts (the generation prompt)."""
        if getattr(self.processor, "chat_template", None):
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        family = family_of_processor(self.processor)
        layout = family.text_layout if family is not None else "{image} {text}"
        return layout.format(image=self.processor.image_token, text=instruction)

    def prompt(self, image: Any, instruction: str, where: str = "input") -> dict[str, torch.Tensor]:
        """The processor's output for one image and instruction: ``input_ids`` ``[L]`` and the image inputs.

        Raises:
            DataError: with ``data.max_length``, an input that leaves no room for an answer token and EOS.
        """
        out = self.processor(text=[self.prompt_text(instruction)], images=[image], return_tensors="pt")
        # PaliGemma's processor also returns labels of its own (all -100 without a suffix): the answer's are made here.
        example = {k: v for k, v in out.items() if k not in ("attention_mask", "mm_token_type_ids", "labels")}
        example["input_ids"] = ids = example["input_ids"][0]
        if "token_type_ids" in example:  # a prefix LM's (PaliGemma): all prefix
            example["token_type_ids"] = example["token_type_ids"][0]
        limit = self.cfg.max_length
        if limit is not None and len(ids) + 2 > limit:
            image_tokens = int((ids == self.processor.tokenizer.convert_tokens_to_ids(self.processor.image_token)).sum())
            raise DataError(
                f"{where}: the input is {len(ids)} tokens ({image_tokens} of them the image's) and leaves no room for an "
                f"answer token and EOS within data.max_length={limit}; raise data.max_length, shorten data.template, or "
                f"bound the image tokens (Qwen: model.processor_kwargs max_pixels)"
            )
        return example

    def answer_ids(self, answer: str) -> list[int]:
        """The answer as the tokenizer alone tokenizes it (no special tokens), then EOS."""
        return [*self.tokenizer(answer, add_special_tokens=False)["input_ids"], self.tokenizer.eos_token_id]

    def encode(self, row: dict[str, Any], where: str, with_references: bool = False) -> dict[str, Any]:
        """The example of ``row`` (named ``where`` in errors), its answer cut to ``data.max_length``."""
        return self.encode_counted(row, where, with_references)[0]

    def encode_counted(self, row: dict[str, Any], where: str, with_references: bool = False) -> tuple[dict[str, Any], bool]:
        """:meth:`encode`, and whether the answer was cut: an answer longer than the room ``data.max_length`` leaves
        after the input keeps its first tokens and its EOS."""
        image = load_image(row[self.cfg.image_column], self.base, where)
        refs = self.class_answer(row, where) if self.class_names is not None else references(row[self.cfg.answer_column], where)
        example = self.prompt(image, self.instruction(row, where), where)
        prompt_ids = example["input_ids"]
        answer_ids = self.answer_ids(refs[0])
        room = None if self.cfg.max_length is None else self.cfg.max_length - len(prompt_ids)
        cut = room is not None and len(answer_ids) > room
        if cut:
            answer_ids = answer_ids[: room - 1] + answer_ids[-1:]
        answer = torch.tensor(answer_ids, dtype=prompt_ids.dtype)
        example["input_ids"] = torch.cat([prompt_ids, answer])
        example["labels"] = torch.cat([torch.full_like(prompt_ids, IGNORE), answer])
        if "token_type_ids" in example:  # the answer is a prefix LM's suffix
            example["token_type_ids"] = torch.cat([example["token_type_ids"], torch.ones_like(answer)])
        if with_references:
            scored = self.cfg.references_column
            example["prompt_ids"] = prompt_ids
            example["answers"] = refs if scored is None or self.class_names is not None else references(row[scored], f"{where} ({scored})")
        return example, cut

    def class_answer(self, row: dict[str, Any], where: str) -> list[str]:
        """``[the word of the row's class]``."""
        label = row[self.cfg.label_column]
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(self.class_names):
            raise DataError(
                f"{where}: label {label!r} in column {self.cfg.label_column!r} is not a class index 0..{len(self.class_names) - 1} "
                f"of task.class_names {self.class_names}"
            )
        return [self.class_names[label]]


class VLMExamples(Dataset):
    """The examples of one split, each encoded when asked for (:meth:`VLMEncoder.encode`)."""

    def __init__(self, rows: Any, encoder: VLMEncoder, split: str, with_references: bool = False) -> None:
        self.rows, self.encoder, self.split, self.with_references = rows, encoder, split, with_references

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.encoder.encode(self.rows[int(index)], f"{self.split} row {int(index)}", self.with_references)

    def count_cut(self) -> int:
        """The rows whose answer ``data.max_length`` cuts, every row encoded once (``datasets.map``, batched, which
        keeps the flags in its cache for data read from files); a row whose input does not fit raises here."""
        flags = self.rows.map(
            _CutFlags(self.encoder, self.split), batched=True, with_indices=True, remove_columns=self.rows.column_names,
            desc=f"measuring {self.split} rows",
        )
        return sum(flags["cut"])


class _CutFlags:
    """``datasets.map`` function of :meth:`VLMExamples.count_cut`: a batch of rows to their ``cut`` flags."""

    def __init__(self, encoder: VLMEncoder, split: str) -> None:
        self.encoder, self.split = encoder, split

    def __call__(self, batch: dict[str, list], indices: list[int]) -> dict[str, list[bool]]:
        rows = ({k: v[i] for k, v in batch.items()} for i in range(len(indices)))
        return {"cut": [self.encoder.encode_counted(row, f"{self.split} row {i}")[1] for row, i in zip(rows, indices)]}


def collate_examples(examples: list[dict[str, Any]], padding_side: str = "left", pad_id: int = 0) -> dict[str, Any]:
    """A batch of examples as a processor returns one: ``input_ids`` and ``attention_mask`` padded on
    ``padding_side`` (``labels`` padded with ``-100``, PaliGemma's ``token_type_ids`` with 0; ``prompt_ids`` likewise
    into ``prompt_ids`` / ``prompt_mask``), image inputs concatenated (Qwen's patches and grids) or stacked (LLaVA's
    images; the tiles of Idefics3 and LLaVA-OneVision, zero-padded to the most tiles), ``answers`` as a list."""

    def pad(key: str, value: int) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(e[key]) for e in examples)
        ids = torch.full((len(examples), width), value, dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for row, e in enumerate(examples):
            n = len(e[key])
            where = slice(width - n, width) if padding_side == "left" else slice(0, n)
            ids[row, where], mask[row, where] = e[key], 1
        return ids, mask

    batch: dict[str, Any] = {}
    batch["input_ids"], batch["attention_mask"] = pad("input_ids", pad_id)
    for key in examples[0]:
        if key == "labels":
            batch["labels"] = pad("labels", IGNORE)[0]
        elif key == "prompt_ids":
            batch["prompt_ids"], batch["prompt_mask"] = pad("prompt_ids", pad_id)
        elif key == "token_type_ids":
            batch["token_type_ids"] = pad("token_type_ids", 0)[0]
        elif key == "answers":
            batch["answers"] = [e["answers"] for e in examples]
        elif key != "input_ids":
            batch[key] = torch.cat(_zero_padded([e[key] for e in examples]))
    return batch


def _zero_padded(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """``tensors`` padded with zeros at the end of every dimension but the first to the largest size: the
    ``[1, tiles, 3, H, W]`` pixels of examples with different tile counts, as the image processors pad a batch
    (Idefics3 drops all-zero tiles and their ``[1, tiles, H, W]`` pixel masks, LLaVA-OneVision reads each image's
    tile count from its ``image_sizes``). Tensors of one shape are returned as they are."""
    shapes = {tuple(t.shape[1:]) for t in tensors}
    if len(shapes) == 1:
        return tensors
    size = [max(s[d] for s in shapes) for d in range(len(next(iter(shapes))))]
    padded = []
    for t in tensors:
        out = t.new_zeros(t.shape[0], *size)
        out[(slice(None), *(slice(0, n) for n in t.shape[1:]))] = t
        padded.append(out)
    return padded


class VLMCollator:
    """:func:`collate_examples` with the tokenizer's pad id and padding side (a picklable collate function)."""

    def __init__(self, tokenizer: Any) -> None:
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.padding_side = tokenizer.padding_side

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        return collate_examples(examples, self.padding_side, self.pad_id)


def _base_dir(cfg: VLMDataConfig, split: str) -> Path:
    if cfg.image_dir is not None:
        return Path(cfg.image_dir).expanduser()
    file = cfg.data_files.get(split)
    return Path(file).expanduser().parent if file else Path(".")


def class_indices(rows: Any, cfg: VLMDataConfig) -> list[int]:
    """Each row's class for K-shot sampling: ``label_column``, else the index of its first reference answer."""
    if cfg.label_column is not None:
        return [int(v) for v in rows[cfg.label_column]]
    answers = [references(v, f"row {i}")[0].strip().lower() for i, v in enumerate(rows[cfg.answer_column])]
    index = {a: i for i, a in enumerate(sorted(set(answers)))}
    return [index[a] for a in answers]


def class_names_of(cfg: VLMDataConfig, given: list[str] | None = None) -> list[str]:
    """The class words of a classification run: ``given`` (``task.class_names``), else the ``ClassLabel`` names of
    the train split's label column.

    Raises:
        UserError: no label column, or neither class names nor a ``ClassLabel`` column.
    """
    if cfg.label_column is None:
        raise UserError("data.label_column: task.type classify reads each row's class from a label column; name it")
    if given:
        return list(given)
    feature = load_splits(cfg, classify=True)[cfg.train_split].features[cfg.label_column]
    names = getattr(feature, "names", None)
    if not names:
        raise UserError(f"task.class_names: column {cfg.label_column!r} holds class indices without names; give the word of each class, in class order")
    return list(names)


def build_vlm_data(cfg: VLMDataConfig, processor: Any, class_names: list[str] | None = None) -> DataBundle:
    """The train and eval examples of ``cfg`` for a model with ``processor``, and their collate function.

    With ``class_names`` (classification), a row's answer is the word of its ``label_column`` class. The first row
    of each split is encoded here, so a bad column, image or template fails before training. Evaluation examples
    carry their references (:data:`REFERENCE_KEYS`). With ``data.max_length``, every row is encoded once more
    before training to count the cut answers (:meth:`VLMExamples.count_cut`): one warning names the counts, and
    ``info[split]["truncated"]`` holds them.
    """
    splits = load_splits(cfg, classify=class_names is not None)
    train = splits[cfg.train_split]
    if cfg.shots is not None:
        train = train.select(few_shot_indices(class_indices(train, cfg), cfg.shots, cfg.seed, on_short="error"))
    if cfg.max_train_samples is not None:
        train = train.select(range(min(cfg.max_train_samples, len(train))))
    datasets_ = {"train": VLMExamples(train, VLMEncoder(processor, cfg, _base_dir(cfg, cfg.train_split), class_names), cfg.train_split)}
    if cfg.eval_split is not None:
        rows = splits[cfg.eval_split]
        if cfg.max_eval_samples is not None:
            rows = rows.select(range(min(cfg.max_eval_samples, len(rows))))
        datasets_["eval"] = VLMExamples(rows, VLMEncoder(processor, cfg, _base_dir(cfg, cfg.eval_split), class_names), cfg.eval_split, with_references=True)
    for name, ds in datasets_.items():
        if len(ds) == 0:
            raise DataError(f"data: the {name} split has no rows")
        ds[0]  # a bad column, image or template fails here, before any model work
    info: dict[str, Any] = {name: {"rows": len(ds)} for name, ds in datasets_.items()}
    if cfg.max_length is not None:
        for name, ds in datasets_.items():
            info[name]["truncated"] = ds.count_cut()
        cut = [f"{v['truncated']} of {v['rows']} {name}" for name, v in info.items() if v["truncated"]]
        if cut:
            warnings.warn(
                f"cut the answers of {', '.join(cut)} examples longer than data.max_length={cfg.max_length} tokens (each "
                f"keeps its first tokens and EOS); raise data.max_length if the model allows, or shorten the answers",
                stacklevel=2,
            )
    return DataBundle(datasets_["train"], datasets_.get("eval"), VLMCollator(processor.tokenizer), class_names, info=info)


__all__ = [
    "REFERENCE_KEYS", "VLMCollator", "VLMDataConfig", "VLMEncoder", "VLMExamples", "build_vlm_data", "class_names_of", "collate_examples",
    "load_image", "load_splits",
]
