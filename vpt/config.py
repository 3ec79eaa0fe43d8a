"""Configs of the vision package: the backbone (the run config's ``model:`` section) and the token prompts.

Both are plain dataclasses, loaded from YAML by :func:`promptcore.load_config`; ``__post_init__`` rejects bad
values with ``ValueError("field: message")`` so the loader reports every problem with its field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from promptcore.errors import UserError

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
        head: a registered head (:data:`vpt.heads.HEADS`): ``linear`` on the class token (on the backbone's pooled
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
        from .heads import head_named  # the heads module builds torch modules; the config only checks the name

        try:
            head = head_named(self.head)
        except KeyError as e:
            raise UserError(f"head: {e}") from None
        head.check(self)
        if self.fast == "on" and not self.deep:
            raise UserError(
                f"fast: 'on' applies to deep prompts only, not {self.method!r} (shallow prompts' states after the first "
                f"block depend on the image, so nothing but one block's K/V projection could be shared); use fast "
                f"'auto' or 'off'"
            )
