"""Soft prompts: learnable token embeddings, one set (``SoftPrompt``), one per layer (``DeepSoftPrompt``), or one
per task (``PromptBank``).

All three answer the same two questions, so a model never asks which one it holds: :meth:`~PromptBank.table` gives
every prompt set ``[num_tasks, *prompt_shape]`` (one set without a bank) and :meth:`~PromptBank.for_batch` gives
each sample's prompt ``[batch, *prompt_shape]``; :meth:`~PromptBank.used_table` gives only the sets a batch uses, and
each sample's row among them, for models that compute something once per set.

Initialisations, by name:

- ``normal``: N(0, std²), std 0.02 by default.
- ``uniform``: U(-init_range, init_range), 0.5 by default (Lester et al. 2021).
- ``xavier``: VPT's U(-v, v) with v = sqrt(6 / (3 * patch_area + dim)) (Jia et al. 2022); needs ``patch_area``.
- ``tensor``: copy of a given tensor of the prompt's shape.
- ``vocab``: rows sampled (without replacement where possible) from a given embedding matrix, or from its first
  ``population`` rows.
- ``text``: the embeddings of given token ids, repeated or truncated to ``num_tokens``.
- ``class_labels``: Lester et al.'s class-label initialisation, as ``prompt_tuning/prompts.py`` of
  google-research/prompt-tuning builds it (``from_embedded_list`` over ``from_sample_of_embeddings``): every
  position is first drawn as ``vocab`` does from the first ``population`` rows (their configs: 5,000), then position
  ``i`` is overwritten by the mean embedding of the ``i``-th label's tokens (a label of several sub-tokens fills one
  position).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from .errors import UserError
from .memory import check_fits

InitName = Literal["normal", "uniform", "xavier", "tensor", "vocab", "text", "class_labels", "zeros"]
INIT_NAMES: tuple[str, ...] = ("normal", "uniform", "xavier", "tensor", "vocab", "text", "class_labels", "zeros")


def vpt_xavier_bound(patch_area: int, dim: int) -> float:
    """VPT's init bound: sqrt(6 / (3 * patch_area + dim)), 3 being the image channels."""
    return math.sqrt(6.0 / float(3 * patch_area + dim))


