"""Generation through vLLM: each request goes to vLLM as ``prompt_embeds``, the prompt's rows spliced into the token
embeddings exactly as textpt places them.

vLLM (>= 0.10, built with ``enable_prompt_embeds=True``; the ``prompttune[vllm]`` extra) takes a request's input as
a ``[length, hidden]`` tensor of embeddings instead of token ids (``{"prompt_embeds": tensor}`` in ``LLM.generate``).
textpt's reference path of a shallow prompt on a causal LM runs exactly such a tensor alone: the prompt's ``n``
rows, then the input's token embeddings, at positions ``0 .. n + L - 1``. :func:`prompt_embeds` builds it with the
model's own methods (:meth:`~textpt.model.TextPromptedModel.shallow_prompt`,
:meth:`~textpt.model.TextPromptedModel.embed_inputs`), so vLLM sees the numbers textpt's forward sees:

- prompt tuning and P-tuning (folded): the prompt rows before the token embeddings;
- DePT: the prompt rows before the token embeddings *with DePT's low-rank update* (the update is part of the input
  embeddings, computed here; new tokens are embedded plainly, as DePT's own ``generate`` does);
- zero-shot models: the token embeddings alone.

Methods whose prompt is not input embeddings cannot be expressed this way and are refused with the reason
(:func:`check_servable`): prefix tuning and deep prompts put keys and values into every attention layer, which
``prompt_embeds`` cannot carry; encoder-decoder (``seq2seq``) and encoder (``seq_cls``) models are not vLLM's
decoder-only generation. The transformers engine (``engine: hf``) serves all of them.

vLLM is imported only when an engine is built, never when this module is.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
from torch import nn

from promptcore.errors import UserError

from .model import TextPromptedModel


def refusal(model: TextPromptedModel) -> str | None:
    """Why vLLM cannot run ``model``'s prompt through ``prompt_embeds``, or None when it can."""
    if not model.strategy.decoder_only:
        return f"vLLM's prompt_embeds input is for decoder-only generation; this prompt runs a {model.task} model"
    if model.uses_prefix_cache:
        return (
            f"a {model.method} prompt is keys and values in every attention layer, which vLLM's prompt_embeds input "
            f"(embeddings before the first layer) cannot carry"
        )
    if model.num_tasks > 1:
        return f"a bank of {model.num_tasks} task prompts; serve its single-task folders"
    return None


def check_servable(model: TextPromptedModel) -> None:
    """Raises :class:`UserError` naming why vLLM cannot serve ``model`` (:func:`refusal`)."""
    why = refusal(model)
    if why is not None:
        raise UserError(f"engine vllm cannot serve method {model.method}: {why}; serve it with engine hf")


@torch.no_grad()
def prompt_embeds(model: TextPromptedModel, ids: Sequence[int]) -> torch.Tensor:
    """``[n + L, D]``: what vLLM is sent for input ``ids`` (special tokens included): the model's shallow prompt,
    then the input's embeddings as the model embeds them.

    Raises:
        UserError: a method vLLM cannot express (:func:`refusal`).
    """
    check_servable(model)
    tokens = torch.tensor([list(ids)], device=model.embedding.weight.device)
    embeds = model.embed_inputs(tokens, torch.ones_like(tokens))[0]
    prompt = model.shallow_prompt(None, 1)[0].to(embeds.dtype)
    return torch.cat([prompt, embeds], dim=0)


def model_path(name: str) -> str:
    """The folder or hub id vLLM loads for textpt model name ``name`` (``hf:ORG/NAME``, a folder, ``asset:NAME``).

    Raises:
        UserError: a ``random:`` model (vLLM loads weights from a folder or the hub; save the model with
            ``save_pretrained`` and serve that folder).
    """
    from .loading import _folder, resolve_name

    kind, target = resolve_name(name)
    if kind == "random":
        raise UserError(f"engine vllm loads weights from a folder or the hub, and {name} is built at random; save it with save_pretrained and serve that folder")
    return _folder(kind, target)


class VllmEngine:
    """A vLLM ``LLM`` on the served model, fed ``prompt_embeds`` (built when the text backend's ``engine`` is
    ``vllm``).

    Args:
        name: the textpt model name (:func:`model_path`). backbone / tokenizer: the transformers model and its
            tokenizer, which compute the embeddings sent. options: keyword arguments of ``vllm.LLM`` (``dtype``,
            ``gpu_memory_utilization``, ``max_model_len`` ...).

    Raises:
        UserError: vLLM is not installed, or the model cannot be loaded by it.
    """

    def __init__(self, name: str, backbone: nn.Module, tokenizer: Any, options: dict[str, Any] | None = None) -> None:
        try:
            import vllm
        except ImportError:
            raise UserError("engine vllm needs vLLM (>= 0.10): pip install 'prompttune[vllm]' (in its own environment where vLLM pins another torch)") from None
        self.vllm = vllm
        self.tokenizer = tokenizer
        self.llm = vllm.LLM(model=model_path(name), enable_prompt_embeds=True, **(options or {}))
        # embeddings go in the dtype vLLM runs the model in (its model config; read from vLLM 0.11)
        config = getattr(getattr(self.llm, "llm_engine", None), "model_config", None)
        self.dtype = getattr(config, "dtype", None) or backbone.get_input_embeddings().weight.dtype

    def check_servable(self, model: TextPromptedModel) -> None:
        check_servable(model)

    def sampling_params(self, s: Any) -> Any:
        """vLLM's ``SamplingParams`` of a :class:`textpt.mixed.Sampling`."""
        return self.vllm.SamplingParams(
            max_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p, seed=s.seed,
            stop_token_ids=list(s.stop_ids) if s.stop_ids else None,
        )

    def generate(self, models: Sequence[TextPromptedModel], rows: Sequence[Sequence[int]], sampling: Sequence[Any]) -> Iterator[list[int | None]]:
        """Runs the batch through vLLM (its own scheduler batches the requests), then yields the tokens one step at a
        time as :func:`textpt.mixed.generate` does."""
        requests = [{"prompt_embeds": prompt_embeds(m, r).to("cpu", dtype=self.dtype)} for m, r in zip(models, rows)]
        outputs = self.llm.generate(requests, [self.sampling_params(s) for s in sampling], use_tqdm=False)
        tokens = [list(o.outputs[0].token_ids) for o in outputs]
        for step in range(max((len(t) for t in tokens), default=0)):
            yield [t[step] if step < len(t) else None for t in tokens]


__all__ = ["VllmEngine", "check_servable", "model_path", "prompt_embeds", "refusal"]
