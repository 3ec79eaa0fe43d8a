"""Method configs of the CLIP prompt learners (the ``prompt:`` section of a vpt run config).

Every CLIP method's config derives from :class:`CLIPMethodConfig` (that is how ``vpt base2new`` and
``vpt interpret`` know a CLIP method); the learners with a learned text context derive from
:class:`CLIPContextConfig`. :func:`promptcore.wrap` builds the model a config names from an open_clip CLIP model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from promptcore.errors import UserError

from .templates import check_templates
from .tokens import check_class_names

ClassPosition = Literal["end", "middle", "front"]
TextPath = Literal["auto", "fast", "reference"]


def _check_positive(cfg: object, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value <= 0:
            raise UserError(f"{name}: must be a positive integer, found {value}")


@dataclass
class CLIPMethodConfig:
    """What every CLIP method's config holds.

    Attributes:
        method: the registered method name (each subclass fixes it).
        class_names: one name per class in label order; ``null`` in YAML is filled from the data by the CLI.
        tokenizer: an open_clip model name whose tokenizer to use (``open_clip.get_tokenizer``); ``null`` uses
            OpenAI's BPE ``SimpleTokenizer``, which ships with open_clip and fits every OpenAI-vocabulary CLIP. In
            Python a tokenizer object can also be passed to the model class directly (``CoOp(model, cfg,
            tokenizer=tok)``).
    """

    method: str = ""
    class_names: list[str] | None = None
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        if self.class_names is not None:
            check_class_names(self.class_names)


@dataclass
class CLIPContextConfig(CLIPMethodConfig):
    """What the CLIP prompt learners with a learned text context share (CoOp, CoCoOp, MaPLe, IVLP).

    Attributes:
        n_ctx: context tokens.
        ctx_init: initial context words (``"a photo of a"``). The prompt is the official text
            ``ctx_init + " " + name + "."``: its first ``n_ctx`` tokens are learned, initialised from their
            embeddings, and the rest of ``ctx_init`` stays as fixed words before the class name (so MaPLe's
            ``n_ctx: 2`` reads ``[SOS] ctx1 ctx2 of a {name}.``, as in its ``MultiModalPromptLearner``). Fewer
            tokens than ``n_ctx`` is an error. CoOp's and CoCoOp's official code set n_ctx to the number of words
            of ``ctx_init`` (``N_CTX`` is ignored); here n_ctx is explicit, and their configs' value for
            ``"a photo of a"`` is 4. ``null``: N(0, ``init_std``²) and no words.
        init_std: std of the random context initialisation.
        text_path: ``auto`` uses the exact fast text encoder (shared prefix computed once, no padding) where it
            applies and the plain 77-token path otherwise; ``fast`` requires it; ``reference`` forces the plain path.
    """

    n_ctx: int = 16
    ctx_init: str | None = None
    init_std: float = 0.02
    text_path: TextPath = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive(self, "n_ctx")
        if self.ctx_init is not None and not self.ctx_init.strip():
            raise UserError("ctx_init: empty text; give words such as 'a photo of a' or null for a random init")
        if self.init_std <= 0:
            raise UserError(f"init_std: must be positive, found {self.init_std}")


@dataclass
class ZeroShotCLIPConfig(CLIPMethodConfig):
    """Zero-shot CLIP: class-name prompts from ``templates`` averaged (CLIP's prompt ensembling); nothing trains.

    Attributes:
        templates: templates with one ``{}`` each, or a registered template set (:mod:`vpt.clip.templates`), e.g.
            ``coop:oxford_pets``, the per-dataset template of the CoOp papers' zero-shot baseline.
    """

    method: Literal["clip_zeroshot"] = "clip_zeroshot"
    templates: list[str] | str = field(default_factory=lambda: ["a photo of a {}."])

    def __post_init__(self) -> None:
        super().__post_init__()
        check_templates(self.templates)


@dataclass
class CoOpConfig(CLIPContextConfig):
    """CoOp (Zhou et al., IJCV 2022): ``n_ctx`` learned context vectors before (or around) the class name.

    Attributes:
        class_token_position: where the class name goes: ``end`` ([ctx] name.), ``middle``, ``front``.
        class_specific_context: one context per class (CSC) instead of one shared by all classes.
    """

    method: Literal["coop"] = "coop"
    class_token_position: ClassPosition = "end"
    class_specific_context: bool = False


@dataclass
class CoCoOpConfig(CLIPContextConfig):
    """CoCoOp (Zhou et al., CVPR 2022): CoOp's context plus a per-image shift from a meta-net on the image feature
    (the class name goes at the end).

    Attributes:
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

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive(self, "meta_hidden_ratio", "image_chunk")


@dataclass
class MaPLeConfig(CLIPContextConfig):
    """MaPLe (Khattak et al., CVPR 2023): deep language prompts in the first ``depth`` text layers, and vision prompts
    projected from them (one linear map per layer) in the first ``depth`` image layers.

    Attributes:
        n_ctx: prompt tokens per layer on each tower.
        depth: prompted layers J (1 = prompts at the input only); at most the layers of either tower.
        ctx_init: the first-layer text context's initial words (the first ``n_ctx`` tokens learned, the rest fixed).
    """

    method: Literal["maple"] = "maple"
    n_ctx: int = 2
    ctx_init: str | None = "a photo of a"
    depth: int = 9

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive(self, "depth")


@dataclass
class IVLPConfig(CLIPContextConfig):
    """IVLP (independent vision-language prompting, Rasheed et al. 2023): deep prompts on both towers, learned
    separately.

    Attributes:
        n_ctx, depth: text prompt tokens and prompted text layers.
        vision_n_ctx, vision_depth: the same for the image tower (``null``: as the text side).
    """

    method: Literal["ivlp"] = "ivlp"
    n_ctx: int = 2
    ctx_init: str | None = "a photo of a"
    depth: int = 9
    vision_n_ctx: int | None = None
    vision_depth: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive(self, "depth", "vision_n_ctx", "vision_depth")
