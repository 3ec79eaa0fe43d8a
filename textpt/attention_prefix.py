"""Keys and values prepended inside the attention call: prefix tuning on encoders and encoder-decoders.

T5's encoder drops a key/value cache and BART's has no argument for one; BERT's takes one but shifts the tokens'
position ids by its length, and so would a cache in a BART decoder (T5's relative buckets would count it). So on these
models the prefix enters where every supported architecture computes
attention from its keys and values: the transformers attention interface. The backbone is switched to a registered
attention function (``textpt_prefix_sdpa`` or ``textpt_prefix_eager``) that calls the model's own ``sdpa`` or eager
attention, with, for each self-attention module given a prefix:

- the prefix keys and values concatenated before the module's (after its cache, so generation caches only real
  tokens);
- the attention mask widened by the prefix columns, always open: every token sees the whole prefix, and padding
  stays masked as before (an absent causal mask is made explicit first, aligned to the last key);
- T5's relative position bias widened by zeros: prefix keys have no position. No position ids change either (BERT's
  and RoBERTa's absolute positions, BART's learned ones), so each real token keeps the position it has unprompted.

A module without a prefix (cross-attention, or any call without one) runs exactly the model's own function.

The prefixes of one forward travel as the keyword argument :data:`KWARG` (a :class:`LayerPrefixes`), which
transformers passes from the model's ``forward`` down to every attention call; a layer re-run by gradient
checkpointing gets the same keyword arguments, so the same prefix. ``generate`` refuses keyword arguments its
model's ``forward`` does not name, so there the prefixes are set for the duration of the call
(:func:`prefixes_during`) and the attention function reads them from a context variable.

The architectures (``model_type``) and where their self-attention modules sit are in :data:`SELF_ATTENTION`; any
other is refused with the supported list.

Causal LMs keep their prefix in the cache (:mod:`textpt.fast_prefix`, which says why this route cannot serve them
exactly); :class:`AttentionPrefixes` is this route behind the interface the two share.
"""

from __future__ import annotations

import contextlib
import sys
from contextvars import ContextVar
from typing import Any, Callable, Iterator

import torch
from torch import nn

from promptcore.errors import UserError

from .fast_prefix import KeyValues

KWARG = "textpt_prefix"
"""The keyword of a model's ``forward`` that carries the prefixes (a :class:`LayerPrefixes`)."""


class LayerPrefixes:
    """One forward's prefixes: ``(keys, values)`` ``[B, heads, n, head_dim]`` by self-attention module.

    With ``record`` set instead, the attention calls of the listed modules keep their keys and values there
    (what the prefix inits and the shape probe read) and attend as without a prefix.
    """

    def __init__(self, modules: list[nn.Module], kv: KeyValues | None = None, record: bool = False) -> None:
        self.by_module: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = dict(zip(modules, kv)) if kv is not None else {}
        self.recorded: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] | None = {} if record else None
        self.recording = set(modules) if record else set()


_NAMES = {"eager": "textpt_prefix_eager", "sdpa": "textpt_prefix_sdpa"}  # the model's own attention -> the prefixing one
_ACTIVE: ContextVar[LayerPrefixes | None] = ContextVar("textpt_prefix", default=None)


def _encoder_layers(backbone: nn.Module) -> list[nn.Module]:
    return [layer.attention.self for layer in backbone.encoder.layer]


def _t5(backbone: nn.Module) -> list[nn.Module]:
    return [block.layer[0].SelfAttention for stack in (backbone.encoder, backbone.decoder) for block in stack.block]


def _bart(backbone: nn.Module) -> list[nn.Module]:
    model = backbone.base_model  # BartModel, also under BartForConditionalGeneration
    return [layer.self_attn for stack in (model.encoder, model.decoder) for layer in stack.layers]


SELF_ATTENTION: dict[str, Callable[[nn.Module], list[nn.Module]]] = {
    "bert": _encoder_layers,
    "roberta": _encoder_layers,
    "t5": _t5,
    "bart": _bart,
}
"""``model_type`` -> the self-attention modules that get a prefix, in order (an encoder-decoder: encoder, then decoder)."""


def self_attention_modules(backbone: nn.Module) -> list[nn.Module]:
    """The self-attention modules of ``backbone`` that take a prefix, with the backbone switched to the prefixing
    attention function (a call without prefixes computes exactly what the model's own does).

    Raises:
        UserError: an architecture not in :data:`SELF_ATTENTION`, or an attention implementation other than eager
            and sdpa.
    """
    model_type = getattr(backbone.config, "model_type", "?")
    if model_type not in SELF_ATTENTION:
        raise UserError(
            f"method: prefix on {type(backbone).__name__} (model_type {model_type}) is not supported: its attention "
            f"cannot take plain prefix keys and values this way; prefix supports causal LMs and the model types "
            f"{', '.join(sorted(SELF_ATTENTION))} (use prompt_tuning or p_tuning for this model)"
        )
    implementation = backbone.config._attn_implementation
    if implementation not in _NAMES.values():
        if implementation not in _NAMES:
            raise UserError(
                f"method: prefix on {model_type} runs with attn_implementation eager or sdpa, this model was loaded with "
                f"{implementation!r}; load it with model.kwargs attn_implementation: sdpa"
            )
        register_attention_functions()
        backbone.set_attn_implementation(_NAMES[implementation])
    return SELF_ATTENTION[model_type](backbone)


