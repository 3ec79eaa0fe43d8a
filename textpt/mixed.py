"""Mixed batches: rows of one batch run with different, separately trained prompts of one frozen backbone.

Each row names a prompted model (:class:`textpt.model.TextPromptedModel`, e.g. from :func:`textpt.load_prompted`)
and its input's token ids; every model of a batch wraps the same backbone object. Each row gets the output its model
gives alone (:meth:`~textpt.model.TextPromptedModel.class_logits`, :meth:`~textpt.model.TextPromptedModel.generate`),
placed as that model places its prompt:

- causal LMs: one forward for every row. A shallow prompt (prompt tuning, folded P-tuning, DePT) becomes its
  per-layer keys and values, computed once per prompt (the exact shared-prefix arithmetic of
  :mod:`textpt.fast_prefix`); prefix tuning's keys and values are used as they are. Prefixes of different lengths
  are padded to the longest with a key mask, and each row's positions start after its own prefix, so padding
  changes nothing. DePT rows embed their input with its update (:meth:`~textpt.model.TextPromptedModel.embed_inputs`).
  Generation is one decode loop over the whole batch, on a cache that starts with the padded prefixes.
- encoders (``seq_cls``) and encoder-decoders (``seq2seq``): shallow prompts of any length share one forward (each
  row packed as ``[prompt, input]`` with the padding after it, as :meth:`~textpt.model.TextPromptedModel.encode`
  packs it); prefix-tuned rows enter the attention calls (:mod:`textpt.attention_prefix`) and share a forward
  with the prefix rows of the same length. These are the compatible groups a batch is split into.

Heads with different class counts and verbalizers with different words mix: class scores come back as one tensor per
row. :func:`class_scores` and :func:`generate` are the two entry points; :class:`Sampling` is one row's decoding.

:func:`merge_prompts` (``textpt merge-prompts OUT FOLDER...``) makes a prompt bank of single-task folders instead:
one model whose batches carry ``task_ids``, for offline runs of tasks that share the prompt's shape.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from promptcore import PromptFileError
from promptcore.cli import Command, register_command
from promptcore.errors import UserError
from promptcore.files import load_prompt_files, save_prompt_files
from promptcore.fingerprint import FINGERPRINT_KEY

from .attention_prefix import LayerPrefixes, prefixes_during
from .fast_prefix import KeyValues, cache_argument, generation_cache, prefix_cache, prompt_key_values
from .model import TextPromptedModel
from .padding import pack_prompt, pad_token_id, repad
from .prompt_cache import prompt_state_key
from .tasks import label_word_target, pool, upcast


@dataclass
class Sampling:
    """How one row decodes.

    Attributes:
        max_new_tokens: tokens to generate at most.
        temperature: 0 decodes greedily (argmax); above 0 samples from ``softmax(logits / temperature)``.
        top_p: nucleus sampling: the smallest set of tokens whose probability reaches ``top_p`` (1: all).
        seed: seeds the row's own generator (None: a random seed), so a sampled row does not depend on the others.
        stop_ids: tokens that end the row (None: the tokenizer's end-of-sequence token).
        stopped: set by the caller while decoding (a stop string matched) to end the row before its next token.
    """

    max_new_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop_ids: tuple[int, ...] | None = None
    stopped: bool = False


def check_shared_backbone(models: Sequence[TextPromptedModel]) -> nn.Module:
    """The one backbone every model wraps.

    Raises:
        UserError: models of different backbones or tasks, or a prompt bank (a mixed batch names single prompts).
    """
    backbone = models[0].backbone
    for m in models:
        if m.backbone is not backbone:
            raise UserError("a mixed batch runs prompts of one backbone; these models wrap different backbone objects (load each prompt onto the same one)")
        if m.task != models[0].task:
            raise UserError(f"a mixed batch runs prompts of one task; found {models[0].task} and {m.task}")
        if m.num_tasks > 1:
            raise UserError(f"a mixed batch names single prompts; a bank of {m.num_tasks} task prompts runs with task_ids through model.class_logits / generate")
    return backbone


# ----- what each prompt places ---------------------------------------------------------------------------------------
def _distinct(models: Sequence[TextPromptedModel]) -> list[TextPromptedModel]:
    return list({id(m): m for m in models}.values())


def _shallow(model: TextPromptedModel) -> torch.Tensor:
    """``[n, D]``: the model's shallow prompt (``n = 0`` without one)."""
    return model.shallow_prompt(None, 1)[0]


def _is_prefix(model: TextPromptedModel) -> bool:
    """Whether the model's prompt is per-layer keys and values (prefix tuning) rather than embeddings."""
    return model.uses_prefix_cache or bool(model.backbone_kwargs(None, 1))


def forget_prefix(model: TextPromptedModel) -> None:
    """Drops the keys and values :func:`decoder_prefixes` keeps for ``model`` (when its prompt moves device)."""
    model.__dict__.pop("_mixed_prefix", None)


def decoder_prefixes(models: Sequence[TextPromptedModel]) -> dict[int, KeyValues]:
    """Each distinct causal-LM model's per-layer prefix ``[1, heads, n, head_dim]`` (by ``id``): prefix tuning's own
    keys and values, a shallow prompt's computed once (prompts of one length in one call). Models without a
    prompt get none.

    In inference (eval mode, no gradients) a shallow prompt's keys and values are kept on its model and reused by
    later batches while its tensors stay the same ones, unchanged in place
    (:func:`textpt.prompt_cache.prompt_state_key`): a served prompt is computed once, not once per batch. The kept
    values are the ones this function computed, so reuse changes no number."""
    out: dict[int, KeyValues] = {}
    by_length: dict[int, list[TextPromptedModel]] = {}
    for m in _distinct(models):
        if m.uses_prefix_cache:
            out[id(m)] = m.prefix_key_values(None, 1)
        elif m.num_prompt_tokens:
            key, kept = prompt_state_key(m), m.__dict__.get("_mixed_prefix")
            if key is not None and kept is not None and kept[0] == key:
                out[id(m)] = kept[1]
            else:
                by_length.setdefault(m.num_prompt_tokens, []).append(m)
    for group in by_length.values():
        kv = prompt_key_values(group[0].backbone, torch.stack([_shallow(m) for m in group]))
        for t, m in enumerate(group):
            out[id(m)] = [(k[t:t + 1], v[t:t + 1]) for k, v in kv]
            key = prompt_state_key(m)
            if key is not None:  # its own copy: a view would keep the whole group's keys and values alive
                out[id(m)] = [(k.clone(), v.clone()) for k, v in out[id(m)]]
                m.__dict__["_mixed_prefix"] = (key, out[id(m)])
            else:
                forget_prefix(m)
    return out


def pad_prefixes(rows: Sequence[KeyValues | None], num_layers: int, like: KeyValues) -> tuple[KeyValues | None, torch.Tensor]:
    """Per-layer ``[B, heads, n_max, head_dim]`` keys and values, row ``i`` holding its prefix first and zeros after,
    and the key mask ``[B, n_max]`` (1 on each row's real prefix positions); ``(None, [B, 0])`` when no row has one.
    Rows that share a prefix object share its padding (one pad per distinct prefix, then one gather per layer)."""
    lengths = [0 if kv is None else kv[0][0].shape[-2] for kv in rows]
    n = max(lengths)
    k0 = like[0][0]
    mask = (torch.arange(n, device=k0.device) < torch.tensor(lengths, device=k0.device).unsqueeze(1)).long()
    if n == 0:
        return None, mask
    distinct: dict[int, int] = {}
    sources: list[KeyValues | None] = []
    for kv in rows:
        if id(kv) not in distinct:
            distinct[id(kv)] = len(sources)
            sources.append(kv)
    which = torch.tensor([distinct[id(kv)] for kv in rows], device=k0.device)
    empty = k0.new_zeros(1, k0.shape[1], n, k0.shape[3])
    padded = []
    for layer in range(num_layers):
        pair = []
        for j in (0, 1):
            parts = [empty if kv is None else F.pad(kv[layer][j], (0, 0, 0, n - kv[layer][j].shape[-2])) for kv in sources]
            pair.append(torch.cat(parts).index_select(0, which))
        padded.append((pair[0], pair[1]))
    return padded, mask


def embed_rows(models: Sequence[TextPromptedModel], ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, L, D]``: each row's input embedded by its own model: the token embeddings, in one lookup; a model that
    changes them (DePT's update) embeds its own rows."""
    out = models[0].embedding(ids)
    for m in _distinct(models):
        if type(m).embed_inputs is not TextPromptedModel.embed_inputs:
            rows = torch.tensor([i for i, r in enumerate(models) if r is m], device=ids.device)
            out = out.index_copy(0, rows, m.embed_inputs(ids[rows], mask[rows]).to(out.dtype))
    return out


# ----- causal LMs ----------------------------------------------------------------------------------------------------
class DecoderBatch:
    """A causal-LM mixed batch placed for one forward: left-padded inputs after each row's padded prefix.

    Attributes:
        ids / mask: ``[B, L]`` the inputs, left-padded (every row's last token at the end).
        prefix / prefix_mask: the padded per-layer prefixes (None when no row has a prompt) and their key mask.
        start: ``[B, 1]`` the position of each row's first input token (its prefix's length).
    """

    def __init__(self, models: Sequence[TextPromptedModel], rows: Sequence[Sequence[int]]) -> None:
        backbone = check_shared_backbone(models)
        self.models, self.backbone = list(models), backbone
        device = backbone.get_input_embeddings().weight.device
        self.ids, self.mask = repad([list(r) for r in rows], pad_token_id(models[0].tokenizer), "left", device)
        for m in _distinct(models):
            m._check_inputs(self.ids[:1], self.mask[:1], None)
        own = decoder_prefixes(models)
        per_row = [own.get(id(m)) for m in models]
        like = next((kv for kv in per_row if kv is not None), None)
        if like is None:
            self.prefix, self.prefix_mask = None, self.mask.new_zeros(len(rows), 0)
        else:
            self.prefix, self.prefix_mask = pad_prefixes(per_row, len(like), like)
        self.start = self.prefix_mask.sum(1, keepdim=True)

    def forward(self, cache: Any = None, **kwargs: Any) -> Any:
        """The backbone's output over the inputs (``cache``: the prefix cache to extend, else a stateless one)."""
        x = embed_rows(self.models, self.ids, self.mask)
        positions = self.start + (self.mask.long().cumsum(-1) - 1).clamp(min=0)
        if self.prefix is not None:
            kwargs[cache_argument(self.backbone)] = cache if cache is not None else prefix_cache(self.prefix)
            kwargs["use_cache"] = True
        else:
            kwargs.setdefault("use_cache", cache is not None)
            if cache is not None:
                kwargs[cache_argument(self.backbone)] = cache
        return self.backbone(inputs_embeds=x, attention_mask=torch.cat([self.prefix_mask, self.mask], 1), position_ids=positions, **kwargs)


def _decoder_scores(models: Sequence[TextPromptedModel], rows: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """Causal LMs: each row's verbalizer words' summed log-probabilities after its input."""
    items: list[list[int]] = []
    owners: list[TextPromptedModel] = []
    spans: list[tuple[int, int, int]] = []  # (row, class, item) of each scored word
    for r, (m, ids) in enumerate(zip(models, rows)):
        if m.verbalizer_ids is None:
            raise UserError(f"prompt of method {m.method} on a causal LM has no verbalizer: it generates, it does not classify")
        single = all(len(w) == 1 for w in m.verbalizer_ids)
        for c, word in enumerate(m.verbalizer_ids):
            if single and c:
                spans.append((r, c, spans[-1][2]))
                continue
            items.append(list(ids) + ([] if single else word))
            owners.append(m)
            spans.append((r, c, len(items) - 1))
    batch = DecoderBatch(owners, items)
    logp = upcast(batch.forward().logits).log_softmax(-1)  # [items, L, vocab], inputs end at L - 1
    width = batch.ids.shape[1]
    scores = [torch.empty(len(m.verbalizer_ids), dtype=logp.dtype, device=logp.device) for m in models]
    for r, c, item in spans:
        word = models[r].verbalizer_ids[c]
        if len(items[item]) == len(rows[r]):  # single-token words: read after the input
            scores[r][c] = logp[item, -1, word[0]]
        else:  # the word's tokens end the item; each is predicted by the position before it
            pos = width - len(word) - 1 + torch.arange(len(word), device=logp.device)
            scores[r][c] = logp[item, pos, torch.tensor(word, device=logp.device)].sum()
    return scores


# ----- encoders and encoder-decoders ---------------------------------------------------------------------------------
def encoder_groups(models: Sequence[TextPromptedModel]) -> list[list[int]]:
    """Row indices of the forwards an encoder batch splits into: shallow prompts (any length) together, prefix-tuned
    rows by prefix length."""
    groups: dict[Any, list[int]] = {}
    for i, m in enumerate(models):
        key = ("prefix", m.num_prompt_tokens) if _is_prefix(m) else ("shallow",)
        groups.setdefault(key, []).append(i)
    return list(groups.values())


class EncoderGroup:
    """One forward's rows of an encoder or encoder-decoder batch (:func:`encoder_groups`): ``x`` / ``mask`` are the
    packed encoder inputs, ``index`` ``[B, L]`` where each input token landed, ``input_mask`` the inputs' own mask,
    ``prefixes`` the attention prefixes of prefix-tuned rows (None for shallow prompts)."""

    def __init__(self, models: Sequence[TextPromptedModel], rows: Sequence[Sequence[int]]) -> None:
        self.models = list(models)
        backbone = self.models[0].backbone
        device = backbone.get_input_embeddings().weight.device
        ids, mask = repad([list(r) for r in rows], pad_token_id(models[0].tokenizer), "right", device)
        for m in _distinct(models):
            m._check_inputs(ids[:1], mask[:1], None)
        embeds = embed_rows(models, ids, mask)
        self.prefixes: LayerPrefixes | None = None
        if _is_prefix(models[0]):
            kvs = [m.prefix_key_values(None, 1) for m in models]
            kv = [(torch.cat([r[layer][0] for r in kvs]), torch.cat([r[layer][1] for r in kvs])) for layer in range(len(kvs[0]))]
            self.prefixes = LayerPrefixes(models[0].route.modules, kv)
            prompt = embeds.new_zeros(len(rows), 0, embeds.shape[-1])
        else:
            n = max(m.num_prompt_tokens for m in models)
            prompt = embeds.new_zeros(len(rows), n, embeds.shape[-1])
            prompt_mask = mask.new_zeros(len(rows), n)
            for i, m in enumerate(models):
                p = _shallow(m)
                prompt[i, : p.shape[0]] = p.to(embeds.dtype)
                prompt_mask[i, : p.shape[0]] = 1
            # packing [prompt | input] as one input moves each row's prompt padding behind its tokens
            mask_all = torch.cat([prompt_mask, mask], 1)
            self.x, self.mask, _, index = pack_prompt(embeds.new_zeros(len(rows), 0, embeds.shape[-1]), torch.cat([prompt, embeds], 1), mask_all, "right")
            self.index, self.input_mask = index[:, n:], mask
            return
        self.x, self.mask, _, self.index = pack_prompt(prompt, embeds, mask, "right")
        self.input_mask = mask

    def during(self):
        """The context the group's forwards run in (its attention prefixes, if any)."""
        from .attention_prefix import KWARG

        return prefixes_during({KWARG: self.prefixes} if self.prefixes is not None else {})

    def expanded(self, rows: torch.Tensor):
        """The context for a decoder batch whose row ``j`` belongs to the group's row ``rows[j]``."""
        from .attention_prefix import KWARG

        if self.prefixes is None:
            return prefixes_during({})
        modules = list(self.prefixes.by_module)
        kv = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in self.prefixes.by_module.values()]
        return prefixes_during({KWARG: LayerPrefixes(modules, kv)})


def _encoder_scores(models: Sequence[TextPromptedModel], rows: Sequence[Sequence[int]]) -> list[torch.Tensor | None]:
    """``seq_cls``: each row's head logits over its model's pooled features."""
    out: list[torch.Tensor | None] = [None] * len(models)
    for group in encoder_groups(models):
        g = EncoderGroup([models[i] for i in group], [rows[i] for i in group])
        backbone = g.models[0].backbone
        with g.during():
            hidden = backbone(inputs_embeds=g.x, attention_mask=g.mask).last_hidden_state
        for m in _distinct(g.models):
            local = torch.tensor([j for j, r in enumerate(g.models) if r is m], device=hidden.device)
            features = pool(backbone, hidden[local], g.index[local], g.input_mask[local], m.check_pooling())
            logits = m.head(features.to(m.head.weight.dtype))
            for j, k in enumerate(local.tolist()):
                out[group[k]] = logits[j]
    return out


def _seq2seq_scores(models: Sequence[TextPromptedModel], rows: Sequence[Sequence[int]]) -> list[torch.Tensor | None]:
    """``seq2seq``: each verbalizer word's summed log-probability as the decoder's target, one decoder run per group
    over every (row, word) pair."""
    out: list[torch.Tensor | None] = [None] * len(models)
    for group in encoder_groups(models):
        g = EncoderGroup([models[i] for i in group], [rows[i] for i in group])
        backbone = g.models[0].backbone
        with g.during():
            encoded = backbone.get_encoder()(inputs_embeds=g.x, attention_mask=g.mask)
        owner, targets = [], []
        for j, m in enumerate(g.models):
            if not m.config.verbalizer:
                raise UserError(f"prompt of method {m.method} on a seq2seq model has no verbalizer: it generates, it does not classify")
            for word in m.config.verbalizer:
                owner.append(j)
                targets.append(label_word_target(m.tokenizer, word))
        pairs = torch.tensor(owner, device=g.x.device)
        labels, label_mask = repad(targets, 0, "right", g.x.device)
        labels = labels.masked_fill(label_mask == 0, -100)
        hidden = encoded.last_hidden_state.index_select(0, pairs)
        with g.expanded(pairs):
            logits = backbone(encoder_outputs=(hidden,), attention_mask=g.mask.index_select(0, pairs), labels=labels, use_cache=False).logits
        logp = upcast(logits).log_softmax(-1).gather(-1, labels.clamp(min=0).unsqueeze(-1))[..., 0]
        word_scores = (logp * label_mask).sum(-1)
        start = 0
        for j, m in enumerate(g.models):
            c = len(m.config.verbalizer)
            out[group[j]] = word_scores[start:start + c]
            start += c
    return out


@torch.no_grad()
def class_scores(models: Sequence[TextPromptedModel], rows: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """Each row's class scores ``[C_i]`` as its model's :meth:`~textpt.model.TextPromptedModel.class_logits` gives
    them for that input alone: head logits (``seq_cls``), or the verbalizer words' summed log-probabilities (causal
    LMs after the input, seq2seq as the decoder's target).

    Args:
        models: one prompted model per row, all on one backbone (:func:`check_shared_backbone`).
        rows: each row's input token ids (the template applied, special tokens included), unpadded.
    """
    if not rows:
        return []
    check_shared_backbone(models)
    task = models[0].task
    if task == "causal_lm":
        return _decoder_scores(models, rows)
    if task == "seq2seq":
        return _seq2seq_scores(models, rows)
    return _encoder_scores(models, rows)


# ----- generation ----------------------------------------------------------------------------------------------------
def next_tokens(logits: torch.Tensor, sampling: Sequence[Sampling], generators: Sequence[torch.Generator | None]) -> list[int]:
    """One token per row from next-token logits ``[B, vocab]``: argmax at temperature 0, else a draw from the
    temperature-scaled distribution cut to its ``top_p`` nucleus, with the row's own generator."""
    logits = upcast(logits)
    out = logits.argmax(-1).tolist()
    for i, (s, gen) in enumerate(zip(sampling, generators)):
        if s.temperature == 0:
            continue
        probs = (logits[i] / s.temperature).softmax(-1).double().cpu()
        if s.top_p < 1:
            sorted_probs, order = probs.sort(descending=True)
            keep = sorted_probs.cumsum(0) - sorted_probs < s.top_p  # the tokens before the nucleus is full, and the one that fills it
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
        out[i] = int(torch.multinomial(probs, 1, generator=gen))
    return out


def _generators(sampling: Sequence[Sampling]) -> list[torch.Generator | None]:
    gens = []
    for s in sampling:
        if s.temperature == 0:
            gens.append(None)
            continue
        gen = torch.Generator()
        if s.seed is None:
            gen.seed()
        else:
            gen.manual_seed(s.seed)
        gens.append(gen)
    return gens


@torch.no_grad()
def _decoder_steps(models: Sequence[TextPromptedModel], rows: Sequence[Sequence[int]], sampling: Sequence[Sampling]) -> Iterator[list[int | None]]:
    batch = DecoderBatch(models, rows)
    cache = generation_cache(batch.prefix) if batch.prefix is not None else _empty_cache()
    out = batch.forward(cache=cache, logits_to_keep=1)

    def step(tokens: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> Any:
        return batch.backbone(
            input_ids=tokens, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
            **{cache_argument(batch.backbone): cache},
        )

    yield from _decode_loop(out, sampling, step, torch.cat([batch.prefix_mask, batch.mask], 1), batch.start + batch.mask.sum(1, keepdim=True) - 1)


def _empty_cache() -> Any:
    from transformers.cache_utils import DynamicCache

    return DynamicCache()


def _decode_loop(out: Any, sampling: Sequence[Sampling], step: Any, mask: torch.Tensor, last_position: torch.Tensor) -> Iterator[list[int | None]]:
    """Appends one token per live row per step until each row stops; yields the step's tokens (None: finished).
    ``step(tokens [B, 1], mask, positions [B, 1])`` runs the backbone on the cache and returns its output."""
    generators = _generators(sampling)
    b = len(sampling)
    done = [False] * b
    produced = [0] * b
    logits = out.logits[:, -1]
    position = last_position
    while True:
        tokens = next_tokens(logits, sampling, generators)
        step_out: list[int | None] = []
        for i, t in enumerate(tokens):
            done[i] = done[i] or sampling[i].stopped
            if done[i]:
                step_out.append(None)
                continue
            step_out.append(t)
            produced[i] += 1
            if t in (sampling[i].stop_ids or ()) or produced[i] >= sampling[i].max_new_tokens:
                done[i] = True
        yield step_out
        if all(d or s.stopped for d, s in zip(done, sampling)):
            return
        feed = torch.tensor([[t] for t in tokens], device=mask.device)
        mask = torch.cat([mask, mask.new_ones(b, 1)], 1)
        position = position + 1
        out = step(feed, mask, position)
        logits = out.logits[:, -1]


def _seq2seq_steps(models: Sequence[TextPromptedModel], rows: Sequence[Sequence[int]], sampling: Sequence[Sampling]) -> Iterator[list[int | None]]:
    """Encoder-decoders: one decode loop per compatible group (:func:`encoder_groups`), advanced together."""
    loops = []
    for group in encoder_groups(models):
        loops.append((group, _group_seq2seq_steps([models[i] for i in group], [rows[i] for i in group], [sampling[i] for i in group])))
    live = {id(loop) for _, loop in loops}
    while live:
        step: list[int | None] = [None] * len(models)
        for group, loop in loops:
            if id(loop) not in live:
                continue
            try:
                tokens = next(loop)
            except StopIteration:
                live.discard(id(loop))
                continue
            for i, t in zip(group, tokens):
                step[i] = t
        if live:
            yield step


@torch.no_grad()
def _group_seq2seq_steps(models: Sequence[TextPromptedModel], rows: Sequence[Sequence[int]], sampling: Sequence[Sampling]) -> Iterator[list[int | None]]:
    g = EncoderGroup(models, rows)
    backbone = g.models[0].backbone
    with g.during():
        encoded = backbone.get_encoder()(inputs_embeds=g.x, attention_mask=g.mask)
    start = backbone.generation_config.decoder_start_token_id
    if start is None:
        start = backbone.config.decoder_start_token_id
    b = len(rows)
    first = torch.full((b, 1), int(start), dtype=torch.long, device=g.x.device)
    every = torch.arange(b, device=g.x.device)

    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())

    def step(tokens: torch.Tensor, mask: Any, positions: Any) -> Any:
        with g.expanded(every):
            return backbone(encoder_outputs=encoded, attention_mask=g.mask, decoder_input_ids=tokens, use_cache=True, **{cache_argument(backbone): cache})

    out = step(first, None, None)
    yield from _decode_loop(out, sampling, step, g.mask.new_ones(b, 1), torch.zeros(b, 1, dtype=torch.long, device=g.x.device))


def generate(models: Sequence[TextPromptedModel], rows: Sequence[Sequence[int]], sampling: Sequence[Sampling]) -> Iterator[list[int | None]]:
    """Decodes a mixed batch, one step at a time: yields a list per step, an entry per row (its new token, or None
    once the row has stopped). Greedy rows (temperature 0) give the tokens their model's
    :meth:`~textpt.model.TextPromptedModel.generate` gives for that input alone (``do_sample=False``).

    Args:
        models / rows: as :func:`class_scores` (causal LMs and seq2seq models).
        sampling: one :class:`Sampling` per row (read while decoding: set ``stopped`` to end a row); ``stop_ids``
            None becomes the tokenizer's end-of-sequence token.
    """
    if not rows:
        return iter(())
    check_shared_backbone(models)
    if not models[0].strategy.label_words:
        raise UserError(f"{models[0].task} models classify; they do not generate text")
    eos = getattr(models[0].tokenizer, "eos_token_id", None)
    for s in sampling:
        if s.stop_ids is None:
            s.stop_ids = () if eos is None else (int(eos),)
    if models[0].strategy.decoder_only:
        return _decoder_steps(models, rows, sampling)
    return _seq2seq_steps(models, rows, sampling)


# ----- banks of single-task folders ----------------------------------------------------------------------------------
BANK_METHODS = {"prompt_tuning": "prompt_tuning", "p_tuning": "prompt_tuning", "prefix": "prefix"}
"""Method of a single-task folder -> the method of the bank it merges into (P-tuning folders hold folded prompts)."""

# What every folder of a bank must share (the bank has one config): key -> how to name it.
_SHARED = {
    FINGERPRINT_KEY: "backbone weights", "task": "task", "dim": "width", "num_tokens": "prompt length",
    "num_layers": "prompt depth", "num_classes": "number of classes", "verbalizer": "verbalizer", "pooling": "pooling",
    "padding_side": "padding side",
}


def merge_prompts(out: str | os.PathLike, folders: Sequence[str | os.PathLike]) -> Path:
    """Writes a prompt bank to ``out``: task ``i`` is ``folders[i]``'s prompt (and, for ``seq_cls``, its head), so
    ``textpt.load_prompted(out)`` runs them all in one batch with ``task_ids``. The bank records each task's
    folder and inference record under ``tasks``.

    Raises:
        PromptFileError: a folder that is missing or corrupt, a bank, a method that has no bank (DePT), or folders
            that differ in what one bank shares (method, backbone weights, task, prompt length, classes,
            verbalizer, pooling), naming the folder and the values. Prompts of different lengths or class counts mix
            in :func:`class_scores` and the server instead.
    """
    if len(folders) < 2:
        raise UserError(f"merge-prompts: give at least two prompt folders to merge, got {len(folders)}")
    loaded = [load_prompt_files(f) for f in folders]
    first_tensors, first = loaded[0]
    for folder, (tensors, meta) in zip(folders, loaded):
        method = meta.get("method")
        if method not in BANK_METHODS:
            raise PromptFileError(f"merge-prompts: {folder} holds a {method} prompt; banks hold {', '.join(sorted(BANK_METHODS))} prompts (mix the others in one batch with textpt.mixed)")
        if int(meta.get("num_tasks", 1)) != 1:
            raise PromptFileError(f"merge-prompts: {folder} is already a bank of {meta['num_tasks']} tasks; merge single-task folders")
        if BANK_METHODS[method] != BANK_METHODS[first["method"]]:
            raise PromptFileError(f"merge-prompts: {folder} holds a {method} prompt, {folders[0]} a {first['method']} prompt; a bank holds one kind")
        for key, what in _SHARED.items():
            if meta.get(key) != first.get(key):
                raise PromptFileError(
                    f"merge-prompts: {folder} has {what} {meta.get(key)!r}, {folders[0]} has {first.get(key)!r}; a bank's tasks share "
                    f"it (prompts that differ mix in one batch through textpt.mixed and the server)"
                )
        if set(tensors) != set(first_tensors):
            raise PromptFileError(f"merge-prompts: {folder} holds tensors {sorted(tensors)}, {folders[0]} holds {sorted(first_tensors)}")
    tensors = {key: torch.stack([t[key] for t, _ in loaded]) for key in first_tensors}
    method = BANK_METHODS[first["method"]]
    config = {k: v for k, v in first.items() if k not in ("toolkit", "toolkit_version", "format_version", "tensors", "inference")}
    config.update(method=method, num_tasks=len(folders), tasks=[{"folder": str(f), "inference": m.get("inference")} for f, (_, m) in zip(folders, loaded)])
    if isinstance(first.get("method_config"), dict):
        from promptcore import METHODS
        from promptcore.methods import method_key

        fields = {f for f in METHODS.get(method_key("text", method)).config_class.__dataclass_fields__}
        config["method_config"] = {k: v for k, v in first["method_config"].items() if k in fields} | {"method": method, "num_tasks": len(folders)}
    return save_prompt_files(out, tensors, config)


def _merge_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Merges single-task prompt folders of one backbone (prompt tuning, P-tuning, prefix; seq_cls heads too) into a "
        "prompt bank whose task i is the i-th folder: textpt.load_prompted(OUT) runs them in one batch with task_ids."
    )
    p.add_argument("out", help="the bank's prompt folder (written)")
    p.add_argument("folders", nargs="+", help="single-task prompt folders, in task order")


def _merge(args: argparse.Namespace) -> int:
    out = merge_prompts(args.out, args.folders)
    print(f"wrote a bank of {len(args.folders)} tasks to {out}")
    return 0


register_command(Command(prog="textpt", name="merge-prompts", help="merge single-task prompt folders into a prompt bank", configure=_merge_arguments, run=_merge))


__all__ = ["BANK_METHODS", "DecoderBatch", "EncoderGroup", "Sampling", "check_shared_backbone", "class_scores", "encoder_groups", "generate", "merge_prompts", "next_tokens"]
