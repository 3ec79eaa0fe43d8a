"""Padding-free packed batches for decoder-only models: the examples of a padded batch run as one row.

A padded batch ``[B, L]`` spends the layers' work on its padding (Rotten Tomatoes' reviews run from a few tokens to
about 60, so most of a batch padded to its longest is padding). Packed, the real tokens of the examples are put one
example after another in a few rows (:func:`pack_rows`; as long as the longest example, or longer where that leaves
fewer slots unused for little more attention, :func:`row_width`), each example with its own
prompt in front and its own positions restarting at 0, and attention kept within each example; the LM head runs on
the positions a loss or a score reads only. Each example then gives the numbers it gives in the padded batch (the reference path, kept in
:mod:`textpt.model`), as tests prove in float64.

The model still takes padded batches (the collators of :mod:`textpt.tasks` are unchanged): it packs them itself, so
training, evaluation, scoring and prediction all run packed without a second batch format. Two routes, as the
padded path has them:

- shallow prompts concatenated to the embeddings (prompt tuning and P-tuning with ``fast: off`` or on a GPU, DePT,
  the prompt-less baselines): a row is ``[P, x_1, P, x_2, ...]`` with position ids ``0..n+len_i-1`` per
  example;
- a key/value prefix (the shared-prompt fast path, prefix tuning): a row is ``[x_1, x_2, ...]`` after one copy of
  each task's prefix in the cache (one copy in all without a prompt bank), positions from ``n``.

Both pass the block-diagonal causal mask as a 4-D mask (:func:`block_causal_mask`; transformers' mask functions
return a 4-D mask as given): each example sees its own task's prefix and its own earlier tokens. transformers
(read against 5.25, ``masking_utils.find_packed_sequence_indices``) would derive the block-diagonal mask from
restarting position ids itself, but only with no mask and no cache given, and only in the models that hand their
``position_ids`` to ``create_causal_mask`` (OPT does not: its packed tokens would see the examples before them), so
the mask is built here for every model alike.

Where packing would not be exact, the padded path runs (:func:`packing_problem` says why): encoder and
encoder-decoder tasks (their batches stay padded), attention implementations other than ``sdpa`` and ``eager``,
models with sliding-window, chunked or hybrid layers, models whose masks are not built by transformers'
``masking_utils`` or that take no ``position_ids``, and methods that place their prompt their own way. There
:func:`length_grouped_order` (``data.group_by_length``) cuts the padding instead, by batching rows of similar
length together.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from promptcore.batches import epoch_generator

from .config import PackingMode

if TYPE_CHECKING:
    from .model import TextPromptedModel



ATTENTION_IMPLEMENTATIONS: tuple[str, ...] = ("sdpa", "eager")
"""The attention implementations that take the packed masks (a 4-D boolean mask for ``sdpa``, an additive float one
for ``eager``)."""


def packing_problem(model: "TextPromptedModel") -> str | None:
    """Why ``model`` cannot run packed batches exactly, in a few words; None when it can."""
    from .model import TextPromptedModel

    if not model.strategy.decoder_only:
        return f"packing runs decoder-only models (causal_lm) and this one is {model.task}, whose batches stay padded"
    for name in ("forward_concat", "forward_with_prefix", "token_logits", "last_token_logits"):
        if getattr(type(model), name) is not getattr(TextPromptedModel, name):
            return f"method {model.method or type(model).__name__} places its prompt its own way ({type(model).__name__}.{name})"
    backbone = model.backbone
    config = backbone.config.get_text_config(decoder=True)
    implementation = getattr(backbone.config, "_attn_implementation", None)
    if implementation not in ATTENTION_IMPLEMENTATIONS:
        return (
            f"the model's attention implementation is {implementation!r}; packed masks are built for "
            f"{' and '.join(ATTENTION_IMPLEMENTATIONS)} (load the model with attn_implementation='sdpa')"
        )
    layer_types = getattr(config, "layer_types", None)
    local = [t for t in layer_types if t != "full_attention"] if layer_types is not None else None
    if local or (layer_types is None and getattr(config, "sliding_window", None) is not None) or getattr(config, "attention_chunk_size", None):
        return f"{type(backbone).__name__} has sliding-window, chunked or other local attention layers, which a packed mask does not follow"
    decoder = backbone.base_model
    if not hasattr(sys.modules.get(type(decoder).__module__), "create_causal_mask"):
        return f"{type(decoder).__name__} does not build its masks with transformers' masking_utils"
    if "position_ids" not in _parameters(backbone):
        return f"{type(backbone).__name__} takes no position_ids, which a packed row needs"
    return None


def _parameters(module: torch.nn.Module) -> set[str]:
    import inspect

    return set(inspect.signature(module.forward).parameters)


@dataclass
class PackedRows:
    """Where a padded batch's examples sit in packed rows ``[R, W]``; slots are numbered over the flattened rows.

    Attributes:
        dest: ``[B * n + N]`` the slot of each source row of ``cat([prompt rows [B * n], real tokens [N]])`` (real
            tokens in the padded batch's row-major order, ``input_ids[attention_mask.bool()]``).
        positions: ``[R, W]`` position ids, restarting for each example (0 in the unused slots at a row's end).
        sequence: ``[R, W]`` the example each slot belongs to; an unused slot has a number of its own, ``B`` or more.
        tokens: ``[N]`` the slot of each real token.
        last: ``[B]`` the slot of each example's last real token.
    """

    dest: torch.Tensor
    positions: torch.Tensor
    sequence: torch.Tensor
    tokens: torch.Tensor
    last: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        """``(R, W)``: packed rows and their length."""
        return tuple(self.positions.shape)


ROW_WIDTHS: tuple[float, ...] = (1, 1.25, 1.5, 2, 3, 4)
"""The row lengths :func:`row_width` tries, in multiples of the longest example."""


def first_fit(sizes: Sequence[int], width: int) -> tuple[list[int], int]:
    """``(start, rows)``: examples of ``sizes`` slots put first-fit, longest first, into rows of ``width`` slots
    (``width`` at least the largest size); ``start[i]`` is the slot where example ``i`` begins, counted over the
    rows."""
    fill: list[int] = []
    start = [0] * len(sizes)
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        row = next((r for r, used in enumerate(fill) if used + sizes[i] <= width), len(fill))
        if row == len(fill):
            fill.append(0)
        start[i] = row * width + fill[row]
        fill[row] += sizes[i]
    return start, max(len(fill), 1)


def row_width(sizes: Sequence[int], key_cost: float) -> int:
    """The row length that packs examples of ``sizes`` slots at the least cost, among :data:`ROW_WIDTHS`.

    A row of ``W`` slots costs ``W * (1 + W * key_cost)``: each slot's work outside attention, plus attention over
    the ``W`` keys of its row (masked ones too: ``sdpa`` and ``eager`` compute every pair), ``key_cost`` being one
    key's cost against the rest of a slot's work (:func:`attention_key_cost`). Rows longer than the longest
    example leave fewer slots unused at their ends (examples with their own prompt copies rarely fit two to a row
    as long as the longest), at more attention per slot.
    """
    longest = max(sizes, default=0)
    widths = sorted({int(longest * k) for k in ROW_WIDTHS})
    return min(widths, key=lambda w: first_fit(sizes, w)[1] * w * (1 + w * key_cost))


def attention_key_cost(backbone: torch.nn.Module) -> float:
    """What attention over one more key costs a token, against the rest of its work in a layer: ``4 * hidden``
    multiply-adds (scores and weighted values) against ``2 *`` the layer's weights (:func:`row_width`)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    layer = next((m for m in backbone.modules() if isinstance(m, GradientCheckpointingLayer)), None)
    if layer is None:
        return 0.0
    hidden = backbone.config.get_text_config(decoder=True).hidden_size
    return 2 * hidden / max(sum(p.numel() for p in layer.parameters()), 1)


def pack_rows(attention_mask: torch.Tensor, num_prompt: int, first_position: int = 0, key_cost: float | None = None) -> PackedRows:
    """The layout of a padded batch packed into rows, each example ``num_prompt`` prompt slots then its real
    tokens, with positions counted from ``first_position`` (the length of a key/value prefix before the row).

    The examples go into the rows first-fit, longest first. Without ``key_cost`` the rows are as long as the
    longest example: attention, which runs over every pair of slots in a row, then costs at most what the padded
    batch's does, while the layers' other work runs on the examples' slots and the few unused ones at the rows'
    ends. With ``key_cost`` (:func:`attention_key_cost`) the row length is the cheapest of :func:`row_width`'s.
    The examples' lengths are read back to the host once (the rows are laid out there).
    """
    mask = attention_mask.bool()
    b, device = mask.shape[0], mask.device
    lengths = mask.sum(1) + num_prompt
    sizes = lengths.tolist()
    width = max(sizes, default=0) if key_cost is None else row_width(sizes, key_cost)
    start, rows = first_fit(sizes, width)
    starts = torch.tensor(start, dtype=torch.long, device=device)
    rank = mask.long().cumsum(1) - 1
    example = torch.arange(b, device=device).unsqueeze(1).expand_as(mask)[mask]
    token_rank = rank[mask]
    tokens = starts[example] + num_prompt + token_rank
    prompt_slots = (starts.unsqueeze(1) + torch.arange(num_prompt, device=device)).flatten()
    slots = rows * width
    positions = torch.zeros(slots, dtype=torch.long, device=device)
    positions[prompt_slots] = first_position + torch.arange(num_prompt, device=device).repeat(b)
    positions[tokens] = first_position + num_prompt + token_rank
    sequence = b + torch.arange(slots, device=device)
    sequence[prompt_slots] = torch.arange(b, device=device).repeat_interleave(num_prompt)
    sequence[tokens] = example
    return PackedRows(torch.cat([prompt_slots, tokens]), positions.view(rows, width), sequence.view(rows, width), tokens, starts + lengths - 1)


def block_causal_mask(
    sequence: torch.Tensor, prefix_group: torch.Tensor | None = None, num_prefix: int = 0, *, dtype: torch.dtype
) -> torch.Tensor:
    """The 4-D mask ``[R, 1, W, G * num_prefix + W]`` of packed rows (``sequence``: :attr:`PackedRows.sequence`),
    after ``G`` prefixes of ``num_prefix`` keys each when ``prefix_group`` (each example's group) is given: a slot
    sees the prefix of its example's group and the earlier slots of its own example; an unused slot sees itself
    only. With ``dtype=torch.bool``: True where attention goes (what ``sdpa`` takes, and what transformers' own
    ``sdpa`` masks are: no float mask to fill and read); with a float dtype: 0 where attention goes, the dtype's
    minimum elsewhere (what ``eager`` adds to the scores)."""
    w = sequence.shape[1]
    slots = torch.arange(w, device=sequence.device)
    allowed = (sequence.unsqueeze(2) == sequence.unsqueeze(1)) & (slots.unsqueeze(1) >= slots.unsqueeze(0))
    if prefix_group is not None and num_prefix:
        b = prefix_group.numel()
        column_group = torch.arange(int(prefix_group.max()) + 1, device=sequence.device).repeat_interleave(num_prefix)
        group = torch.where(sequence < b, prefix_group[sequence.clamp(max=b - 1)], -1)
        allowed = torch.cat([group.unsqueeze(2) == column_group, allowed], dim=2)
    if dtype == torch.bool:
        return allowed.unsqueeze(1)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=sequence.device).masked_fill(~allowed, torch.finfo(dtype).min)
    return mask.unsqueeze(1)


def mask_dtype(backbone: torch.nn.Module, dtype: torch.dtype) -> torch.dtype:
    """The dtype of :func:`block_causal_mask` for ``backbone``'s attention: boolean for ``sdpa``, ``dtype`` (the
    model's float dtype) for ``eager``, which adds the mask to its scores."""
    return torch.bool if getattr(backbone.config, "_attn_implementation", None) == "sdpa" else dtype


def task_groups(task_ids: torch.Tensor | None, batch_size: int, device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor]:
    """``(tasks, group)``: the distinct task ids of a batch (None without ``task_ids``: one group) and each example's
    index into them, so a prefix is computed once per task in the batch."""
    if task_ids is None:
        return None, torch.zeros(batch_size, dtype=torch.long, device=device)
    tasks, group = torch.unique(task_ids, return_inverse=True)
    return tasks, group


def length_grouped_order(lengths: Sequence[int], batch_size: int, seed: int, group: int = 50) -> Callable[[int], list[int]]:
    """A batch-order hook (``Trainer(batch_order=...)``) that puts rows of similar length in the same batch, as
    transformers' ``group_by_length`` does: each epoch's seeded permutation (:func:`promptcore.batches.epoch_generator`,
    the trainer's own draw) is cut into buckets of ``batch_size * group`` rows, each sorted longest first, so a batch
    takes rows of one bucket and pads to a length close to theirs. The order is a function of ``(seed, epoch)``
    only, as a resumed run needs.

    Args:
        lengths: each row's length (its token count).
        batch_size: the rows of a batch (the trainer's global batch).
        seed: the run's seed (``train.seed``).
        group: batches per bucket: more gives closer lengths and less randomness within an epoch.
    """
    sizes = torch.as_tensor(list(lengths), dtype=torch.long)
    bucket = max(1, batch_size * group)

    def order(epoch: int) -> list[int]:
        rows = torch.randperm(sizes.numel(), generator=epoch_generator(seed, epoch))
        parts = [part[torch.sort(sizes[part], descending=True, stable=True).indices] for part in rows.split(bucket)]
        return torch.cat(parts).tolist() if parts else []

    return order


__all__ = [
    "ATTENTION_IMPLEMENTATIONS",
    "PackedRows",
    "PackingMode",
    "ROW_WIDTHS",
    "attention_key_cost",
    "block_causal_mask",
    "first_fit",
    "length_grouped_order",
    "mask_dtype",
    "pack_rows",
    "packing_problem",
    "row_width",
    "task_groups",
]
