"""Keys and values as a cache prefix, through the transformers Cache API.

Two uses share this plumbing:

- the exact fast path of shallow prompts on decoder-only models. Under the causal mask a prompt placed first
  never attends to the input, so its keys and values in every layer depend on the prompt alone. They are computed
  once per step with batch 1 (or once per task of a prompt bank) and broadcast to the batch as a cache prefix;
  the input tokens then run with positions starting after the prompt. This is the same arithmetic as
  concatenating the prompt to every example (the reference path, kept in :mod:`textpt.model`), without running the
  prompt through every layer once per example. Tests prove equality in float64, logits and gradients.
- prefix tuning on causal LMs, whose learned per-layer keys and values are the prefix (on encoders and
  encoder-decoders prefix tuning goes into the attention calls instead: :mod:`textpt.attention_prefix`).

The training prefix is a :class:`textpt.cache_layers.PrefixLayer` cache: it prepends its keys and values to each call's and stores
nothing, so a layer re-run by gradient checkpointing sees exactly what it saw the first time.

A cache reaches a model through the keyword its ``forward`` names (:func:`cache_argument`): ``cache`` in the
transformers releases that renamed it, ``past_key_values`` (deprecated there) in the earlier ones the package
supports.

Why decoders keep the cache rather than the attention function of :mod:`textpt.attention_prefix` (read against
transformers 5.25): on a causal LM the prefix is the start of the sequence, as the concatenated reference makes it. A
prefix in the cache is exactly that to the model: ``generate`` derives the cache position, the position ids (from
the attention mask that covers the prefix) and the masks from the cache's length, and the model's own mask functions
(sliding windows, chunked or hybrid attention) treat the prefix as the earlier tokens they are, under any attention
implementation (eager, sdpa, flash, flex) and for any decoder, with no table of where its attention modules sit. The
attention-function route prepends keys that the model does not know of: every token would see the whole prefix
whatever its window, only eager and sdpa attention could take it, each decoder architecture would need its modules
listed, and the inputs' positions after the prefix would have to be passed to every forward and to ``generate`` by
hand. So one mechanism would serve decoders exactly only for full-attention models listed one by one; the two stay,
each behind the same small interface (:class:`CachePrefixes` here, :class:`textpt.attention_prefix.AttentionPrefixes`
there) that :class:`textpt.prefix.PrefixModel` picks once.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from torch import nn
from promptcore.distributed import is_sharded

if TYPE_CHECKING:
    from transformers.cache_utils import Cache, DynamicCache

KeyValues = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values, each [batch, heads, tokens, head_dim]


def accepts(module: nn.Module, name: str) -> bool:
    """Whether ``module.forward`` takes the keyword argument ``name``."""
    return name in inspect.signature(module.forward).parameters


def cache_argument(module: nn.Module) -> str:
    """The keyword a transformers model takes its key/value cache by: ``cache`` where ``forward`` names it (the
    supported API of the installed releases), else ``past_key_values`` (releases before the rename)."""
    return "cache" if accepts(module, "cache") else "past_key_values"


def num_layers(backbone: nn.Module) -> int:
    """Decoder layers of a transformers model (read from its config)."""
    return int(backbone.config.get_text_config(decoder=True).num_hidden_layers)


def decoder_of(backbone: nn.Module) -> nn.Module:
    """The transformer without its LM head (``model`` of Llama, ``transformer`` of GPT-2)."""
    return backbone.base_model


def prompt_key_values(backbone: nn.Module, prompt_embeds: torch.Tensor) -> KeyValues:
    """Every layer's keys and values of ``prompt_embeds`` ``[T, n, dim]`` run alone at positions ``0..n-1``.

    Differentiable: gradients reach ``prompt_embeds`` through the returned tensors.
    """
    from transformers.cache_utils import Cache

    from .cache_layers import RecordingLayer

    t, n = prompt_embeds.shape[:2]
    prompt_embeds = prompt_embeds.to(backbone.get_input_embeddings().weight.dtype)
    cache = Cache(layers=[RecordingLayer() for _ in range(num_layers(backbone))])
    positions = torch.arange(n, device=prompt_embeds.device).unsqueeze(0).expand(t, -1)
    mask = torch.ones(t, n, dtype=torch.long, device=prompt_embeds.device)
    decoder = decoder_of(backbone)
    out = decoder(inputs_embeds=prompt_embeds, attention_mask=mask, position_ids=positions, use_cache=True, **{cache_argument(decoder): cache})
    kv = [(layer.keys, layer.values) for layer in cache.layers]
    return joined_to_outputs(kv, [out.last_hidden_state]) if is_sharded(decoder) else kv


def joined_to_outputs(kv: KeyValues, outputs: Sequence[torch.Tensor]) -> KeyValues:
    """``kv``, recorded in a run of a sharded model (FSDP2, ZeRO-3) whose ``outputs`` are otherwise unused, joined
    to them with weight zero (adding 0 changes nothing).

    The engines gather a layer's weights for the backward when the gradient of its output arrives. A layer's keys
    and values leave it through the cache, not its output, so without the join the gradient reaching them would
    run the layer's backward on its sharded weights. Joined to the last layer's output, the gradient reaches every
    layer's output in turn; joined to every layer's output (``output_hidden_states``), also those of layers whose
    output a hook replaced in the next layer's input.
    """
    joined = sum(t.sum() for t in outputs) * 0
    return [(kv[0][0] + joined, kv[0][1]), *kv[1:]]


class CachePrefixes:
    """Prefix tuning on a causal LM: the prefix is a cache, and the inputs' positions start after it.

    The model feeds the cache itself (:meth:`textpt.model.TextPromptedModel.forward_with_prefix`, the task's
    ``generate``), so no keyword argument of the backbone carries it.
    """

    uses_cache = True

    def __init__(self, backbone: nn.Module) -> None:
        self.backbone = backbone

    def token_key_values(self, input_ids: torch.Tensor) -> KeyValues:
        """Every layer's keys and values ``[1, heads, n, head_dim]`` of the tokens ``input_ids`` ``[1, n]``."""
        return prompt_key_values(self.backbone, self.backbone.get_input_embeddings()(input_ids))

    def positions(self, num_tokens: int) -> int:
        """Positions of the model's table a prefix of ``num_tokens`` takes: all of them."""
        return num_tokens

    def backbone_kwargs(self, key_values: Callable[[], KeyValues]) -> dict[str, Any]:
        """None: the cache is fed by the model, not through a keyword argument."""
        return {}


