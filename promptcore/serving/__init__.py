"""Serving many prompts on one frozen backbone: the backend protocol packages implement (:mod:`.backend`)."""

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
)

__all__ = [
    "BACKENDS",
    "OPERATIONS",
    "Classification",
    "GenerationStep",
    "LimitError",
    "Limits",
    "LoadedPrompt",
    "PromptInfo",
    "Request",
    "ServingBackend",
    "backend_for",
]
