"""Offline asset models: ``asset:<name>`` builds ``vpt.assets.create_asset_model(name, **kwargs)``.

Asset models are ordinary library models (a timm ViT, an EfficientNet ...): the other families give their token
view, so this family only builds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from ._base import FAMILIES, BackboneFamily, TokenBackbone

if TYPE_CHECKING:
    from ..config import BackboneConfig


def create(model_name: str, cfg: "BackboneConfig") -> nn.Module:
    from ..assets import create_asset_model  # the assets module reads local files; import it only when used

    return create_asset_model(model_name, **cfg.kwargs)


def adapt(model: nn.Module, name: str | None) -> TokenBackbone | None:
    return None


FAMILIES.add(
    "asset",
    BackboneFamily(create=create, adapt=adapt, describe="offline assets (their token view comes from their library)"),
)
