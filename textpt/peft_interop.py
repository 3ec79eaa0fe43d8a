"""PEFT interoperability for prompt tuning: write and read PEFT prompt-tuning adapter folders.

A PEFT prompt-tuning adapter is ``adapter_config.json`` (``peft_type: PROMPT_TUNING``, ``num_virtual_tokens``,
``token_dim`` ...) plus ``adapter_model.safetensors`` holding one tensor, ``prompt_embeddings``
``[num_virtual_tokens, token_dim]``. PEFT places those embeddings before the input's, as ``prompt_tuning`` does, so
the same numbers load either way (without padding: PEFT drops ``position_ids`` and puts the prompt before left
padding; with padding textpt's outputs are the padding-free ones).

Supported: causal LMs, one task (a P-tuning model exports its folded embeddings). This module writes JSON and
safetensors and reads them back; PEFT itself is only needed to load the folder into PEFT.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from promptcore import PromptBank, PromptFileError
from promptcore.errors import MissingFileError, UserError
from promptcore.io import atomic_dir

from .fast_prefix import num_layers
from .prompt_tuning import PromptTuningConfig, PromptTuningModel

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_KEY = "prompt_embeddings"


def save_peft_adapter(model: PromptTuningModel, directory: str | os.PathLike, base_model_name_or_path: str | None = None) -> Path:
    """Writes ``model``'s prompt as a PEFT prompt-tuning adapter folder (replaced atomically).

    Raises:
        ValueError: the model is not a one-task prompt (or P-tuning) model on a causal LM.
    """
    if not isinstance(model, PromptTuningModel) or isinstance(model.prompts, PromptBank):
        raise UserError(
            f"PEFT prompt-tuning adapters hold one shallow prompt; {type(model).__name__} with "
            f"{model.config.num_tasks} task(s) cannot be exported (use save_prompts for banks and prefixes)"
        )
    if model.task != "causal_lm":
        raise UserError(f"PEFT export is implemented for causal_lm models; this model's task is {model.task}")
    weight = model.prompt_table()[0].detach().to("cpu").contiguous()
    config = model.backbone.config.get_text_config()
    adapter = {
        "peft_type": "PROMPT_TUNING",
        "task_type": "CAUSAL_LM",
        "num_virtual_tokens": int(weight.shape[0]),
        "token_dim": int(weight.shape[1]),
        "num_transformer_submodules": 1,
        "num_attention_heads": int(config.num_attention_heads),
        "num_layers": num_layers(model.backbone),
        "prompt_tuning_init": "RANDOM",
        "prompt_tuning_init_text": None,
        "tokenizer_name_or_path": None,
        "tokenizer_kwargs": None,
        "base_model_name_or_path": base_model_name_or_path or model.backbone_name,
        "revision": None,
        "inference_mode": True,
        "modules_to_save": None,
    }
    directory = Path(directory)
    with atomic_dir(directory) as tmp:
        save_file({PEFT_KEY: weight}, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(adapter, indent=2) + "\n")
    return directory


def read_peft_adapter(directory: str | os.PathLike) -> tuple[torch.Tensor, dict[str, Any]]:
    """``(prompt_embeddings [n, dim], adapter_config)`` of a PEFT prompt-tuning folder (JSON and safetensors only)."""
    directory = Path(directory)
    config_path, weights_path = directory / ADAPTER_CONFIG, directory / ADAPTER_WEIGHTS
    if not config_path.is_file():
        raise MissingFileError(f"{config_path} is missing: {directory} is not a PEFT adapter folder")
    if not weights_path.is_file():
        pickled = directory / "adapter_model.bin"
        hint = f" (found {pickled.name}, a pickle, which is never loaded: re-save it with safe_serialization=True)" if pickled.exists() else ""
        raise MissingFileError(f"{weights_path} is missing{hint}")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise PromptFileError(f"{config_path} is not valid JSON ({e})") from None
    if config.get("peft_type") != "PROMPT_TUNING":
        raise PromptFileError(f"{config_path} has peft_type {config.get('peft_type')!r}; only PROMPT_TUNING adapters are imported")
    if config.get("num_transformer_submodules", 1) not in (1, None):
        raise PromptFileError(f"{config_path} has {config['num_transformer_submodules']} transformer submodules (seq2seq); only causal LM adapters are imported")
    tensors = load_file(str(weights_path))
    if PEFT_KEY not in tensors:
        raise PromptFileError(f"{weights_path} has tensors {sorted(tensors)}, expected {PEFT_KEY!r}")
    weight = tensors[PEFT_KEY]
    n, dim = config.get("num_virtual_tokens"), config.get("token_dim")
    if weight.dim() != 2 or (n is not None and weight.shape[0] != n) or (dim is not None and weight.shape[1] != dim):
        raise PromptFileError(f"{weights_path}: {PEFT_KEY} has shape {tuple(weight.shape)}, the config says [{n}, {dim}]")
    return weight, config


def load_peft_adapter(backbone: nn.Module, directory: str | os.PathLike, tokenizer: Any = None, name: str | None = None) -> PromptTuningModel:
    """A :class:`PromptTuningModel` holding the prompt of a PEFT prompt-tuning adapter folder.

    Raises:
        PromptFileError: the adapter is not prompt tuning, or its width does not match the backbone's.
    """
    weight, adapter = read_peft_adapter(directory)
    model = PromptTuningModel(backbone, PromptTuningConfig(num_tokens=int(weight.shape[0])), tokenizer, "causal_lm", name)
    if weight.shape[1] != model.dim:
        raise PromptFileError(
            f"PEFT adapter {directory}: prompt dim {weight.shape[1]} does not match backbone width {model.dim} "
            f"({model.backbone_name}; the adapter was made for {adapter.get('base_model_name_or_path')!r})"
        )
    model.load_prompt_state_dict({"prompts.weight": weight})
    return model
