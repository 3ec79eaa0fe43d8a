"""The shared base of prompted text models: tasks, batches, padding, verbalizers, generation.

A method (prompt tuning, P-tuning, prefix) supplies the prompt; this base places it and runs the task:

- ``causal_lm``: next-token logits of the input tokens (``lm_labels`` batches), or class scores from the
  verbalizer's words after the input (``labels`` batches);
- ``seq2seq``: the encoder input carries the prompt, the decoder is trained on ``lm_labels``;
- ``seq_cls``: an encoder whose first real token (``[CLS]``), through the model's own frozen pooler where it has
  one, feeds a trainable linear head.

Padding: the reference path concatenates the prompt to the token embeddings and then moves the padding to the
tokenizer's side, so the prompt always sits right before the real tokens ([pad, P, x] or [P, x, pad]); position ids
count unmasked positions only. Each example then gives the logits it gives alone, without padding, on either side.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from promptcore import PromptedModel

from .config import TextPromptConfig
from .fast_prefix import (
    KeyValues,
    generation_cache,
    positions_after_prefix,
    prefix_cache,
)
from .loading import check_prompt_ready, model_max_length

logger = logging.getLogger(__name__)

TASKS = ("causal_lm", "seq2seq", "seq_cls")


def infer_task(backbone: nn.Module) -> str:
    """``seq2seq`` for encoder-decoders, ``causal_lm`` for models with an LM head, else ``seq_cls``."""
    config = getattr(backbone, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    if hasattr(backbone, "get_output_embeddings") and backbone.get_output_embeddings() is not None:
        return "causal_lm"
    return "seq_cls"


def pack_prompt(
    prompt: torch.Tensor, embeds: torch.Tensor, attention_mask: torch.Tensor, padding_side: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Puts each example's prompt right before its real tokens, with the padding on ``padding_side``.

    Args:
        prompt: ``[B, n, D]``. embeds: ``[B, L, D]``. attention_mask: ``[B, L]`` (1 = real token).

    Returns:
        ``(inputs_embeds [B, n+L, D], mask [B, n+L], position_ids [B, n+L], token_index [B, L])`` where
        ``token_index[b, j]`` is where input token ``j`` landed, to read its output back.
    """
    b, n = prompt.shape[:2]
    mask = torch.cat([attention_mask.new_ones(b, n), attention_mask], dim=1)
    # A stable sort on the mask moves the padding to one side and keeps everything else in order.
    key = mask if padding_side == "left" else 1 - mask
    order = torch.sort(key, dim=1, stable=True).indices
    x = torch.cat([prompt, embeds], dim=1)
    x = x.gather(1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    mask = mask.gather(1, order)
    positions = (mask.long().cumsum(1) - 1).clamp(min=0)
    token_index = torch.argsort(order, dim=1)[:, n:]
    return x, mask, positions, token_index


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token (left or right padding)."""
    length = attention_mask.shape[1]
    return length - 1 - attention_mask.flip(1).long().argmax(1)


def first_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's first real token."""
    return attention_mask.long().argmax(1)


def repad(rows: list[list[int]], pad_id: int, padding_side: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pads token lists to one length on ``padding_side``: ``(input_ids, attention_mask)``."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    for i, r in enumerate(rows):
        sl = slice(width - len(r), width) if padding_side == "left" else slice(0, len(r))
        ids[i, sl] = torch.tensor(r, dtype=torch.long, device=device)
        mask[i, sl] = 1
    return ids, mask


class TextPromptedModel(PromptedModel):
    """A frozen transformers model with soft prompts. Subclasses build ``self.prompts`` and implement
    :meth:`shallow_prompt` (prompt embeddings before the input) or :meth:`prefix_key_values` (per-layer prefixes).

    Args:
        backbone: a transformers model (``AutoModelForCausalLM``, ``AutoModelForSeq2SeqLM`` or a bare encoder for
            ``seq_cls``); its parameters are frozen.
        config: the prompt config.
        tokenizer: needed for the ``text`` and ``labels`` inits, verbalizers and padding id; optional otherwise.
        task: the task; inferred from the backbone when ``None``.
        name: the backbone's name recorded in prompt files (default: the model's ``name_or_path``).
    """

    method: str = ""
    uses_prefix_cache: bool = False  # prefix methods feed keys/values, shallow methods feed embeddings

    def __init__(
        self,
        backbone: nn.Module,
        config: TextPromptConfig,
        tokenizer: Any = None,
        task: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        embedding = check_prompt_ready(backbone, name)
        self.backbone = backbone
        self.config = config
        self.tokenizer = tokenizer
        self.task = task or infer_task(backbone)
        if self.task not in TASKS:
            raise ValueError(f"task {self.task!r} is not one of {', '.join(TASKS)}")
        self.backbone_name = name or getattr(backbone.config, "name_or_path", "") or type(backbone).__name__
        self.dim = int(embedding.weight.shape[1])
        self.padding_side = getattr(tokenizer, "padding_side", "right") if tokenizer is not None else "right"
        self.max_positions = model_max_length(backbone)
        self.verbalizer_ids = self._tokenize_verbalizer()
        self.head = self._build_head()
        self._checkpointing = False

    # ----- construction helpers ---------------------------------------------------------------------------------
    def _tokenize_verbalizer(self) -> list[list[int]] | None:
        words = self.config.verbalizer
        if not words:
            return None
        # Every task keeps the words (a 'labels' init starts from them); only a causal LM scores them: seq2seq
        # models get them as decoder targets from the data, seq_cls models classify with their head.
        if self.tokenizer is None:
            raise ValueError("verbalizer: the label words need the tokenizer; call textpt.wrap(model, config, tokenizer=tokenizer)")
        ids = [self.tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]
        empty = [w for w, i in zip(words, ids) if not i]
        if empty:
            raise ValueError(f"verbalizer: words {empty} give no tokens with this tokenizer; choose other label words")
        multi = {w: len(i) for w, i in zip(words, ids) if len(i) > 1}
        if multi:
            logger.info("verbalizer words of several tokens %s are scored by the sum of their tokens' log-probabilities", multi)
        return ids

    def _build_head(self) -> nn.Module | None:
        if self.task != "seq_cls":
            return None
        if self.config.num_classes is None:
            raise ValueError("num_classes: task seq_cls trains a classification head; set prompt.num_classes")
        hidden = int(self.backbone.config.hidden_size)
        head = nn.Linear(hidden, self.config.num_classes)
        generator = torch.Generator().manual_seed(self.config.seed)
        with torch.no_grad():
            head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * 0.02)
            head.bias.zero_()
        return head.to(self.backbone.dtype)

    def token_ids(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise ValueError(f"init {self.config.init!r}: the tokenizer is needed; call textpt.wrap(model, config, tokenizer=tokenizer)")
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def init_token_ids(self) -> list[int] | None:
        """Token ids a ``text`` or ``labels`` init starts from (None for the other inits)."""
        if self.config.init == "text":
            return self.token_ids(self.config.init_text or "")
        if self.config.init == "labels":
            return [t for w in (self.config.verbalizer or []) for t in self.token_ids(w)]
        return None

    @property
    def embedding(self) -> nn.Module:
        return self.backbone.get_input_embeddings()

    # ----- what a method supplies ---------------------------------------------------------------------------------
    @property
    def num_prompt_tokens(self) -> int:
        return self.config.num_tokens

    def shallow_prompt(self, task_ids: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        """``[B, n, D]`` prompt embeddings (shallow methods)."""
        raise NotImplementedError(f"{type(self).__name__} has no shallow prompt")

    def prefix_key_values(self, task_ids: torch.Tensor | None, batch_size: int) -> KeyValues:
        """Per-layer ``(keys, values)`` ``[B, heads, n, head_dim]`` to prepend (prefix methods and the fast path)."""
        raise NotImplementedError(f"{type(self).__name__} has no key/value prefix")

    def use_fast_path(self) -> bool:
        """Whether shallow prompts go through the shared key/value prefix (see :mod:`textpt.fast_prefix`)."""
        return False

    # ----- forward ------------------------------------------------------------------------------------------------
    def _check_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, task_ids: torch.Tensor | None) -> torch.Tensor:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if self.max_positions is not None and input_ids.shape[1] + self.num_prompt_tokens > self.max_positions:
            raise ValueError(
                f"input of {input_ids.shape[1]} tokens plus {self.num_prompt_tokens} prompt tokens exceeds the "
                f"{self.max_positions} positions of {self.backbone_name}; truncate the text to at most "
                f"{self.max_positions - self.num_prompt_tokens} tokens (data max_length)"
            )
        if task_ids is None and self.config.num_tasks > 1:
            raise ValueError(f"this model has a bank of {self.config.num_tasks} task prompts; the batch must carry task_ids [batch]")
        return attention_mask

    def _accepts(self, module: nn.Module, name: str) -> bool:
        return name in inspect.signature(module.forward).parameters

    def token_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Causal LM: next-token logits ``[B, L, vocab]`` at each input token, as if each example ran alone."""
        attention_mask = self._check_inputs(input_ids, attention_mask, task_ids)
        if self.task != "causal_lm":
            raise ValueError(f"token_logits is for causal_lm models; this one is {self.task}")
        b = input_ids.shape[0]
        if self.uses_prefix_cache or self.use_fast_path():
            return self.forward_with_prefix(input_ids, attention_mask, self.prefix_key_values(task_ids, b)).logits
        return self.forward_concat(input_ids, attention_mask, task_ids)

    def last_token_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Causal LM: next-token logits ``[B, vocab]`` after each example's last real token.

        Only those positions go through the LM head (``logits_to_keep``, where the model takes it): a classifier
        needs one row of logits per example, not ``[B, L, vocab]``.
        """
        attention_mask = self._check_inputs(input_ids, attention_mask, task_ids)
        last = last_token_index(attention_mask).unsqueeze(1)  # [B, 1]
        if self.uses_prefix_cache or self.use_fast_path():
            kv = self.prefix_key_values(task_ids, input_ids.shape[0])
            if self._accepts(self.backbone, "logits_to_keep"):
                return self.forward_with_prefix(input_ids, attention_mask, kv, logits_to_keep=last).logits[:, 0]
            logits = self.forward_with_prefix(input_ids, attention_mask, kv).logits
            return logits.gather(1, last.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))[:, 0]
        return self.forward_concat(input_ids, attention_mask, task_ids, keep=last)[:, 0]

    def forward_concat(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, task_ids: torch.Tensor | None, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The reference path of shallow prompts on causal LMs: concatenated embeddings, prompt next to the tokens.

        ``keep`` (``[B, K]`` input positions) returns the logits of those positions only, through ``logits_to_keep``
        where the model takes it; by default every input position's logits.
        """
        prompt = self.shallow_prompt(task_ids, input_ids.shape[0])
        x, mask, positions, index = pack_prompt(prompt, self.embedding(input_ids), attention_mask, self.padding_side)
        if keep is not None:
            index = index.gather(1, keep)
            if self._accepts(self.backbone, "logits_to_keep"):
                return self.backbone(inputs_embeds=x, attention_mask=mask, position_ids=positions, use_cache=False, logits_to_keep=index).logits
        logits = self.backbone(inputs_embeds=x, attention_mask=mask, position_ids=positions, use_cache=False).logits
        return logits.gather(1, index.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))

    def forward_with_prefix(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, kv: KeyValues, **kwargs: Any):
        """Runs the input after a key/value prefix (shared-prompt fast path and prefix tuning); ``kwargs`` go to the
        backbone (``logits_to_keep``)."""
        b, n = input_ids.shape[0], kv[0][0].shape[-2]
        mask = torch.cat([attention_mask.new_ones(b, n), attention_mask], dim=1)
        return self.backbone(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions_after_prefix(attention_mask, n),
            past_key_values=prefix_cache(kv),
            use_cache=True,
            **kwargs,
        )

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, task_ids: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encoder inputs with the prompt (seq2seq, seq_cls): ``(inputs_embeds, mask, position_ids, token_index)``."""
        attention_mask = self._check_inputs(input_ids, attention_mask, task_ids)
        prompt = self.shallow_prompt(task_ids, input_ids.shape[0])
        return pack_prompt(prompt, self.embedding(input_ids), attention_mask, self.padding_side)

    def class_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, num_classes]``: the head's logits (seq_cls) or the verbalizer words' summed log-probabilities (causal_lm)."""
        if self.task == "seq_cls":
            return self._head_logits(input_ids, attention_mask, task_ids)
        if self.task == "causal_lm":
            return self._verbalizer_scores(input_ids, attention_mask, task_ids)
        raise ValueError("seq2seq models are trained on lm_labels targets (the label word as target text), not on class labels")

    def _head_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, task_ids: torch.Tensor | None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        x, mask, positions, index = self.encode(input_ids, attention_mask, task_ids)
        kwargs = {"position_ids": positions} if self._accepts(self.backbone, "position_ids") else {}
        hidden = self.backbone(inputs_embeds=x, attention_mask=mask, **kwargs).last_hidden_state
        cls_pos = index.gather(1, first_token_index(attention_mask).unsqueeze(1))
        cls = hidden.gather(1, cls_pos.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))  # [B, 1, H]
        pooler = getattr(self.backbone, "pooler", None)
        pooled = pooler(cls) if pooler is not None else cls[:, 0]
        return self.head(pooled)

    def _verbalizer_scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, task_ids: torch.Tensor | None) -> torch.Tensor:
        if self.verbalizer_ids is None:
            raise ValueError("classification with a causal LM scores label words: set prompt.verbalizer (one word per class)")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        words = self.verbalizer_ids
        if all(len(w) == 1 for w in words):
            last = self.last_token_logits(input_ids, attention_mask, task_ids)
            ids = torch.tensor([w[0] for w in words], device=last.device)
            return _upcast(last).log_softmax(-1)[:, ids]
        return self._multi_token_scores(input_ids, attention_mask, task_ids)

    def _multi_token_scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, task_ids: torch.Tensor | None) -> torch.Tensor:
        """Sum of log p(word tokens | input) per class: one run over every (example, class) pair."""
        b, c = input_ids.shape[0], len(self.verbalizer_ids)
        rows, spans = [], []
        for i in range(b):
            real = input_ids[i][attention_mask[i].bool()].tolist()
            for w in self.verbalizer_ids:
                rows.append(real + w)
                spans.append((len(real), len(w)))
        ids, mask = repad(rows, self._pad_id(), self.padding_side, input_ids.device)
        tasks = task_ids.repeat_interleave(c) if task_ids is not None else None
        logp = _upcast(self.token_logits(ids, mask, tasks)).log_softmax(-1)
        offset = ids.shape[1] - mask.sum(1) if self.padding_side == "left" else torch.zeros_like(mask[:, 0])
        scores = []
        for r, (start, k) in enumerate(spans):
            # the word's tokens sit at start..start+k-1; each is predicted by the position before it
            pos = int(offset[r]) + start - 1 + torch.arange(k, device=ids.device)
            scores.append(logp[r, pos, ids[r, pos + 1]].sum())
        return torch.stack(scores).view(b, c)

    def _pad_id(self) -> int:
        pad = getattr(self.tokenizer, "pad_token_id", None)
        return int(pad) if pad is not None else 0

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits when the model classifies (``seq_cls``, or a causal LM with a verbalizer), else token logits."""
        if self.task == "seq_cls" or (self.task == "causal_lm" and self.verbalizer_ids is not None):
            return self.class_logits(input_ids, attention_mask, task_ids)
        if self.task == "causal_lm":
            return self.token_logits(input_ids, attention_mask, task_ids)
        raise ValueError("seq2seq: call seq2seq_loss(batch) or generate(); a forward needs decoder targets")

    # ----- training contract ------------------------------------------------------------------------------------
    def _check_labels(self, labels: torch.Tensor) -> None:
        n = self.config.num_classes
        if n is not None and labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n):
            where = f"the verbalizer has {n} words {self.config.verbalizer}" if self.config.verbalizer else f"the head has {n} classes"
            raise ValueError(f"labels range {int(labels.min())}..{int(labels.max())} but {where}; every label must be a class index in 0..{n - 1}")

    def forward_batch(self, batch: dict[str, Any]) -> torch.Tensor:
        self._check_labels(batch["labels"])
        return self.class_logits(batch["input_ids"], batch.get("attention_mask"), batch.get("task_ids"))

    def lm_outputs(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, targets)`` aligned for the LM loss: causal LMs shift by one, seq2seq targets are the decoder's."""
        logits, targets = self._lm_logits_and_targets(batch)
        if self.task == "causal_lm":
            return logits[:, :-1], targets[:, :-1]
        return logits, targets

    def _lm_logits_and_targets(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`lm_outputs`, but a causal LM keeps every position: the last one gets the ignored target -100.

        The losses use this form, so ``[B, L, vocab]`` logits flatten as a view; slicing off the last position would
        copy them (about 200 MB at batch 16 x 64 tokens and a 49k vocabulary) for the same loss.
        """
        labels = batch["lm_labels"]
        if self.task == "causal_lm":
            mask = batch.get("attention_mask")
            logits = self.token_logits(batch["input_ids"], mask, batch.get("task_ids"))
            targets = labels[:, 1:]
            if mask is not None:
                # a token right after padding has no real predecessor (the first real token is never a target)
                targets = targets.masked_fill(mask[:, :-1] == 0, -100)
            return logits, F.pad(targets, (0, 1), value=-100)
        if self.task == "seq2seq":
            x, mask, _, _ = self.encode(batch["input_ids"], batch.get("attention_mask"), batch.get("task_ids"))
            logits = self.backbone(inputs_embeds=x, attention_mask=mask, labels=labels, use_cache=False).logits
            return logits, labels
        raise ValueError("seq_cls models train on class labels, not lm_labels")

    def training_step(self, batch: dict[str, Any]) -> torch.Tensor:
        if "lm_labels" in batch:
            logits, targets = self._lm_logits_and_targets(batch)
            return F.cross_entropy(_upcast(logits).flatten(0, 1), targets.flatten(), ignore_index=-100)
        return super().training_step(batch)

    @torch.no_grad()
    def eval_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        if "lm_labels" not in batch:
            return super().eval_step(batch)
        logits, targets = self._lm_logits_and_targets(batch)
        keep = targets != -100
        count = keep.sum().float()
        loss = F.cross_entropy(_upcast(logits).flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum")
        correct = ((logits.argmax(-1) == targets) & keep).sum().float()
        # sums over tokens: the trainer's sum / count gives the mean token loss and token accuracy
        return {"loss": loss, "token_accuracy": correct, "count": count}

    # ----- generation -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, task_ids: torch.Tensor | None = None, **generate_kwargs: Any) -> torch.Tensor:
        """Generates with the prompts: the new tokens ``[B, new]`` for causal LMs (the input is not repeated),
        the decoder's output for seq2seq. ``generate_kwargs`` go to transformers' ``generate``."""
        from .generation import generate_causal, generate_seq2seq

        attention_mask = self._check_inputs(input_ids, attention_mask, task_ids)
        if self.task == "causal_lm":
            # Shallow prompts generate through their keys/values too: the same numbers (proved by the tests against a
            # step-by-step decode of the concatenated reference), and the prompt is computed once, not per example.
            kv = self.prefix_key_values(task_ids, input_ids.shape[0])
            return generate_causal(self, input_ids, attention_mask, kv, **generate_kwargs)
        if self.task == "seq2seq":
            return generate_seq2seq(self, input_ids, attention_mask, task_ids, **generate_kwargs)
        raise ValueError("seq_cls models classify; they do not generate text")

    # ----- memory -----------------------------------------------------------------------------------------------------
    def enable_gradient_checkpointing(self) -> None:
        """Re-computes each frozen transformer layer in backward instead of storing its activations.

        The backbone stays in eval mode (dropout off), where transformers' own checkpointing is inactive and would drop
        ``past_key_values`` anyway; so each layer's forward is wrapped in non-reentrant checkpointing here. Prefix
        caches are stateless (:class:`textpt.fast_prefix.PrefixLayer`), so a re-run layer sees the same inputs.
        """
        from transformers.modeling_layers import GradientCheckpointingLayer

        if self._checkpointing:
            return
        layers = [m for m in self.backbone.modules() if isinstance(m, GradientCheckpointingLayer)]
        if not layers:
            raise NotImplementedError(f"{type(self.backbone).__name__} has no transformers layers to checkpoint")
        for layer in layers:
            layer.forward = _checkpointed(layer.forward)
        self._checkpointing = True

    # ----- prompt files -----------------------------------------------------------------------------------------------
    def prompt_config(self) -> dict[str, Any]:
        cfg = {
            "method": self.method,
            "backbone": self.backbone_name,
            "task": self.task,
            "dim": self.dim,
            "num_tokens": self.config.num_tokens,
            "num_tasks": self.config.num_tasks,
            "padding_side": self.padding_side,
        }
        if self.config.num_classes is not None:
            cfg["num_classes"] = self.config.num_classes
        if self.config.verbalizer:
            cfg["verbalizer"] = list(self.config.verbalizer)
        if self.head is not None:
            cfg["head"] = "linear"
        return cfg


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """Losses and log-probabilities in at least float32 (bf16/fp16 logits are upcast, float64 kept)."""
    return x if x.dtype == torch.float64 else x.float()


def _checkpointed(forward):
    def run(*args, **kwargs):
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return run