@contextlib.contextmanager
def prefixes_during(kwargs: dict[str, Any]) -> Iterator[None]:
    """Makes the prefixes in ``kwargs`` (under :data:`KWARG`, if there) the ones every attention call uses until the
    block ends: for ``generate``, which does not pass unknown keyword arguments to the model."""
    token = _ACTIVE.set(kwargs.get(KWARG))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def _model_eager(module: nn.Module) -> Callable:
    """The eager attention function of the modeling file that defines ``module`` (T5's adds its position bias)."""
    return sys.modules[type(module).__module__].eager_attention_forward


def _widen_mask(mask: torch.Tensor | None, module: nn.Module, query: torch.Tensor, key: torch.Tensor, n: int, additive: bool) -> torch.Tensor | None:
    """``mask`` with ``n`` open prefix columns in front (bool: True, additive float: 0). None (no masking) stays None,
    unless the attention is causal over several queries: its implicit mask is made explicit, aligned to the last key
    (bool, or additive for the eager functions)."""
    if mask is None:
        q, k = query.shape[-2], key.shape[-2]
        if not (getattr(module, "is_causal", False) and q > 1):
            return None
        allowed = torch.ones(q, k, dtype=torch.bool, device=query.device).tril(k - q)[None, None]
        mask = torch.zeros(allowed.shape, dtype=query.dtype, device=query.device).masked_fill(~allowed, torch.finfo(query.dtype).min) if additive else allowed
    open_ = torch.ones if mask.dtype == torch.bool else torch.zeros
    return torch.cat([open_(*mask.shape[:-1], n, dtype=mask.dtype, device=mask.device), mask], dim=-1)


def _prefixing(inner_name: str, functions: Any) -> Callable:
    """The prefixing attention function around the model's own ``inner_name`` (eager) or ``functions[inner_name]``."""

    def attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any, **kwargs: Any):
        prefixes = kwargs.pop(KWARG, None) or _ACTIVE.get()
        inner = _model_eager(module) if inner_name == "eager" else functions[inner_name]
        if prefixes is not None and module in prefixes.recording:
            prefixes.recorded[module] = (key, value)
        elif prefixes is not None and module in prefixes.by_module:
            keys, values = prefixes.by_module[module]
            n = keys.shape[-2]
            if attention_mask is not None and not isinstance(attention_mask, torch.Tensor):
                raise UserError(f"method: prefix needs tensor attention masks (eager or sdpa), got {type(attention_mask).__name__}")
            attention_mask = _widen_mask(attention_mask, module, query, key, n, additive=inner_name == "eager")
            key = torch.cat([keys.to(key.dtype), key], dim=-2)
            value = torch.cat([values.to(value.dtype), value], dim=-2)
            bias = kwargs.get("position_bias")
            if bias is not None:
                kwargs["position_bias"] = torch.cat([bias.new_zeros(*bias.shape[:-1], n), bias], dim=-1)
        return inner(module, query, key, value, attention_mask, **kwargs)

    return attention


def register_attention_functions() -> None:
    """Registers the prefixing attention functions (:data:`_NAMES`) with transformers, once per process: when a
    backbone is first switched to them, so importing ``textpt`` does not load transformers."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    for inner, name in _NAMES.items():
        if name not in ALL_ATTENTION_FUNCTIONS:
            ALL_ATTENTION_FUNCTIONS.register(name, _prefixing(inner, ALL_ATTENTION_FUNCTIONS))
            ALL_MASK_ATTENTION_FUNCTIONS.register(name, ALL_MASK_ATTENTION_FUNCTIONS[inner])


class AttentionPrefixes:
    """Prefix tuning on an encoder or encoder-decoder: the prefix enters its self-attention calls and takes no
    positions.

    Attributes:
        modules: the self-attention modules that get a prefix, in the order of the prefix's layers.

    Raises:
        UserError: an architecture or attention implementation that cannot take a prefix
            (:func:`self_attention_modules`).
    """

    uses_cache = False

    def __init__(self, backbone: nn.Module) -> None:
        self.backbone = backbone
        self.modules = self_attention_modules(backbone)

    def token_key_values(self, input_ids: torch.Tensor) -> KeyValues:
        """Each prefixed module's keys and values ``[1, heads, n, head_dim]`` of the tokens ``input_ids`` ``[1, n]``."""
        return attention_key_values(self.backbone, self.modules, input_ids)

    def positions(self, num_tokens: int) -> int:
        """Positions of the model's table a prefix takes: none."""
        return 0

    def backbone_kwargs(self, key_values: Callable[[], KeyValues]) -> dict[str, Any]:
        """The backbone's keyword argument that carries the prefixes ``key_values()`` into the attention calls."""
        return {KWARG: LayerPrefixes(self.modules, key_values())}


def attention_key_values(backbone: nn.Module, modules: list[nn.Module], input_ids: torch.Tensor) -> KeyValues:
    """Each module's keys and values ``[1, heads, n, head_dim]`` when ``input_ids`` ``[1, n]`` run through the model
    (an encoder-decoder: as the encoder's input and as the decoder's). Differentiable like any forward."""
    prefixes = LayerPrefixes(modules, record=True)
    mask = torch.ones_like(input_ids)
    extra = {"decoder_input_ids": input_ids, "use_cache": False} if backbone.config.is_encoder_decoder else {}
    backbone(input_ids=input_ids, attention_mask=mask, **extra, **{KWARG: prefixes})
    missing = [i for i, m in enumerate(modules) if m not in prefixes.recorded]
    if missing:
        raise UserError(f"method: prefix: self-attention modules {missing} of {type(backbone).__name__} were not called through the attention interface")
    return [prefixes.recorded[m] for m in modules]
