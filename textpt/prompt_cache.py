"""Prefix caching for soft prompts: a causal LM's prompt keys and values, computed once per task and kept for generation.

A prompt placed before the input of a decoder-only model never attends to the input (the causal mask), so its
keys and values in every layer depend on the prompt and the frozen model alone (:mod:`textpt.fast_prefix`). The
generation path already feeds them as the cache prefix; this module keeps them between calls, so every request of a
task reuses the keys and values its first request computed instead of running the prompt through every layer again:
:meth:`textpt.model.TextPromptedModel.generate` (``textpt generate``) starts from a :class:`PromptCache`.

Each task of a prompt bank is computed alone (batch 1), so a request's prefix never depends on which other tasks
share its batch, and is broadcast to the batch's rows as a view; the generation cache's first append copies it once
per call, as it copies any prefix.

The kept keys and values are never stale: they are keyed on the prompt tensors' identity and in-place version
(:func:`prompt_state_key`; an optimizer step, ``load_prompts`` or any in-place edit changes it), on the frozen
embedding table's, and are dropped when the model enters training mode. Nothing is kept while gradients are
wanted. Where the keys and values depend on the input (encoders and encoder-decoders, whose prompt attends to the
input) or the method generates from embeddings (DePT), the cache does not apply (:func:`cache_problem`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Union

import torch

from promptcore.errors import UserError

from .fast_prefix import KeyValues, select_rows

if TYPE_CHECKING:
    from .model import TextPromptedModel

PromptCacheMode = Union[Literal["auto"], bool]
PROMPT_CACHE_CHOICES: dict[str, PromptCacheMode] = {"auto": "auto", "on": True, "off": False}
"""The command line's ``--prompt-cache`` words and the modes they set."""


def prompt_state_key(model: "TextPromptedModel") -> tuple[Any, ...] | None:
    """What a prompt's keys and values depend on besides the frozen backbone: each prompt tensor's storage,
    in-place version, device and dtype. None when they may not be kept (training mode, or gradients wanted)."""
    if model.training or torch.is_grad_enabled():
        return None
    return tuple((p.data_ptr(), p._version, p.device, p.dtype) for p in model.prompt_parameters())


def cache_problem(model: "TextPromptedModel") -> str | None:
    """Why ``model``'s generation cannot start from kept prompt keys and values, or None when it can (exactly)."""
    from .model import TextPromptedModel

    if not model.strategy.decoder_only:
        return (
            f"a {model.task} model's encoder runs the prompt together with the input, attending both ways, so the "
            f"prompt's keys and values depend on each input; the prompt cache is for decoder-only models (causal_lm)"
        )
    if model.num_prompt_tokens == 0:
        return f"method {model.method} places no prompt, so there is nothing to cache"
    if type(model).generate is not TextPromptedModel.generate:
        return (
            f"method {model.method} generates from its prompt and input embeddings concatenated (its input embeddings "
            f"are its own), not from a key/value prefix"
        )
    if type(model).prefix_key_values is TextPromptedModel.prefix_key_values:
        return f"method {model.method} gives no key/value prefix (prefix_key_values) to keep"
    return None


def check_prompt_cache_mode(model: "TextPromptedModel", mode: PromptCacheMode) -> None:
    """Raises :class:`promptcore.UserError` for a mode that is none of ``auto``, ``True``, ``False``, or ``True``
    for a model whose generation cannot use the cache (:func:`cache_problem`)."""
    if mode != "auto" and not isinstance(mode, bool):
        raise UserError(f"prompt cache: {mode!r} is not one of auto, true (on), false (off)")
    problem = cache_problem(model)
    if mode is True and problem is not None:
        raise UserError(f"prompt cache: on, but {problem}; use auto to cache only where it applies, or off")


class PromptCache:
    """One model's kept prompt keys and values, per task, valid while the prompt and the embedding table stay the
    same tensors, unchanged in place.

    The prompt tensors are held while their keys and values are kept, so their storage cannot be freed and reused
    by another tensor that would then look the same to :func:`prompt_state_key`.
    """

    def __init__(self) -> None:
        self.key: tuple[Any, ...] | None = None
        self.held: tuple[torch.Tensor, ...] = ()
        self.tasks: dict[int, KeyValues] = {}

    def clear(self) -> None:
        """Drops every kept task."""
        self.key, self.held, self.tasks = None, (), {}

    def __len__(self) -> int:
        return len(self.tasks)

    def key_values(self, model: "TextPromptedModel", task_ids: torch.Tensor | None, batch_size: int) -> KeyValues:
        """Per-layer ``(keys, values)`` ``[batch_size, heads, n, head_dim]`` of each row's task prompt: the kept
        ones, each task computed alone (``model.prefix_key_values``) the first time it is asked for. Rows of one
        task get views of its keys and values; without a valid key (training, gradients) nothing is kept."""
        key = prompt_state_key(model)
        if key is None:
            self.clear()
            return model.prefix_key_values(task_ids, batch_size)
        table = model.embedding.weight
        key = (*key, table.data_ptr(), table._version, table.device, table.dtype)
        if key != self.key:
            self.clear()
            self.key, self.held = key, (table.detach(), *(p.detach() for p in model.prompt_parameters()))
        if task_ids is None:
            used, rows = [0], None
        else:
            distinct, inverse = torch.unique(task_ids, return_inverse=True)
            used = distinct.tolist()
            rows = None if len(used) == 1 else inverse
        for t in used:
            if t not in self.tasks:
                ids = None if task_ids is None else torch.tensor([t], device=task_ids.device)
                self.tasks[t] = model.prefix_key_values(ids, 1)
        layers = zip(*(self.tasks[t] for t in used))
        kv = [(torch.cat([k for k, _ in pairs]), torch.cat([v for _, v in pairs])) if rows is not None else pairs[0] for pairs in layers]
        return select_rows(kv, rows, batch_size)


__all__ = ["PROMPT_CACHE_CHOICES", "PromptCache", "PromptCacheMode", "cache_problem", "check_prompt_cache_mode", "prompt_state_key"]
