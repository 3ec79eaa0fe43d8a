"""Prefix tuning / deep prompts (Li & Liang 2021; P-Tuning v2): learned keys and values in every self-attention layer.

The parameter holds, for each prefixed self-attention layer, ``num_tokens`` keys and values of the layer's
key/value width (grouped-query models have fewer key/value heads: the width is read from a probe run, never
assumed). With ``num_tasks > 1`` it is a :class:`promptcore.PromptBank` chosen per sample by ``task_ids``. Every
real token attends to the whole prefix; padding stays masked, so an example gives the same outputs alone and padded.

- Causal LMs (every decoder layer): the prefix is fed through the transformers Cache API, a stateless
  :class:`textpt.cache_layers.PrefixLayer` per layer in training and scoring (so gradient checkpointing re-runs a
  layer on the same prefix), a ``DynamicCache`` seeded with the prefix in generation; the input's positions start
  after the prefix's.
- Encoders (``seq_cls``: BERT and MiniLM, RoBERTa) and encoder-decoders (``seq2seq``: T5, BART): every encoder
  self-attention layer and, for seq2seq, every decoder self-attention layer, as Li & Liang and P-Tuning v2 do. The
  decoder's cross-attention gets no prefix: it attends to the prefixed encoder's outputs, and leaving it alone keeps
  the parameter at two sets per encoder-decoder layer pair. The keys and values are prepended inside the attention
  call (:mod:`textpt.attention_prefix`); prefix tokens take no positions, so each real token keeps its own
  (absolute positions of BERT, RoBERTa and BART; T5's relative bias is zero towards the prefix). Other encoder
  architectures (DeBERTa-v2's disentangled relative attention, ModernBERT's rotary and local attention) are refused.

Inits: ``random``/``normal`` draw N(0, init_std²); ``vocab``, ``text`` and ``labels`` run those tokens through the
frozen model (an encoder-decoder: as its input and as the decoder's) and start from their own keys and values.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from promptcore import DeepSoftPrompt, PromptBank, register_method
from promptcore.errors import UserError

from .attention_prefix import AttentionPrefixes
from .config import PrefixConfig, trainable_dtype
from .fast_prefix import CachePrefixes, KeyValues
from .model import SoftPromptedModel


class PrefixModel(SoftPromptedModel):
    """Per-layer key/value prefixes on a frozen causal LM, encoder or encoder-decoder (arguments of
    :class:`textpt.model.TextPromptedModel`).

    Attributes:
        route: where the prefix goes, chosen once by the task: the cache of a causal LM
            (:class:`textpt.fast_prefix.CachePrefixes`) or the self-attention calls of an encoder or encoder-decoder
            (:class:`textpt.attention_prefix.AttentionPrefixes`, whose ``modules`` are in the parameter's layer order).

    Raises:
        UserError: an encoder or encoder-decoder architecture whose attention cannot take a prefix.
    """

    method = "prefix"
    config: PrefixConfig

    def __init__(self, backbone: nn.Module, config: PrefixConfig, tokenizer: Any = None, task: str | None = None, name: str | None = None) -> None:
        super().__init__(backbone, config, tokenizer, task, name)
        self.route = CachePrefixes(backbone) if self.strategy.decoder_only else AttentionPrefixes(backbone)
        self.uses_prefix_cache = self.route.uses_cache
        with torch.no_grad():
            probe = self._token_key_values([0])
        shapes = {tuple(k.shape[1:]) for k, _ in probe}
        if len(shapes) != 1:
            raise UserError(f"layers of {self.backbone_name} have different key/value shapes {sorted(shapes)}; prefix needs one shape")
        self.kv_heads, _, self.head_dim = next(iter(shapes))
        self.num_layers = len(probe)
        shape = (2 * self.num_layers, config.num_tokens, self.kv_heads * self.head_dim)
        if config.num_tasks > 1:
            self.prompts = PromptBank(config.num_tasks, shape, init="zeros")
        else:
            self.prompts = DeepSoftPrompt(*shape, init="zeros")
        self.prompts.to(trainable_dtype(backbone))
        self._initialise()
        self.freeze_backbone()

    @torch.no_grad()
    def _initialise(self) -> None:
        weight = self.prompts.weight
        if self.config.init in ("random", "normal"):
            generator = torch.Generator().manual_seed(self.config.seed)
            weight.copy_(torch.randn(weight.shape, generator=generator) * self.config.init_std)
            return
        n = self.config.num_tokens
        ids = self.init_token_ids()
        if ids is None:  # vocab: random tokens of the vocabulary
            generator = torch.Generator().manual_seed(self.config.seed)
            ids = torch.randint(0, self.embedding.weight.shape[0], (n,), generator=generator).tolist()
        if not ids:
            raise UserError(f"init {self.config.init!r}: the init tokens are empty; give a non-empty init text or verbalizer")
        ids = (ids * (n // len(ids) + 1))[:n]
        weight.copy_(self._flatten(self._token_key_values(ids)).expand_as(weight))

    def _token_key_values(self, ids: list[int]) -> KeyValues:
        """Every prefixed layer's keys and values of the tokens ``ids`` run through the frozen model alone."""
        return self.route.token_key_values(torch.tensor([ids], device=self.embedding.weight.device))

    def _flatten(self, kv: KeyValues) -> torch.Tensor:
        """``[2 * layers, n, width]`` from per-layer ``[1, heads, n, head_dim]`` keys/values."""
        rows = [t[0].transpose(0, 1).reshape(t.shape[2], -1) for pair in kv for t in pair]
        return torch.stack(rows)

    def prefix_key_values(self, task_ids: torch.Tensor | None, batch_size: int) -> KeyValues:
        weight = self.prompts.for_batch(task_ids, batch_size).to(self.embedding.weight.dtype)  # [B, 2L, n, width]
        b, _, n, _ = weight.shape
        per = weight.view(b, self.num_layers, 2, n, self.kv_heads, self.head_dim).transpose(3, 4)
        return [(per[:, i, 0], per[:, i, 1]) for i in range(self.num_layers)]

    @property
    def prompt_positions(self) -> int:
        return self.route.positions(self.num_prompt_tokens)

    def backbone_kwargs(self, task_ids: torch.Tensor | None, batch_size: int) -> dict[str, Any]:
        return self.route.backbone_kwargs(lambda: self.prefix_key_values(task_ids, batch_size))

    def prompt_config(self) -> dict[str, Any]:
        return {**super().prompt_config(), "num_layers": self.num_layers, "kv_width": self.kv_heads * self.head_dim}


register_method("prefix", PrefixConfig, PrefixModel, kind="text", summary="prefix tuning / deep prompts (Li & Liang 2021)")
