"""promptcore: the shared soft-prompt core of prompttune (prompts, prompt files, configs, registry, trainer).

It depends on torch and small general libraries only; ``vpt`` and ``textpt`` build on it.
"""

from .api import register_wrapper, wrap
from .config import ConfigError, load_config
from .files import PromptFileError, load_prompt_files, read_prompt_config
from .model import PromptedModel
from .prompts import DeepSoftPrompt, PromptBank, PromptEncoder, SoftPrompt, init_prompt_, vpt_xavier_bound
from .registry import Registry
from .train_config import TrainConfig
from .trainer import Trainer
from .version import __version__

__all__ = [
    "ConfigError",
    "DeepSoftPrompt",
    "PromptBank",
    "PromptEncoder",
    "PromptFileError",
    "PromptedModel",
    "Registry",
    "SoftPrompt",
    "TrainConfig",
    "Trainer",
    "__version__",
    "init_prompt_",
    "load_config",
    "load_prompt_files",
    "read_prompt_config",
    "register_wrapper",
    "vpt_xavier_bound",
    "wrap",
]
