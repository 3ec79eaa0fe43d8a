"""The CLIP text side of prompt learning: a view of an open_clip text tower, the token layout of the class
prompts, and two exactly equal encoders.

**Reference path** (:meth:`TextTower.encode_reference`): every class prompt is a full ``context_length`` (77)
sequence run through open_clip's own blocks with its causal mask, pooled at the end token, as ``encode_text``
does.

**Fast path** (:meth:`TextTower.encode_shared_prefix`): CLIP's text transformer is causal, so the hidden states of
the first ``P`` tokens never depend on what follows. When ``[SOS, context, fixed words]`` comes before the class name
(CoOp, CoCoOp and KgCoOp with a shared context and the name at the end; MaPLe, IVLP and PromptSRC, whose deep
prompts sit in that prefix),
the prefix is run once per step (once per image for CoCoOp) and only the class-name tokens, the period and the
end token run per class, attending to the prefix's keys and values. Nothing past the longest prompt's end token is
computed, and in the last layer only the end token (the pooled one) is. With the name in the middle or front, or
class-specific context, the shared prefix is just ``SOS`` (plus half the context for ``middle``), and the path
still skips the padding. The attention is written with the block's own weights (``attn.in_proj_*``,
``attn.out_proj``, ``ln_1``, ``ls_1``, ``ln_2``, ``mlp``, ``ls_2``); it applies to open_clip's default
``ResidualAttentionBlock`` (``nn.MultiheadAttention``, every CLIP in open_clip's model list without custom
attention) under a causal mask. :meth:`TextTower.fast_path_issue` says why it does not apply otherwise, and the
models fall back to the reference path (``text_path: auto``).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from promptcore.distributed import call_through
from promptcore.errors import UserError

from .tokens import SpecialTokens, Tokenizer, check_distinct_token_ids, prompt_name, text_token_ids

_POOLS_AT_END_TOKEN = ("argmax", "eos")


class TextTower:
    """A read-only view of an open_clip text tower: ``CLIP`` keeps it on the model itself, ``CustomTextCLIP`` in
    ``model.text`` (a ``TextTransformer``). Every size is read from the modules; attributes are looked up on each
    use so that ``model.to(...)`` (which replaces buffers) is always seen.

    Raises:
        ValueError: a text tower that is not open_clip's own transformer (a Hugging Face text encoder), one with a
            CoCa class token, or one that does not pool at the end token.
    """

    def __init__(self, model: nn.Module) -> None:
        text = getattr(model, "text", None)
        self.src = text if isinstance(text, nn.Module) else model
        missing = [a for a in ("token_embedding", "positional_embedding", "transformer", "ln_final") if not hasattr(self.src, a)]
        if missing:
            raise UserError(
                f"the text tower {type(self.src).__name__} lacks {missing}: CLIP prompt methods need open_clip's own "
                f"text transformer (CLIP or CustomTextCLIP with a TextTransformer), not a Hugging Face text encoder"
            )
        if getattr(self.src, "cls_emb", None) is not None:
            raise UserError("the text tower appends a CoCa class token (embed_cls); CLIP prompt methods need a tower pooled at the end token")
        if not getattr(self.transformer, "batch_first", True):
            raise UserError("the text transformer is not batch_first; open_clip >= 2.24 builds batch_first towers")
        if self.pool_type not in _POOLS_AT_END_TOKEN:
            raise UserError(
                f"the text tower pools with {self.pool_type!r}; CLIP prompt methods need pooling at the end token "
                f"({' or '.join(_POOLS_AT_END_TOKEN)}), as CLIP does"
            )

    # ----- modules and sizes, read from the model ----------------------------------------------------------------
    @property
    def token_embedding(self) -> nn.Embedding:
        return self.src.token_embedding

    @property
    def positional_embedding(self) -> torch.Tensor:
        return self.src.positional_embedding

    @property
    def transformer(self) -> nn.Module:
        return self.src.transformer

    @property
    def blocks(self) -> nn.ModuleList:
        return self.src.transformer.resblocks

    @property
    def attn_mask(self) -> torch.Tensor | None:
        return self.src.attn_mask

    @property
    def pool_type(self) -> str:
        return getattr(self.src, "text_pool_type", None) or self.src.pool_type

    @property
    def width(self) -> int:
        return self.token_embedding.weight.shape[1]

    @property
    def context_length(self) -> int:
        return self.positional_embedding.shape[0]

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    @property
    def embed_dim(self) -> int:
        proj = self.src.text_projection
        if proj is None:
            return self.width
        return proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1]

    @property
    def cast_dtype(self) -> torch.dtype:
        return self.transformer.get_cast_dtype()

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """The pooled end-token features after ``ln_final`` -> the joint embedding (``text_projection``)."""
        proj = self.src.text_projection
        if proj is None:
            return pooled
        return proj(pooled) if isinstance(proj, nn.Linear) else pooled @ proj

    # ----- the fast path's conditions ---------------------------------------------------------------------------
    def fast_path_issue(self) -> str | None:
        """Why the shared-prefix path does not apply to this tower, or None when it does."""
        mask = self.attn_mask
        if mask is None:
            return "the text tower has no causal mask (no_causal_mask), so every token sees the class name"
        n = mask.shape[-1]
        upper = torch.ones(n, n, dtype=torch.bool, device=mask.device).triu(1)
        if mask.dim() != 2 or not torch.equal(torch.isneginf(mask), upper) or bool(mask[~upper].any()):
            return "the text tower's attention mask is not CLIP's causal mask"
        for i, block in enumerate(self.blocks):
            attn = getattr(block, "attn", None)
            if not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim or not attn.batch_first:
                return f"text block {i} ({type(block).__name__}) does not use open_clip's default nn.MultiheadAttention block"
            if attn.dropout > 0 or hasattr(block, "ln_1_kv"):
                return f"text block {i} has attention dropout or cross-attention"
        return None

    # ----- the two encoders -------------------------------------------------------------------------------------
    def encode_reference(
        self, embeds: torch.Tensor, eot: torch.Tensor, deep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Plain path: full sequences through open_clip's blocks with its causal mask.

        Args:
            embeds: token embeddings ``[N, context_length, width]`` (prompts in place, no positions added).
            eot: end-token position of each sequence ``[N]``.
            deep: ``[J - 1, n, width]`` deep prompts that replace positions ``1 .. n`` before layers ``1 .. J-1``
                (MaPLe / IVLP), or None.

        Returns:
            ``[N, embed_dim]`` text features (not normalised).
        """
        x = embeds.to(self.cast_dtype) + self.positional_embedding.to(self.cast_dtype)
        mask = self.attn_mask
        for i, block in enumerate(self.blocks):
            if deep is not None and 1 <= i <= deep.shape[0]:
                n = deep.shape[1]
                x = torch.cat([x[:, :1], deep[i - 1].to(x.dtype).expand(x.shape[0], -1, -1), x[:, 1 + n :]], 1)
            x = block(x, attn_mask=mask)
        x = self.src.ln_final(x)
        return self.project(x[torch.arange(x.shape[0], device=x.device), eot])

    def encode_shared_prefix(
        self,
        prefix: torch.Tensor,
        suffix: torch.Tensor,
        eot: torch.Tensor,
        deep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Fast path: a shared prefix run once per group, the per-class suffixes attending to it.

        Args:
            prefix: ``[G, P, width]`` embeddings of the first ``P`` tokens, the same for every class of a group
                (G = 1 for CoOp, the images of the batch for CoCoOp).
            suffix: ``[C, S, width]`` or ``[G, C, S, width]``: tokens ``P .. P+S-1`` of each class prompt, S reaching
                the longest prompt's end token.
            eot: ``[C]`` end-token positions in the full prompt (``P <= eot < P + S``).
            deep: as in :meth:`encode_reference`; the replaced positions must lie in the prefix.

        Returns:
            ``[G, C, embed_dim]`` text features, equal to :meth:`encode_reference` on the full prompts.
        """
        dtype = self.cast_dtype
        G, P, _ = prefix.shape
        C, S = suffix.shape[-3], suffix.shape[-2]
        if deep is not None and 1 + deep.shape[1] > P:
            raise ValueError(f"deep prompts replace positions 1..{deep.shape[1]} but the shared prefix has {P} tokens")
        pos = self.positional_embedding.to(dtype)
        p = prefix.to(dtype) + pos[:P]  # [G, P, D]
        s = suffix.to(dtype) + pos[P : P + S]  # [(G,) C, S, D]
        device = p.device
        causal = torch.ones(S, S, dtype=torch.bool, device=device).tril()
        causal_p = torch.ones(P, P, dtype=torch.bool, device=device).tril()
        everything = torch.ones(1, dtype=torch.bool, device=device)
        end = (eot - P).to(device)  # [C] end token index within the suffix
        last = self.num_layers - 1

        def layer(i: int, block: nn.Module, p: torch.Tensor, s: torch.Tensor) -> Any:
            attn = block.attn
            H = attn.num_heads
            qp, kp, vp = _heads(F.linear(block.ln_1(p), attn.in_proj_weight, attn.in_proj_bias), H)  # [G, H, P, hd]
            qs, ks, vs = _heads(F.linear(block.ln_1(s), attn.in_proj_weight, attn.in_proj_bias), H)  # [(G,) C, H, S, hd]
            if i == last:
                # Only the end token is pooled: its query alone, then its residual stream.
                idx = end.view(C, 1, 1, 1).expand(*qs.shape[:-2], 1, qs.shape[-1])
                qs = torch.take_along_dim(qs, idx, dim=-2)  # [(G,) C, H, 1, hd]
                mask_s = (torch.arange(S, device=device).view(1, S) <= end.view(C, 1)).view(C, 1, 1, S)
                s = s[..., torch.arange(C, device=device), end, :].unsqueeze(-2)  # [(G,) C, 1, D]
            else:
                mask_s = causal
                p = _residual(block, p, _attend(qp, [(kp, vp, causal_p)], attn))
            kp5, vp5 = kp.unsqueeze(1), vp.unsqueeze(1)  # [G, 1, H, P, hd]: broadcast over the classes
            s = _residual(block, s, _attend(qs, [(kp5, vp5, everything), (ks, vs, mask_s)], attn))
            return s if i == last else (p, s)

        for i, block in enumerate(self.blocks):
            if deep is not None and 1 <= i <= deep.shape[0]:
                n = deep.shape[1]
                p = torch.cat([p[:, :1], deep[i - 1].to(dtype).expand(G, -1, -1), p[:, 1 + n :]], 1)
            # One call of the block per layer: hooks on it (FSDP gathering its sharded weights) run around its work.
            out = call_through(block, lambda p_, s_, i_=i, b=block: layer(i_, b, p_, s_), p, s)
            if i == last:
                s = out
            else:
                p, s = out
        s = s.squeeze(-2).expand(G, C, -1)
        return self.project(self.src.ln_final(s))


def _heads(qkv: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[..., T, 3D]`` -> q, k, v, each ``[..., heads, T, D / heads]`` (nn.MultiheadAttention's packed layout)."""
    x = qkv.unflatten(-1, (3, heads, -1)).movedim(-3, 0)  # [3, ..., T, heads, hd]
    q, k, v = x.transpose(-3, -2).unbind(0)
    return q, k, v


def _attend(q: torch.Tensor, parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], attn: nn.MultiheadAttention) -> torch.Tensor:
    """Softmax attention of ``q`` over several key/value blocks, as if they were concatenated along the keys
    (the shared prefix's keys and values are broadcast over the classes, never copied).

    Args:
        q: ``[..., heads, T, hd]``.
        parts: ``(k, v, mask)`` triples; ``k``, ``v`` broadcast against ``q``; ``mask`` is a boolean "may attend"
            mask broadcast over that block's scores.
        attn: the block's attention module (its ``out_proj`` is applied).

    Returns:
        ``[..., T, D]``.
    """
    scale = q.shape[-1] ** -0.5
    scores = [((q * scale) @ k.transpose(-1, -2)).masked_fill(~mask, float("-inf")) for k, _, mask in parts]
    shape = torch.broadcast_shapes(*(sc.shape[:-1] for sc in scores))
    weights = torch.cat([sc.expand(*shape, sc.shape[-1]) for sc in scores], -1).softmax(-1)
    out, start = 0, 0
    for (_, v, _), sc in zip(parts, scores):
        out = out + weights[..., start : start + sc.shape[-1]] @ v
        start += sc.shape[-1]
    return attn.out_proj(out.transpose(-3, -2).flatten(-2))


