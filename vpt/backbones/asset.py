"""Offline asset models: ``asset:<name>`` builds ``vpt.assets.create_asset_model(name, **kwargs)``.

Asset models are ordinary library models (a timm EfficientNet ...): the family of their library owns them and
answers for them, so this family only builds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from ._base import FAMILIES, BackboneFamily

if TYPE_CHECKING:
    from ..config import BackboneConfig


class AssetFamily(BackboneFamily):
    describe = "offline assets (their library's family answers for them once built)"

    def create(self, model_name: str, cfg: "BackboneConfig") -> nn.Module:
        from ..assets import create_asset_model  # the assets module reads local files; import it only when used

        return create_asset_model(model_name, **cfg.kwargs)


FAMILIES.add("asset", AssetFamily())
