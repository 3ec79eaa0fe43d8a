"""promptcore: the shared soft-prompt core of prompttune (prompts, prompt files, configs, registry, trainer).

It depends on torch and small general libraries only; ``vpt`` and ``textpt`` build on it.
"""

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