@torch.no_grad()
def init_prompt_(
    weight: torch.Tensor,
    init: str = "normal",
    *,
    std: float = 0.02,
    init_range: float = 0.5,
    patch_area: int | None = None,
    tensor: torch.Tensor | None = None,
    embedding: torch.Tensor | None = None,
    token_ids: list[int] | torch.Tensor | None = None,
    token_groups: list[list[int]] | None = None,
    population: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Fills ``weight`` (shape ``[..., num_tokens, dim]``) in place with the named initialisation.

    ``population`` limits ``vocab`` and ``class_labels`` draws to the embedding matrix's first rows; ``token_groups``
    are the ``class_labels`` init's labels, one list of token ids each.
    """
    num_tokens, dim = weight.shape[-2], weight.shape[-1]
    if init == "normal":
        weight.copy_(torch.randn(weight.shape, generator=generator) * std)
    elif init == "uniform":
        weight.copy_((torch.rand(weight.shape, generator=generator) * 2 - 1) * init_range)
    elif init == "xavier":
        if patch_area is None:
            raise UserError("init 'xavier' (VPT) needs patch_area, the patch height x width of the backbone")
        v = vpt_xavier_bound(patch_area, dim)
        weight.copy_((torch.rand(weight.shape, generator=generator) * 2 - 1) * v)
    elif init == "zeros":
        weight.zero_()
    elif init == "tensor":
        if tensor is None:
            raise UserError("init 'tensor' needs the tensor to copy (init_tensor=...)")
        if tuple(tensor.shape) != tuple(weight.shape[-tensor.dim():]) or tensor.dim() < 2:
            raise UserError(f"init tensor has shape {tuple(tensor.shape)}, expected {tuple(weight.shape)}")
        weight.copy_(tensor.expand_as(weight))
    elif init in ("vocab", "class_labels"):
        if embedding is None:
            raise UserError(f"init {init!r} needs the embedding matrix to sample rows from (embedding=...)")
        _check_embedding(embedding, dim)
        weight.copy_(_sample_rows(embedding, weight.numel() // dim, population, generator).to(weight.dtype).reshape(weight.shape))
        if init == "class_labels":
            _put_labels(weight, embedding, token_groups)
    elif init == "text":
        if embedding is None or token_ids is None:
            raise UserError("init 'text' needs the embedding matrix and the token ids of the text")
        _check_embedding(embedding, dim)
        ids = torch.as_tensor(token_ids, dtype=torch.long).flatten()
        if ids.numel() == 0:
            raise UserError("init 'text': the init text gave no tokens; give a non-empty text")
        reps = math.ceil(num_tokens / ids.numel())
        ids = ids.repeat(reps)[:num_tokens]
        weight.copy_(embedding.detach()[ids].to(weight.dtype).expand_as(weight))
    else:
        raise UserError(f"unknown prompt init {init!r}; choose one of {', '.join(INIT_NAMES)}")
    return weight


def _sample_rows(embedding: torch.Tensor, rows: int, population: int | None, generator: torch.Generator | None) -> torch.Tensor:
    """``rows`` rows of the first ``population`` (default: all) rows of ``embedding``, without replacement when there
    are enough of them."""
    vocab = embedding.shape[0]
    if population is not None and not 0 < population:
        raise UserError(f"population must be a positive number of embedding rows, got {population}")
    pool = vocab if population is None else min(population, vocab)
    if rows <= pool:
        idx = torch.randperm(pool, generator=generator)[:rows]
    else:
        idx = torch.randint(0, pool, (rows,), generator=generator)
    return embedding.detach()[idx]


def _put_labels(weight: torch.Tensor, embedding: torch.Tensor, token_groups: list[list[int]] | None) -> None:
    """Position ``i`` of every prompt in ``weight`` becomes the mean embedding of ``token_groups[i]``."""
    if not token_groups:
        raise UserError("init 'class_labels' needs the labels' token ids (token_groups=[[ids of label 0], ...])")
    num_tokens = weight.shape[-2]
    if len(token_groups) > num_tokens:
        raise UserError(
            f"init 'class_labels': {len(token_groups)} labels do not fit {num_tokens} prompt positions (one position "
            f"per label); use at least {len(token_groups)} prompt tokens"
        )
    for i, ids in enumerate(token_groups):
        if not ids:
            raise UserError(f"init 'class_labels': label {i} gave no tokens; give non-empty labels")
        mean = embedding.detach()[torch.as_tensor(ids, dtype=torch.long)].double().mean(0)
        weight[..., i, :] = mean.to(weight.dtype)


def _check_embedding(embedding: torch.Tensor, dim: int) -> None:
    if embedding.dim() != 2 or embedding.shape[1] != dim:
        raise UserError(f"embedding matrix has shape {tuple(embedding.shape)}, expected [vocab, {dim}]")


def _check_sizes(**sizes: int) -> None:
    """Refuses sizes that are not positive integers, then a prompt of these sizes that the memory cannot hold
    (:func:`promptcore.memory.check_fits`, before allocating it): the message names the sizes, ``num_tokens``
    being the ``prompt.num_tokens`` of a config."""
    for name, value in sizes.items():
        if not isinstance(value, int) or value <= 0:
            raise UserError(f"{name} must be a positive integer, got {value!r}")
    shape = " × ".join(f"{name} {value}" for name, value in sizes.items())
    nbytes = math.prod(sizes.values()) * torch.finfo(torch.get_default_dtype()).bits // 8
    check_fits(nbytes, f"a prompt of {shape} (prompt.num_tokens sets its length)")


class PromptEncoder(nn.Module):
    """P-tuning's reparameterisation (Liu et al. 2021): prompt = encoder(raw embeddings).

    ``mlp``: two-layer MLP with ReLU (``dim -> hidden -> dim``). ``lstm``: the structure of P-tuning's official
    encoder (THUDM/P-tuning ``LAMA/p_tuning/prompt_encoder.py``): a bidirectional LSTM of 2 layers with
    ``hidden // 2`` units per direction, then the MLP (``hidden -> hidden -> dim``). With ``hidden = dim`` (the
    default) it is the official ``lstm_head`` and ``mlp_head`` exactly; its LSTM dropout is the official default, 0.
    """

    def __init__(self, kind: Literal["mlp", "lstm"], dim: int, hidden: int | None = None) -> None:
        super().__init__()
        if kind not in ("mlp", "lstm"):
            raise UserError(f"reparam must be 'mlp' or 'lstm', got {kind!r}")
        hidden = hidden or dim
        self.kind = kind
        if kind == "lstm":
            self.lstm = nn.LSTM(dim, max(hidden // 2, 1), num_layers=2, bidirectional=True, batch_first=True)
            in_dim = 2 * max(hidden // 2, 1)
        else:
            self.lstm, in_dim = None, dim
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lstm is not None:
            x = self.lstm(x.unsqueeze(0))[0].squeeze(0)
        return self.mlp(x)


class OnePromptSet:
    """What a single prompt set answers in place of a :class:`PromptBank`: one task, whose prompt (``forward()``)
    every sample gets."""

    num_tasks = 1

    def table(self) -> torch.Tensor:
        """``[1, *prompt_shape]``: the one prompt set, as ``forward()`` gives it."""
        return self().unsqueeze(0)

    def for_batch(self, task_ids: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        """``[batch_size, *prompt_shape]``, a broadcast view (``task_ids`` is not needed)."""
        table = self.table()
        return table.expand(batch_size, *table.shape[1:])

    def used_table(self, task_ids: torch.Tensor | None) -> tuple[torch.Tensor, None]:
        """``(table(), None)``: one set serves every sample."""
        return self.table(), None


class SoftPrompt(OnePromptSet, nn.Module):
    """``num_tokens`` learnable vectors of width ``dim``.

    Args:
        num_tokens: prompt length.
        dim: embedding width (read it from the backbone).
        init: initialisation name (module docstring); the keyword arguments of :func:`init_prompt_` go in
            ``init_kwargs``.
        dropout: dropout applied to the prompt in training (VPT uses 0.1 for deep prompts).
        reparam: ``None``, ``"mlp"`` or ``"lstm"``; P-tuning's encoder, folded into plain embeddings by
            :meth:`fold` (and when a prompted model saves its prompts).
        reparam_hidden: the encoder's hidden width (default ``dim``).
    """

    def __init__(
        self,
        num_tokens: int,
        dim: int,
        init: str = "normal",
        dropout: float = 0.0,
        reparam: Literal["mlp", "lstm"] | None = None,
        reparam_hidden: int | None = None,
        **init_kwargs,
    ) -> None:
        super().__init__()
        _check_sizes(num_tokens=num_tokens, dim=dim)
        self.num_tokens, self.dim = num_tokens, dim
        self.weight = nn.Parameter(torch.empty(num_tokens, dim))
        init_prompt_(self.weight, init, **init_kwargs)
        self.encoder = PromptEncoder(reparam, dim, reparam_hidden) if reparam else None
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def embeddings(self) -> torch.Tensor:
        """The prompt as the backbone sees it (encoder applied, no dropout): ``[num_tokens, dim]``."""
        return self.encoder(self.weight) if self.encoder is not None else self.weight

    def forward(self, batch_size: int | None = None) -> torch.Tensor:
        """``[num_tokens, dim]``, or ``[batch_size, num_tokens, dim]`` (a broadcast view) when given."""
        x = self.dropout(self.embeddings())
        return x if batch_size is None else x.unsqueeze(0).expand(batch_size, -1, -1)

    def fold(self) -> None:
        """Replaces the reparameterisation encoder by the embeddings it produces (lossless for inference)."""
        if self.encoder is None:
            return
        # Same call as folded_state() (grad mode on): LSTM kernels differ in the last bit under no_grad.
        folded = self.folded_state()["weight"].clone()
        self.encoder = None
        self.weight = nn.Parameter(folded, requires_grad=self.weight.requires_grad)

    def folded_state(self) -> dict[str, torch.Tensor]:
        """The state a prompt file holds: the plain embeddings (encoder folded in), whatever the training form."""
        return {"weight": self.embeddings().detach()}

    def extra_repr(self) -> str:
        return f"num_tokens={self.num_tokens}, dim={self.dim}, reparam={self.encoder.kind if self.encoder else None}"


class DeepSoftPrompt(OnePromptSet, nn.Module):
    """One prompt per layer: a parameter of shape ``[num_layers, num_tokens, dim]`` (VPT-deep, P-Tuning v2)."""

    def __init__(
        self,
        num_layers: int,
        num_tokens: int,
        dim: int,
        init: str = "normal",
        dropout: float = 0.0,
        **init_kwargs,
    ) -> None:
        super().__init__()
        _check_sizes(num_layers=num_layers, num_tokens=num_tokens, dim=dim)
        self.num_layers, self.num_tokens, self.dim = num_layers, num_tokens, dim
        self.weight = nn.Parameter(torch.empty(num_layers, num_tokens, dim))
        init_prompt_(self.weight, init, **init_kwargs)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def embeddings(self) -> torch.Tensor:
        return self.weight

    def forward(self, layer: int | None = None) -> torch.Tensor:
        """Layer ``layer``'s prompt ``[num_tokens, dim]``, or all of them ``[num_layers, num_tokens, dim]``."""
        x = self.weight if layer is None else self.weight[layer]
        return self.dropout(x)

    def folded_state(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight.detach()}

    def extra_repr(self) -> str:
        return f"num_layers={self.num_layers}, num_tokens={self.num_tokens}, dim={self.dim}"


