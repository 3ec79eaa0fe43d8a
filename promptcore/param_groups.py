"""The optimizer's parameter groups over a model's prompt parameters (``train.param_groups``), and the check that
an optimizer holds exactly those parameters."""

from __future__ import annotations

from typing import Any

import torch

from .config import ConfigError
from .model import PromptedModel
from .registry import did_you_mean
from .train_config import TrainConfig


def build_param_groups(model: PromptedModel, config: TrainConfig, lr_scale: float = 1.0) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: one of all prompt parameters, or with ``config.param_groups`` one per
    trainable module (``model.prompt_modules()`` order), each with its ``lr`` (times ``lr_scale``) and
    ``weight_decay``. A group's ``name`` is ``all`` or the module's name.

    Raises:
        ConfigError: ``param_groups`` names a module the model does not train, or one without parameters.
    """
    modules = model.prompt_modules()
    unknown = [name for name in config.param_groups if name not in modules]
    if unknown:
        known = list(modules)
        raise ConfigError([
            f"train.param_groups.{name}: {type(model).__name__} has no trainable module {name!r}.{did_you_mean(name, known)} "
            f"Its trainable modules are {', '.join(known)}"
            for name in unknown
        ])
    if not config.param_groups:
        params = list(model.prompt_parameters())
        return [{"params": params, "name": "all", "lr": config.lr * lr_scale, "weight_decay": config.weight_decay}]
    groups, seen = [], set()
    for name, module in modules.items():
        params = [p for p in module.parameters() if id(p) not in seen]
        seen.update(id(p) for p in params)
        if not params:
            if name in config.param_groups:
                raise ConfigError([f"train.param_groups.{name}: module {name!r} of {type(model).__name__} has no parameters of its own to train; remove it"])
            continue
        overrides = config.param_groups.get(name, {})
        groups.append({
            "params": params,
            "name": name,
            "lr": overrides.get("lr", config.lr) * lr_scale,
            "weight_decay": overrides.get("weight_decay", config.weight_decay),
        })
    return groups


def check_optimizer_params(optimizer: torch.optim.Optimizer, model: PromptedModel) -> None:
    """Raises unless ``optimizer`` holds exactly the model's prompt parameters (by identity) and nothing else of
    the model requires gradients."""
    held = [p for group in optimizer.param_groups for p in group["params"]]
    expected = {id(p) for p in model.prompt_parameters()}
    names = {id(p): n for n, p in model.named_parameters()}
    problems = []
    if len(held) != len({id(p) for p in held}):
        problems.append("the optimizer holds a parameter twice")
    extra = [names.get(id(p), "<not a model parameter>") for p in held if id(p) not in expected]
    held_ids = {id(p) for p in held}
    missing = [names[id(p)] for p in model.prompt_parameters() if id(p) not in held_ids]
    frozen_trainable = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in expected]
    if extra:
        problems.append(f"it holds non-prompt parameters {extra}")
    if missing:
        problems.append(f"it misses prompt parameters {missing}")
    if frozen_trainable:
        problems.append(f"frozen parameters still require grad {frozen_trainable}")
    if problems:
        raise RuntimeError("optimizer does not hold exactly the prompt parameters: " + "; ".join(problems))


__all__ = ["build_param_groups", "check_optimizer_params"]
