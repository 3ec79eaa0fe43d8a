"""Vocabulary-parallel token embedding and LM head for prompt tuning under FSDP2 (``train.fsdp.shard_vocabulary``).

FSDP2 gathers a module's weights whole for its forward. For a language model whose vocabulary matrix is larger
than a transformer block (Qwen2.5-0.5B: 151,936 x 896, a quarter of the model) that gather sets every process's
peak, and the peak hardly falls with more processes. Here each process keeps rows ``[r * V // N, (r + 1) * V // N)``
of the embedding and of the LM head (one tensor when they are tied) and never gathers them; what travels between
the processes is activations, which are small next to the vocabulary.

Each process trains on its own batch, so a process's rows serve every process's tokens:

- :class:`VocabParallelEmbedding`: the token ids of all processes are gathered; each process looks up the ids in
  its rows (zeros for the others) and the looked-up rows are summed over the processes, each keeping its own
  tokens' embeddings (a reduce-scatter). The weights are frozen and ids have no gradient, so nothing flows back.
- :class:`VocabParallelHead`: the hidden states of all processes are gathered and each process computes its
  vocabulary shard of everyone's logits. The loss is computed from the shards (:meth:`VocabParallelHead.log_probs`,
  :meth:`VocabParallelHead.cross_entropy`): the maximum and the sum of exponentials over the vocabulary are
  all-reduced, the target's logit comes from the process that owns its row. Its backward gathers the gradients of
  every process's log-probabilities, each process computes its shard's part of every hidden state's gradient, and
  the parts are summed over the processes, each keeping its own rows: the gradient of the unsharded loss. A
  process holds ``1 / N`` of the vocabulary matrix and logits of the size the unsharded run holds (its shard of
  ``N`` times as many rows); the logits are computed again in the backward rather than kept.
- Whole logits (generation, a user's own forward): :meth:`VocabParallelHead.forward` sends each process its rows'
  logits of every shard (an all-to-all), with a backward.

Every call is a collective: every process must make it (as every forward under FSDP already is). The plain,
unsharded model stays the reference: the launched test (``tests/promptcore/scripts/sharded_loading.py``) checks
the loss, the prompt gradients and the trained prompts against it in float64.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn

from .errors import UserError


def vocabulary_bounds(vocab_size: int, world_size: int) -> list[int]:
    """The first row of each process's shard and the end: process ``r`` keeps rows ``[bounds[r], bounds[r + 1])``."""
    return [r * vocab_size // world_size for r in range(world_size + 1)]


def _row_counts(n: int, device: torch.device) -> list[int]:
    """How many rows each process brings to a collective call."""
    mine = torch.tensor([n], dtype=torch.int64, device=device)
    counts = torch.empty(dist.get_world_size(), dtype=torch.int64, device=device)
    dist.all_gather_single(counts, mine)
    return counts.tolist()


def _gather_rows(x: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """``[N, max(counts), ...]``: every process's rows ``x`` ``[counts[r], ...]``, zero-padded to the longest."""
    padded = x.new_zeros(max(counts), *x.shape[1:])
    padded[: x.shape[0]] = x
    out = x.new_empty(len(counts) * padded.numel())  # flat: gloo takes no stacked output
    dist.all_gather_single(out, padded.reshape(-1))
    return out.view(len(counts), *padded.shape)


def _gather_same(x: torch.Tensor) -> torch.Tensor:
    """``[N, ...]``: ``x`` of every process, all of one shape."""
    return _gather_rows(x.unsqueeze(0), [1] * dist.get_world_size())[:, 0]


def _sum_own_rows(y: torch.Tensor, count: int) -> torch.Tensor:
    """This process's first ``count`` rows of ``y`` ``[N, M, ...]`` summed over the processes (a reduce-scatter)."""
    out = y.new_empty(y[0].numel())
    dist.reduce_scatter_single(out, y.reshape(-1))
    return out.view(y.shape[1:])[:count]


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """Losses in at least float32, as the plain path computes them (``textpt.tasks.upcast``)."""
    return x if x.dtype == torch.float64 else x.float()


def _log_sum_exp(logits: torch.Tensor) -> torch.Tensor:
    """The log-sum-exp over the whole vocabulary of rows whose shards ``logits`` ``[..., V_r]`` every process holds."""
    top = logits.amax(-1)
    dist.all_reduce(top, op=dist.ReduceOp.MAX)
    total = (logits - top.unsqueeze(-1)).exp().sum(-1)
    dist.all_reduce(total)
    return top + total.log()


class _TargetLogProbs(torch.autograd.Function):
    """``log p(targets)`` of this process's rows from the sharded head: ``hidden`` ``[M, D]``, ``targets`` ``[M, K]``
    (ids in the whole vocabulary) give ``[M, K]``. See the module's docstring for the collectives."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, start: int) -> torch.Tensor:
        counts = _row_counts(hidden.shape[0], hidden.device)
        everyone = _gather_rows(hidden, counts)  # [N, M, D]
        wanted = _gather_rows(targets, counts) - start  # [N, M, K], ids in this shard's rows
        raw = everyone @ weight.T
        logits = _upcast(raw)
        lse = _log_sum_exp(logits)
        owned = (wanted >= 0) & (wanted < weight.shape[0])
        picked = logits.gather(-1, wanted.clamp(0, weight.shape[0] - 1)) * owned
        dist.all_reduce(picked)
        ctx.save_for_backward(everyone, weight, wanted, owned, lse)
        # The backward runs outside autocast: it computes the logits again in the dtype autocast gave them.
        ctx.counts, ctx.compute = counts, raw.dtype
        return (picked - lse.unsqueeze(-1))[dist.get_rank(), : hidden.shape[0]]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        everyone, weight, wanted, owned, lse = ctx.saved_tensors
        rank = dist.get_rank()
        grads = _gather_rows(grad.contiguous(), ctx.counts)  # [N, M, K], zero on padding rows
        hidden, rows = everyone.to(ctx.compute), weight.to(ctx.compute)
        # d log p(t) / d logit_v = [v == t] - softmax_v, for this shard's v
        d_logits = (_upcast(hidden @ rows.T) - lse.unsqueeze(-1)).exp_().mul_(-grads.sum(-1, keepdim=True))
        d_logits.scatter_add_(-1, wanted.clamp(0, weight.shape[0] - 1), grads * owned)
        d_hidden = d_logits.to(ctx.compute) @ rows  # this shard's part of every process's rows' gradient
        return _sum_own_rows(d_hidden, ctx.counts[rank]).to(everyone.dtype), None, None, None


class _WholeLogits(torch.autograd.Function):
    """``[M, V]`` whole logits of this process's rows ``hidden`` ``[M, D]``: each process computes its shard of
    every process's rows, and an all-to-all hands each process its rows' shards."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bounds: list[int]) -> torch.Tensor:
        counts = _row_counts(hidden.shape[0], hidden.device)
        widths = [b - a for a, b in zip(bounds, bounds[1:])]
        local = _gather_rows(hidden, counts) @ weight.T  # [N, M, V_r]: this shard, every process's rows
        sent = local.new_zeros(*local.shape[:2], max(widths))
        sent[..., : weight.shape[0]] = local
        received = torch.empty_like(sent)  # [N, M, max V_q]: shard q of this process's rows
        dist.all_to_all_single(received, sent)
        ctx.save_for_backward(weight)
        ctx.counts, ctx.widths, ctx.dtype = counts, widths, hidden.dtype  # the logits may be of autocast's dtype
        m = hidden.shape[0]
        return torch.cat([received[q, :m, :w] for q, w in enumerate(ctx.widths)], dim=-1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (weight,) = ctx.saved_tensors
        counts, widths = ctx.counts, ctx.widths
        sent = grad.new_zeros(len(counts), max(counts), max(widths))
        for q, piece in enumerate(grad.split(widths, dim=-1)):
            sent[q, : grad.shape[0], : widths[q]] = piece
        received = torch.empty_like(sent)  # [N, M, max V]: every process's rows' gradient of this shard's logits
        dist.all_to_all_single(received, sent)
        d_hidden = received[..., : weight.shape[0]] @ weight.to(received.dtype)
        return _sum_own_rows(d_hidden, counts[dist.get_rank()]).to(ctx.dtype), None, None


class _VocabShard(nn.Module):
    """Rows ``[start, stop)`` of a ``[vocab_size, D]`` frozen weight (``weight``: this process's rows)."""

    def __init__(self, weight: nn.Parameter, vocab_size: int, bounds: list[int], rank: int) -> None:
        super().__init__()
        self.weight = weight
        self.vocab_size, self.bounds = vocab_size, bounds
        self.start, self.stop = bounds[rank], bounds[rank + 1]

    def extra_repr(self) -> str:
        return f"rows {self.start}..{self.stop} of {self.vocab_size}, dim {self.weight.shape[1]}"


class VocabParallelEmbedding(_VocabShard):
    """A token embedding sharded by rows over the processes (module docstring); every process calls it."""

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        flat = input_ids.reshape(-1)
        counts = _row_counts(flat.numel(), flat.device)
        ids = _gather_rows(flat, counts)  # [N, M]
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            # every process sees every id, so all of them raise, and none waits in a collective
            raise IndexError(f"token ids {int(ids.min())}..{int(ids.max())} outside the vocabulary of {self.vocab_size}")
        local = ids - self.start
        owned = (local >= 0) & (local < self.weight.shape[0])
        with torch.no_grad():
            rows = self.weight[local.clamp(0, self.weight.shape[0] - 1)] * owned.unsqueeze(-1).to(self.weight.dtype)
            return _sum_own_rows(rows, flat.numel()).view(*input_ids.shape, -1)


class VocabParallelHead(_VocabShard):
    """A bias-free LM head sharded by rows over the processes (module docstring); every process calls it.

    Called, it returns whole logits. A loss computed from the shards reads the hidden states instead: inside
    :meth:`passing_through` the head returns its input, which the model's code after the head selects and reshapes
    as it would the logits; :meth:`log_probs`, :meth:`cross_entropy` and :meth:`argmax` then take those rows.
    """

    def __init__(self, weight: nn.Parameter, vocab_size: int, bounds: list[int], rank: int) -> None:
        super().__init__(weight, vocab_size, bounds, rank)
        self.passes_through = False

    @contextmanager
    def passing_through(self) -> Iterator[None]:
        """Calls of the head return the hidden states they get (the logits are computed from them by the loss)."""
        self.passes_through = True
        try:
            yield
        finally:
            self.passes_through = False

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.passes_through:
            return hidden
        flat = hidden.reshape(-1, hidden.shape[-1])
        return _WholeLogits.apply(flat, self.weight, self.bounds).view(*hidden.shape[:-1], self.vocab_size)

    def log_probs(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``[..., K]``: the log-probabilities of the ids ``targets`` ``[..., K]`` (in the whole vocabulary) under the
        logits of ``hidden`` ``[..., D]``, as ``logits.log_softmax(-1).gather(-1, targets)`` of the whole logits
        (upcast to at least float32)."""
        flat = hidden.reshape(-1, hidden.shape[-1])
        wanted = targets.reshape(flat.shape[0], -1)
        return _TargetLogProbs.apply(flat, self.weight, wanted, self.start).view(targets.shape)

    def cross_entropy(self, hidden: torch.Tensor, targets: torch.Tensor, ignore_index: int, reduction: str = "mean") -> torch.Tensor:
        """``F.cross_entropy`` of the whole logits of ``hidden`` ``[..., D]`` and ``targets`` ``[...]``, positions
        equal to ``ignore_index`` left out (``reduction``: ``mean`` over the others, or ``sum``)."""
        keep = targets != ignore_index
        log_probs = self.log_probs(hidden, targets.masked_fill(~keep, 0).unsqueeze(-1))[..., 0]
        total = -(log_probs * keep).sum()
        return total / keep.sum() if reduction == "mean" else total

    @torch.no_grad()
    def argmax(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[...]``: the id of the largest whole logit of each row of ``hidden`` ``[..., D]`` (the first on a tie,
        as ``torch.argmax``)."""
        flat = hidden.reshape(-1, hidden.shape[-1])
        counts = _row_counts(flat.shape[0], flat.device)
        best, where = (_gather_rows(flat, counts) @ self.weight.T).max(-1)  # [N, M] for this shard
        bests, wheres = _gather_same(best), _gather_same(where + self.start)  # [N shards, N, M]
        rank, m = dist.get_rank(), flat.shape[0]
        shard = bests[:, rank, :m].argmax(0)  # [M], the first shard holding the maximum
        return wheres[:, rank, :m].gather(0, shard.unsqueeze(0))[0].view(hidden.shape[:-1])


def vocabulary_shards(model: nn.Module) -> list[_VocabShard]:
    """The vocabulary-parallel modules in ``model``."""
    return [m for m in model.modules() if isinstance(m, _VocabShard)]


def parallel_head(backbone: nn.Module) -> VocabParallelHead | None:
    """``backbone``'s LM head (``get_output_embeddings()``) when it is sharded by vocabulary, else None."""
    head = backbone.get_output_embeddings() if hasattr(backbone, "get_output_embeddings") else None
    return head if isinstance(head, VocabParallelHead) else None


def check_vocabulary_layers(embedding: nn.Module, head: nn.Module) -> None:
    """Raises a :class:`UserError` naming what stands in the way when ``embedding`` and ``head`` cannot be sharded by
    vocabulary: a plain ``nn.Embedding`` (no padding index renormalisation, no scaling inside the module) and a
    bias-free ``nn.Linear`` of the same ``[V, D]`` shape, with plain (not quantized) float weights."""
    problems = []
    if type(embedding) is not nn.Embedding or embedding.max_norm is not None:
        problems.append(f"the input embedding is a {type(embedding).__name__}, not a plain nn.Embedding")
    if type(head) is not nn.Linear or head.bias is not None:
        problems.append(f"the LM head is a {type(head).__name__}{' with a bias' if getattr(head, 'bias', None) is not None else ''}, not a bias-free nn.Linear")
    if not problems:
        weights = (embedding.weight, head.weight)
        if embedding.weight.shape != head.weight.shape:
            problems.append(f"the embedding {tuple(embedding.weight.shape)} and the head {tuple(head.weight.shape)} differ in shape")
        if any(type(w.detach()) is not torch.Tensor or not w.is_floating_point() for w in weights):
            problems.append("their weights are quantized")
    if problems:
        raise UserError(f"train.fsdp.shard_vocabulary: {'; '.join(problems)}; set train.fsdp.shard_vocabulary: false")


def shard_vocabulary(model: nn.Module, embedding: nn.Embedding, head: nn.Linear, world_size: int, rank: int) -> tuple[VocabParallelEmbedding, VocabParallelHead]:
    """Replaces ``embedding`` and ``head`` (modules of ``model``, checked by :func:`check_vocabulary_layers`)
    wherever ``model`` holds them with their vocabulary-parallel versions holding this process's rows; a tied
    head shares the embedding's rows. Works on the meta device too (a model built for sharded loading)."""
    check_vocabulary_layers(embedding, head)
    vocab = embedding.weight.shape[0]
    bounds = vocabulary_bounds(vocab, world_size)

    def rows(weight: torch.Tensor) -> nn.Parameter:
        return nn.Parameter(weight.detach()[bounds[rank] : bounds[rank + 1]].clone(), requires_grad=False)

    shared = rows(embedding.weight)
    new_embedding = VocabParallelEmbedding(shared, vocab, bounds, rank)
    tied = head.weight is embedding.weight
    new_head = VocabParallelHead(shared if tied else rows(head.weight), vocab, bounds, rank)
    replaced = {id(embedding): new_embedding, id(head): new_head}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if id(child) in replaced:
                setattr(parent, name, replaced[id(child)])
    return new_embedding, new_head


__all__ = [
    "VocabParallelEmbedding",
    "VocabParallelHead",
    "check_vocabulary_layers",
    "parallel_head",
    "shard_vocabulary",
    "vocabulary_bounds",
    "vocabulary_shards",
]
