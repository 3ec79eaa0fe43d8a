"""Image classification data for prompt tuning: sources, the backbone's own transforms, few-shot sampling.

Sources (``data.source``) are records of :data:`SOURCES`; a new one is ``SOURCES.add("name", DataSource(load))``.
The toolkit's own:

- ``hf``: any Hugging Face ``datasets`` dataset by name, or local files through its builders (``imagefolder``,
  ``parquet``, ``csv``, ``json`` ... with ``data_dir`` / ``data_files``). Image and label column names and split
  names are configurable.
- ``imagefolder``: a torchvision ``ImageFolder`` tree (one sub-folder per class), optionally with split sub-folders.
- ``synthetic``: :class:`vpt.synthetic.SyntheticImages`, generated at the backbone's input size.
- ``asset``: an offline dataset shipped inside a package (``vpt.assets.load_dataset``), e.g. ``fashion_mnist``.

Preprocessing: the family that owns the backbone (:mod:`vpt.backbones`) gives the defaults, its image config
(:func:`resolve_image_config`: timm's ``resolve_model_data_config``, open_clip's preprocess config, the Hugging Face
image processor ...) and its transforms; the data section may override them (:func:`with_data_overrides`: ``mean``,
``std``, ``interpolation``, ``resize``, ``crop_pct``, ``image_size``) and choose the training augmentation
(``augment``), and :func:`build_transform` builds the pipeline from both. Every image is converted to RGB first,
so grayscale and RGBA images work, and resized per that config, so images of any size work.
"""

from __future__ import annotations

import dataclasses
import io
import math
import random
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from promptcore.data import check_utf8, few_shot_indices, load_with_datasets
from promptcore.errors import MissingFileError, UserError
from promptcore.recipe import DataBundle
from promptcore.registry import did_you_mean

from .backbones import FAMILIES, OTHER, ImageConfig, family_of
from .synthetic import SyntheticImages
from .config import (  # noqa: F401 - the data section and the sources' registry, defined free of torch there
    AUGMENT_MODES, DEFAULT_AUGMENT_SCALE, SOURCES, AugmentMode, SyntheticDataConfig, VisionDataConfig, augment_mode,
)
from .transforms import interpolation_mode, normalized


class DataError(UserError):
    """A dataset that cannot be used as configured (missing column, no rows, bad labels, too few images)."""


PREPROCESSING_KEYS = ("image_size", "mean", "std", "interpolation", "resize", "crop_pct")
"""The data keys that override the backbone's preprocessing (recorded in prompt files)."""


# ----- the backbone's preprocessing -----------------------------------------------------------------------------
def resolve_image_config(model: nn.Module, image_size: int | None = None) -> ImageConfig:
    """The input size, mean, std and resizing of ``model``, as the family that owns it reads them.

    Args:
        model: the library's model (the frozen backbone, not the prompted wrapper).
        image_size: replaces the model's input size (height = width) when given.

    Raises:
        ValueError: for a model whose family cannot read its input size (a plain torch module) when
            ``image_size`` is not given.
    """
    family = family_of(model)
    out = family.image_config(model)
    if out is None:
        if image_size is None:
            raise UserError(
                f"cannot read the input size of a {type(model).__name__} (no backbone family reads it: "
                f"{', '.join(FAMILIES)}); set data.image_size (and the prompt's image_size) to the size it expects"
            )
        return ImageConfig(size=(image_size, image_size), source="data.image_size with ImageNet mean/std", family=family)
    if image_size is not None and out.size != (image_size, image_size):
        out = dataclasses.replace(out, size=(image_size, image_size), source=f"{out.source}, size from data.image_size={image_size}")
    return out


def preprocessing_overrides(cfg: VisionDataConfig) -> dict[str, Any]:
    """The preprocessing keys ``cfg`` sets (:data:`PREPROCESSING_KEYS`), as plain values: what a run records in its
    prompt files, so evaluation and prediction can preprocess as training did."""
    out = {}
    for key in PREPROCESSING_KEYS:
        value = getattr(cfg, key)
        if value is not None:
            out[key] = list(value) if isinstance(value, (list, tuple)) else value
    return out


