"""PEFT interoperability: write and read PEFT prompt-learning adapter folders.

A PEFT prompt-learning adapter is ``adapter_config.json`` (``peft_type``, ``task_type``, ``num_virtual_tokens``,
``token_dim`` ...) plus ``adapter_model.safetensors`` holding one tensor, ``prompt_embeddings``. What maps:

================  ============  ======  ======  ==============================================================
peft_type         task_type     export  import  textpt side
================  ============  ======  ======  ==============================================================
PROMPT_TUNING     CAUSAL_LM     yes     yes     ``prompt_tuning`` (and ``p_tuning``, exported folded)
PROMPT_TUNING     SEQ_2_SEQ_LM  yes     yes     ``prompt_tuning`` before the encoder input; PEFT's default of a
                                                second prompt before the decoder input has no textpt counterpart,
                                                so the adapter is written (and must be made) with
                                                ``num_transformer_submodules: 1``
P_TUNING          CAUSAL_LM,    folded  yes     PEFT saves its encoder's output, so the tensor is the folded
                  SEQ_2_SEQ_LM                  prompt: it loads as ``prompt_tuning``; a ``p_tuning`` model is
                                                exported as PROMPT_TUNING with its folded embeddings
PREFIX_TUNING     CAUSAL_LM     yes     yes     ``prefix``; PEFT saves the projected prefix (``prefix_projection``)
                                                as its output, so both layouts import
================  ============  ======  ======  ==============================================================

PEFT's prompt tensor ``[n, token_dim]`` is the embeddings placed before the input's, as ``prompt_tuning`` places
them. Its prefix tensor ``[n, num_layers * 2 * token_dim]`` is, per virtual token, each layer's key then value
(``token_dim`` is the key/value width: ``num_attention_heads`` key/value heads of grouped-query models), the
transpose of textpt's ``[2 * num_layers, n, width]``. Without padding the logits agree; PEFT drops
``position_ids`` and puts the prompt before left padding, while textpt's outputs with padding are the padding-free
ones.

Refused with the reason: sequence classification (PEFT's ``SEQ_CLS`` classifier pools position 0, the first virtual
token, through the model's pooler, while textpt's head reads the input's own tokens: the same prompt and head give
other logits), prompt banks, and every other ``peft_type`` / ``task_type``. This module writes JSON and safetensors
and reads them back; PEFT itself is only needed to load the folder into PEFT.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from promptcore import PromptFileError
from promptcore.errors import MissingFileError, UserError
from promptcore.io import atomic_dir

from .fast_prefix import num_layers
from .model import TextPromptedModel
from .prefix import PrefixConfig, PrefixModel
from .prompt_tuning import PromptTuningConfig, PromptTuningModel
from .tasks import infer_task

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_KEY = "prompt_embeddings"

# (peft_type, task_type) -> textpt task, for the pairs that map
SUPPORTED: dict[tuple[str, str], str] = {
    ("PROMPT_TUNING", "CAUSAL_LM"): "causal_lm",
    ("PROMPT_TUNING", "SEQ_2_SEQ_LM"): "seq2seq",
    ("P_TUNING", "CAUSAL_LM"): "causal_lm",
    ("P_TUNING", "SEQ_2_SEQ_LM"): "seq2seq",
    ("PREFIX_TUNING", "CAUSAL_LM"): "causal_lm",
}
PEFT_TASK = {"causal_lm": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM"}
SEQ_CLS_REASON = (
    "PEFT's SEQ_CLS models pool position 0 (the first virtual token) through the model's pooler into their "
    "classifier, while textpt's seq_cls head reads the input's own tokens, so the same prompt and head give other logits"
)


def supported_formats() -> str:
    """The supported ``peft_type (task_types)`` pairs, for messages."""
    by_type: dict[str, list[str]] = {}
    for peft_type, task_type in SUPPORTED:
        by_type.setdefault(peft_type, []).append(task_type)
    return "; ".join(f"{t} ({', '.join(tasks)})" for t, tasks in by_type.items())


def save_peft_adapter(model: TextPromptedModel, directory: str | os.PathLike, base_model_name_or_path: str | None = None) -> Path:
    """Writes ``model``'s prompt as a PEFT adapter folder (replaced atomically): PROMPT_TUNING for ``prompt_tuning``
    and ``p_tuning`` (folded) on causal LMs and seq2seq models, PREFIX_TUNING for ``prefix`` on causal LMs.

    Raises:
        UserError: a prompt bank, a ``seq_cls`` model, or a method with no PEFT counterpart.
    """
    if not isinstance(model, (PromptTuningModel, PrefixModel)) or model.prompts.num_tasks > 1:
        raise UserError(
            f"PEFT prompt-tuning adapters hold one shallow prompt or one prefix; {type(model).__name__} (method "
            f"{model.method!r}) with {model.config.num_tasks} task(s) cannot be exported (use save_prompts for banks; "
            f"supported: {supported_formats()})"
        )
    if model.task not in PEFT_TASK:
        reason = f": {SEQ_CLS_REASON}" if model.task == "seq_cls" else ""
        raise UserError(f"PEFT export of a {model.task} model is not supported{reason} (supported: {supported_formats()})")
    if isinstance(model, PrefixModel):
        if model.task != "causal_lm":
            raise UserError(
                f"PEFT export of a prefix is for causal_lm models; this model's task is {model.task}, whose prefix "
                f"(encoder and decoder self-attention, no positions) PEFT's {model.task} prefix does not reproduce"
            )
        # textpt [2L, n, width] (layer i: row 2i keys, 2i+1 values) -> PEFT [n, 2L * width], the same order per token
        table = model.prompts.weight.detach().permute(1, 0, 2)
        weight = table.reshape(table.shape[0], -1).to("cpu").contiguous()
        fields = {
            "peft_type": "PREFIX_TUNING",
            "token_dim": model.kv_heads * model.head_dim,
            "num_attention_heads": model.kv_heads,
            "num_layers": model.num_layers,
            "encoder_hidden_size": model.kv_heads * model.head_dim,
            "prefix_projection": False,
        }
    else:
        weight = model.prompt_table()[0].detach().to("cpu").contiguous()
        fields = prompt_tuning_fields(model.backbone, weight)
    return write_peft_adapter(directory, weight, fields, PEFT_TASK[model.task], base_model_name_or_path or model.backbone_name)


def prompt_tuning_fields(backbone: nn.Module, weight: torch.Tensor) -> dict[str, Any]:
    """The PROMPT_TUNING fields of an adapter config for the prompt rows ``weight`` ``[n, token_dim]`` placed before
    the input embeddings of ``backbone``'s language model."""
    config = backbone.config.get_text_config()
    return {
        "peft_type": "PROMPT_TUNING",
        "token_dim": int(weight.shape[1]),
        "num_attention_heads": int(config.num_attention_heads),
        "num_layers": num_layers(backbone),
        "prompt_tuning_init": "RANDOM",
        "prompt_tuning_init_text": None,
        "tokenizer_name_or_path": None,
        "tokenizer_kwargs": None,
    }


