"""CLIP prompt learning on open_clip models: zero-shot CLIP, CoOp, CoCoOp, MaPLe and IVLP.

Importing this package registers each method config with :func:`promptcore.wrap`.
"""

from .zeroshot import DEFAULT_TEMPLATES, zeroshot_weights

__all__ = ["DEFAULT_TEMPLATES", "zeroshot_weights"]
