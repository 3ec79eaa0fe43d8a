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

from typing import Any

import torch

from promptcore import register_method

from .config import FOURIER_DIMS, VFPTConfig
from .model import VisualPromptModel

# The dimensions of a layer's prompts [..., tokens, width] each choice transforms.
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