def write_peft_adapter(
    directory: str | os.PathLike, weight: torch.Tensor, fields: dict[str, Any], task_type: str, base_model_name_or_path: str
) -> Path:
    """Writes the PEFT adapter folder ``directory`` (replaced atomically): ``weight`` as ``prompt_embeddings``, and
    the adapter config of ``fields`` (``peft_type`` and its fields) for ``task_type``."""
    weight = weight.detach().to("cpu").contiguous()
    adapter = {
        **fields,
        "task_type": task_type,
        "num_virtual_tokens": int(weight.shape[0]),
        "num_transformer_submodules": 1,  # seq2seq: the encoder's prompt only (textpt prompts no decoder)
        "base_model_name_or_path": base_model_name_or_path,
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
    """``(prompt_embeddings, adapter_config)`` of a supported PEFT adapter folder (JSON and safetensors only):
    ``[n, token_dim]`` for PROMPT_TUNING and P_TUNING, ``[n, num_layers * 2 * token_dim]`` for PREFIX_TUNING.

    Raises:
        PromptFileError: a missing or unreadable file, or a ``peft_type`` / ``task_type`` that does not map (the
            message lists the supported ones).
    """
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
    peft_type, task_type = config.get("peft_type"), config.get("task_type")
    if peft_type not in {t for t, _ in SUPPORTED}:
        raise PromptFileError(
            f"{config_path} has peft_type {peft_type!r}; only PROMPT_TUNING, P_TUNING and PREFIX_TUNING adapters are "
            f"imported (supported: {supported_formats()})"
        )
    if (peft_type, task_type) not in SUPPORTED:
        reason = f" ({SEQ_CLS_REASON})" if task_type == "SEQ_CLS" else ""
        raise PromptFileError(
            f"{config_path} is a {peft_type} adapter for task_type {task_type!r}, which does not map to textpt{reason}; "
            f"supported: {supported_formats()}"
        )
    if config.get("num_transformer_submodules") not in (1, None):
        raise PromptFileError(
            f"{config_path} has {config['num_transformer_submodules']} transformer submodules: PEFT prompts the "
            f"decoder too, and textpt prompts the encoder only; make the adapter with num_transformer_submodules=1"
        )
    tensors = load_file(str(weights_path))
    if PEFT_KEY not in tensors:
        raise PromptFileError(f"{weights_path} has tensors {sorted(tensors)}, expected {PEFT_KEY!r}")
    weight = tensors[PEFT_KEY]
    n, dim = config.get("num_virtual_tokens"), config.get("token_dim")
    if peft_type == "PREFIX_TUNING" and dim is not None:
        dim = int(config.get("num_layers") or 0) * 2 * dim
    if weight.dim() != 2 or (n is not None and weight.shape[0] != n) or (dim is not None and weight.shape[1] != dim):
        raise PromptFileError(f"{weights_path}: {PEFT_KEY} has shape {tuple(weight.shape)}, the config says [{n}, {dim}]")
    return weight, config


def load_peft_adapter(
    backbone: nn.Module, directory: str | os.PathLike, tokenizer: Any = None, name: str | None = None
) -> PromptTuningModel | PrefixModel:
    """A textpt model holding the prompt of a PEFT adapter folder: a :class:`PromptTuningModel` for PROMPT_TUNING
    and P_TUNING (PEFT's saved encoder output, the folded prompt), a :class:`PrefixModel` for PREFIX_TUNING.

    Raises:
        PromptFileError: the adapter does not map (see :func:`read_peft_adapter`), was made for another task, or its
            widths do not match the backbone's.
    """
    weight, adapter = read_peft_adapter(directory)
    task = SUPPORTED[(adapter["peft_type"], adapter["task_type"])]
    made_for = f"the adapter was made for {adapter.get('base_model_name_or_path')!r}"
    if infer_task(backbone) != task:
        raise PromptFileError(
            f"PEFT adapter {directory} is for task_type {adapter['task_type']} ({task}); {type(backbone).__name__} "
            f"is a {infer_task(backbone)} model ({made_for})"
        )
    n = int(weight.shape[0])
    if adapter["peft_type"] != "PREFIX_TUNING":
        model = PromptTuningModel(backbone, PromptTuningConfig(num_tokens=n), tokenizer, task, name)
        if weight.shape[1] != model.dim:
            raise PromptFileError(
                f"PEFT adapter {directory}: prompt dim {weight.shape[1]} does not match backbone width {model.dim} "
                f"({model.backbone_name}; {made_for})"
            )
        model.load_prompt_state_dict({"prompts.weight": weight})
        return model
    model = PrefixModel(backbone, PrefixConfig(num_tokens=n), tokenizer, task, name)
    width = model.kv_heads * model.head_dim
    if weight.shape[1] != 2 * model.num_layers * width:
        raise PromptFileError(
            f"PEFT adapter {directory}: prefix width {weight.shape[1]} does not match the backbone's "
            f"{model.num_layers} layers x 2 x key/value width {width} ({model.backbone_name}; {made_for})"
        )
    table = weight.view(n, 2 * model.num_layers, width).permute(1, 0, 2).contiguous()
    model.load_prompt_state_dict({"prompts.weight": table.to(model.prompts.weight.dtype)})
    return model
