"""Configs of the vision package: the backbone (the run config's ``model:`` section), the methods' configs (the
``prompt:`` section: token prompts, pixel prompts, VFPT, the linear probe; each method's file holds its model and
gives its config too) and the data (the ``data:`` section).

They are plain dataclasses, loaded from YAML by :func:`promptcore.load_config`; ``__post_init__`` rejects bad
values with ``ValueError("field: message")`` so the loader reports every problem with its field. This module imports
no torch, so ``vpt train`` reports a config's errors before loading it. The registries of the heads (:data:`HEADS`)
and the data sources (:data:`SOURCES`) are defined here and filled by modules that import torch (:mod:`vpt.heads`,
:mod:`vpt.data`, :mod:`vpt.clip.zeroshot`); the packages declare their names (in their ``__init__``), so a name is
checked without them, and what a head or source checks of the rest goes through
:func:`promptcore.config.library_check`, once the rest is valid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from promptcore.config import library_check
from promptcore.errors import UserError
from promptcore.plugins import known
from promptcore.registry import Registry, did_you_mean

if TYPE_CHECKING:
    from .data import DataSource
    from .heads import VPTHead

HEADS: Registry["VPTHead"] = Registry("VPT head")
"""``prompt.head`` name -> its :class:`vpt.heads.VPTHead`."""
SOURCES: Registry["DataSource"] = Registry("data source")
"""``data.source`` name -> its :class:`vpt.data.DataSource`."""

PromptMethod = Literal["vpt_shallow", "vpt_deep"]


@dataclass
class BackboneConfig:
    """Which frozen image encoder to build.

    Attributes:
        name: ``family:model``. ``timm:vit_base_patch16_224.augreg_in21k`` (any timm name, with its pretrained tag),
            ``open_clip:ViT-B-16:laion2b_s34b_b88k`` (architecture, then the pretrained tag),
            ``hf:google/vit-base-patch16-224-in21k`` (a Hub repo id or a local folder), ``asset:efficientnet_lite0``
            (a model from the offline assets).
        pretrained: whether to load the weights the name gives (from the library's cache; there is no hub on
            offline machines). Default (``null``): yes, for a pretrained name, a Hub id or a local folder; a model
            built from a config dict (hf ``kwargs.config``, open_clip ``kwargs.model_cfg``) has no weights to load.
            ``false`` builds the architecture with random weights. A random backbone is announced in one line
            (:func:`vpt.backbones.create_model`), since prompts trained on it are of no use on real images.
            With ``checkpoint`` set, the default loads that file alone.
        checkpoint: a local weights file loaded after building: ``.safetensors``, or ``.pth``/``.bin`` read with
            ``torch.load(weights_only=True)``; keys must match the library's own model.
        kwargs: builder keyword arguments passed through. timm: ``timm.create_model`` kwargs (``img_size``,
            ``patch_size``, ``depth``, ``embed_dim``, ``num_heads``, ``class_token``, ``reg_tokens``,
            ``global_pool`` ...). open_clip: ``model_cfg`` (a full model config dict: ``embed_dim``, ``vision_cfg``,
            ``text_cfg``) to build without a named config, other keys go to ``open_clip.create_model``. hf:
            ``config`` (a config dict with ``model_type``: ``vit``, ``clip_vision_model`` or
            ``siglip_vision_model``) to build without the hub, other keys go to ``from_pretrained``/the config.
            asset: ``vpt.assets.create_asset_model`` kwargs.
        device_map: not offered for vision backbones, which are built whole on the run's device (the key exists so
            that a config setting it, as a text model's may, is told what to use instead: ``train.distributed: fsdp``
            shards the frozen backbone over several processes; ``quantization`` shrinks it).
        quantization: ``int8`` stores the weights of the frozen linear layers in 8 bits (torchao's weight-only
            int8, through the ``prompttune[quant]`` extra; prompts and heads stay full precision); ``nf4`` in QLoRA's
            4-bit NormalFloat (torchao's ``NF4Tensor``; layers whose weight size is not a multiple of 16384 stay as
            built), the kind ``train.distributed: fsdp`` shards. ``None``: as built.
    """

    name: str = "timm:vit_base_patch16_224.augreg_in21k"
    pretrained: bool | None = None
    checkpoint: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    device_map: str | dict[str, str | int] | None = None
    quantization: Literal["int8", "nf4"] | None = None

    def __post_init__(self) -> None:
        family, sep, rest = self.name.partition(":")
        if not sep or not family or not rest:
            raise UserError(
                f"name: {self.name!r} is not 'family:model'; write e.g. 'timm:{self.name or 'vit_base_patch16_224'}', "
                f"'open_clip:ViT-B-16:laion2b_s34b_b88k' or 'hf:google/vit-base-patch16-224-in21k'"
            )
        if self.device_map is not None:
            raise UserError(
                "device_map: vision backbones are built whole on the run's device (device_map is offered for textpt "
                "models); to spread a big frozen backbone, launch several processes with train.distributed: fsdp, "
                "which shards it (docs/scaling.md), or use model.quantization: int8 to shrink it"
            )
        if self.pretrained and self.builds_from_config:
            key = "config" if "config" in self.kwargs else "model_cfg"
            raise UserError(
                f"pretrained: true, but kwargs.{key} builds the model from a config dict, which has no weights; drop "
                f"kwargs.{key} to load {self.name}'s weights, or set pretrained: false for a random model"
            )

    @property
    def builds_from_config(self) -> bool:
        """Whether the model is built from a config dict in ``kwargs`` (no weights exist for it)."""
        family = self.name.partition(":")[0]
        return (family == "hf" and "config" in self.kwargs) or (family == "open_clip" and "model_cfg" in self.kwargs)

    @property
    def library_weights(self) -> bool:
        """Whether the family loads the library's pretrained weights: ``pretrained``, and by default unless the
        model is built from a config dict or its weights come from ``checkpoint``."""
        if self.pretrained is None:
            return not (self.builds_from_config or self.checkpoint)
        return self.pretrained

    @property
    def random_weights(self) -> bool:
        """Whether the backbone built is left with random weights (no library weights, no checkpoint, not an
        asset, whose files hold its weights)."""
        return not (self.library_weights or self.checkpoint or self.name.partition(":")[0] == "asset")


@dataclass
class VPTConfig:
    """Token prompts for a frozen ViT-style encoder (Jia et al., ECCV 2022).

    Attributes:
        method: ``vpt_shallow`` (prompts inserted once, before the first block) or ``vpt_deep`` (fresh prompts
            before every block; each block's prompt outputs are discarded).
        num_tokens: prompt length per layer.
        dropout: prompt dropout in training (VPT uses 0.1 for deep prompts); one mask per step, shared by all
            images of the batch.
        init: prompt initialisation: ``xavier`` (VPT's uniform bound from the patch size and width), ``normal``,
            ``uniform`` or ``zeros``.
        projection: when set, prompts live in this dimension and a trained linear layer maps them to the backbone
            width (VPT's prompt projection).
        head: a registered head (:data:`HEADS`): ``linear`` on the class token (on the backbone's pooled
            features when it has no class token), ``prompt_mean`` (mean of the last block's prompt outputs),
            ``backbone_pool`` (linear on the backbone's own pooling), or ``zeroshot`` from :mod:`vpt.clip` (fixed
            CLIP text embeddings of ``class_names``; open_clip).
        num_classes: head size; defaults to ``len(class_names)`` when those are given.
        num_tasks: a prompt bank: one prompt set and one head per task, chosen per image by ``task_ids``.
        class_names: class names in label order (the ``zeroshot`` head embeds them); ``vpt train`` fills them from
            the data when both they and ``num_classes`` are unset.
        templates: prompt templates with ``{}`` for the class name (``zeroshot``); default ``["a photo of a {}."]``.
        fast: exact fast VPT-deep (prompt keys/values once per step): ``auto`` uses it wherever it applies,
            ``on`` raises where it does not, ``off`` always runs the plain concatenation.
    """

    # The method names this config class takes, and those of them that prompt every block (a subclass for another
    # token-prompt method, such as vpt.vfpt's, names its own).
    methods: ClassVar[tuple[str, ...]] = ("vpt_shallow", "vpt_deep")
    deep_methods: ClassVar[tuple[str, ...]] = ("vpt_deep",)

    method: PromptMethod = "vpt_deep"
    num_tokens: int = 10
    dropout: float = 0.0
    init: Literal["xavier", "normal", "uniform", "zeros"] = "xavier"
    projection: int | None = None
    head: str = "linear"
    num_classes: int | None = None
    num_tasks: int = 1
    class_names: list[str] | None = None
    templates: list[str] | None = None
    fast: Literal["auto", "on", "off"] = "auto"

    @property
    def deep(self) -> bool:
        """Whether fresh prompts go before every block (VPT-deep), not once before the first (VPT-shallow)."""
        return self.method in self.deep_methods

    def __post_init__(self) -> None:
        if self.method not in self.methods:
            raise UserError(f"method: {self.method!r} is not a method of {type(self).__name__}; use {' or '.join(map(repr, self.methods))}")
        if not isinstance(self.num_tokens, int) or self.num_tokens <= 0:
            raise UserError(f"num_tokens: must be a positive integer (prompt length), got {self.num_tokens!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"dropout: must lie in [0, 1), got {self.dropout!r}")
        if self.projection is not None and self.projection <= 0:
            raise UserError(f"projection: must be a positive prompt dimension or null, got {self.projection!r}")
        if self.num_tasks <= 0:
            raise UserError(f"num_tasks: must be a positive integer, got {self.num_tasks!r}")
        if self.class_names is not None:
            if self.num_classes is None:
                self.num_classes = len(self.class_names)
            if self.num_classes != len(self.class_names):
                raise UserError(f"num_classes: {self.num_classes} does not match the {len(self.class_names)} class_names")
        if self.num_classes is not None and self.num_classes <= 0:
            raise UserError(f"num_classes: the {self.head!r} head needs a positive number of classes, got {self.num_classes!r}")
        if not known(HEADS, self.head):
            raise UserError(f"head: {HEADS.unknown(self.head)}")
        library_check(self._check_head)  # the heads module builds torch modules
        if self.fast == "on" and not self.deep:
            raise UserError(
                f"fast: 'on' applies to deep prompts only, not {self.method!r} (shallow prompts' states after the first "
                f"block depend on the image, so nothing but one block's K/V projection could be shared); use fast "
                f"'auto' or 'off'"
            )

    def _check_head(self) -> None:
        """Raises ``ValueError("field: ...")`` for a setting the head (:data:`HEADS`) cannot take."""
        HEADS.get(self.head).check(self)


PixelMethod = Literal["pixel_pad", "pixel_fixed_patch", "pixel_random_patch"]


@dataclass
class PixelPromptConfig:
    """Pixel prompts (the run config's ``prompt:`` section for these methods).

    Attributes:
        method: ``pixel_pad``, ``pixel_fixed_patch`` or ``pixel_random_patch`` (module docstring).
        prompt_size: pad width, or patch side, in pixels (Bahng et al.: pad 30 on 224 x 224 images).
        init: ``normal`` (Bahng et al. draw ``randn``: std ``init_scale`` = 1), ``uniform`` (range
            ``init_scale``) or ``zeros`` (the prompted model starts as the plain model).
        init_scale: std of ``normal``, half-range of ``uniform``.
        head: ``linear`` on the frozen pooled features, or ``backbone``: the model's own frozen classifier.
        num_classes: head size; ``vpt train`` fills it from the data when unset; with ``head: backbone`` it must
            be the model's class count (default: that count).
        num_tasks: a prompt bank: one prompt and one head per task, chosen per image by ``task_ids``.
        image_size: the (square) input size the prompt is laid out for; default: the backbone's input size.
            ``vpt train`` sets it to ``data.image_size`` when that is set, so the prompt fits the images the data
            pipeline makes (:func:`vpt.run_config.resolve_run_config`).
    """

    method: PixelMethod = "pixel_pad"
    prompt_size: int = 30
    init: Literal["normal", "uniform", "zeros"] = "normal"
    init_scale: float = 1.0
    head: Literal["linear", "backbone"] = "linear"
    num_classes: int | None = None
    num_tasks: int = 1
    image_size: int | None = None

    def __post_init__(self) -> None:
        if self.method not in ("pixel_pad", "pixel_fixed_patch", "pixel_random_patch"):
            raise UserError(f"method: {self.method!r} is not a pixel-prompt method; use 'pixel_pad', 'pixel_fixed_patch' or 'pixel_random_patch'")
        if not isinstance(self.prompt_size, int) or self.prompt_size <= 0:
            raise UserError(f"prompt_size: must be a positive number of pixels, got {self.prompt_size!r}")
        if self.init_scale <= 0:
            raise UserError(f"init_scale: must be positive, got {self.init_scale!r}")
        if self.num_classes is not None and self.num_classes <= 0:
            raise UserError(f"num_classes: must be positive or null, got {self.num_classes!r}")
        if self.num_tasks <= 0:
            raise UserError(f"num_tasks: must be a positive integer, got {self.num_tasks!r}")
        if self.image_size is not None and self.image_size <= 0:
            raise UserError(f"image_size: must be positive or null, got {self.image_size!r}")


FOURIER_DIMS = {"all": (-2, -1), "sequence": (-2,), "hidden": (-1,)}


@dataclass
class VFPTConfig(VPTConfig):
    """Visual Fourier prompts: the fields of :class:`vpt.config.VPTConfig` (the prompts are deep), plus the Fourier
    share of each layer's prompts.

    Attributes:
        method: ``vfpt``.
        fourier_share: fraction of each layer's ``num_tokens`` prompts that go through the FFT (the official
            ``FOURIER_PERCENTAGE``); ``floor(num_tokens * fourier_share)`` of them. ``0`` is VPT-deep.
        fourier_dims: ``all`` (2D FFT over prompts and width: VFPT), ``sequence`` or ``hidden`` (one dimension; the
            paper's ablation).
        fourier_location: the Fourier prompts go first (``prepend``, the official default) or last (``append``)
            among the layer's prompts.
    """

    methods: ClassVar[tuple[str, ...]] = ("vfpt",)
    deep_methods: ClassVar[tuple[str, ...]] = ("vfpt",)

    method: Literal["vfpt"] = "vfpt"
    fourier_share: float = 1.0
    fourier_dims: Literal["all", "sequence", "hidden"] = "all"
    fourier_location: Literal["prepend", "append"] = "prepend"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.fourier_share <= 1.0:
            raise UserError(f"fourier_share: must lie in [0, 1] (the fraction of each layer's prompts), got {self.fourier_share!r}")
        if self.fourier_dims not in FOURIER_DIMS:
            raise UserError(f"fourier_dims: {self.fourier_dims!r} is not one of {', '.join(FOURIER_DIMS)}")
        if self.fourier_location not in ("prepend", "append"):
            raise UserError(f"fourier_location: {self.fourier_location!r} is not 'prepend' or 'append'")

    @property
    def num_fourier_tokens(self) -> int:
        """The prompts of each layer that go through the FFT."""
        return math.floor(self.num_tokens * self.fourier_share)


@dataclass
class LinearProbeConfig:
    """The linear probe (the run config's ``prompt:`` section with ``method: linear_probe``).

    Attributes:
        method: ``linear_probe``.
        num_classes: head size; ``vpt train`` fills it from the data when unset.
    """

    method: Literal["linear_probe"] = "linear_probe"
    num_classes: int | None = None

    def __post_init__(self) -> None:
        if self.num_classes is not None and self.num_classes <= 0:
            raise UserError(f"num_classes: must be positive or null, got {self.num_classes!r}")


# ----- data -----------------------------------------------------------------------------------------------------
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")


@dataclass
class SyntheticDataConfig:
    """The ``synthetic`` source: class patterns plus noise (:class:`vpt.synthetic.SyntheticImages`)."""

    num_train: int = 512
    num_eval: int = 256
    noise: float = 0.5

    def __post_init__(self) -> None:
        if self.num_train <= 0 or self.num_eval <= 0:
            raise UserError(f"num_train/num_eval: must be positive, got {self.num_train} and {self.num_eval}")
        if self.noise < 0:
            raise UserError(f"noise: must not be negative, got {self.noise}")


AugmentMode = Literal["none", "library", "rrc_flip", "crop_flip"]
AUGMENT_MODES: tuple[str, ...] = ("none", "library", "rrc_flip", "crop_flip")
DEFAULT_AUGMENT_SCALE = (0.08, 1.0)


@dataclass
class VisionDataConfig:
    """The ``data:`` section of a vision run config.

    Attributes:
        source: a registered data source (:data:`SOURCES`): ``synthetic``, ``hf`` (Hugging Face ``datasets``),
            ``imagefolder`` (torchvision) or ``asset``.
        name: the ``hf`` dataset name or builder (``cifar10``, ``imagefolder``, ``parquet``, ``csv`` ...) or a
            folder written by ``DatasetDict.save_to_disk``; or the ``asset`` name (``fashion_mnist``, ``mnist_5k``).
        config_name: the ``hf`` dataset's configuration (subset), if it has several.
        data_dir: ``hf`` builders' ``data_dir``; the root folder for ``imagefolder``.
        data_files: ``hf`` builders' ``data_files`` (a path, a list, or a mapping split -> path(s)).
        image_column / label_column: column names (``hf``, ``asset``). Labels must be integer class ids.
        train_split / eval_split: split names (``hf``, ``asset``), or sub-folder names (``imagefolder``).
            ``eval_split: null`` with ``val_fraction > 0`` holds out part of the training split instead.
        val_fraction: fraction of the training images held out (seeded by ``seed``) as the evaluation set.
        shots: K images per class kept for training (few-shot), drawn with ``seed``; null keeps all.
        seed: seed of the few-shot draw and the validation hold-out.
        num_classes: number of classes; default: read from the data (class names, else the largest label + 1).
        class_names: names of the classes, in label order; default: read from the data.
        class_groups: regroups the data's classes into new ones: each new class name maps to the list of the
            data's class names it takes (``{tops: [T-shirt/top, Shirt], footwear: [Sandal, Sneaker]}``); the new
            classes are numbered in the mapping's order. Rows whose class is in no group are left out, so a mapping
            may also keep a subset of the classes. Data without class names names its classes by their label ids
            as strings (``"0"``, ``"1"`` ...). Applied to every split (:func:`regroup_classes`) before hold-out and
            few-shot sampling (``shots`` then counts images per new class); the new names are the class names, so
            ``class_names`` stays unset.
        image_size: overrides the backbone's input size (height = width), e.g. to run a CNN on small images.
        augment: the training images' augmentation (evaluation never augments):

            - ``none`` (default): the evaluation transform;
            - ``library``: the backbone library's own training transform (timm's ``create_transform``, open_clip's
              ``image_transform_v2``, torchvision's random resized crop and flip for other models);
            - ``rrc_flip``: ``RandomResizedCrop(size, scale=augment_scale)``, ``RandomHorizontalFlip``, normalise
              (Dassl's CLIP training pipeline);
            - ``crop_flip``: ``Resize`` (from ``resize`` or ``crop_pct``, which it needs), ``RandomCrop(size)``,
              ``RandomHorizontalFlip``, normalise (VPT's FGVC pipeline).

            The booleans of earlier versions still work: ``true`` means ``library``, ``false`` means ``none``.
        augment_scale: ``[low, high]`` area fraction of ``rrc_flip``'s random resized crop (torchvision's
            ``scale``); only ``rrc_flip`` reads it.
        mean, std: per-channel normalisation, replacing the backbone's (e.g. ImageNet statistics for a ViT whose
            weights came with 0.5 / 0.5, as VPT's code normalises).
        interpolation: resizing filter, replacing the backbone's: ``nearest``, ``bilinear``, ``bicubic``,
            ``lanczos``.
        resize: evaluation resizes the shorter image side to this many pixels, then centre-crops the input size
            (VPT's FGVC pipeline: 256 for 224 crops); replaces the backbone's own resize. ``crop_flip`` resizes the
            same way before its random crop.
        crop_pct: evaluation resizes the shorter side to ``size / crop_pct`` (rounded down), then centre-crops
            ``size``; ``1.0`` resizes straight to the input size instead, without keeping the aspect ratio (VPT's
            VTAB pipeline). Replaces the backbone's own resize; set ``resize`` or ``crop_pct``, not both.
        synthetic: sizes of the ``synthetic`` source (its class count is ``num_classes``, 4 when unset).
        max_eval_samples: use only the first N evaluation images (of the held-out ones with ``val_fraction``);
            ``null`` uses them all.
        on_bad_rows: what to do with images that cannot be read (an empty or truncated file, not an image, over
            PIL's decompression-bomb limit). Image folders are scanned before any work (every file's header and
            checksums, without decoding): ``error`` (default) names every bad file and stops; ``skip`` leaves them
            out, says how many, and ``vpt train`` lists them in the run directory (``skipped_rows.txt``). Other
            sources are checked as images are read: a bad one stops the run with its index named.

    The preprocessing keys a run sets (``image_size``, ``mean``, ``std``, ``interpolation``, ``resize``,
    ``crop_pct``: :func:`preprocessing_overrides`) are recorded in its prompt files, so ``vpt eval`` and ``vpt
    predict`` preprocess as training did when their config leaves those keys unset.
    """

    source: str = "synthetic"
    name: str | None = None
    config_name: str | None = None
    data_dir: str | None = None
    data_files: str | list[str] | dict[str, Any] | None = None
    image_column: str = "image"
    label_column: str = "label"
    train_split: str = "train"
    eval_split: str | None = "test"
    val_fraction: float = 0.0
    shots: int | None = None
    seed: int = 0
    num_classes: int | None = None
    class_names: list[str] | None = None
    class_groups: dict[str, list[str]] | None = None
    image_size: int | None = None
    augment: str | bool = "none"  # an AugmentMode (checked in __post_init__, which lists close matches)
    augment_scale: tuple[float, float] = DEFAULT_AUGMENT_SCALE
    mean: list[float] | None = None
    std: list[float] | None = None
    interpolation: Literal["nearest", "bilinear", "bicubic", "lanczos"] | None = None
    resize: int | None = None
    crop_pct: float | None = None
    synthetic: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)
    max_eval_samples: int | None = None
    on_bad_rows: Literal["error", "skip"] = "error"

    def __post_init__(self) -> None:
        if not known(SOURCES, self.source):
            raise UserError(f"source: {SOURCES.unknown(self.source)}")
        library_check(self._check_source)  # the sources' loaders live in vpt.data, which imports torch
        if not 0.0 <= self.val_fraction < 1.0:
            raise UserError(f"val_fraction: must lie in [0, 1), got {self.val_fraction}")
        if self.val_fraction > 0 and self.eval_split is not None:
            raise UserError(
                f"val_fraction: {self.val_fraction} holds out part of the training split as the evaluation set, "
                f"but eval_split is {self.eval_split!r} too; set eval_split: null to use the hold-out, or val_fraction: 0"
            )
        if self.shots is not None and self.shots <= 0:
            raise UserError(f"shots: must be a positive number of images per class or null, got {self.shots}")
        if self.num_classes is not None and self.num_classes < 2:
            raise UserError(f"num_classes: must be at least 2 or null, got {self.num_classes}")
        if self.class_names is not None and self.num_classes is not None and len(self.class_names) != self.num_classes:
            raise UserError(f"class_names: {len(self.class_names)} names given for num_classes {self.num_classes}")
        if self.max_eval_samples is not None and self.max_eval_samples <= 0:
            raise UserError(f"max_eval_samples: must be a positive number of images or null, got {self.max_eval_samples}")
        if self.image_size is not None and self.image_size <= 0:
            raise UserError(f"image_size: must be positive or null, got {self.image_size}")
        if self.class_groups is not None:
            self._check_class_groups()
        self._check_preprocessing()

    def _check_source(self) -> None:
        """Raises ``ValueError("field: ...")`` for a field the source (:data:`SOURCES`) requires and the config
        leaves empty."""
        SOURCES.get(self.source).check(self)

    def _check_class_groups(self) -> None:
        groups = self.class_groups
        if len(groups) < 2:
            raise UserError(f"class_groups: give at least two groups (new classes), got {len(groups)}: {list(groups)}")
        if self.class_names is not None:
            raise UserError("class_names: class_groups names the new classes (its keys); remove class_names")
        if self.num_classes is not None and self.num_classes != len(groups):
            raise UserError(f"num_classes: {self.num_classes}, but class_groups makes {len(groups)} classes; remove num_classes or make them agree")
        owner: dict[str, str] = {}
        for group, members in groups.items():
            if not members:
                raise UserError(f"class_groups.{group}: an empty group; list the data's class names it takes")
            for member in members:
                if member in owner:
                    raise UserError(f"class_groups.{group}: class {member!r} is already in group {owner[member]!r}; a class belongs to one group")
                owner[member] = group

    def _check_preprocessing(self) -> None:
        self.augment = augment_mode(self.augment)
        low, high = self.augment_scale = tuple(float(v) for v in self.augment_scale)
        if not 0.0 < low <= high <= 1.0:
            raise UserError(f"augment_scale: must be [low, high] with 0 < low <= high <= 1 (area fractions), got {[low, high]}")
        if self.augment != "rrc_flip" and self.augment_scale != DEFAULT_AUGMENT_SCALE:
            raise UserError(f"augment_scale: only augment 'rrc_flip' reads it (augment is {self.augment!r}); remove it or set augment: rrc_flip")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None and (not values or any(not math.isfinite(v) for v in values)):
                raise UserError(f"{name}: give one finite number per channel, e.g. [0.485, 0.456, 0.406], got {values}")
        if self.std is not None and any(v <= 0 for v in self.std):
            raise UserError(f"std: must be positive per channel, got {self.std}")
        if self.interpolation is not None and self.interpolation not in INTERPOLATIONS:
            raise UserError(f"interpolation: {self.interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")
        if self.resize is not None and self.resize <= 0:
            raise UserError(f"resize: must be a positive number of pixels (the shorter side) or null, got {self.resize}")
        if self.crop_pct is not None and not 0.0 < self.crop_pct <= 1.0:
            raise UserError(f"crop_pct: must lie in (0, 1] (1.0 resizes straight to the input size), got {self.crop_pct}")
        if self.resize is not None and self.crop_pct is not None:
            raise UserError(
                f"resize: {self.resize} and crop_pct: {self.crop_pct} both set the resize before the centre crop; "
                f"keep one (resize: the shorter side in pixels; crop_pct: size / crop_pct)"
            )
        if self.augment == "crop_flip" and self.resize is None and self.crop_pct is None:
            raise UserError(
                "augment: 'crop_flip' resizes before its random crop; set data.resize (VPT's FGVC pipeline: 256 for "
                "224 crops) or data.crop_pct"
            )


def augment_mode(augment: str | bool) -> str:
    """The augmentation ``augment`` names (:data:`AUGMENT_MODES`); the old booleans mean ``library`` / ``none``.

    Raises:
        ValueError: an unknown name (the message lists the close matches).
    """
    if isinstance(augment, bool):
        return "library" if augment else "none"
    if augment not in AUGMENT_MODES:
        raise UserError(f"augment: {augment!r} is not one of {', '.join(AUGMENT_MODES)}.{did_you_mean(str(augment), list(AUGMENT_MODES))}")
    return augment