def select_rows(kv: KeyValues, rows: torch.Tensor | None, batch_size: int) -> KeyValues:
    """Each sample's prefix: row ``rows[i]`` of ``kv``, or the single row broadcast (a view, no copy) when ``rows`` is None."""
    if rows is None:
        return [(k.expand(batch_size, -1, -1, -1), v.expand(batch_size, -1, -1, -1)) for k, v in kv]
    return [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in kv]


def prefix_cache(kv: KeyValues) -> Cache:
    """A stateless cache that prepends ``kv`` in every layer (training and scoring)."""
    from transformers.cache_utils import Cache

    from .cache_layers import PrefixLayer

    return Cache(layers=[PrefixLayer(k, v) for k, v in kv])


def generation_cache(kv: KeyValues) -> DynamicCache:
    """A growing cache that starts with ``kv`` (generation appends to it). The cache copies ``kv`` as it takes it
    (its layers append by concatenation), so ``kv`` may be views broadcast over the batch."""
    from transformers.cache_utils import DynamicCache

    return DynamicCache(ddp_cache_data=kv)


def positions_after_prefix(attention_mask: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """Position ids of the real tokens when ``num_prefix`` prompt positions come first: ``num_prefix, num_prefix+1, ...``
    counted over unmasked tokens only, so left or right padding gives each token the position it has unpadded."""
    return num_prefix + (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
