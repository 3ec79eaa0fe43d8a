"""Visual Fourier prompt tuning (VFPT; Zeng et al., "Visual Fourier Prompt Tuning", NeurIPS 2024).

VPT-deep whose prompts are partly seen in the frequency domain: before each block's prompts are inserted, the first
``m = floor(num_tokens * fourier_share)`` of them (after the prompt projection and prompt dropout) are replaced
by the real part of their 2D discrete Fourier transform over the prompt (sequence) and width (hidden) dimensions,

    F = Re(FFT_seq(FFT_hidden(P[:m])))

and the remaining ``num_tokens - m`` prompts are inserted as they are, after the Fourier ones (``fourier_location:
prepend``, the official default) or before them (``append``). Every block's prompts are transformed, the first
block's included (the official ``FOURIER_FIRST_LAYER: True``). The FFT is a fixed linear map, so only the prompts,
the projection and the head train, exactly the parameters of VPT-deep; ``fourier_share: 0`` is VPT-deep itself.

The transformed prompts still depend on the prompt parameters alone, not on the image, so the exact fast VPT-deep
path (:mod:`vpt.fast_deep`) runs VFPT too: the keys and values of each block's prompts, Fourier or not, are
computed once per step.

The official code (runtsang/VFPT ``src/models/vit_prompt/vit_fourier.py``) applies ``torch.fft.fft`` over the
hidden dimension, then the sequence dimension, to the first ``floor(NUM_TOKENS * FOURIER_PERCENTAGE)`` prompts of
each layer and keeps the real part; ``FOURIER_DIMENSION`` ``sequence`` / ``hidden`` transform one dimension only
(an ablation of the paper), which ``fourier_dims`` reproduces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from promptcore import register_method
from promptcore.errors import UserError

from .config import VPTConfig
from .model import VisualPromptModel

# The dimensions of a layer's prompts [..., tokens, width] each choice transforms.
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


def fourier_prompts(prompts: torch.Tensor, count: int, dims: str = "all", location: str = "prepend") -> torch.Tensor:
    """Prompts ``[..., tokens, width]`` with their first ``count`` tokens replaced by the real part of their FFT over
    ``dims`` (:data:`FOURIER_DIMS`) and placed first (``prepend``) or last (``append``).

    The FFT runs in at least float32 (torch has no FFT in bfloat16) and the result has the prompts' dtype.
    """
    if count == 0:
        return prompts
    head, rest = prompts[..., :count, :], prompts[..., count:, :]
    spectrum = torch.fft.fftn(head.to(torch.promote_types(head.dtype, torch.float32)), dim=FOURIER_DIMS[dims]).real
    spectrum = spectrum.to(prompts.dtype)
    return torch.cat([spectrum, rest] if location == "prepend" else [rest, spectrum], dim=-2)


class VFPTModel(VisualPromptModel):
    """A frozen encoder with visual Fourier prompts (:class:`VFPTConfig`) and a head; see :class:`VisualPromptModel`
    for the arguments and the trainable modules."""

    config: VFPTConfig
    compat_keys = (*VisualPromptModel.compat_keys, "fourier_share", "fourier_dims", "fourier_location")

    def prompt_config(self) -> dict[str, Any]:
        cfg = self.config
        return {
            **super().prompt_config(),
            "fourier_share": cfg.fourier_share,
            "fourier_dims": cfg.fourier_dims,
            "fourier_location": cfg.fourier_location,
        }

    def prompt_tokens(self) -> torch.Tensor:
        """This step's prompts ``[sets, layers, num_tokens, width]``: projected, with prompt dropout, and the first
        ``num_fourier_tokens`` of every layer through the FFT."""
        cfg = self.config
        return fourier_prompts(super().prompt_tokens(), cfg.num_fourier_tokens, cfg.fourier_dims, cfg.fourier_location)


register_method("vfpt", VFPTConfig, VFPTModel, kind="vision", summary="VFPT: VPT-deep with part of each layer's prompts through a 2D FFT")
