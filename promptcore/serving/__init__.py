"""Serving many prompts on one frozen backbone (``docs/serving.md``).

- :mod:`.backend`: the protocol a package implements (``vpt``: ``vision``, ``textpt``: ``text``, ``vlmpt``:
  ``vision-language``);
- :mod:`.registry`: the served prompts, validated on load, hot added and removed, an LRU device tier;
- :mod:`.server`: :class:`PromptServer`, the Python API without HTTP (``predict``, ``generate``);
- :mod:`.config`: the serve config; :mod:`.metrics`: Prometheus metrics;
- :mod:`.app`: the FastAPI app and the Ray Serve application (imports fastapi / ray when used);
- :mod:`.cli`: the ``serve`` and ``serve-admin`` verbs (registered on import of this package, which the packages
  import to register their backends).
"""

from .backend import (
    BACKENDS,
    OPERATIONS,
    Classification,
    GenerationStep,
    LimitError,
    Limits,
    LoadedPrompt,
    PromptInfo,
    Request,
    ServingBackend,
    backend_for,
    check_prompt_weights,
    read_served_prompt_config,
    served_model_section,
)
from .config import LimitsConfig, ServeConfig, load_serve_config
from .registry import PromptRegistry, UnknownPromptError
from .server import Completion, PromptServer, QueueFullError
from . import cli as _cli  # noqa: E402, F401 - registers `vpt serve` / `textpt serve` for the packages that import this

__all__ = [
    "BACKENDS",
    "OPERATIONS",
    "Classification",
    "Completion",
    "GenerationStep",
    "LimitError",
    "Limits",
    "LimitsConfig",
    "LoadedPrompt",
    "PromptInfo",
    "PromptRegistry",
    "PromptServer",
    "QueueFullError",
    "Request",
    "ServeConfig",
    "ServingBackend",
    "UnknownPromptError",
    "backend_for",
    "check_prompt_weights",
    "read_served_prompt_config",
    "served_model_section",
    "load_serve_config",
]