def _residual(block: nn.Module, x: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
    """The rest of open_clip's ``ResidualAttentionBlock.forward`` after the attention: layer scale, residual, MLP."""
    x = x + block.ls_1(attn_out)
    return x + block.ls_2(block.mlp(block.ln_2(x)))


class PromptLayout(nn.Module):
    """Token layout of the class prompts ``[SOS, context, fixed words, class name, '.', EOT, padding]``.

    The tokens are those of the official prompt text ``ctx_init + " " + name + "."`` (``X X .. X name.`` without an
    initialisation), tokenised as the official code does, with the first ``n_ctx`` tokens after SOS left as slots
    for the learned context. ``words`` are the tokens of ``ctx_init`` past the first ``n_ctx``: they stay fixed
    (MaPLe with ``n_ctx: 2`` and ``"a photo of a"`` reads ``[SOS] ctx1 ctx2 of a {name}.``). The class name and
    its period are tokenised together, as in the official text; with the name in the middle or at the front the
    context goes after the name's own tokens (CoOp's ``name_lens``). Underscores in class names read as spaces
    (:func:`vpt.clip.tokens.prompt_name`).

    Buffers (derived, not saved): ``ids`` ``[C, context_length]`` (context slots hold the padding id, their
    embeddings are replaced), ``ctx_pos`` ``[C, n_ctx]`` where the context goes, ``eot`` ``[C]``.
    ``shared`` is how many leading tokens are the same for every class (the fast path's prefix: SOS, the context
    and the fixed words when the name is at the end).

    Args:
        tokenizer, special: the text tower's tokenizer and its start/end ids.
        class_names: one per class.
        n_ctx: context tokens (0 for none).
        position: class name ``end``, ``middle`` or ``front``.
        context_length: the text tower's context length.
        shared_context: one context for all classes (False: class-specific).
        words: fixed token ids between the context and the class name (``end`` only).

    Raises:
        ValueError: a class whose prompt does not fit in ``context_length`` (the message names it), or fixed
            words with the name elsewhere than at the end.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        special: SpecialTokens,
        class_names: Sequence[str],
        n_ctx: int,
        position: str,
        context_length: int,
        shared_context: bool = True,
        words: Sequence[int] = (),
    ) -> None:
        super().__init__()
        names = list(class_names)
        texts = [prompt_name(n) for n in names]
        name_ids = text_token_ids(tokenizer, texts, special, names)
        check_distinct_token_ids(names, name_ids)
        tails = text_token_ids(tokenizer, [t + "." for t in texts], special, names)
        words = list(words)
        if words and position != "end":
            raise UserError(
                f"ctx_init: its words past the first {n_ctx} tokens stay fixed before the class name, which needs "
                f"class_token_position: end (found {position!r}); give ctx_init exactly n_ctx tokens"
            )
        half = n_ctx // 2
        ids, ctx_pos, eot = [], [], []
        for name, tokens, tail in zip(names, name_ids, tails):
            k = len(tokens)
            if position == "end":
                parts = [("c", n_ctx), ("t", words), ("t", tail)]
            elif position == "middle":
                parts = [("c", half), ("t", tail[:k]), ("c", n_ctx - half), ("t", tail[k:])]
            elif position == "front":
                parts = [("t", tail[:k]), ("c", n_ctx), ("t", tail[k:])]
            else:
                raise UserError(f"class_token_position: {position!r} is not one of 'end', 'middle', 'front'")
            row, where = [special.sos], []
            for kind, part in parts:
                if kind == "c":
                    where.extend(range(len(row), len(row) + part))
                    row.extend([special.pad] * part)
                else:
                    row.extend(part)
            row.append(special.eot)
            if len(row) > context_length:
                fixed = f", {len(words)} fixed words" if words else ""
                raise UserError(
                    f"class {name!r}: its prompt needs {len(row)} tokens ({k} for the name, {n_ctx} context{fixed}, "
                    f"start, '.' and end), more than the text tower's context length {context_length}; shorten the "
                    f"class name or use fewer context tokens (n_ctx)"
                )
            ids.append(row + [special.pad] * (context_length - len(row)))
            ctx_pos.append(where)
            eot.append(len(row) - 1)
        self.num_classes, self.n_ctx, self.position, self.words = len(names), n_ctx, position, words
        self.register_buffer("ids", torch.tensor(ids, dtype=torch.long), persistent=False)
        self.register_buffer("ctx_pos", torch.tensor(ctx_pos, dtype=torch.long).view(len(names), n_ctx), persistent=False)
        self.register_buffer("eot", torch.tensor(eot, dtype=torch.long), persistent=False)
        self.max_len = max(eot) + 1
        self.shared = {"end": 1 + n_ctx + len(words), "middle": 1 + half, "front": 1}[position] if shared_context else 1

    def embed(self, token_embedding: nn.Embedding, ctx: torch.Tensor, length: int) -> torch.Tensor:
        """Prompt embeddings ``[G, C, length, width]`` with ``ctx`` (``[G, 1 or C, n_ctx, width]``) in its slots."""
        base = token_embedding(self.ids[:, :length])  # [C, L, D]
        G = ctx.shape[0]
        C, L, D = base.shape
        out = base.to(ctx.dtype).expand(G, C, L, D)
        if self.n_ctx == 0:
            return out
        index = self.ctx_pos.view(1, C, self.n_ctx, 1).expand(G, C, self.n_ctx, D)
        return out.scatter(2, index, ctx.expand(G, C, self.n_ctx, D))

    def encode(
        self,
        tower: TextTower,
        ctx: torch.Tensor,
        fast: bool,
        deep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Text features ``[G, C, embed_dim]`` of every class prompt with context ``ctx`` ``[G, 1 or C, n, width]``.

        ``fast`` picks the shared-prefix path (equal to the reference path; see the module docstring).
        """
        ctx = ctx.to(tower.cast_dtype)
        G, C = ctx.shape[0], self.num_classes
        if not fast:
            embeds = self.embed(tower.token_embedding, ctx, tower.context_length)
            eot = self.eot.repeat(G)
            return tower.encode_reference(embeds.flatten(0, 1), eot, deep).view(G, C, -1)
        P = self.shared
        if ctx.shape[1] == 1 and self.position == "end":
            # All context sits in the prefix (with SOS and the fixed words): the suffix (name, '.', EOT) needs no
            # copy per group.
            fixed = tower.token_embedding(self.ids[:1, :P]).to(ctx.dtype).expand(G, P, -1)
            prefix = torch.cat([fixed[:, :1], ctx[:, 0], fixed[:, 1 + self.n_ctx :]], 1)
            suffix = tower.token_embedding(self.ids[:, P : self.max_len]).to(ctx.dtype)
        else:
            seq = self.embed(tower.token_embedding, ctx, self.max_len)
            prefix, suffix = seq[:, 0, :P], seq[:, :, P:]
        return tower.encode_shared_prefix(prefix, suffix, self.eot, deep)
