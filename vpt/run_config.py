"""The vision run config: what ``vpt train | eval | predict | sweep | base2new | interpret`` read from YAML, and how
the values it leaves to the data are filled in.

Sections: ``model`` (:class:`vpt.config.BackboneConfig`), ``prompt`` (the config of any registered vision method,
chosen by its ``method`` key: ``vpt_shallow``/``vpt_deep``/``vfpt`` token prompts, ``pixel_*`` pixel prompts,
``linear_probe``, the CLIP methods of :mod:`vpt.clip` and any plugin's), ``data``
(:class:`vpt.data.VisionDataConfig`) and ``train`` (:class:`promptcore.train_config.TrainConfig`); a preset adds
``source`` (where each value comes from) and ``sweep`` (the grid ``vpt sweep`` runs).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from promptcore.config import check_grid, check_sources, load_config
from promptcore.methods import method_config
from promptcore.train_config import TrainConfig

from .config import BackboneConfig, VisionDataConfig

if TYPE_CHECKING:
    from torch import nn

    from .data import LabeledImages


@dataclass
class VisionRunConfig:
    """One vision run: backbone, prompts, data and training.

    Values the prompt config leaves unset that the data determines are filled by :func:`resolve_run_config`.

    Attributes:
        model: the frozen backbone (required).
        prompt: the method's config, chosen by its ``method`` key (required).
        data: the data source and the preprocessing.
        train: the trainer's settings.
        source: a paper preset's provenance: dotted field path -> where the value comes from
            (:func:`promptcore.config.check_sources`).
        sweep: a grid ``vpt sweep`` runs: dotted field path -> the values to try (``train.lr: [0.1, 0.5]``), e.g.
            the learning rates and weight decays a paper searches per dataset (:func:`promptcore.config.check_grid`).
            ``vpt train`` runs the config's own values and ignores it.
    """

    # Required: a default backbone would be a large download (or a random ViT-B), a default method a guess.
    model: BackboneConfig
    prompt: method_config("vision")
    data: VisionDataConfig = field(default_factory=VisionDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    source: dict[str, str] = field(default_factory=dict)
    sweep: dict[str, list[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_sources(self, self.source)
        check_grid(self, self.sweep)


def load_run_config(source: str | os.PathLike | dict[str, Any] | None = None, overrides: list[str] = ()) -> VisionRunConfig:
    """Loads and validates a :class:`VisionRunConfig` from YAML (or a dict) with ``a.b=value`` overrides."""
    return load_config(VisionRunConfig, source, overrides)


def resolve_run_config(
    cfg: VisionRunConfig,
    backbone: nn.Module,
    train_images: Callable[[], LabeledImages] | None = None,
) -> VisionRunConfig:
    """``cfg`` with what its prompt config leaves to the data and the backbone filled in: a new config built with
    :func:`dataclasses.replace` (the new prompt config checks the values it is given), or ``cfg`` itself when
    nothing is left to fill. ``cfg`` is not changed.

    The prompt config's fields, where it has them and they are unset:

    - ``image_size`` (pixel prompts): ``data.image_size``, else the backbone's input size when it is square, so
      the prompt is laid out at the size the data is resized to;
    - ``num_classes``: the class count of the data (:func:`vpt.data.infer_num_classes`);
    - ``class_names``, when ``num_classes`` is unset too or the config has none: the data's class names
      (:func:`vpt.data.class_names_of`).

    Args:
        cfg: a validated run config.
        backbone: the model ``cfg.model`` builds (its input size, and the image size the synthetic source needs).
        train_images: returns the training images of ``cfg.data`` (a caller that has loaded them already passes
            them this way); default: :func:`vpt.data.load_sources`. Called only when a class count or names are
            needed.
    """
    from .data import class_names_of, infer_num_classes, load_sources, resolve_image_config  # imports torch

    prompt = cfg.prompt
    fields = {f.name for f in dataclasses.fields(prompt)}
    unset = {name for name in ("image_size", "num_classes", "class_names") if name in fields and getattr(prompt, name) is None}
    if "num_classes" in fields and "num_classes" not in unset:
        unset.discard("class_names")  # a configured head size is kept; names from the data could disagree with it
    changes: dict[str, Any] = {}
    if "image_size" in unset:
        size = cfg.data.image_size
        if size is None:
            height, width = resolve_image_config(backbone).size
            size = height if height == width else None
        if size is not None:
            changes["image_size"] = size
    if unset & {"num_classes", "class_names"}:
        if train_images is None:
            image = resolve_image_config(backbone, cfg.data.image_size)
            train = load_sources(cfg.data, image)[0]
        else:
            train = train_images()
        count = infer_num_classes(cfg.data, train)
        if "num_classes" in unset:
            changes["num_classes"] = count
        if "class_names" in unset:
            changes["class_names"] = class_names_of(cfg.data, train, count)
    if not changes:
        return cfg
    return dataclasses.replace(cfg, prompt=dataclasses.replace(prompt, **changes))
