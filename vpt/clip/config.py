"""Method configs of the CLIP prompt learners (the ``prompt:`` section of a vpt run config).

Every CLIP method's config derives from :class:`CLIPMethodConfig` (that is how ``vpt base2new`` and
``vpt interpret`` know a CLIP method); the learners with a learned text context derive from
:class:`CLIPContextConfig`. :func:`promptcore.wrap` builds the model a config names from an open_clip CLIP model.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from promptcore.errors import UserError

from .templates import check_templates

ClassPosition = Literal["end", "middle", "front"]
TextPath = Literal["auto", "fast", "reference"]


def prompt_name(name: str) -> str:
    """A class name as the prompts write it: underscores read as spaces (``apple_pie`` -> ``apple pie``), as the
    official code of every CLIP method here does (``name.replace("_", " ")`` in CoOp, CoCoOp, MaPLe, IVLP,
    PromptSRC, KgCoOp and CoOp's zero-shot CLIP), so label names of datasets written with underscores read as
    words."""
    return name.replace("_", " ")


def check_class_names(names: Any, field: str = "class_names") -> list[str]:
    """Checks a class-name list: non-empty strings, no duplicates (also once underscores read as spaces, which
    would give two classes the same prompt). Returns it as a list.

    Raises ValueError("class_names: ...") naming the offending entries.
    """
    if not isinstance(names, (list, tuple)) or not names:
        raise UserError(f"{field}: expected a non-empty list of class names, found {names!r}")
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad:
        raise UserError(f"{field}: every class name must be a non-empty string, found {bad!r}")
    dup = sorted(n for n, c in Counter(names).items() if c > 1)
    if dup:
        raise UserError(f"{field}: duplicate class names {dup}; each class needs a distinct name (its text prompt)")
    same = sorted(n for n, c in Counter(prompt_name(n) for n in names).items() if c > 1)
    if same:
        raise UserError(
            f"{field}: {[n for n in names if prompt_name(n) in same]} give the same prompt text {same} (underscores "
            f"read as spaces); rename one of them"
        )
    return list(names)


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


@dataclass
class KgCoOpConfig(CoOpConfig):
    """KgCoOp: CoOp's fields (the official base-to-new setting: 4 tokens from ``"a photo of a"``, unified context,
    the class name at the end) plus the knowledge-guided term.

    Attributes:
        weight: the term's weight (λ = 8.0 in the paper and the official base-to-new runs).
        templates: the hand-crafted prompts: templates with one ``{}``, or a template set (``kgcoop:<dataset>``,
            KgCoOp's per-dataset template; several templates are averaged as zero-shot CLIP averages them).
    """

    method: Literal["kgcoop"] = "kgcoop"
    n_ctx: int = 4
    ctx_init: str | None = "a photo of a"
    weight: float = 8.0
    templates: list[str] | str = field(default_factory=lambda: ["a photo of a {}."])

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.weight >= 0:
            raise UserError(f"weight: must be a number >= 0, found {self.weight}")
        check_templates(self.templates)


@dataclass
class PromptSRCConfig(IVLPConfig):
    """PromptSRC: IVLP's prompts (the official base-to-new config: 4 text and 4 vision tokens in 9 layers of each
    tower, the text context from ``"a photo of a"``) and the self-regulating losses.

    Attributes:
        text_loss_weight: weight of the L1 distance of the prompted to the frozen text features (25).
        image_loss_weight: weight of the L1 distance of the prompted to the frozen image features (10).
        logit_loss_weight: weight of the KL divergence of the prompted from the frozen logits (1, fixed in the
            official code).
        templates: the frozen text features' templates (textual diversity): a list, or a template set; the
            official code's 60 ImageNet templates are ``promptsrc:imagenet60``.
    """

    method: Literal["promptsrc"] = "promptsrc"
    n_ctx: int = 4
    text_loss_weight: float = 25.0
    image_loss_weight: float = 10.0
    logit_loss_weight: float = 1.0
    templates: list[str] | str = "promptsrc:imagenet60"

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("text_loss_weight", "image_loss_weight", "logit_loss_weight"):
            if not getattr(self, name) >= 0:
                raise UserError(f"{name}: must be a number >= 0, found {getattr(self, name)}")
        check_templates(self.templates)
