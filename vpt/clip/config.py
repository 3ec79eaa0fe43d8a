"""Method configs of the CLIP prompt learners (the ``prompt:`` section of a vpt run config).

Each config is a dataclass told apart by ``method``; :func:`promptcore.wrap` builds the model it names from an
open_clip CLIP model. Fields shared by all methods:

- ``class_names``: one name per class in label order; ``null`` in YAML is filled from the data by the CLI.
- ``tokenizer``: an open_clip model name whose tokenizer to use (``open_clip.get_tokenizer``); ``null`` uses
  OpenAI's BPE ``SimpleTokenizer``, which ships with open_clip and fits every OpenAI-vocabulary CLIP. In Python a
  tokenizer object can also be passed to the model class directly (``CoOp(model, cfg, tokenizer=tok)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .tokens import check_class_names

ClassPosition = Literal["end", "middle", "front"]
TextPath = Literal["auto", "fast", "reference"]


def _check_common(cfg) -> None:
    if cfg.class_names is not None:
        check_class_names(cfg.class_names)


def _check_positive(cfg, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value <= 0:
            raise ValueError(f"{name}: must be a positive integer, found {value}")


def _check_ctx_init(cfg) -> None:
    if cfg.ctx_init is not None and not cfg.ctx_init.strip():
        raise ValueError("ctx_init: empty text; give words such as 'a photo of a' or null for a random init")


@dataclass
class ZeroShotCLIPConfig:
    """Zero-shot CLIP: class-name prompts from ``templates`` (each with one ``{}``), averaged; nothing trains."""

    method: Literal["clip_zeroshot"] = "clip_zeroshot"
    class_names: list[str] | None = None
    templates: list[str] = field(default_factory=lambda: ["a photo of a {}."])
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        _check_common(self)
        if not self.templates:
            raise ValueError("templates: expected at least one template, e.g. ['a photo of a {}.']")
        bad = [t for t in self.templates if "{}" not in t]
        if bad:
            raise ValueError(f"templates: {bad} have no '{{}}' where the class name goes, e.g. 'a photo of a {{}}.'")


@dataclass
class CoOpConfig:
    """CoOp (Zhou et al., IJCV 2022): ``n_ctx`` learned context vectors before (or around) the class name.

    Attributes:
        n_ctx: context tokens.
        ctx_init: initial context words (``"a photo of a"``); their first ``n_ctx`` tokens are used (MaPLe's rule),
            fewer tokens than ``n_ctx`` is an error. ``null``: N(0, ``init_std``²).
        class_token_position: where the class name goes: ``end`` ([ctx] name.), ``middle``, ``front``.
        class_specific_context: one context per class (CSC) instead of one shared by all classes.
        text_path: ``auto`` uses the exact fast text encoder (shared prefix computed once, no padding) where it
            applies and the plain 77-token path otherwise; ``fast`` requires it; ``reference`` forces the plain path.
    """

    method: Literal["coop"] = "coop"
    n_ctx: int = 16
    ctx_init: str | None = None
    class_token_position: ClassPosition = "end"
    class_specific_context: bool = False
    init_std: float = 0.02
    class_names: list[str] | None = None
    tokenizer: str | None = None
    text_path: TextPath = "auto"

    def __post_init__(self) -> None:
        _check_common(self)
        _check_positive(self, "n_ctx")
        _check_ctx_init(self)
        if self.init_std <= 0:
            raise ValueError(f"init_std: must be positive, found {self.init_std}")


@dataclass
class CoCoOpConfig:
    """CoCoOp (Zhou et al., CVPR 2022): CoOp's context plus a per-image shift from a meta-net on the image feature.

    Attributes:
        n_ctx, ctx_init, init_std, text_path: as in :class:`CoOpConfig` (the class name goes at the end).
        meta_hidden_ratio: the meta-net is Linear(E, E // ratio) - ReLU - Linear(E // ratio, text width), E being
            the image embedding width (16 in the paper).
        image_chunk: images whose text prompts are encoded together (bounds memory at large batches; the result
            does not depend on it). ``null``: the whole batch at once.
    """

    method: Literal["cocoop"] = "cocoop"
    n_ctx: int = 4
    ctx_init: str | None = "a photo of a"
    meta_hidden_ratio: int = 16
    image_chunk: int | None = None
    init_std: float = 0.02
    class_names: list[str] | None = None
    tokenizer: str | None = None
    text_path: TextPath = "auto"

    def __post_init__(self) -> None:
        _check_common(self)
        _check_positive(self, "n_ctx", "meta_hidden_ratio", "image_chunk")
        _check_ctx_init(self)


@dataclass
class MaPLeConfig:
    """MaPLe (Khattak et al., CVPR 2023): deep language prompts in the first ``depth`` text layers, and vision prompts
    projected from them (one linear map per layer) in the first ``depth`` image layers.

    Attributes:
        n_ctx: prompt tokens per layer on each tower.
        depth: prompted layers J (1 = prompts at the input only); at most the layers of either tower.
        ctx_init: initial words of the first-layer text context (first ``n_ctx`` tokens used).
    """

    method: Literal["maple"] = "maple"
    n_ctx: int = 2
    depth: int = 9
    ctx_init: str | None = "a photo of a"
    init_std: float = 0.02
    class_names: list[str] | None = None
    tokenizer: str | None = None
    text_path: TextPath = "auto"

    def __post_init__(self) -> None:
        _check_common(self)
        _check_positive(self, "n_ctx", "depth")
        _check_ctx_init(self)


@dataclass
class IVLPConfig:
    """IVLP (independent vision-language prompting, Rasheed et al. 2023): deep prompts on both towers, learned
    separately.

    Attributes:
        n_ctx, depth: text prompt tokens and prompted text layers.
        vision_n_ctx, vision_depth: the same for the image tower (``null``: as the text side).
    """

    method: Literal["ivlp"] = "ivlp"
    n_ctx: int = 2
    depth: int = 9
    vision_n_ctx: int | None = None
    vision_depth: int | None = None
    ctx_init: str | None = "a photo of a"
    init_std: float = 0.02
    class_names: list[str] | None = None
    tokenizer: str | None = None
    text_path: TextPath = "auto"

    def __post_init__(self) -> None:
        _check_common(self)
        _check_positive(self, "n_ctx", "depth", "vision_n_ctx", "vision_depth")
        _check_ctx_init(self)


CLIPPromptConfig = ZeroShotCLIPConfig | CoOpConfig | CoCoOpConfig | MaPLeConfig | IVLPConfig
CLIP_METHODS: tuple[str, ...] = ("clip_zeroshot", "coop", "cocoop", "maple", "ivlp")
