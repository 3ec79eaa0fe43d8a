"""The model tasks of a prompted text model, one strategy each: how the model is run, trained, evaluated and asked to
generate, and which batches it takes.

- :class:`CausalLM` (``causal_lm``): next-token logits of the input tokens, trained on ``lm_labels``; or class
  scores from the verbalizer's words after the input (``labels`` batches); generation through transformers'
  ``generate`` with the prompt as a key/value cache.
- :class:`Seq2Seq` (``seq2seq``): the encoder input carries the prompt, the decoder is trained on ``lm_labels``;
  class scores are the verbalizer words' summed log-probabilities as decoder targets.
- :class:`SequenceClassification` (``seq_cls``): an encoder whose pooled features (``model.pooling``: the first
  real token ``[CLS]``, the mean of the input's tokens, the last token, or the model's own frozen pooler; by default
  what the checkpoint was trained for) feed a trainable linear head.

A strategy is stateless: every call takes the prompted model (:class:`textpt.model.TextPromptedModel`), which
places the prompt (``token_logits``, ``last_token_logits``, ``encode``) and holds the head and the verbalizer. Calls
go one way: the model calls its task, the task calls the model's prompt placement, which never calls a task.
Strategies are registered by task name in :data:`TASKS`; ``model.task`` takes any registered name.

A strategy also owns its batches: :meth:`TextTask.encode_row` turns one data row into an example (the shared row
machinery, :class:`textpt.data.ExampleEncoder`, renders the template, maps labels and shortens texts) and
:meth:`TextTask.collator` pads examples into the batch its steps read:

- class labels (``seq_cls``, ``causal_lm`` with a verbalizer, the default):
  ``{"input_ids": [B, L], "attention_mask": [B, L], "labels": [B]}``;
- ``causal_lm`` with ``data.target_column``: ``{"input_ids", "attention_mask", "lm_labels": [B, L]}``, the
  template part and the padding of ``lm_labels`` set to -100 so only the target is learned;
- ``seq2seq``: ``{"input_ids", "attention_mask", "lm_labels": [B, T]}`` (the target, -100 on padding), plus
  ``labels`` when the target is a class's verbalizer word.

Each adds ``task_ids: [B]`` when ``data.task_column`` is set. Padding follows the tokenizer's ``padding_side``.

A model that classifies (``model.classifies``) trains and evaluates on ``labels`` with the metrics
``("loss", "accuracy")``; one that writes tokens trains on ``lm_labels`` and reports ``("loss",
"token_accuracy")``, both as sums over the batch's targets for the trainer to average.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from promptcore.errors import UserError
from promptcore.vocab_parallel import parallel_head

from .attention_prefix import prefixes_during
from .config import TASKS, CausalLMTraits, Seq2SeqTraits, SequenceClassificationTraits, TaskTraits, trainable_dtype
from .fast_prefix import cache_argument, generation_cache
from .padding import first_token_index, last_token_index, pad_token_id, repad

if TYPE_CHECKING:
    from .data import ExampleEncoder
    from .model import TextPromptedModel

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # the target value torch's cross-entropy skips: padding, template tokens, unpredicted positions

# Config attributes of transformers models that change the logits after the LM head (Gemma's soft-capping, Cohere's
# logit scale, Granite's logits scaling, Falcon-H1's multiplier): the vocabulary-parallel loss computes the logits
# from the hidden states itself and would skip them (CausalLM.vocabulary_layers refuses such models).
LOGIT_POSTPROCESSING = ("final_logit_softcapping", "logit_scale", "logits_scaling", "lm_head_multiplier")


def upcast(x: torch.Tensor) -> torch.Tensor:
    """Losses and log-probabilities in at least float32 (bf16/fp16 logits are upcast, float64 kept)."""
    return x if x.dtype == torch.float64 else x.float()


class TextTask(TaskTraits):
    """One model task. Subclasses set the class attributes and override what their task supports; the defaults
    refuse with a message naming the task. What the checks of a run config ask of a task (``name``,
    ``decoder_only``, ``label_words``, ``check_run``) is in its base, :class:`textpt.config.TaskTraits`, free of torch:
    the toolkit's tasks subclass their traits' class, declared with their names.

    Attributes:
        auto_class: the transformers ``Auto`` class that loads a model for the task.
    """

    auto_class: ClassVar[str] = ""

    def classifies(self, model: "TextPromptedModel") -> bool:
        """Whether the model's outputs are class scores (trained on ``labels``) rather than tokens."""
        raise NotImplementedError

    def metric_names(self, classifies: bool) -> tuple[str, ...]:
        """The metrics a model's ``eval_step`` reports (besides ``count``), as it classifies or not."""
        return ("loss", "accuracy") if classifies else ("loss", "token_accuracy")

    def build_head(self, model: "TextPromptedModel") -> nn.Module | None:
        """The task's trainable head, or None."""
        return None

    def resolve_pooling(self, backbone: nn.Module, pooling: str) -> str | None:
        """The pooling the task runs for ``model.pooling`` (None: the task pools nothing).

        Raises:
            UserError: a pooling other than ``auto`` for a task that pools nothing.
        """
        if pooling != "auto":
            raise UserError(f"model.pooling: {pooling!r} pools an encoder's features for seq_cls; a {self.name} model pools nothing, so leave it at auto")
        return None

    # ----- data: rows to examples, examples to batches ---------------------------------------------------------
    def learns_labels(self, target_column: str | None) -> bool:
        """Whether a run whose targets are ``target_column`` (``None``: class labels) learns classes: its rows carry
        ``labels`` and ``textpt generate`` prints class probabilities. Classes by default."""
        return True

    def target_template(self, target_column: str) -> str:
        """How a row becomes the target when ``data.target_template`` is unset."""
        return "{%s}" % target_column

    def check_encoder(self, encoder: "ExampleEncoder") -> None:
        """Raises :class:`promptcore.UserError` when ``encoder``'s settings give the task nothing to learn (by
        default: class labels without a class count)."""
        if encoder.num_classes is None:
            raise UserError("classification needs the number of classes: set prompt.num_classes or prompt.verbalizer")

    def encode_row(self, encoder: "ExampleEncoder", row: dict[str, Any], index: int, split: str, input_ids: list[int]) -> tuple[dict[str, Any], bool]:
        """One row's example (without ``task_ids``, which the encoder adds) and whether it was shortened.

        Args:
            encoder: the run's row settings and the shared steps (:meth:`~textpt.data.ExampleEncoder.label`,
                :meth:`~textpt.data.ExampleEncoder.fit`, :meth:`~textpt.data.ExampleEncoder.render`).
            row: the row's columns.
            index: the row's index in its split (for error messages).
            split: the split's name (for error messages).
            input_ids: the rendered template's token ids, special tokens included, before shortening.

        By default the class label (when ``data.label_column`` is set) and the input ids within ``max_length``.
        """
        example: dict[str, Any] = {}
        if encoder.wants_labels:
            example["labels"] = encoder.label(row, index, split)
        example["input_ids"], truncated = encoder.fit(row, input_ids)
        return example, truncated

    def collator(self, pad_token_id: int, padding_side: str) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
        """Pads the task's examples into batches (``lm_labels`` along ``input_ids`` by default)."""
        return TextCollator(pad_token_id, padding_side)

    # ----- running ---------------------------------------------------------------------------------------------
    def token_outputs(self, model: "TextPromptedModel", input_ids: torch.Tensor, attention_mask: torch.Tensor | None, task_ids: torch.Tensor | None) -> torch.Tensor:
        """What the model's ``forward`` returns when it does not classify."""
        raise UserError(f"{self.name} models classify; call class_logits")

    def class_logits(self, model: "TextPromptedModel", input_ids: torch.Tensor, attention_mask: torch.Tensor | None, task_ids: torch.Tensor | None) -> torch.Tensor:
        """``[B, num_classes]`` class scores."""
        raise NotImplementedError

    def lm_logits_and_targets(self, model: "TextPromptedModel", batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits [B, T, vocab], targets [B, T])`` of the LM loss, :data:`IGNORE_INDEX` where nothing is learned."""
        raise UserError(f"{self.name} models train on class labels, not lm_labels")

    def lm_outputs(self, model: "TextPromptedModel", batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, targets)`` aligned for the LM loss, every position a prediction."""
        return self.lm_logits_and_targets(model, batch)

    def loss_logits_and_targets(self, model: "TextPromptedModel", batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """What :meth:`lm_loss` and :meth:`lm_metrics` read: :meth:`lm_logits_and_targets`, or any ``(logits [R, T,
        vocab], targets [R, T])`` holding the same targets (a packed batch's, :meth:`CausalLM.loss_logits_and_targets`)."""
        return self.lm_logits_and_targets(model, batch)

    def generate(self, model: "TextPromptedModel", input_ids: torch.Tensor, attention_mask: torch.Tensor, task_ids: torch.Tensor | None, **generate_kwargs: Any) -> torch.Tensor:
        """Token ids generated with the prompt."""
        raise UserError(f"{self.name} models classify; they do not generate text")

    def vocabulary_layers(self, model: "TextPromptedModel") -> tuple[nn.Module, nn.Module]:
        """The token embedding and LM head that ``train.fsdp.shard_vocabulary`` may shard by vocabulary
        (:mod:`promptcore.vocab_parallel`): only where the task computes its losses from them (causal LMs).

        Raises:
            UserError: the task's losses do not go through the vocabulary-parallel head.
        """
        raise UserError(
            f"train.fsdp.shard_vocabulary: a {self.name} model's losses do not go through a vocabulary-parallel LM "
            f"head (only model.task: causal_lm); set train.fsdp.shard_vocabulary: auto or false"
        )

    # ----- training contract -----------------------------------------------------------------------------------
    def learns_tokens(self, batch: dict[str, Any], classifies: bool) -> bool:
        """Whether ``batch`` trains the LM loss of a model that classifies or not: it has ``lm_labels``, and class
        ``labels`` only if the model does not classify (a seq2seq batch carries both when the targets are the
        verbalizer's words). The model's ``training_step`` and ``eval_step`` ask this, then call :meth:`lm_loss` /
        :meth:`lm_metrics`, or score the classes themselves (``forward_batch``, which calls :meth:`class_logits`)."""
        return "lm_labels" in batch and ("labels" not in batch or not classifies)

    def lm_loss(self, model: "TextPromptedModel", batch: dict[str, Any]) -> torch.Tensor:
        """The mean LM loss over the target tokens of ``batch``; vocabulary-parallel where the LM head is sharded by
        vocabulary (``train.fsdp.shard_vocabulary``), the same loss."""
        head = parallel_head(model.backbone)
        if head is not None:
            with head.passing_through():
                hidden, targets = self.loss_logits_and_targets(model, batch)
            return head.cross_entropy(hidden, targets, IGNORE_INDEX)
        logits, targets = self.loss_logits_and_targets(model, batch)
        return F.cross_entropy(upcast(logits).flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)

    @torch.no_grad()
    def lm_metrics(self, model: "TextPromptedModel", batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Sums over the target tokens of ``batch``: ``loss``, ``token_accuracy`` and ``count``."""
        head = parallel_head(model.backbone)
        if head is not None:
            with head.passing_through():
                hidden, targets = self.loss_logits_and_targets(model, batch)
            keep = targets != IGNORE_INDEX
            loss = head.cross_entropy(hidden, targets, IGNORE_INDEX, reduction="sum")
            correct = ((head.argmax(hidden) == targets) & keep).sum().float()
            return {"loss": loss, "token_accuracy": correct, "count": keep.sum().float()}
        logits, targets = self.loss_logits_and_targets(model, batch)
        keep = targets != IGNORE_INDEX
        count = keep.sum().float()
        loss = F.cross_entropy(upcast(logits).flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
        correct = ((logits.argmax(-1) == targets) & keep).sum().float()
        # sums over tokens: the trainer's sum / count gives the mean token loss and token accuracy
        return {"loss": loss, "token_accuracy": correct, "count": count}


@dataclass
class TextCollator:
    """Pads encoded examples into a batch of tensors.

    Args:
        pad_token_id: the id written into padded input positions (masked out by ``attention_mask``).
        padding_side: ``left`` or ``right`` for ``input_ids`` (and ``lm_labels`` aligned with them).
        labels_aligned: ``lm_labels`` run along ``input_ids`` (causal LM) and are padded on the same side; else
            they are a separate target sequence (seq2seq), padded on the right.
    """

    pad_token_id: int
    padding_side: Literal["left", "right"] = "right"
    labels_aligned: bool = True

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if self.padding_side not in ("left", "right"):
            raise UserError(f"padding_side must be 'left' or 'right', got {self.padding_side!r}")
        input_ids, attention_mask = repad([e["input_ids"] for e in examples], self.pad_token_id, self.padding_side, torch.device("cpu"))
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "lm_labels" in examples[0]:
            side = self.padding_side if self.labels_aligned else "right"
            batch["lm_labels"] = repad([e["lm_labels"] for e in examples], IGNORE_INDEX, side, torch.device("cpu"))[0]
        for key in ("labels", "task_ids"):
            if key in examples[0]:
                batch[key] = torch.tensor([e[key] for e in examples], dtype=torch.long)
        return batch


class CausalLM(CausalLMTraits, TextTask):
    """Decoder-only LMs: learns to write targets (``lm_labels``), or classifies by scoring the verbalizer's words."""

    auto_class = "AutoModelForCausalLM"

    def learns_labels(self, target_column: str | None) -> bool:
        return target_column is None

    def target_template(self, target_column: str) -> str:
        return " {%s}" % target_column  # a space after the prompt, as BPE vocabularies expect

    def check_encoder(self, encoder: "ExampleEncoder") -> None:
        if encoder.target_column is None and not encoder.verbalizer:
            raise UserError(self._NEEDS)

    def encode_row(self, encoder: "ExampleEncoder", row: dict[str, Any], index: int, split: str, input_ids: list[int]) -> tuple[dict[str, Any], bool]:
        """Classification rows as the default; generation rows are the input then the target (and the
        end-of-sequence token), ``lm_labels`` :data:`IGNORE_INDEX` on the input. When the two do not fit in
        ``max_length``, the target keeps at most half of it and the input's text field is cut to the rest."""
        if encoder.target_column is None:
            return super().encode_row(encoder, row, index, split, input_ids)
        tokenizer = encoder.tokenizer
        target = list(tokenizer(encoder.render(encoder.target_template, row), add_special_tokens=False)["input_ids"])
        if tokenizer.eos_token_id is not None:
            target.append(tokenizer.eos_token_id)
        budget, cut = encoder.max_length or sys.maxsize, False
        if len(input_ids) + len(target) > budget and len(target) > budget // 2:
            target, cut = target[: budget // 2], True
        ids, shortened = encoder.fit(row, input_ids, budget - len(target))
        return {"input_ids": ids + target, "lm_labels": [IGNORE_INDEX] * len(ids) + target}, cut or shortened

    def classifies(self, model: "TextPromptedModel") -> bool:
        return model.verbalizer_ids is not None

    def token_outputs(self, model: "TextPromptedModel", input_ids: torch.Tensor, attention_mask: torch.Tensor | None, task_ids: torch.Tensor | None) -> torch.Tensor:
        return model.token_logits(input_ids, attention_mask, task_ids)

    def class_logits(self, model: "TextPromptedModel", input_ids: torch.Tensor, attention_mask: torch.Tensor | None, task_ids: torch.Tensor | None) -> torch.Tensor:
        """The verbalizer words' log-probabilities after each input (a word of several tokens: their sum)."""
        if model.verbalizer_ids is None:
            raise UserError("classification with a causal LM scores label words: set prompt.verbalizer (one word per class)")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        words = model.verbalizer_ids
        if all(len(w) == 1 for w in words):
            head = parallel_head(model.backbone)
            if head is not None:  # sharded by vocabulary: only the label words' log-probabilities are computed
                with head.passing_through():
                    last = model.last_token_logits(input_ids, attention_mask, task_ids)
                ids = torch.tensor([w[0] for w in words], device=last.device)
                return head.log_probs(last, ids.expand(last.shape[0], -1))
            last = model.last_token_logits(input_ids, attention_mask, task_ids)
            ids = torch.tensor([w[0] for w in words], device=last.device)
            return upcast(last).log_softmax(-1)[:, ids]
        return self._multi_token_scores(model, input_ids, attention_mask, task_ids)

    def _multi_token_scores(self, model: "TextPromptedModel", input_ids: torch.Tensor, attention_mask: torch.Tensor, task_ids: torch.Tensor | None) -> torch.Tensor:
        """Sum of log p(word tokens | input) per class: one run over every (example, class) pair."""
        b, c = input_ids.shape[0], len(model.verbalizer_ids)
        rows, spans = [], []
        for i in range(b):
            real = input_ids[i][attention_mask[i].bool()].tolist()
            for w in model.verbalizer_ids:
                rows.append(real + w)
                spans.append((len(real), len(w)))
        ids, mask = repad(rows, pad_token_id(model.tokenizer), model.padding_side, input_ids.device)
        tasks = task_ids.repeat_interleave(c) if task_ids is not None else None
        following = F.pad(ids[:, 1:], (0, 1)).unsqueeze(-1)  # the token after each position
        head = parallel_head(model.backbone)
        if head is not None:  # sharded by vocabulary: only those tokens' log-probabilities are computed
            with head.passing_through():
                hidden = model.token_logits(ids, mask, tasks)
            logp = head.log_probs(hidden, following)[..., 0]
        else:
            logp = upcast(model.token_logits(ids, mask, tasks)).log_softmax(-1).gather(-1, following)[..., 0]
        offset = ids.shape[1] - mask.sum(1) if model.padding_side == "left" else torch.zeros_like(mask[:, 0])
        scores = []
        for r, (start, k) in enumerate(spans):
            # the word's tokens sit at start..start+k-1; each is predicted by the position before it
            pos = int(offset[r]) + start - 1 + torch.arange(k, device=ids.device)
            scores.append(logp[r, pos].sum())
        return torch.stack(scores).view(b, c)

    def lm_logits_and_targets(self, model: "TextPromptedModel", batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Every position's next-token logits; the last position gets the ignored target.

        The losses use this form, so ``[B, L, vocab]`` logits flatten as a view; slicing off the last position would
        copy them (about 200 MB at batch 16 x 64 tokens and a 49k vocabulary) for the same loss.
        """
        logits = model.token_logits(batch["input_ids"], batch.get("attention_mask"), batch.get("task_ids"))
        return logits, self.next_token_targets(batch)

    @staticmethod
    def next_token_targets(batch: dict[str, Any]) -> torch.Tensor:
        """``[B, L]``: the token each position of a padded batch predicts, :data:`IGNORE_INDEX` at the last position
        and wherever the position is padding."""
        mask = batch.get("attention_mask")
        targets = batch["lm_labels"][:, 1:]
        if mask is not None:
            # a token right after padding has no real predecessor (the first real token is never a target)
            targets = targets.masked_fill(mask[:, :-1] == 0, IGNORE_INDEX)
        return F.pad(targets, (0, 1), value=IGNORE_INDEX)

    def loss_logits_and_targets(self, model: "TextPromptedModel", batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Packed (:meth:`textpt.model.TextPromptedModel.packs_batches`): ``[1, T, vocab]`` logits at the batch's
        ``T`` real tokens that have a target (the padded path's targets: its padding positions, an example's last
        token and, with ``data.target_column``, the template's tokens target nothing) and those targets; else the
        padded :meth:`lm_logits_and_targets`."""
        if not model.packs_batches():
            return self.lm_logits_and_targets(model, batch)
        ids, mask = batch["input_ids"], batch.get("attention_mask")
        mask = torch.ones_like(ids) if mask is None else mask
        targets = self.next_token_targets(batch)[mask.bool()]
        targeted = targets != IGNORE_INDEX
        logits = model.packed_logits(ids, mask, batch.get("task_ids"), "tokens", tokens=targeted)
        return logits.unsqueeze(0), targets[targeted].unsqueeze(0)

    def lm_outputs(self, model: "TextPromptedModel", batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        logits, targets = self.lm_logits_and_targets(model, batch)
        return logits[:, :-1], targets[:, :-1]

    def vocabulary_layers(self, model: "TextPromptedModel") -> tuple[nn.Module, nn.Module]:
        """The backbone's input embedding and LM head, unless its forward changes the logits after the head
        (:data:`LOGIT_POSTPROCESSING`), which the vocabulary-parallel loss would skip."""
        config = model.backbone.config
        changed = [name for name in LOGIT_POSTPROCESSING if getattr(config, name, None) not in (None, 1, 1.0)]
        if changed:
            raise UserError(
                f"train.fsdp.shard_vocabulary: {type(model.backbone).__name__} changes its logits after the LM head "
                f"({', '.join(changed)}), which the vocabulary-parallel loss does not; set train.fsdp.shard_vocabulary: auto or false"
            )
        return model.backbone.get_input_embeddings(), model.backbone.get_output_embeddings()

    def generate(self, model: "TextPromptedModel", input_ids: torch.Tensor, attention_mask: torch.Tensor, task_ids: torch.Tensor | None, **generate_kwargs: Any) -> torch.Tensor:
        """New tokens ``[B, new]`` (the input is not repeated), generated after the prompt's key/value prefix.

        Shallow prompts generate through their keys/values too: the same numbers as the concatenated reference
        (proved by the tests against a step-by-step decode of it), and the prompt is computed once, not per
        example; with the prompt cache (``model.prompt_cache``, :mod:`textpt.prompt_cache`) once per task and kept
        for later calls. ``generate`` is given ``n`` placeholder ids in front of the input, which the cache already covers,
        and an attention mask of ``n`` ones plus the input's mask: transformers then only runs the real tokens,
        derives position ids from the mask (so left padding keeps each example's positions), and extends the mask
        as it decodes. Right-padded inputs are moved to the left first: decoding appends at the end of each row, so
        the real tokens must end there. A model without a prompt generates as the backbone does.
        """
        order = torch.sort(attention_mask, dim=1, stable=True).indices
        input_ids, attention_mask = input_ids.gather(1, order), attention_mask.gather(1, order)
        pad = pad_token_id(model.tokenizer)
        generate_kwargs.setdefault("pad_token_id", pad)
        b = input_ids.shape[0]
        if model.num_prompt_tokens == 0:
            out = model.backbone.generate(input_ids=input_ids, attention_mask=attention_mask, **generate_kwargs)
            return out[:, input_ids.shape[1]:]
        # transformers repeats each row for beams and returned sequences but not a cache it is handed: the prefix's
        # rows are repeated here to match
        expand = rows_per_input(model.backbone, generate_kwargs)
        tasks = task_ids.repeat_interleave(expand) if task_ids is not None and expand > 1 else task_ids
        kv = model.generation_key_values(tasks, b * expand)
        n = kv[0][0].shape[-2]
        generate_kwargs[cache_argument(model.backbone)] = generation_cache(kv)
        out = model.backbone.generate(
            input_ids=torch.cat([input_ids.new_full((b, n), pad), input_ids], dim=1),
            attention_mask=torch.cat([attention_mask.new_ones(b, n), attention_mask], dim=1),
            **generate_kwargs,
        )
        return out[:, n + input_ids.shape[1]:]


def rows_per_input(backbone: nn.Module, generate_kwargs: dict[str, Any]) -> int:
    """The rows transformers' ``generate`` runs per input row: ``max(num_beams, num_return_sequences)`` of the call's
    keyword arguments, else of its ``generation_config``, else of the model's."""
    config = generate_kwargs.get("generation_config") or backbone.generation_config
    return max(int(generate_kwargs.get(name, getattr(config, name, None)) or 1) for name in ("num_beams", "num_return_sequences"))


class Seq2Seq(Seq2SeqTraits, TextTask):
    """Encoder-decoder LMs (T5): the encoder input carries the prompt; the decoder learns target texts."""

    auto_class = "AutoModelForSeq2SeqLM"

    def learns_labels(self, target_column: str | None) -> bool:
        return target_column is None

    def check_encoder(self, encoder: "ExampleEncoder") -> None:
        if encoder.target_column is None and not encoder.verbalizer:
            raise UserError(
                "seq2seq needs data.target_column (target texts) or a verbalizer (prompt.verbalizer: one word per class) "
                "for the model to write"
            )
        if encoder.target_column is None and encoder.label_column is None:
            raise UserError("seq2seq without data.target_column writes each row's class word: set data.label_column")

    def encode_row(self, encoder: "ExampleEncoder", row: dict[str, Any], index: int, split: str, input_ids: list[int]) -> tuple[dict[str, Any], bool]:
        """The input within ``max_length`` and the decoder's target, ``lm_labels``: the target text (special tokens
        included) or the class's verbalizer word (:func:`label_word_target`, with ``labels``), cut to
        ``max_target_length`` keeping its final end-of-sequence token."""
        example: dict[str, Any] = {}
        if encoder.target_column is not None:
            target = list(encoder.tokenizer(encoder.render(encoder.target_template, row), add_special_tokens=True)["input_ids"])
        else:
            example["labels"] = encoder.label(row, index, split)
            target = label_word_target(encoder.tokenizer, encoder.verbalizer[example["labels"]])
        if len(target) > encoder.max_target_length:
            target = target[: encoder.max_target_length - 1] + target[-1:]
        example["input_ids"], truncated = encoder.fit(row, input_ids)
        example["lm_labels"] = target
        return example, truncated

    def collator(self, pad_token_id: int, padding_side: str) -> TextCollator:
        """``lm_labels`` are the decoder's own sequence, padded on the right."""
        return TextCollator(pad_token_id, padding_side, labels_aligned=False)

    def classifies(self, model: "TextPromptedModel") -> bool:
        return False

    def token_outputs(self, model: "TextPromptedModel", input_ids: torch.Tensor, attention_mask: torch.Tensor | None, task_ids: torch.Tensor | None) -> torch.Tensor:
        raise UserError("seq2seq: a forward needs decoder targets; call lm_outputs(batch), class_logits() or generate()")

    def class_logits(self, model: "TextPromptedModel", input_ids: torch.Tensor, attention_mask: torch.Tensor | None, task_ids: torch.Tensor | None) -> torch.Tensor:
        """Each verbalizer word's summed log-probability as the decoder's target (:func:`label_word_target`, as the
        data writes it)."""
        if not model.config.verbalizer:
            raise UserError("seq2seq models score classes by their label words as targets: set prompt.verbalizer (one word per class)")
        if model.tokenizer is None:
            raise UserError("verbalizer: the label words need the tokenizer; call textpt.wrap(model, config, tokenizer=tokenizer)")
        scores = []
        for word in model.config.verbalizer:
            target = torch.tensor(label_word_target(model.tokenizer, word), device=input_ids.device)
            batch = {"input_ids": input_ids, "attention_mask": attention_mask, "task_ids": task_ids, "lm_labels": target.expand(input_ids.shape[0], -1)}
            logits, targets = self.lm_logits_and_targets(model, batch)
            scores.append(upcast(logits).log_softmax(-1).gather(-1, targets.unsqueeze(-1))[..., 0].sum(-1))
        return torch.stack(scores, dim=-1)

    def lm_logits_and_targets(self, model: "TextPromptedModel", batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        labels = batch["lm_labels"]
        x, mask, _, _ = model.encode(batch["input_ids"], batch.get("attention_mask"), batch.get("task_ids"))
        extra = model.backbone_kwargs(batch.get("task_ids"), x.shape[0])
        logits = model.backbone(inputs_embeds=x, attention_mask=mask, labels=labels, use_cache=False, **extra).logits
        return logits, labels

    def generate(self, model: "TextPromptedModel", input_ids: torch.Tensor, attention_mask: torch.Tensor, task_ids: torch.Tensor | None, **generate_kwargs: Any) -> torch.Tensor:
        """The decoder's output ids ``[B, T]``; the encoder takes the prompted embeddings, and a prefix method's
        keys and values reach the encoder's and decoder's attention for the whole call
        (:func:`textpt.attention_prefix.prefixes_during`: ``generate`` passes no unknown arguments to the model)."""
        x, mask, _, _ = model.encode(input_ids, attention_mask, task_ids)
        generate_kwargs.setdefault("pad_token_id", pad_token_id(model.tokenizer))
        config = model.backbone.config
        if getattr(config, "num_decoder_layers", None) not in (None, getattr(config, "num_layers", None)):
            # transformers sizes the cache it makes by the encoder's depth; a deeper decoder then indexes past its end
            from transformers.cache_utils import DynamicCache, EncoderDecoderCache

            generate_kwargs.setdefault("cache", EncoderDecoderCache(DynamicCache(), DynamicCache()))
        with prefixes_during(model.backbone_kwargs(task_ids, x.shape[0])):
            return model.backbone.generate(inputs_embeds=x, attention_mask=mask, **generate_kwargs)


def label_word_target(tokenizer: Any, word: str) -> list[int]:
    """A verbalizer word as a seq2seq target: T5-style, the tokenizer adds the end-of-sequence token itself, and the
    word's leading space (there for BPE vocabularies) is not part of it."""
    return list(tokenizer(word.strip(), add_special_tokens=True)["input_ids"])


class SequenceClassification(SequenceClassificationTraits, TextTask):
    """Encoders (BERT): a trainable linear head on pooled features (:meth:`resolve_pooling`, :func:`pool`)."""

    auto_class = "AutoModel"

    def classifies(self, model: "TextPromptedModel") -> bool:
        return True

    def build_head(self, model: "TextPromptedModel") -> nn.Module:
        """A linear head (one task), or one per task of a prompt bank (:class:`TaskHeads`), so separately trained
        classifiers combine into one bank."""
        if model.config.num_classes is None:
            raise UserError("num_classes: task seq_cls trains a classification head; set prompt.num_classes")
        width, classes = int(model.backbone.config.hidden_size), model.config.num_classes
        head = nn.Linear(width, classes) if model.num_tasks == 1 else TaskHeads(model.num_tasks, width, classes)
        generator = torch.Generator().manual_seed(model.config.seed)
        with torch.no_grad():
            head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * 0.02)
            head.bias.zero_()
        return head.to(trainable_dtype(model.backbone))

    def class_logits(self, model: "TextPromptedModel", input_ids: torch.Tensor, attention_mask: torch.Tensor | None, task_ids: torch.Tensor | None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        x, mask, _, index = model.encode(input_ids, attention_mask, task_ids)
        hidden = model.backbone(inputs_embeds=x, attention_mask=mask, **model.backbone_kwargs(task_ids, x.shape[0])).last_hidden_state
        features = pool(model.backbone, hidden, index, attention_mask, model.check_pooling()).to(model.head.weight.dtype)
        return model.head(features, task_ids) if isinstance(model.head, TaskHeads) else model.head(features)

    def resolve_pooling(self, backbone: nn.Module, pooling: str) -> str:
        """``model.pooling`` made concrete for ``backbone``. ``auto`` is what the checkpoint was trained for: the
        pooling of a sentence-transformers folder (its ``modules.json`` and pooling ``config.json``), ModernBERT's
        ``classifier_pooling``, else the model's own pooler where it has one (BERT, RoBERTa), else the first token.

        Raises:
            UserError: ``pooler`` for a model without one, or an ``auto`` checkpoint that pools in a way not offered.
        """
        has_pooler = getattr(backbone, "pooler", None) is not None
        label = f"{type(backbone).__name__} (model_type {getattr(backbone.config, 'model_type', '?')})"
        if pooling == "pooler" and not has_pooler:
            raise UserError(
                f"model.pooling: 'pooler' needs the model's own pooler layer, and {label} has none; choose cls, mean "
                f"or last (or auto)"
            )
        if pooling != "auto":
            return pooling
        trained = sentence_transformers_pooling(backbone)
        if trained is None and getattr(backbone.config, "classifier_pooling", None) in ("cls", "mean"):
            trained = backbone.config.classifier_pooling
        if trained is not None:
            return trained
        return "pooler" if has_pooler else "cls"


class TaskHeads(nn.Module):
    """One linear head per task of a prompt bank: ``weight`` ``[tasks, classes, width]``, ``bias`` ``[tasks,
    classes]``; each example goes through its task's head."""

    def __init__(self, num_tasks: int, width: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_tasks, num_classes, width))
        self.bias = nn.Parameter(torch.zeros(num_tasks, num_classes))

    def forward(self, features: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        """``[B, classes]`` logits of ``features`` ``[B, width]``, example ``i`` through head ``task_ids[i]``."""
        return torch.einsum("bh,bch->bc", features, self.weight[task_ids]) + self.bias[task_ids]


POOLINGS: tuple[str, ...] = ("cls", "mean", "last", "pooler")
"""What ``seq_cls`` pools (``model.pooling``, besides ``auto``)."""

# sentence-transformers' pooling flags (``1_Pooling/config.json``) -> textpt's pooling
_SENTENCE_TRANSFORMERS_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_lasttoken": "last"}


def pool(backbone: nn.Module, hidden: torch.Tensor, index: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """``[B, H]`` features of the input's tokens in ``hidden`` ``[B, T, H]`` (prompt and input packed; ``index``
    ``[B, L]``: where each input token landed, ``attention_mask`` ``[B, L]``: which are real).

    ``cls`` and ``last`` take the first and last real input token; ``pooler`` runs the first through the model's
    frozen pooler; ``mean`` averages the real input tokens, special tokens included (as sentence-transformers
    does) and prompt positions excluded: the checkpoint's features average the input it was trained on, whatever
    the prompt's length, and a prompted model pools the same positions as the linear probe.
    """
    if pooling == "mean":
        tokens = hidden.gather(1, index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))  # [B, L, H], input order
        weights = attention_mask.to(tokens.dtype).unsqueeze(-1)
        return (tokens * weights).sum(1) / weights.sum(1).clamp(min=1)
    which = last_token_index(attention_mask) if pooling == "last" else first_token_index(attention_mask)
    position = index.gather(1, which.unsqueeze(1))
    token = hidden.gather(1, position.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))  # [B, 1, H]
    return backbone.pooler(token) if pooling == "pooler" else token[:, 0]


def _checkpoint_file(source: str, name: str) -> Path | None:
    """``name`` in the model's folder, or in the Hugging Face cache of hub id ``source`` (never downloaded)."""
    if not source:
        return None
    folder = Path(source).expanduser()
    if folder.is_dir():
        path = folder / name
        return path if path.is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source, name)
    except Exception:  # not a hub id: nothing cached under it
        return None
    return Path(cached) if isinstance(cached, str) else None


def sentence_transformers_pooling(backbone: nn.Module) -> str | None:
    """The pooling a sentence-transformers checkpoint was trained with (``modules.json`` names its pooling module,
    whose ``config.json`` sets one ``pooling_mode_*``), or None when the model is not one.

    Raises:
        UserError: the checkpoint pools in a way textpt does not offer (max, weighted mean, several at once).
    """
    source = str(getattr(backbone.config, "name_or_path", "") or "")
    modules_file = _checkpoint_file(source, "modules.json")
    if modules_file is None:
        return None
    modules = json.loads(modules_file.read_text())
    folder = next((m.get("path", "") for m in modules if str(m.get("type", "")).endswith("Pooling")), None)
    config_file = _checkpoint_file(source, f"{folder}/config.json") if folder is not None else None
    if config_file is None:
        return None
    flags = [k for k, v in json.loads(config_file.read_text()).items() if k.startswith("pooling_mode_") and v is True]
    if len(flags) == 1 and flags[0] in _SENTENCE_TRANSFORMERS_MODES:
        logger.info("%s is a sentence-transformers model trained with %s: pooling by %s", source, flags[0], _SENTENCE_TRANSFORMERS_MODES[flags[0]])
        return _SENTENCE_TRANSFORMERS_MODES[flags[0]]
    raise UserError(
        f"model.pooling: auto follows the checkpoint, and {source} pools by {' + '.join(flags) or 'nothing'} "
        f"({folder}/config.json), which textpt does not offer; set model.pooling to one of {', '.join(POOLINGS[:3])}"
    )


# The registry and each task's traits are defined in textpt.config (free of torch), and these names declared in
# textpt's __init__ with their traits, so a config is checked against them before torch is imported.
TASKS.add(CausalLM.name, CausalLM())
TASKS.add(Seq2Seq.name, Seq2Seq())
TASKS.add(SequenceClassification.name, SequenceClassification())


def infer_task(backbone: nn.Module) -> str:
    """``seq2seq`` for encoder-decoders, ``causal_lm`` for models with an LM head, else ``seq_cls``."""
    config = getattr(backbone, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    if hasattr(backbone, "get_output_embeddings") and backbone.get_output_embeddings() is not None:
        return "causal_lm"
    return "seq_cls"


__all__ = [
    "IGNORE_INDEX",
    "TASKS",
    "CausalLM",
    "TextCollator",
    "POOLINGS",
    "Seq2Seq",
    "SequenceClassification",
    "TaskHeads",
    "TextTask",
    "infer_task",
    "label_word_target",
    "pool",
    "sentence_transformers_pooling",
    "upcast",
]
