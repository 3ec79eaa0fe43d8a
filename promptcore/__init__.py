"""promptcore: the shared soft-prompt core of prompttune (prompts, prompt files, configs, registry, trainer).

It depends on torch and small general libraries only; ``vpt`` and ``textpt`` build on it. ``import promptcore``
imports no torch: each public name loads its module on first use (:func:`promptcore.plugins.lazy_exports`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .plugins import lazy_exports

if TYPE_CHECKING:
    from .config import ConfigError, load_config
    from .errors import UserError
    from .files import PromptFileError, load_prompt_files, read_prompt_config
    from .methods import METHODS, Method, method_config, register_method, wrap
    from .model import PromptedModel
    from .prompts import DeepSoftPrompt, PromptBank, PromptEncoder, SoftPrompt, init_prompt_, vpt_xavier_bound
    from .registry import Registry
    from .train_config import TrainConfig
    from .trainer import Trainer
    from .version import __version__

__getattr__, __dir__ = lazy_exports(__name__, {
    "ConfigError": ".config",
    "load_config": ".config",
    "UserError": ".errors",
    "PromptFileError": ".files",
    "load_prompt_files": ".files",
    "read_prompt_config": ".files",
    "METHODS": ".methods",
    "Method": ".methods",
    "method_config": ".methods",
    "register_method": ".methods",
    "wrap": ".methods",
    "PromptedModel": ".model",
    "DeepSoftPrompt": ".prompts",
    "PromptBank": ".prompts",
    "PromptEncoder": ".prompts",
    "SoftPrompt": ".prompts",
    "init_prompt_": ".prompts",
    "vpt_xavier_bound": ".prompts",
    "Registry": ".registry",
    "TrainConfig": ".train_config",
    "Trainer": ".trainer",
    "__version__": ".version",
})

__all__ = [
    "METHODS",
    "ConfigError",
    "DeepSoftPrompt",
    "Method",
    "PromptBank",
    "PromptEncoder",
    "PromptFileError",
    "PromptedModel",
    "Registry",
    "SoftPrompt",
    "TrainConfig",
    "Trainer",
    "UserError",
    "__version__",
    "init_prompt_",
    "load_config",
    "load_prompt_files",
    "method_config",
    "read_prompt_config",
    "register_method",
    "vpt_xavier_bound",
    "wrap",
]
