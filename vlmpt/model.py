"""The shared base of prompted vision-language models: where the prompt goes, positions, the LM loss, generation.

A model is a frozen transformers vision-language model (a :class:`vlmpt.families.Family`) and soft prompt vectors
in its language model's input embeddings. The prompt sits right before each sequence's first real token, that is
before the whole chat template (and so before every image placeholder): the image placeholder expansion the
processor made is untouched, and the model's own code merges the image features into those rows.

Each forward packs ``[pad, prompt, tokens]`` with :func:`textpt.padding.pack_prompt` (left padding whatever the
input's side, so decode steps append after every row), computes the position ids of the packed sequence with the
family's position code (Qwen's ``get_rope_index`` with the prompt rows as text tokens) and passes them, so the
model never infers positions from a cache length or a stale ``rope_deltas`` of its own. On a prefix LM (PaliGemma)
it packs the ``token_type_ids`` the same way, the prompt rows being prefix. Each example gives the logits it gives
alone, unpadded.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from promptcore import PromptedModel
from promptcore.errors import UserError
from textpt.fast_prefix import KeyValues, cache_argument, generation_cache, prefix_cache
from textpt.padding import pack_prompt
from textpt.tasks import upcast

from .answers import AnswerScorer, ClassScorer, with_intervals
from .data import REFERENCE_KEYS
from .families import Family, family_of

IGNORE = -100
"""The label of positions without a loss (transformers' convention)."""

TEXT_KEYS = ("input_ids", "attention_mask", "labels")


@dataclass
class Packed:
    """A batch as the language model sees it, prompt placed.

    Attributes:
        embeds: ``[B, S, D]`` token embeddings with the prompt rows (image placeholders not yet replaced).
        mask: ``[B, p + S]`` attention mask, its first ``p`` columns (open) the prefix's of a deep method (``p``
            = 0 without one). positions: the family's position ids of the ``S`` rows (``[B, S]`` or ``[3, B, S]``),
            counted after the prefix. token_index: ``[B, L]``, where input token ``j`` landed. deltas: ``[B, 1]``
            (see :class:`Family`). extra: further inputs of the backbone's prefill: a prefix LM's ``token_type_ids``
            ``[B, p + S]`` (the prompt rows, padding and a deep method's prefix are prefix, 0).
    """

    embeds: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    token_index: torch.Tensor
    deltas: torch.Tensor
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def next_positions(self, family: Family) -> torch.Tensor:
        """The position ids of one more token after every row (``[B, 1]``, or ``[3, B, 1]`` for mRoPE)."""
        nxt = self.mask.long().sum(1, keepdim=True) + self.deltas.to(self.mask.device)
        return nxt.unsqueeze(0).expand(3, -1, -1) if family.mrope else nxt


class VLMPromptedModel(PromptedModel):
    """A frozen vision-language model with soft prompts before each sequence in its language model.

    Subclasses build ``self.prompts`` and implement :meth:`shallow_prompt` (prompt rows in the input embeddings) or
    :meth:`prefix_key_values` (keys and values before the sequence in every language-model layer, with
    :attr:`num_prefix_tokens`), or both.

    Args:
        backbone: a supported ``...ForConditionalGeneration`` model (:data:`vlmpt.families.FAMILIES`); frozen.
        name: the backbone's name recorded in prompt files (default: the config's ``name_or_path``).

    Attributes:
        answer_scorer: when set, :meth:`eval_step` also scores each evaluation row: its generated answer against
            its references (:class:`vlmpt.answers.AnswerScorer`) or its best class word against its class
            (:class:`vlmpt.answers.ClassScorer`); None: token metrics only.
    """

    method: str = ""

    def __init__(self, backbone: nn.Module, name: str | None = None) -> None:
        super().__init__()
        self.family = family_of(backbone)
        self.backbone = backbone
        self.backbone_name = name or getattr(backbone.config, "name_or_path", "") or type(backbone).__name__
        self.dim = int(self.embedding.weight.shape[1])
        self.image_token_id = int(backbone.config.image_token_id)
        # Prompt rows need some text token id in the packed ids (positions count them as text); any id but the
        # image placeholder's will do, as the rows' embeddings are replaced by the prompt.
        self.fill_id = 0 if self.image_token_id != 0 else 1
        self.answer_scorer: AnswerScorer | ClassScorer | None = None

    @property
    def embedding(self) -> nn.Module:
        return self.backbone.get_input_embeddings()

    @property
    def device(self) -> torch.device:
        return self.embedding.weight.device

    @property
    def num_prompt_tokens(self) -> int:
        return 0

    def shallow_prompt(self, batch_size: int) -> torch.Tensor:
        """``[B, n, D]`` prompt embeddings placed before each sequence."""
        raise NotImplementedError(f"{type(self).__name__} must implement shallow_prompt()")

    @property
    def num_prefix_tokens(self) -> int:
        """Key/value positions a deep method puts before the sequence in every language-model layer (0: none)."""
        return 0

    def prefix_key_values(self, batch_size: int) -> KeyValues:
        """Per language-model layer, the prefix ``(keys, values)``, each ``[B, kv_heads, n, head_dim]``."""
        raise NotImplementedError(f"{type(self).__name__} must implement prefix_key_values() when num_prefix_tokens > 0")

    def prompted_backbone(self) -> contextlib.AbstractContextManager:
        """The context the backbone runs in while this model uses it: a method with prompts inside the backbone (the
        vision tower's) puts them in there; none here."""
        return contextlib.nullcontext()

    def cache_inputs(self, batch_size: int, generation: bool = False) -> dict[str, Any]:
        """The backbone's cache arguments of a prefill: the prefix of a deep method as a stateless cache
        (:func:`textpt.fast_prefix.prefix_cache`) or, in ``generation``, as the start of a growing one
        (:func:`textpt.fast_prefix.generation_cache`); without a prefix, only whether to keep a cache."""
        if not self.num_prefix_tokens:
            return {"use_cache": generation}
        kv = self.prefix_key_values(batch_size)
        return {"use_cache": True, cache_argument(self.backbone): generation_cache(kv) if generation else prefix_cache(kv)}

    # ----- inputs -----------------------------------------------------------------------------------------------------
    def split_inputs(self, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """``(input_ids, attention_mask, images)`` of a batch, checked; ``images`` holds the family's image keys (a
        prefix LM's ``token_type_ids``: :meth:`token_types`)."""
        known = (*TEXT_KEYS, *self.family.image_keys, *self.family.derived_keys, *(("token_type_ids",) if self.family.prefix_lm else ()))
        unknown = sorted(set(inputs) - set(known))
        if unknown:
            raise UserError(
                f"batch keys {unknown} are not taken by {self.family.classes[0]} prompts; the keys are "
                f"{list(known)} (videos are not supported yet)"
            )
        input_ids = inputs.get("input_ids")
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            raise UserError(f"input_ids must be a [batch, length] tensor, got {getattr(input_ids, 'shape', type(input_ids).__name__)}")
        mask = inputs.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(input_ids)
        elif mask.shape != input_ids.shape:
            raise UserError(f"attention_mask has shape {tuple(mask.shape)}, input_ids {tuple(input_ids.shape)}; they must match")
        if bool((mask.sum(1) == 0).any()):
            raise UserError("a row of the batch has no real token (attention_mask all 0); drop empty examples")
        return input_ids, mask, {k: inputs[k] for k in self.family.image_keys if inputs.get(k) is not None}

    def token_types(self, inputs: dict[str, Any]) -> torch.Tensor | None:
        """A prefix LM's ``token_type_ids`` of a batch (checked against its ``input_ids``), or None: not given (all
        prefix), or not a prefix LM (:meth:`split_inputs` refuses the key there)."""
        types = inputs.get("token_type_ids") if self.family.prefix_lm else None
        shape = tuple(inputs["input_ids"].shape)
        if types is not None and (tuple(types.shape) != shape or bool(((types != 0) & (types != 1)).any())):
            raise UserError(
                f"token_type_ids must be 0 (prefix) or 1 (suffix) per input token, shape {shape}; got shape "
                f"{tuple(types.shape)} with values {sorted(set(types.unique().tolist()))}"
            )
        return types

    def pack(self, input_ids: torch.Tensor, mask: torch.Tensor, images: dict[str, Any], token_types: torch.Tensor | None = None) -> Packed:
        """Places the prompt right before each row's first real token and computes the packed positions (after a
        deep method's prefix, which the family's position code counts as text rows before the sequence). On a prefix
        LM, the packed ``token_type_ids`` hold ``token_types`` (default: all prefix) at the tokens' rows and 0 (the
        prefix) elsewhere: the prompt rows attend, and are attended to, in both directions within the prefix."""
        prompt = self.shallow_prompt(input_ids.shape[0])
        placeholder = self.embedding.weight[self.image_token_id].detach()
        # transformers finds image placeholder rows in inputs_embeds by comparing them with this embedding (in the
        # model's dtype, which the prompt is cast to).
        if bool((prompt.detach().to(placeholder.dtype) == placeholder).all(-1).any()):
            raise UserError("a prompt vector equals the image placeholder token's embedding, which the model would take for an image row; re-initialise the prompt")
        embeds, packed_mask, _, token_index = pack_prompt(prompt, self.embedding(input_ids), mask, "left")
        ids = torch.full(packed_mask.shape, self.fill_id, dtype=input_ids.dtype, device=input_ids.device)
        ids.scatter_(1, token_index, input_ids)
        extra = {}
        if self.family.prefix_lm:
            types = torch.zeros_like(ids)
            if token_types is not None:
                types.scatter_(1, token_index, token_types.to(types))
            extra["token_type_ids"] = types
        n = self.num_prefix_tokens
        if n:
            ids = torch.cat([ids.new_full((ids.shape[0], n), self.fill_id), ids], dim=1)
            packed_mask = torch.cat([packed_mask.new_ones(packed_mask.shape[0], n), packed_mask], dim=1)
            # the model's mask indexes token types by absolute position, the prefix's included
            extra = {k: torch.cat([v.new_zeros(v.shape[0], n), v], dim=1) for k, v in extra.items()}
        positions, deltas = self.family.positions(self.backbone, ids, packed_mask, images)
        return Packed(embeds, packed_mask, positions[..., n:], token_index, deltas, extra)

    # ----- forward and loss -------------------------------------------------------------------------------------------
    def forward(self, **inputs: Any) -> torch.Tensor:
        """Next-token logits ``[B, L, vocab]`` at each input token (``input_ids``, ``attention_mask`` and the
        family's image keys, e.g. ``pixel_values`` and ``image_grid_thw`` as the processor returns them)."""
        input_ids, mask, images = self.split_inputs(inputs)
        packed = self.pack(input_ids, mask, images, self.token_types(inputs))
        cache = self.cache_inputs(input_ids.shape[0])
        with self.prompted_backbone():
            out = self.backbone(
                inputs_embeds=packed.embeds, attention_mask=packed.mask, position_ids=packed.positions, **packed.extra, **cache, **images
            )
        logits = out.logits
        return logits.gather(1, packed.token_index.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))

    def targets(self, batch: dict[str, Any]) -> torch.Tensor:
        """``[B, L - 1]`` target of each input token's logits: the next token, ``-100`` where no loss is taken.

        ``labels`` (default: ``input_ids``) with ``-100`` on what the user masks (the instruction); padding and
        image placeholder rows are masked here, and a token after padding is no target (the first token of a
        sequence is never predicted). On a prefix LM only suffix tokens (``token_type_ids`` 1) are targets: a prefix
        token is seen by the tokens before it. The prompt has no labels: it is not part of the input.
        """
        input_ids = batch["input_ids"]
        mask = batch.get("attention_mask", torch.ones_like(input_ids))
        labels = batch.get("labels", input_ids)
        if labels.shape != input_ids.shape:
            raise UserError(f"labels have shape {tuple(labels.shape)}, input_ids {tuple(input_ids.shape)}; give one label per input token (-100: no loss)")
        keep = (mask == 1) & (input_ids != self.image_token_id) & (labels != IGNORE)
        if self.family.prefix_lm:
            keep &= batch.get("token_type_ids", torch.zeros_like(input_ids)) == 1
        keep[:, 1:] &= mask[:, :-1] == 1
        return torch.where(keep, labels, IGNORE)[:, 1:]

    def training_step(self, batch: dict[str, Any]) -> torch.Tensor:
        """The mean next-token loss over the target tokens (:meth:`targets`)."""
        logits = self(**batch)[:, :-1]
        targets = self.targets(batch)
        if not bool((targets != IGNORE).any()):
            prefix = " or prefix (token_type_ids 0; mark the answer 1, as the processor does with suffix=...)" if self.family.prefix_lm else ""
            raise UserError(f"the batch has no target token: every label is -100, padding or an image placeholder{prefix}")
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE)

    def metric_names(self) -> tuple[str, ...]:
        return ("loss", "token_accuracy", *(self.answer_scorer.metric_names if self.answer_scorer is not None else ()))

    @torch.no_grad()
    def eval_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Sums of the token loss and of correct greedy tokens over the target tokens, and their ``count``.

        With an :attr:`answer_scorer` and a batch that carries references (``prompt_ids``, ``prompt_mask`` and
        ``answers``, as :func:`vlmpt.data.collate_examples` makes them of evaluation examples), every metric is
        per row instead, ``count`` being the rows: ``loss`` and ``token_accuracy`` are each row's mean over its
        target tokens, and the scorer's metrics are added (:mod:`vlmpt.answers`: the answer generated from
        ``prompt_ids`` scored against the references, ``exact_match``, ``token_f1`` and ``token_f1_sq`` for the
        interval; or classification by class words, ``accuracy``).
        """
        inputs = {k: v for k, v in batch.items() if k not in REFERENCE_KEYS}
        logits = self(**inputs)[:, :-1].float()
        targets = self.targets(inputs)
        kept = targets != IGNORE
        losses = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE, reduction="none")
        correct = (logits.argmax(-1) == targets) & kept
        if self.answer_scorer is None or "answers" not in batch:
            return {"loss": losses.sum(), "token_accuracy": correct.sum().float(), "count": kept.sum().float()}
        tokens = kept.sum(1).clamp(min=1)
        images = {k: inputs[k] for k in self.family.image_keys if k in inputs}
        scores = {k: v.to(logits.device) for k, v in self.answer_scorer.evaluate(self, batch, images).items()}
        return {
            "loss": (losses.sum(1) / tokens).sum(),
            "token_accuracy": (correct.sum(1) / tokens).sum(),
            **scores,
            "count": torch.tensor(float(len(batch["answers"])), device=logits.device),
        }

    def summarize_metrics(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """The averaged metrics with 95% intervals of the scores (:func:`vlmpt.answers.with_intervals`)."""
        return with_intervals(metrics)

    @torch.no_grad()
    def class_scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, class_ids: list[list[int]], **images: Any) -> torch.Tensor:
        """``[B, C]``: for each class, the summed log-probability of its tokens ``class_ids[c]`` written right after
        each (left-padded) input, images (and a prefix LM's ``token_type_ids``) as the family takes them; on a
        prefix LM the class words are the suffix."""
        if not bool(attention_mask[:, -1].all()):
            raise UserError("class_scores takes left-padded inputs (every row's last token real); pad on the left (tokenizer.padding_side = 'left')")
        width = input_ids.shape[1]
        # a prefix LM's input (its token_type_ids, if given, are all prefix) is followed by the class words as suffix
        given = images.pop("token_type_ids", None) if self.family.prefix_lm else None
        prefix = torch.zeros_like(input_ids) if given is None else given
        scores = []
        for ids in class_ids:
            word = torch.tensor(ids, dtype=input_ids.dtype, device=input_ids.device).expand(input_ids.shape[0], -1)
            mask = torch.cat([attention_mask, attention_mask.new_ones(word.shape)], dim=1)
            types = {"token_type_ids": torch.cat([prefix, torch.ones_like(word)], dim=1)} if self.family.prefix_lm else {}
            logits = self(input_ids=torch.cat([input_ids, word], dim=1), attention_mask=mask, **types, **images)
            logp = upcast(logits[:, width - 1 : -1]).log_softmax(-1)
            scores.append(logp.gather(-1, word.unsqueeze(-1)).squeeze(-1).sum(1))
        return torch.stack(scores, dim=1)

    # ----- generation -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self, max_new_tokens: int = 20, eos_token_id: int | None = None, use_cache: bool = True, return_scores: bool = False, **inputs: Any
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Greedy decoding with the prompt: the new tokens ``[B, new]`` (the input is not repeated), and with
        ``return_scores`` also the logits each token was chosen from, ``[B, new, vocab]``.

        ``use_cache=True`` runs the prompt and the input once and then one token per step from the key/value cache,
        positions continued from the prefill's (``rope_deltas`` on Qwen); ``use_cache=False`` is the plain
        reference: every step runs the whole sequence again, positions computed anew. Both give the same tokens.
        After a row writes ``eos_token_id`` it writes ``eos_token_id`` again until every row has finished. The image
        placeholder token is never written. ``scores`` are the model's logits, before that exclusion.
        """
        if max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        input_ids, mask, images = self.split_inputs(inputs)
        run = self._generate_cached if use_cache else self._generate_plain
        tokens, scores = run(input_ids, mask, images, self.token_types(inputs), max_new_tokens, eos_token_id)
        return (tokens, scores) if return_scores else tokens

    def _pick(self, logits: torch.Tensor, done: torch.Tensor, eos_token_id: int | None) -> torch.Tensor:
        """Greedy choice, never the image placeholder token (no image stands behind a written one, and the model
        would look for its features); rows that wrote ``eos_token_id`` before write it again. ``done`` is updated
        in place."""
        token = logits.index_fill(-1, torch.tensor([self.image_token_id], device=logits.device), float("-inf")).argmax(-1)
        if eos_token_id is None:
            return token
        token = torch.where(done, eos_token_id, token)
        done |= token == eos_token_id
        return token

    def _generate_cached(
        self, input_ids: torch.Tensor, mask: torch.Tensor, images: dict[str, Any], types: torch.Tensor | None, steps: int, eos: int | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        packed = self.pack(input_ids, mask, images, types)
        cache = self.cache_inputs(input_ids.shape[0], generation=True)
        with self.prompted_backbone():
            out = self.backbone(
                inputs_embeds=packed.embeds, attention_mask=packed.mask, position_ids=packed.positions, **packed.extra, **cache, **images
            )
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        new: list[torch.Tensor] = []
        scores: list[torch.Tensor] = []
        while True:
            scores.append(out.logits[:, -1])
            new.append(self._pick(scores[-1], done, eos))
            if len(new) == steps or bool(done.all()):
                break
            token = new[-1]
            # A decode step attends causally (a prefix LM's new tokens are suffix): the model takes no token types here.
            positions = packed.next_positions(self.family)
            packed.mask = torch.cat([packed.mask, packed.mask.new_ones(packed.mask.shape[0], 1)], dim=1)
            out = self.backbone(
                inputs_embeds=self.embedding(token[:, None]), attention_mask=packed.mask, position_ids=positions, cache=out.cache, use_cache=True
            )
        return torch.stack(new, dim=1), torch.stack(scores, dim=1)

    def _generate_plain(
        self, input_ids: torch.Tensor, mask: torch.Tensor, images: dict[str, Any], types: torch.Tensor | None, steps: int, eos: int | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.family.prefix_lm and types is None:
            types = torch.zeros_like(input_ids)
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        new: list[torch.Tensor] = []
        scores: list[torch.Tensor] = []
        while True:
            ids = torch.cat([input_ids, *[t[:, None] for t in new]], dim=1)
            full_mask = torch.cat([mask, mask.new_ones(mask.shape[0], len(new))], dim=1)
            written = {} if types is None else {"token_type_ids": torch.cat([types, types.new_ones(types.shape[0], len(new))], dim=1)}
            logits = self(input_ids=ids, attention_mask=full_mask, **written, **images)
            # The last real token of each row: with right padding it is not the last column.
            last = (full_mask.cumsum(1) == full_mask.sum(1, keepdim=True)).long().argmax(1)
            scores.append(logits[torch.arange(ids.shape[0]), last])
            new.append(self._pick(scores[-1], done, eos))
            if len(new) == steps or bool(done.all()):
                return torch.stack(new, dim=1), torch.stack(scores, dim=1)

    # ----- prompt files -----------------------------------------------------------------------------------------------
    def prompt_config(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "backbone": self.backbone_name,
            "model_type": self.backbone.config.model_type,
            "dim": self.dim,
            "num_tokens": self.num_prompt_tokens,
        }