def with_recorded_preprocessing(cfg: VisionDataConfig, recorded: dict[str, Any], source: str) -> VisionDataConfig:
    """``cfg`` with the preprocessing keys it leaves unset taken from ``recorded`` (:func:`preprocessing_overrides`
    of the training run, read from its prompt folder ``source``); ``cfg`` itself when there is nothing to take.

    A key that ``cfg`` sets to another value than ``recorded`` is kept (the config is the user's explicit choice),
    and a warning names it.
    """
    changes = {}
    own = preprocessing_overrides(cfg)
    for key in PREPROCESSING_KEYS:
        if key not in recorded:
            continue
        value = getattr(cfg, key)
        if value is None:
            changes[key] = recorded[key]
        elif own[key] != recorded[key]:
            warnings.warn(
                f"data.{key}: the config sets {value!r}, but the prompts in {source} were trained with {recorded[key]!r}; "
                f"using the config's value (remove data.{key} to preprocess as training did)",
                stacklevel=2,
            )
    return dataclasses.replace(cfg, **changes) if changes else cfg


def with_data_overrides(image: ImageConfig, cfg: VisionDataConfig) -> ImageConfig:
    """``image`` (the backbone's preprocessing, :func:`resolve_image_config`) with the overrides of the data section
    ``cfg`` applied: ``image_size``, ``mean``, ``std``, ``interpolation``, and ``resize`` / ``crop_pct`` as the
    evaluation resize (:attr:`ImageConfig.resize`). ``image`` itself when ``cfg`` sets none of them; applying it
    twice gives the same result.

    Raises:
        DataError: ``mean`` / ``std`` with another number of values than the backbone has channels, or a ``resize``
            smaller than the crop.
    """
    changes: dict[str, Any] = {}
    if cfg.image_size is not None and image.size != (cfg.image_size, cfg.image_size):
        changes["size"] = (cfg.image_size, cfg.image_size)
    for key in ("mean", "std"):
        values = getattr(cfg, key)
        if values is not None:
            if len(values) != image.channels:
                raise DataError(f"data.{key}: {len(values)} values for a backbone with {image.channels} input channels; give one per channel")
            changes[key] = tuple(values)
    if cfg.interpolation is not None:
        changes["interpolation"] = cfg.interpolation
    h, w = changes.get("size", image.size)
    if cfg.resize is not None:
        if cfg.resize < max(h, w):
            raise DataError(f"data.resize: {cfg.resize} px is smaller than the {h}x{w} crop; use at least {max(h, w)} (or crop_pct: 1.0 to resize straight to {h}x{w})")
        changes["resize"] = cfg.resize
        changes["crop_pct"] = min(h, w) / cfg.resize
    elif cfg.crop_pct is not None:
        changes["resize"] = (h, w) if cfg.crop_pct == 1.0 else math.floor(max(h, w) / cfg.crop_pct)
        changes["crop_pct"] = cfg.crop_pct
    changes = {k: v for k, v in changes.items() if getattr(image, k) != v}
    if not changes:
        return image
    overridden = ", ".join(k for k in ("size", "mean", "std", "interpolation", "resize") if k in changes)
    return dataclasses.replace(image, **changes, source=f"{image.source}; data overrides {overridden}")


def build_transform(
    image_config: ImageConfig,
    train: bool = False,
    augment: AugmentMode | bool = "none",
    scale: tuple[float, float] = DEFAULT_AUGMENT_SCALE,
) -> Callable[[Image.Image], torch.Tensor]:
    """The transform of a backbone's images: PIL RGB image -> normalised float tensor ``[C, H, W]``.

    Evaluation (and training with ``augment`` ``none``) resizes and centre-crops to the input size: with the
    family's own transform, or, when the data section set the resize (``image_config.resize``), with
    ``Resize(resize)`` and ``CenterCrop(size)``. Training with ``library`` uses the family's own training
    transform; ``rrc_flip`` and ``crop_flip`` are described at :class:`VisionDataConfig`.

    Args:
        image_config: the backbone's preprocessing with the data section's overrides (:func:`with_data_overrides`).
        train: the training images' transform (only then is ``augment`` read).
        augment: :data:`AUGMENT_MODES`, or the old booleans.
        scale: the area range of ``rrc_flip``'s random resized crop.

    Raises:
        ValueError: ``crop_flip`` without a resize in ``image_config``.
    """
    from torchvision import transforms as T

    mode = augment_mode(augment) if train else "none"
    family = image_config.family or OTHER
    if mode == "library":
        return family.transform(image_config, True)
    size, resize = image_config.size, image_config.resize
    filter_ = interpolation_mode(image_config.interpolation)
    if mode == "rrc_flip":
        steps = [T.RandomResizedCrop(size, scale=tuple(scale), interpolation=filter_), T.RandomHorizontalFlip()]
    elif mode == "crop_flip":
        if resize is None:
            raise UserError("augment: 'crop_flip' resizes before its random crop; set data.resize (VPT's FGVC pipeline: 256 for 224 crops) or data.crop_pct")
        steps = [T.Resize(resize, interpolation=filter_), T.RandomCrop(size), T.RandomHorizontalFlip()]
    elif resize is not None:
        steps = [T.Resize(resize, interpolation=filter_), T.CenterCrop(size)]
    else:
        return family.transform(image_config, False)
    return normalized(steps, image_config.mean, image_config.std)