class _BankGather(torch.autograd.Function):
    """``weight[task_ids]`` whose backward adds the rows with ``index_add_``: on the CPU it adds them one after
    another in batch order, so the gradient is bitwise the same at a fixed thread count (the accumulating
    ``index_put_`` behind ``weight[task_ids]`` sums repeated task ids in a thread-dependent order)."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(task_ids)
        ctx.num_tasks = weight.shape[0]
        return weight.index_select(0, task_ids)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (task_ids,) = ctx.saved_tensors
        return grad.new_zeros(ctx.num_tasks, *grad.shape[1:]).index_add_(0, task_ids, grad), None


class PromptBank(nn.Module):
    """Prompts for ``num_tasks`` tasks, chosen per sample by ``task_ids`` so one batch can mix tasks.

    The parameter has shape ``[num_tasks, *prompt_shape]``; ``prompt_shape`` is ``(num_tokens, dim)`` for shallow
    prompts or ``(num_layers, num_tokens, dim)`` for deep ones.
    """

    def __init__(
        self,
        num_tasks: int,
        prompt_shape: tuple[int, ...],
        init: str = "normal",
        dropout: float = 0.0,
        **init_kwargs,
    ) -> None:
        super().__init__()
        _check_sizes(num_tasks=num_tasks, **{f"prompt_shape[{i}]": s for i, s in enumerate(prompt_shape)})
        if len(prompt_shape) not in (2, 3):
            raise UserError(f"prompt_shape must be (num_tokens, dim) or (num_layers, num_tokens, dim), got {prompt_shape}")
        self.num_tasks, self.prompt_shape = num_tasks, tuple(prompt_shape)
        self.weight = nn.Parameter(torch.empty(num_tasks, *prompt_shape))
        init_prompt_(self.weight, init, **init_kwargs)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def check_task_ids(self, task_ids: torch.Tensor | None) -> None:
        if task_ids is None:
            raise UserError(f"this prompt bank holds {self.num_tasks} task prompts; give task_ids [batch] (one task per sample)")
        if task_ids.dtype not in (torch.int32, torch.int64) or task_ids.dim() != 1:
            raise UserError(f"task_ids must be a 1-D integer tensor, got {task_ids.dtype} of shape {tuple(task_ids.shape)}")
        if task_ids.numel() and (int(task_ids.min()) < 0 or int(task_ids.max()) >= self.num_tasks):
            raise UserError(
                f"task_ids must lie in [0, {self.num_tasks - 1}] for a bank of {self.num_tasks} tasks, "
                f"found {int(task_ids.min())}..{int(task_ids.max())}"
            )

    def forward(self, task_ids: torch.Tensor) -> torch.Tensor:
        """``[batch, *prompt_shape]``: each sample's task prompt (its gradient is bitwise reproducible on the CPU
        at a fixed thread count)."""
        self.check_task_ids(task_ids)
        return self.dropout(_BankGather.apply(self.weight, task_ids))

    def table(self) -> torch.Tensor:
        """``[num_tasks, *prompt_shape]``: every task's prompt."""
        return self.dropout(self.weight)

    def for_batch(self, task_ids: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        """``[batch, *prompt_shape]``: each sample's task prompt (``task_ids [batch]`` is required)."""
        return self(task_ids)

    def used_table(self, task_ids: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``([k, *prompt_shape], rows [batch])``: the ``k`` distinct task prompts the batch uses, and each sample's
        row among them."""
        self.check_task_ids(task_ids)
        used, rows = torch.unique(task_ids, return_inverse=True)
        return self.dropout(self.weight[used]), rows

    def folded_state(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight.detach()}

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, prompt_shape={self.prompt_shape}"
