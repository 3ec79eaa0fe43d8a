"""What a package (``vpt``, ``textpt``) gives the shared CLI: how to build a model and data from its config.

Recipes stay thin: everything a recipe does, a user can do in a few lines of Python with the same calls.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from torch.utils.data import Dataset

from .model import PromptedModel


@dataclass
class DataBundle:
    """Datasets of one run. Items are dicts; ``collate_fn`` turns a list of items into a batch dict;
    ``batch_order`` is the train data's order when the data chooses it (the trainer's ``batch_order`` hook), else
    None (the trainer's seeded permutation)."""

    train: Dataset | None
    eval: Dataset | None = None
    collate_fn: Callable[[list[dict]], dict] | None = None
    class_names: list[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    batch_order: Callable[[int], Sequence[int]] | None = None


class Recipe(Protocol):
    """A package's CLI plug-in. ``config_class`` is its run config: a dataclass with a ``train: TrainConfig``.

    A recipe may also define ``resolve_config(cfg) -> cfg``, the one config-resolution hook: the run config with
    the values it leaves to other sections, the backbone or the data filled in, as a new config (``cfg`` itself
    when nothing is left to fill). The CLI calls it through :func:`resolve_config` (after seeding) before
    :meth:`build_model`, and writes the resolved config to the run's ``config.yaml``.

    And ``config_for_prompts(cfg, prompt_config, directory) -> cfg``: the run config to evaluate the prompt folder
    ``directory`` with, given its ``prompt_config.json`` (e.g. the data preprocessing the prompts were trained with,
    where ``cfg`` leaves it unset); ``eval --prompts`` calls it before building anything.

    And ``config_from_prompts(directory, overrides) -> cfg``: the run config a prompt folder records, with the
    ``--set`` overrides applied; with it, ``eval --prompts DIR`` runs without ``-c CONFIG``.
    """

    prog: str
    config_class: type

    def build_model(self, cfg: Any) -> PromptedModel: ...

    def build_data(self, cfg: Any, model: PromptedModel) -> DataBundle: ...


def resolve_config(recipe: Recipe, cfg: Any) -> Any:
    """``cfg`` as ``recipe`` resolves it (its ``resolve_config`` hook; ``cfg`` itself for a recipe without one)."""
    hook = getattr(recipe, "resolve_config", None)
    return cfg if hook is None else hook(cfg)


def with_recorded_seed(cfg: Any, seed: int | None, source: str) -> Any:
    """``cfg`` with ``train.seed`` set to ``seed``: the seed the random backbone of the prompts in ``source`` was
    built with, so an inference command rebuilds the backbone they were trained on. ``seed`` None (nothing recorded,
    or a backbone with loaded weights) or the config's own seed gives ``cfg`` itself; another seed in the config is
    replaced with a one-line warning naming both."""
    if seed is None or int(seed) == cfg.train.seed:
        return cfg
    warnings.warn(
        f"{source} was trained on a random backbone built with train.seed {int(seed)}; building it with that seed, "
        f"not the config's {cfg.train.seed}, so the prompts meet the weights they were trained on",
        stacklevel=2,
    )
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=int(seed)))
