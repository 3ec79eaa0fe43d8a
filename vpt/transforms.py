"""torchvision building blocks of the image pipelines: interpolation names and the final tensor conversion.

The backbone families' default transform (:class:`vpt.backbones.BackboneFamily`) and the pipelines the data
section chooses (:func:`vpt.data.build_transform`: ``rrc_flip``, ``crop_flip``, the resize and centre crop of
``data.resize`` / ``data.crop_pct``) are built from these, so every pipeline ends the same way: PIL image ->
``ToTensor`` (``[0, 1]``) -> ``Normalize(mean, std)``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from PIL import Image

from promptcore.errors import UserError

from .config import INTERPOLATIONS

def interpolation_mode(name: str) -> Any:
    """torchvision's ``InterpolationMode`` for ``name`` (one of :data:`INTERPOLATIONS`)."""
    from torchvision.transforms import InterpolationMode

    if name not in INTERPOLATIONS:
        raise UserError(f"interpolation: {name!r} is not one of {', '.join(INTERPOLATIONS)}")
    return InterpolationMode(name)


def normalized(steps: Sequence[Callable], mean: Sequence[float], std: Sequence[float]) -> Callable[[Image.Image], torch.Tensor]:
    """``steps`` on the PIL image, then ``ToTensor`` and ``Normalize(mean, std)``, as one ``Compose``."""
    from torchvision import transforms as T

    return T.Compose([*steps, T.ToTensor(), T.Normalize(tuple(mean), tuple(std))])
