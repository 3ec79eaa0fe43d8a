"""Prompt files: ``prompts.safetensors`` (prompt tensors and head) and ``prompt_config.json`` (what they fit).

Nothing here unpickles: tensors come from safetensors, metadata from JSON. Torch is imported only to save and
load the tensors, so ``prompt_config.json`` is read without it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError

from .errors import MissingFileError, UserError
from .io import atomic_dir, recover_dir
from .version import FORMAT_VERSION, TOOLKIT, __version__

if TYPE_CHECKING:
    import torch

TENSORS_FILE = "prompts.safetensors"
CONFIG_FILE = "prompt_config.json"


class PromptFileError(UserError):
    """A prompt file that is missing, corrupt, or made for another model."""


def save_prompt_files(directory: str | os.PathLike, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> Path:
    """Writes both files into ``directory`` atomically (the folder is replaced whole, or not at all)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {
        "toolkit": TOOLKIT,
        "toolkit_version": __version__,
        "format_version": FORMAT_VERSION,
        **config,
        "tensors": {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")} for k, v in tensors.items()},
    }
    with atomic_dir(directory) as tmp:
        save_file(tensors, str(tmp / TENSORS_FILE), metadata={"toolkit": TOOLKIT, "format_version": str(FORMAT_VERSION)})
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return directory


def read_prompt_config(directory: str | os.PathLike) -> dict[str, Any]:
    """Reads and checks ``prompt_config.json``."""
    directory = Path(directory)
    recover_dir(directory)
    if not directory.is_dir():
        raise MissingFileError(
            f"prompt folder {str(directory)!r} does not exist; pass the folder that holds {TENSORS_FILE} and "
            f"{CONFIG_FILE} (a run's best/ or last/ folder)"
        )
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise MissingFileError(f"{path} is missing: {directory} is not a prompt folder (expected {CONFIG_FILE} and {TENSORS_FILE})")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PromptFileError(f"{path} is not valid JSON ({e}); the file is truncated or corrupt, save the prompts again") from None
    if not isinstance(meta, dict) or meta.get("toolkit") != TOOLKIT:
        raise PromptFileError(f"{path} was not written by {TOOLKIT} (no 'toolkit': {TOOLKIT!r} entry)")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise PromptFileError(
            f"{path} has format version {meta['format_version']}, newer than this {TOOLKIT} {__version__} reads "
            f"({FORMAT_VERSION}); upgrade {TOOLKIT}"
        )
    return meta


def load_prompt_files(directory: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Reads a prompt folder: ``(tensors, config)``. Checks the tensors against the shapes the config lists."""
    from safetensors.torch import load_file

    meta = read_prompt_config(directory)
    path = Path(directory) / TENSORS_FILE
    if not path.is_file():
        raise MissingFileError(f"{path} is missing; the prompt folder {directory} is incomplete, save the prompts again")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise PromptFileError(f"{path} is truncated or corrupt ({e}); save the prompts again") from None
    listed = meta.get("tensors", {})
    if set(listed) != set(tensors):
        raise PromptFileError(
            f"{path} holds tensors {sorted(tensors)} but {CONFIG_FILE} lists {sorted(listed)}: the two files do not belong together"
        )
    for name, t in tensors.items():
        if list(t.shape) != listed[name]["shape"]:
            raise PromptFileError(f"{path}: tensor {name} has shape {list(t.shape)}, {CONFIG_FILE} says {listed[name]['shape']}")
    return tensors, meta