def to_rgb(image: Any, column: str = "image") -> Image.Image:
    """A PIL RGB image from a PIL image of any mode, an array, a file path or an undecoded ``{"bytes", "path"}``."""
    if isinstance(image, dict) and ("bytes" in image or "path" in image):
        image = Image.open(io.BytesIO(image["bytes"])) if image.get("bytes") else Image.open(image["path"])
    elif isinstance(image, (str, Path)):
        image = Image.open(image)
    elif isinstance(image, (np.ndarray, list)):
        image = Image.fromarray(to_uint8(np.asarray(image)))
    if not isinstance(image, Image.Image):
        raise DataError(
            f"image column {column!r} holds {type(image).__name__} values; expected images (PIL images, arrays, "
            f"file paths or encoded bytes). Set data.image_column to the column that holds the images"
        )
    if image.mode in WIDE_MODES:
        # PIL's convert("RGB") clamps 16-bit, 32-bit and float pixels at 255 (a 16-bit PNG turns almost white):
        # scale their range to 8 bits first.
        image = Image.fromarray(to_uint8(np.asarray(image), image.mode))
    # Grayscale (L), palette (P), RGBA, CMYK ...: the backbones take 3-channel RGB.
    return image if image.mode == "RGB" else image.convert("RGB")


# PIL modes wider than 8 bits per channel (16-bit grayscale PNGs open as I;16 or I, float TIFFs as F).
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def to_uint8(array: np.ndarray, mode: str | None = None) -> np.ndarray:
    """``array`` scaled to 8 bits without losing its range: 16-bit data (dtype uint16, PIL mode ``I;16*``, or
    integers above 255 up to 65535) by 255/65535, floats in [0, 1] by 255; anything else is clipped to [0, 255]."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    values = array.astype(np.float64)
    high = float(values.max()) if values.size else 0.0
    sixteen = array.dtype == np.uint16 or (mode or "").startswith("I;16")
    if sixteen or (np.issubdtype(array.dtype, np.integer) and 255 < high <= 65535):
        values = values * (255.0 / 65535.0)
    elif np.issubdtype(array.dtype, np.floating) and high <= 1.0:
        values = values * 255.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


# ----- sources --------------------------------------------------------------------------------------------------
@dataclass
class LabeledImages:
    """Images addressed by index, with their integer labels (read once, without decoding any image).

    Attributes:
        load: returns image ``i`` (a PIL image, an array, a path, or an already-prepared tensor).
        labels: the label of every image.
        class_names: names in label order, when the data has them.
        name: what it is, for messages ("cifar10 split 'train'").
        prepared: images are tensors already at the model's size (the synthetic source): no transform.
        check: returns why image ``i`` cannot be read (naming its file), or None when it can: a fast check, without
            decoding, that :func:`build_vision_data` runs over every image before any work. None: the source has
            no such check, and a bad image is reported when it is read.
        describe: names image ``i`` in messages (its file); default: its index in ``name``.
    """

    load: Callable[[int], Any]
    labels: list[int]
    class_names: list[str] | None
    name: str
    prepared: bool = False
    check: Callable[[int], str | None] | None = None
    describe: Callable[[int], str] | None = None

    def label_of(self, i: int) -> str:
        """Image ``i`` as messages name it."""
        return self.describe(i) if self.describe is not None else f"image {i} of {self.name}"

    def __len__(self) -> int:
        return len(self.labels)


class VisionDataset(Dataset):
    """Items ``{"pixel_values": [C, H, W], "labels": int}`` from a subset of a :class:`LabeledImages`.

    Args:
        images: the source.
        indices: the source indices in this dataset (all by default).
        transform: PIL RGB image -> tensor; not applied to prepared (tensor) sources.
        image_column: named in messages about undecodable images.
    """

    def __init__(
        self,
        images: LabeledImages,
        indices: Sequence[int] | None = None,
        transform: Callable[[Image.Image], torch.Tensor] | None = None,
        image_column: str = "image",
    ) -> None:
        self.images = images
        self.indices = list(range(len(images))) if indices is None else list(indices)
        self.transform = transform
        self.image_column = image_column
        self.class_names = images.class_names

    @property
    def labels(self) -> list[int]:
        return [self.images.labels[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        j = self.indices[i]
        try:
            image = self.images.load(j)
            if not self.images.prepared:
                image = to_rgb(image, self.image_column)
        except UNREADABLE as e:
            raise DataError(
                f"{self.images.label_of(j)} cannot be read ({type(e).__name__}: {e}); replace or remove it"
                f"{' (data.on_bad_rows: skip leaves out the images a scan finds bad)' if self.images.check else ''}"
            ) from None
        if not self.images.prepared and self.transform is not None:
            image = self.transform(image)
        return {"pixel_values": image, "labels": int(self.images.labels[j])}


# What reading a bad image file raises: not an image or empty (UnidentifiedImageError, an OSError), truncated
# (OSError, or SyntaxError from PIL's checks), too large (DecompressionBombError).
UNREADABLE = (OSError, SyntaxError, Image.DecompressionBombError)


def check_image_file(path: str | Path) -> str | None:
    """Why the image file ``path`` cannot be read, or None: opens it and verifies its structure and checksums
    (PIL's ``verify``), without decoding the pixels."""
    try:
        with Image.open(path) as image:
            image.verify()
    except UNREADABLE as e:
        reason = "an empty file" if Path(path).is_file() and Path(path).stat().st_size == 0 else f"{type(e).__name__}: {e}"
        return f"{path}: {reason}"
    return None


def bad_images(images: LabeledImages, indices: Sequence[int]) -> list[tuple[int, str]]:
    """``(index, why)`` for each image of ``indices`` that ``images.check`` finds unreadable (none without a
    check)."""
    if images.check is None:
        return []
    found = ((i, images.check(i)) for i in indices)
    return [(i, why) for i, why in found if why is not None]


def collate_images(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stacks items into ``{"pixel_values": [B, C, H, W], "labels": [B]}`` (and ``task_ids`` when items have them)."""
    batch = {
        "pixel_values": torch.stack([it["pixel_values"] for it in items]),
        "labels": torch.tensor([int(it["labels"]) for it in items], dtype=torch.long),
    }
    if "task_ids" in items[0]:
        batch["task_ids"] = torch.tensor([int(it["task_ids"]) for it in items], dtype=torch.long)
    return batch


class _Rows:
    """Image ``i`` of a column (picklable, so DataLoader workers can be spawned)."""

    def __init__(self, rows: Any, column: str | None = None) -> None:
        self.rows, self.column = rows, column

    def __call__(self, i: int) -> Any:
        row = self.rows[i]
        return row if self.column is None else row[self.column]


class _FolderImages:
    """Image ``i`` of a torchvision ``ImageFolder``, opened lazily with its own loader (RGB)."""

    def __init__(self, tree: Any) -> None:
        self.tree = tree

    def __call__(self, i: int) -> Any:
        return self.tree.loader(self.tree.samples[i][0])

    def check(self, i: int) -> str | None:
        return check_image_file(self.tree.samples[i][0])

    def describe(self, i: int) -> str:
        return f"image {self.tree.samples[i][0]}"


def _check_columns(ds: Any, cfg: VisionDataConfig, what: str) -> list[str] | None:
    """Checks the image and label columns of a ``datasets.Dataset``; returns its class names if it has them."""
    from datasets import ClassLabel, Value

    columns = list(ds.column_names)
    for role, column in (("label", cfg.label_column), ("image", cfg.image_column)):
        if column not in columns:
            raise DataError(
                f"{role} column {column!r} not found in {what}; columns found: {columns}. "
                f"Set data.{role}_column to the column that holds the {role}s"
            )
    feature = ds.features[cfg.label_column]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    if isinstance(feature, Value) and (feature.dtype.startswith("int") or feature.dtype.startswith("uint")):
        return None
    raise DataError(
        f"label column {cfg.label_column!r} in {what} holds {feature} values; expected integer class ids "
        f"(an int or ClassLabel column). Point data.label_column at the integer labels, or encode the column "
        f"first (datasets: dataset.class_encode_column({cfg.label_column!r}))"
    )


def _from_hf_split(ds: Any, cfg: VisionDataConfig, what: str) -> LabeledImages:
    names = _check_columns(ds, cfg, what)
    labels = [int(v) for v in ds[cfg.label_column]]
    images = ds.select_columns([cfg.image_column])
    return LabeledImages(load=_Rows(images, cfg.image_column), labels=labels, class_names=names, name=what)


def _from_dataset_dict(dd: Any, cfg: VisionDataConfig, label: str) -> tuple[LabeledImages, LabeledImages | None]:
    splits = list(dd.keys())

    def get(split: str) -> LabeledImages:
        if split not in dd:
            raise DataError(
                f"{label} has no split {split!r}; splits found: {splits}.{did_you_mean(split, splits)} "
                f"Set data.train_split / data.eval_split (or eval_split: null with val_fraction)"
            )
        return _from_hf_split(dd[split], cfg, f"{label} split {split!r}")

    return get(cfg.train_split), (get(cfg.eval_split) if cfg.eval_split else None)


TEXT_BUILDERS = ("csv", "json")  # datasets builders that read text files: UTF-8 only


def _file_list(data_files: str | list[str] | dict[str, Any] | None) -> list[str]:
    """Every path in a ``data_files`` value (a path, a list, or a mapping split -> path(s))."""
    if data_files is None:
        return []
    if isinstance(data_files, str):
        return [data_files]
    if isinstance(data_files, dict):
        return [p for v in data_files.values() for p in _file_list(v)]
    return [str(p) for p in data_files]


def _load_hf(cfg: VisionDataConfig, image_config: ImageConfig | None) -> tuple[LabeledImages, LabeledImages | None]:
    import datasets

    if (Path(cfg.name) / "dataset_dict.json").is_file():  # a folder written by DatasetDict.save_to_disk
        return _from_dataset_dict(datasets.load_from_disk(cfg.name), cfg, f"dataset {cfg.name!r}")
    kwargs = {k: v for k, v in (("data_dir", cfg.data_dir), ("data_files", cfg.data_files)) if v is not None}
    if cfg.name in TEXT_BUILDERS:
        for path in _file_list(cfg.data_files):
            check_utf8(path, DataError)
    read = (f"the files of dataset {cfg.name!r} ({kwargs})", "fix the file at the line or row named")
    load = (f"dataset {cfg.name!r}", "data.name, data.data_files / data.data_dir")
    dd = load_with_datasets(DataError, read, load, cfg.name, cfg.config_name, **kwargs)
    return _from_dataset_dict(dd, cfg, f"dataset {cfg.name!r}")


def _load_asset(cfg: VisionDataConfig, image_config: ImageConfig | None) -> tuple[LabeledImages, LabeledImages | None]:
    from vpt import assets  # imported here: assets read package files, only when a config asks for one

    return _from_dataset_dict(assets.load_dataset(cfg.name), cfg, f"asset {cfg.name!r}")


def _load_imagefolder(cfg: VisionDataConfig, image_config: ImageConfig | None) -> tuple[LabeledImages, LabeledImages | None]:
    from torchvision.datasets import ImageFolder

    root = Path(cfg.data_dir)
    if not root.is_dir():
        raise MissingFileError(f"data.data_dir {str(root)!r} is not a folder; give the folder with one sub-folder per class")

    def folder(path: Path, what: str) -> LabeledImages:
        try:
            tree = ImageFolder(str(path))
        except FileNotFoundError as e:
            raise DataError(f"{what}: {e}") from None
        images = _FolderImages(tree)
        return LabeledImages(
            load=images, labels=list(tree.targets), class_names=list(tree.classes), name=what, check=images.check,
            describe=images.describe,
        )

    if (root / cfg.train_split).is_dir():
        train = folder(root / cfg.train_split, f"image folder {str(root / cfg.train_split)!r}")
        if cfg.eval_split is None:
            return train, None
        if not (root / cfg.eval_split).is_dir():
            raise DataError(
                f"image folder {str(root)!r} has a {cfg.train_split!r} sub-folder but no {cfg.eval_split!r} one; "
                f"set data.eval_split to the evaluation sub-folder, or eval_split: null with val_fraction"
            )
        evals = folder(root / cfg.eval_split, f"image folder {str(root / cfg.eval_split)!r}")
        if evals.class_names != train.class_names:
            raise DataError(f"class folders differ between {train.name} {train.class_names} and {evals.name} {evals.class_names}")
        return train, evals
    if cfg.eval_split is not None:
        raise DataError(
            f"image folder {str(root)!r} has no {cfg.train_split!r} sub-folder, so it is read as one training set, "
            f"but data.eval_split is {cfg.eval_split!r}; set eval_split: null and val_fraction (e.g. 0.1) to hold "
            f"out evaluation images, or arrange it as {cfg.train_split}/<class>/... and {cfg.eval_split}/<class>/..."
        )
    return folder(root, f"image folder {str(root)!r}"), None


SYNTHETIC_DEFAULT_CLASSES = 4


def _load_synthetic(cfg: VisionDataConfig, image_config: ImageConfig | None) -> tuple[LabeledImages, LabeledImages | None]:
    if image_config is None:
        raise UserError("the synthetic source needs the backbone's image config (resolve_image_config(model))")
    num_classes = cfg.num_classes or len(cfg.class_names or ()) or SYNTHETIC_DEFAULT_CLASSES
    h, w = image_config.size
    if h != w:
        raise DataError(f"the synthetic source makes square images; the backbone expects {h}x{w}, set data.image_size")

    def make(split: str, n: int) -> LabeledImages:
        ds = SyntheticImages(n, num_classes, image_size=h, channels=image_config.channels, noise=cfg.synthetic.noise, seed=cfg.seed, split=split)
        return LabeledImages(load=_Rows(ds.images), labels=ds.labels.tolist(), class_names=ds.class_names, name=f"synthetic {split}", prepared=True)

    evals = make("test", cfg.synthetic.num_eval) if cfg.eval_split is not None else None
    return make("train", cfg.synthetic.num_train), evals


@dataclass(frozen=True)
class DataSource:
    """One value of ``data.source``: how to load its images.

    Attributes:
        load: ``load(config, image_config) -> (train, eval or None)``, the images before hold-out and few-shot
            sampling. ``image_config`` is the backbone's (:func:`resolve_image_config`), or ``None`` when the caller
            has no backbone at hand; a source that needs it (the synthetic one makes images at its size) raises then.
        requires: ``(field, what it holds)`` pairs of config fields the source cannot do without, checked when the
            config is built (``name: required for source 'hf' (the dataset name or builder)``).
        summary: one line for listings.
    """

    load: Callable[["VisionDataConfig", ImageConfig | None], tuple[LabeledImages, LabeledImages | None]]
    requires: tuple[tuple[str, str], ...] = ()
    summary: str = ""

    def check(self, cfg: "VisionDataConfig") -> None:
        """Raises ``ValueError("field: ...")`` for the first required field ``cfg`` leaves empty."""
        for name, what in self.requires:
            if not getattr(cfg, name):
                raise UserError(f"{name}: required for source {cfg.source!r} ({what})")


# The registry is defined in vpt.config (free of torch) and these names declared in vpt's __init__, so a config is
# checked against them before torch is imported.
SOURCES.add("synthetic", DataSource(_load_synthetic, summary="seeded class patterns plus noise, made at the backbone's size"))
SOURCES.add("hf", DataSource(_load_hf, (("name", "the dataset name or builder"),), "a Hugging Face datasets dataset or builder"))
SOURCES.add("imagefolder", DataSource(
    _load_imagefolder, (("data_dir", "the folder with one sub-folder per class"),), "a torchvision ImageFolder tree"
))
SOURCES.add("asset", DataSource(_load_asset, (("name", "the dataset asset name"),), "an offline dataset asset (vpt.assets)"))


class _Reindexed:
    """``fn(indices[i])``: a function of a source's indices, read through a subset of them (picklable)."""

    def __init__(self, fn: Callable[[int], Any], indices: list[int]) -> None:
        self.fn, self.indices = fn, indices

    def __call__(self, i: int) -> Any:
        return self.fn(self.indices[i])


def regroup_classes(images: LabeledImages, groups: dict[str, list[str]]) -> LabeledImages:
    """``images`` with its classes regrouped (``data.class_groups``): new class ``g`` (the ``g``-th key of
    ``groups``) takes the rows of the classes ``groups`` lists under it; rows of classes in no group are left out.

    Raises:
        DataError: a listed class that the data does not have (the message lists the close matches).
    """
    names = images.class_names or [str(i) for i in range(max(images.labels, default=-1) + 1)]
    index = {name: i for i, name in enumerate(names)}
    new_label: dict[int, int] = {}
    for g, (group, members) in enumerate(groups.items()):
        for member in members:
            if member not in index:
                raise DataError(
                    f"class_groups.{group}: {images.name} has no class {member!r}; its classes are {names}."
                    f"{did_you_mean(member, names)}"
                )
            new_label[index[member]] = g
    keep = [i for i, y in enumerate(images.labels) if y in new_label]
    return LabeledImages(
        load=_Reindexed(images.load, keep),
        labels=[new_label[images.labels[i]] for i in keep],
        class_names=list(groups),
        name=f"{images.name} (class_groups)",
        prepared=images.prepared,
        check=_Reindexed(images.check, keep) if images.check is not None else None,
        describe=_Reindexed(images.label_of, keep),
    )


def load_sources(cfg: VisionDataConfig, image_config: ImageConfig | None = None) -> tuple[LabeledImages, LabeledImages | None]:
    """The configured train and eval images before hold-out and few-shot sampling, checked, with their classes
    regrouped when ``cfg.class_groups`` asks (:func:`regroup_classes`).

    ``image_config`` is needed by sources that make images at the backbone's size (the synthetic one).
    """
    train, evals = SOURCES.get(cfg.source).load(cfg, image_config)
    if cfg.class_groups is not None:
        train = regroup_classes(train, cfg.class_groups)
        evals = regroup_classes(evals, cfg.class_groups) if evals is not None else None
    for part in (train, evals):
        if part is not None and len(part) == 0:
            raise DataError(f"{part.name} has no rows; check the dataset name, split and data_files / data_dir")
    return train, evals


def infer_num_classes(cfg: VisionDataConfig, train: LabeledImages) -> int:
    """The class count the data implies: ``num_classes``, else the class names (configured, then the data's),
    else the largest training label + 1."""
    if cfg.num_classes is not None:
        return cfg.num_classes
    if cfg.class_names is not None:
        return len(cfg.class_names)
    if train.class_names is not None:
        return len(train.class_names)
    return max(train.labels) + 1


def class_names_of(cfg: VisionDataConfig, train: LabeledImages, num_classes: int) -> list[str]:
    """Class names in label order: configured, else the data's, else the label ids as strings.

    Raises:
        DataError: when the names do not number ``num_classes``.
    """
    names = cfg.class_names if cfg.class_names is not None else train.class_names
    if names is None:
        return [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise DataError(
            f"{train.name} names {len(names)} classes but the model has {num_classes}; set prompt.num_classes "
            f"(or data.num_classes) to {len(names)}, or give data.class_names with {num_classes} names"
        )
    return list(names)


def check_labels(images: LabeledImages, num_classes: int) -> None:
    """Raises :class:`DataError` when a label lies outside ``[0, num_classes)``, naming the first one found."""
    for i, y in enumerate(images.labels):
        if not 0 <= y < num_classes:
            raise DataError(
                f"label {y} of row {i} in {images.name} is out of range: the model has {num_classes} classes "
                f"(labels 0..{num_classes - 1}). Set prompt.num_classes / data.num_classes to the true class count, "
                f"or fix the labels"
            )


def holdout_indices(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Splits ``range(n)`` into (train, held-out) with ``round(fraction * n)`` (at least 1) held out, seeded."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    k = max(1, round(fraction * n))
    if k >= n:
        raise DataError(f"val_fraction={fraction} of {n} images leaves no training images; lower data.val_fraction")
    return sorted(order[k:]), sorted(order[:k])


def _drop_bad_images(parts: list[tuple[LabeledImages, list[int]]], policy: str) -> tuple[list[list[int]], list[str]]:
    """Each part's indices without the images a scan finds unreadable, and why each was left out (``policy``
    ``skip``); with ``error``, one :class:`DataError` naming every bad image of every part."""
    found = [bad_images(images, indices) for images, indices in parts]
    if not any(found):
        return [indices for _, indices in parts], []
    whys = [why for bad in found for _, why in bad]
    total = sum(len(indices) for _, indices in parts)
    if policy == "error":
        shown = "; ".join(whys[:20]) + (f"; and {len(whys) - 20} more" if len(whys) > 20 else "")
        raise DataError(
            f"{len(whys)} of {total} images cannot be read: {shown}. Replace or remove them, or set "
            f"data.on_bad_rows: skip to leave them out"
        )
    kept = []
    for (images, indices), bad in zip(parts, found):
        if bad:
            print(f"data: {images.name}: skipping {len(bad)} unreadable image(s) of {len(indices)} (data.on_bad_rows: skip)", file=sys.stderr)
        dropped = {i for i, _ in bad}
        kept.append([i for i in indices if i not in dropped])
    return kept, whys


def build_vision_data(
    cfg: VisionDataConfig,
    image_config: ImageConfig,
    num_classes: int | None = None,
    sources: tuple[LabeledImages, LabeledImages | None] | None = None,
) -> DataBundle:
    """Train and eval datasets of ``cfg`` for a backbone with ``image_config``.

    Args:
        cfg: the data section.
        image_config: the backbone's preprocessing (:func:`resolve_image_config`); the data section's overrides
            are applied here (:func:`with_data_overrides`).
        num_classes: the model's class count, to check labels against (default: from the data).
        sources: already loaded :func:`load_sources` output, to avoid loading twice.

    Returns:
        A :class:`DataBundle` with ``class_names`` and ``info`` (``num_classes``, sizes, transform source).
    """
    image_config = with_data_overrides(image_config, cfg)
    train_src, eval_src = sources if sources is not None else load_sources(cfg, image_config)
    n_classes = num_classes or infer_num_classes(cfg, train_src)
    names = class_names_of(cfg, train_src, n_classes)
    for part in (train_src, eval_src):
        if part is not None:
            check_labels(part, n_classes)
    train_idx: list[int] = list(range(len(train_src)))
    eval_set: VisionDataset | None = None
    eval_tf = build_transform(image_config, train=False)
    if cfg.val_fraction > 0:
        train_idx, held = holdout_indices(len(train_src), cfg.val_fraction, cfg.seed)
        eval_set = VisionDataset(train_src, held, eval_tf, cfg.image_column)
    elif eval_src is not None:
        eval_set = VisionDataset(eval_src, None, eval_tf, cfg.image_column)
    if eval_set is not None and cfg.max_eval_samples is not None:
        eval_set.indices = eval_set.indices[: cfg.max_eval_samples]
    parts = [(train_src, train_idx)] + ([(eval_set.images, eval_set.indices)] if eval_set is not None else [])
    kept, skipped = _drop_bad_images(parts, cfg.on_bad_rows)
    train_idx = kept[0]
    if eval_set is not None:
        eval_set.indices = kept[1]
    if cfg.shots is not None:
        try:
            train_idx = few_shot_indices(train_src.labels, cfg.shots, cfg.seed, names, among=train_idx)
        except ValueError as e:
            raise DataError(f"{e}; lower data.shots or add images of that class") from None
    train_tf = build_transform(image_config, train=True, augment=cfg.augment, scale=cfg.augment_scale)
    train_set = VisionDataset(train_src, train_idx, train_tf, cfg.image_column)
    info = {
        "num_classes": n_classes,
        "num_train": len(train_set),
        "num_eval": len(eval_set) if eval_set is not None else 0,
        "image_size": list(image_config.size),
        "transform": image_config.source,
        "augment": cfg.augment,
    }
    if skipped:
        info["skipped_rows"] = skipped
    return DataBundle(train=train_set, eval=eval_set, collate_fn=collate_images, class_names=names, info=info)
