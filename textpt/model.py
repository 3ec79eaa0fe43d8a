"""The shared base of prompted text models: where the prompt goes, and the task run around it.

A model is a frozen transformers backbone, a task strategy (:mod:`textpt.tasks`: causal LM, seq2seq or sequence
classification, which owns the forward, the losses, the eval step and generation) and the prompt a method places:

- a shallow prompt (:meth:`TextPromptedModel.shallow_prompt`): embeddings before the input's. The reference path
  concatenates them to the token embeddings and moves the padding to the tokenizer's side
  (:func:`textpt.padding.pack_prompt`), so the prompt always sits right before the real tokens;
- or per-layer keys and values (:meth:`TextPromptedModel.prefix_key_values`) fed as a cache prefix
  (:mod:`textpt.fast_prefix`): prefix tuning, and the exact fast path of shallow prompts on decoder-only models;
  on encoders and encoder-decoders prefix tuning's keys and values go into the attention calls instead
  (:meth:`TextPromptedModel.backbone_kwargs`, :mod:`textpt.attention_prefix`).

Either way each example gives the logits it gives alone, without padding, on either padding side. On causal LMs a
padded batch runs packed into a few rows where that is exact (:meth:`TextPromptedModel.packed_logits`,
:mod:`textpt.packing`; ``data.packing``), with the numbers of the padded path, which stays the reference. The base class
places no prompt (``num_prompt_tokens == 0``): it is the frozen model itself, which the baselines
(:mod:`textpt.linear_probe`, :mod:`textpt.zero_shot`) build on; :class:`SoftPromptedModel` is the base of the
methods that train prompt tokens.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from promptcore import PromptedModel
from promptcore.errors import UserError

from .config import POOLING_ATTR, SoftPromptConfig, TextMethodConfig, check_label_word_ids
from .fast_prefix import KeyValues, accepts, cache_argument, positions_after_prefix, prefix_cache
from .loading import check_prompt_ready, is_placed, model_max_length
from .packing import PackingMode, attention_key_cost, block_causal_mask, mask_dtype, pack_rows, packing_problem, task_groups
from .padding import last_token_index, pack_prompt
from .prompt_cache import PromptCache, PromptCacheMode, cache_problem, check_prompt_cache_mode
from .tasks import TASKS, infer_task, label_word_target

logger = logging.getLogger(__name__)


class TextPromptedModel(PromptedModel):
    """A frozen transformers model run for one task, with the prompt its method places (none in this base).

    Subclasses build their prompt modules (``self.prompts``) and implement :meth:`shallow_prompt` (prompt
    embeddings before the input) or :meth:`prefix_key_values` (per-layer prefixes, with ``uses_prefix_cache``).

    Args:
        backbone: a transformers model (``AutoModelForCausalLM``, ``AutoModelForSeq2SeqLM`` or a bare encoder for
            ``seq_cls``); its parameters are frozen.
        config: the method's config (a :class:`textpt.config.TextMethodConfig`).
        tokenizer: needed for the ``text`` and ``labels`` inits, verbalizers and the pad id; optional otherwise.
        task: the task (a name in :data:`textpt.tasks.TASKS`); inferred from the backbone when ``None``.
        name: the backbone's name recorded in prompt files (default: the model's ``name_or_path``).

    Attributes:
        task: the task's name. strategy: its :class:`textpt.tasks.TextTask`.
        pooling: what a ``seq_cls`` head reads (``cls``, ``mean``, ``last``, ``pooler``; None for the other tasks):
            the ``model.pooling`` :func:`textpt.load_model_and_tokenizer` recorded on the backbone, else ``auto``;
            :meth:`set_pooling` changes it.
        packing: whether batches may run packed (:mod:`textpt.packing`; ``auto`` by default); :meth:`set_packing`
            changes it and :meth:`packs_batches` says whether they do.
        prompt_cache: whether :meth:`generate` reuses the prompt's keys and values between calls
            (:mod:`textpt.prompt_cache`; ``auto`` by default); :meth:`set_prompt_cache` changes it and
            :meth:`uses_prompt_cache` says whether it does.
    """

    method: str = ""
    uses_prefix_cache: bool = False  # prefix methods feed keys/values, shallow methods feed embeddings
    compat_keys = (*PromptedModel.compat_keys, "pooling")  # a head trained on other features would load silently wrong

    def __init__(
        self,
        backbone: nn.Module,
        config: TextMethodConfig,
        tokenizer: Any = None,
        task: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        embedding = check_prompt_ready(backbone, name)
        if config.method != self.method:
            raise UserError(f"method: {type(self).__name__} implements {self.method!r}, the config asks for {config.method!r}")
        self.backbone = backbone
        self.config = config
        self.tokenizer = tokenizer
        self.task = task or infer_task(backbone)
        self.strategy = TASKS.get(self.task)
        try:
            config.check_task(self.task)
        except ValueError as e:  # name the architecture: a refusal must say which model it refuses
            model_type = getattr(backbone.config, "model_type", "?")
            raise UserError(f"{e}; the model is {type(backbone).__name__} (model_type {model_type})") from None
        self.backbone_name = name or getattr(backbone.config, "name_or_path", "") or type(backbone).__name__
        self.dim = int(embedding.weight.shape[1])
        self.padding_side = getattr(tokenizer, "padding_side", "right") if tokenizer is not None else "right"
        self.max_positions = model_max_length(backbone)
        self.verbalizer_ids = self._tokenize_verbalizer()
        self.head = self.strategy.build_head(self)
        # the pooling load_model_and_tokenizer recorded from its config (model.pooling), so promptcore.wrap and
        # textpt.wrap build the head a run trained with that config had
        recorded = getattr(backbone, POOLING_ATTR, "auto")
        try:
            self.set_pooling(recorded)
        except UserError as e:  # a checkpoint that pools in a way not offered: the caller may still choose one
            if recorded != "auto":
                raise
            self.pooling, self._pooling_problem = None, e
        self._checkpointing = False
        self.packing: PackingMode = False  # opt-in: bench/packing.py measures it slower for LM losses on the CPU
        self.prompt_cache: PromptCacheMode = "auto"
        self.kept_prompt = PromptCache()

    def set_pooling(self, pooling: str) -> None:
        """Chooses what a ``seq_cls`` model's head reads (``model.pooling``): ``auto`` (what the checkpoint was
        trained for), ``cls``, ``mean``, ``last`` or ``pooler``; see :meth:`textpt.tasks.SequenceClassification.resolve_pooling`.

        Raises:
            UserError: a pooling the model cannot provide, or any but ``auto`` for a task that pools nothing.
        """
        self.pooling = self.strategy.resolve_pooling(self.backbone, pooling)
        self._pooling_problem: UserError | None = None

    def check_pooling(self) -> str:
        """The pooling a ``seq_cls`` forward uses; raises the problem ``auto`` met when none could be chosen."""
        if self._pooling_problem is not None:
            raise self._pooling_problem
        return self.pooling

    def set_packing(self, packing: PackingMode) -> None:
        """Chooses whether padded batches run packed into one row (:mod:`textpt.packing`): ``"auto"`` (the default)
        where that is exact, ``True`` always, ``False`` never (the padded reference path).

        Raises:
            UserError: ``True`` for a model, method or attention implementation that cannot pack exactly
                (:func:`textpt.packing.packing_problem`), or a value that is none of the three.
        """
        if packing != "auto" and not isinstance(packing, bool):
            raise UserError(f"data.packing: {packing!r} is not one of auto, true, false")
        problem = packing_problem(self)
        if packing is True and problem is not None:
            raise UserError(f"data.packing: true, but {problem}; set data.packing: auto to pack only where it is exact")
        self.packing = packing

    def packs_batches(self) -> bool:
        """Whether causal LM batches run packed now: :attr:`packing` allows it and it is exact for this model
        (checked at every call: the attention implementation may have changed since :meth:`set_packing`)."""
        return self.packing is not False and packing_problem(self) is None

    def set_prompt_cache(self, mode: PromptCacheMode) -> None:
        """Chooses whether :meth:`generate` reuses the prompt's keys and values, computed once per task
        (:mod:`textpt.prompt_cache`): ``"auto"`` (the default) where that applies, ``True`` always, ``False`` never
        (each call computes them, the reference path). Both give the same tokens.

        Raises:
            UserError: ``True`` for a model whose generation cannot start from kept keys and values (encoders and
                encoder-decoders, DePT, no prompt: :func:`textpt.prompt_cache.cache_problem`), or a value that is
                none of the three.
        """
        check_prompt_cache_mode(self, mode)
        self.prompt_cache = mode
        self.kept_prompt.clear()

    def uses_prompt_cache(self) -> bool:
        """Whether :meth:`generate` starts from kept prompt keys and values now: :attr:`prompt_cache` allows it and it
        applies to this model."""
        return self.prompt_cache is not False and cache_problem(self) is None

    def train(self, mode: bool = True) -> "TextPromptedModel":
        """As :meth:`promptcore.PromptedModel.train`; entering training mode drops the kept prompt keys and values
        (training changes the prompt)."""
        if mode:
            self.kept_prompt.clear()
        return super().train(mode)

    def _tokenize_verbalizer(self) -> list[list[int]] | None:
        words = self.config.verbalizer
        if not words:
            return None
        # Every task keeps the words (a 'labels' init starts from them); a causal LM scores them, a seq2seq model
        # writes them (as targets), a seq_cls model classifies with its head.
        if self.tokenizer is None:
            raise UserError("verbalizer: the label words need the tokenizer; call textpt.wrap(model, config, tokenizer=tokenizer)")
        ids = [self.tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]
        empty = [w for w, i in zip(words, ids) if not i]
        if empty:
            raise UserError(f"verbalizer: words {empty} give no tokens with this tokenizer; choose other label words")
        if self.strategy.label_words:  # the tokens the task scores: as written (causal LM), as targets (seq2seq)
            check_label_word_ids(words, ids if self.strategy.decoder_only else [label_word_target(self.tokenizer, w) for w in words])
        multi = {w: len(i) for w, i in zip(words, ids) if len(i) > 1}
        if multi:
            logger.info("verbalizer words of several tokens %s are scored by the sum of their tokens' log-probabilities", multi)
        return ids

    def backbone_is_placed(self) -> bool:
        """Whether the backbone was loaded with a device map or quantized weights (:func:`textpt.loading.is_placed`)."""
        return is_placed(self.backbone)

    # ----- what transformers asks of a model ----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where inputs go: the device of the input embeddings."""
        return self.embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The frozen weights' dtype."""
        return self.embedding.weight.dtype

    @property
    def generation_config(self) -> Any:
        """The backbone's ``GenerationConfig`` (the defaults :meth:`generate` starts from)."""
        return self.backbone.generation_config

    def can_generate(self) -> bool:
        """Whether the model writes text (causal LMs and seq2seq models)."""
        return bool(self.strategy.label_words)

    def for_transformers(self, class_names: list[str] | None = None) -> "TransformersView":
        """This model as transformers' pipelines call a model (:class:`TransformersView`): ``transformers.pipeline(
        "text-generation", model=model.for_transformers(), tokenizer=model.tokenizer)``. ``class_names`` label a
        classifier's outputs (default: ``model.input_format``'s, else the verbalizer's words)."""
        return TransformersView(self, class_names)

    @property
    def embedding(self) -> nn.Module:
        return self.backbone.get_input_embeddings()

    # ----- what a method supplies ---------------------------------------------------------------------------------
    @property
    def num_prompt_tokens(self) -> int:
        """Positions the prompt takes before the input (0: no prompt)."""
        return 0

    @property
    def prompt_positions(self) -> int:
        """Positions of the model's position table the prompt takes from the input (its tokens; none for prefix
        tuning on encoders and encoder-decoders, whose prefix has no positions)."""
        return self.num_prompt_tokens

    @property
    def num_tasks(self) -> int:
        """Prompts in the method's bank (batches carry ``task_ids`` when more than 1)."""
        return self.config.num_tasks

    @property
    def classifies(self) -> bool:
        """Whether the model's outputs are class scores (``labels`` batches), as its task decides from the config."""
        return self.strategy.classifies(self)

    def shallow_prompt(self, task_ids: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        """``[B, n, D]`` prompt embeddings before the input (``n = 0`` here: no prompt)."""
        return self.embedding.weight.new_zeros(batch_size, 0, self.dim)

    def embed_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[B, L, D]``: the input's embeddings as the shallow prompt is put before them (the token embeddings; a
        method that changes them, DePT, overrides this)."""
        return self.embedding(input_ids)

    def prefix_key_values(self, task_ids: torch.Tensor | None, batch_size: int) -> KeyValues:
        """Per-layer ``(keys, values)`` ``[B, heads, n, head_dim]`` to prepend (prefix methods and the fast path)."""
        raise NotImplementedError(f"{type(self).__name__} has no key/value prefix")

    def generation_key_values(self, task_ids: torch.Tensor | None, batch_size: int) -> KeyValues:
        """The prompt's keys and values generation starts from: kept between calls when :meth:`uses_prompt_cache`
        (:class:`textpt.prompt_cache.PromptCache`), else :meth:`prefix_key_values` computed now."""
        if self.uses_prompt_cache():
            return self.kept_prompt.key_values(self, task_ids, batch_size)
        return self.prefix_key_values(task_ids, batch_size)

    def backbone_kwargs(self, task_ids: torch.Tensor | None, batch_size: int) -> dict[str, Any]:
        """Keyword arguments of the backbone's ``forward`` that carry the prompt into attention (prefix tuning on
        encoders and encoder-decoders, :mod:`textpt.attention_prefix`); none here."""
        return {}

    def use_fast_path(self) -> bool:
        """Whether shallow prompts go through the shared key/value prefix (see :mod:`textpt.fast_prefix`)."""
        return False

    def vocabulary_layers(self) -> tuple[nn.Module, nn.Module]:
        """The token embedding and LM head ``train.fsdp.shard_vocabulary`` shards by vocabulary, as the task offers
        them (:meth:`textpt.tasks.TextTask.vocabulary_layers`, which raises a :class:`UserError` saying why not)."""
        return self.strategy.vocabulary_layers(self)

    def metric_names(self) -> tuple[str, ...]:
        """The metrics :meth:`eval_step` reports besides ``count``: ``("loss", "accuracy")`` for classifiers,
        ``("loss", "token_accuracy")`` for models trained on target tokens."""
        return self.strategy.metric_names(self.classifies)

    # ----- prompt placement ---------------------------------------------------------------------------------------
    def _check_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, task_ids: torch.Tensor | None) -> torch.Tensor:
        if input_ids.dim() != 2:
            raise UserError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if self.max_positions is not None and input_ids.shape[1] + self.prompt_positions > self.max_positions:
            raise UserError(
                f"input of {input_ids.shape[1]} tokens plus {self.prompt_positions} prompt tokens exceeds the "
                f"{self.max_positions} positions of {self.backbone_name}; truncate the text to at most "
                f"{self.max_positions - self.prompt_positions} tokens (data max_length)"
            )
        if task_ids is None and self.num_tasks > 1:
            raise UserError(f"this model has a bank of {self.num_tasks} task prompts; the batch must carry task_ids [batch]")
        return attention_mask

    def _check_decoder(self, what: str) -> None:
        if not self.strategy.decoder_only:
            raise UserError(f"{what} is for decoder-only models (causal_lm); this one is {self.task}")

    def _uses_key_values(self) -> bool:
        return self.uses_prefix_cache or self.use_fast_path()

    def token_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Causal LM: next-token logits ``[B, L, vocab]`` at each input token, as if each example ran alone."""
        attention_mask = self._check_inputs(input_ids, attention_mask, task_ids)
        self._check_decoder("token_logits")
        if self.packs_batches():
            logits = self.packed_logits(input_ids, attention_mask, task_ids, "tokens")
            return logits.new_zeros(*input_ids.shape, logits.shape[-1]).masked_scatter(attention_mask.bool().unsqueeze(-1), logits)
        if self._uses_key_values():
            return self.forward_with_prefix(input_ids, attention_mask, self.prefix_key_values(task_ids, input_ids.shape[0])).logits
        return self.forward_concat(input_ids, attention_mask, task_ids)

    def last_token_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Causal LM: next-token logits ``[B, vocab]`` after each example's last real token.

        Only those positions go through the LM head (``logits_to_keep``, where the model takes it): a classifier
        needs one row of logits per example, not ``[B, L, vocab]``.
        """
        attention_mask = self._check_inputs(input_ids, attention_mask, task_ids)
        self._check_decoder("last_token_logits")
        if self.packs_batches():
            return self.packed_logits(input_ids, attention_mask, task_ids, "last")
        last = last_token_index(attention_mask).unsqueeze(1)  # [B, 1]
        if self._uses_key_values():
            kv = self.prefix_key_values(task_ids, input_ids.shape[0])
            if accepts(self.backbone, "logits_to_keep"):
                return self.forward_with_prefix(input_ids, attention_mask, kv, logits_to_keep=last).logits[:, 0]
            logits = self.forward_with_prefix(input_ids, attention_mask, kv).logits
            return logits.gather(1, last.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))[:, 0]
        return self.forward_concat(input_ids, attention_mask, task_ids, keep=last)[:, 0]

    def packed_logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        task_ids: torch.Tensor | None,
        keep: Literal["tokens", "last"] = "tokens",
        tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Causal LM: next-token logits of the batch run packed (:mod:`textpt.packing`), ``[N, vocab]``
        at every real token in the padded batch's row-major order (``keep="tokens"``: the rows of
        ``input_ids[attention_mask.bool()]``) or ``[B, vocab]`` after each example's last real token (``"last"``).
        ``tokens`` (boolean ``[N]``, with ``keep="tokens"``) keeps only the real tokens it marks, as an LM loss
        reads only the tokens that have a target. Only the positions kept go through the LM head. The same numbers
        as :meth:`token_logits` on the padded path.
        """
        attention_mask = self._check_inputs(input_ids, attention_mask, task_ids)
        self._check_decoder("packed_logits")
        real, b = attention_mask.bool(), input_ids.shape[0]
        if self._uses_key_values():
            # one copy of each task's prefix before the rows; the mask lets each example see its own task's only
            tasks, group = task_groups(task_ids, b, input_ids.device)
            kv = self.prefix_key_values(tasks, 1 if tasks is None else tasks.numel())
            n = kv[0][0].shape[-2]
            rows = pack_rows(attention_mask, 0, n, key_cost=attention_key_cost(self.backbone))
            r, w = rows.shape
            kv = [tuple(t.transpose(0, 1).reshape(1, t.shape[1], -1, t.shape[-1]).expand(r, -1, -1, -1) for t in pair) for pair in kv]
            inputs = {
                "input_ids": input_ids.new_zeros(r * w).index_copy(0, rows.tokens, input_ids[real]).view(r, w),
                "attention_mask": block_causal_mask(rows.sequence, group, n, dtype=mask_dtype(self.backbone, self.dtype)),
                "use_cache": True,
                cache_argument(self.backbone): prefix_cache(kv),
            }
        else:
            prompt = self.shallow_prompt(task_ids, b)
            rows = pack_rows(attention_mask, prompt.shape[1], key_cost=attention_key_cost(self.backbone))
            r, w = rows.shape
            embeds = self.embed_inputs(input_ids, attention_mask)
            source = torch.cat([prompt.to(embeds.dtype).flatten(0, 1), embeds[real]])
            x = source.new_zeros(r * w, source.shape[-1]).index_copy(0, rows.dest, source).view(r, w, -1)
            inputs = {"inputs_embeds": x, "attention_mask": block_causal_mask(rows.sequence, dtype=mask_dtype(self.backbone, self.dtype)), "use_cache": False}
        slots = rows.last if keep == "last" else rows.tokens if tokens is None else rows.tokens[tokens]
        # The LM head sees only the slots asked for: its input is cut to them as it is called (a pre-hook), so any
        # processing the model applies to its logits after the head still runs on them.
        head, picked = self.backbone.get_output_embeddings(), []

        def pick(module: nn.Module, args: tuple) -> tuple:
            picked.append(True)
            return (args[0].flatten(0, 1)[slots].unsqueeze(0), *args[1:])

        handle = head.register_forward_pre_hook(pick) if head is not None else None
        try:
            logits = self.backbone(position_ids=rows.positions, **inputs).logits
        finally:
            if handle is not None:
                handle.remove()
        # flatten, not logits[0]: its backward would copy the logits' gradient into a zeroed [1, N, vocab] tensor
        return logits.flatten(0, 1) if picked else logits.flatten(0, 1)[slots]

    def forward_concat(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, task_ids: torch.Tensor | None, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The reference path of shallow prompts on causal LMs: concatenated embeddings, prompt next to the tokens.

        ``keep`` (``[B, K]`` input positions) returns the logits of those positions only, through ``logits_to_keep``
        where the model takes it; by default every input position's logits.
        """
        prompt = self.shallow_prompt(task_ids, input_ids.shape[0])
        x, mask, positions, index = pack_prompt(prompt, self.embed_inputs(input_ids, attention_mask), attention_mask, self.padding_side)
        if keep is not None:
            index = index.gather(1, keep)
            if accepts(self.backbone, "logits_to_keep"):
                return self.backbone(inputs_embeds=x, attention_mask=mask, position_ids=positions, use_cache=False, logits_to_keep=index).logits
        logits = self.backbone(inputs_embeds=x, attention_mask=mask, position_ids=positions, use_cache=False).logits
        return logits.gather(1, index.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))

    def forward_with_prefix(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, kv: KeyValues, **kwargs: Any):
        """Runs the input after a key/value prefix (shared-prompt fast path and prefix tuning); ``kwargs`` go to the
        backbone (``logits_to_keep``)."""
        b, n = input_ids.shape[0], kv[0][0].shape[-2]
        mask = torch.cat([attention_mask.new_ones(b, n), attention_mask], dim=1)
        kwargs[cache_argument(self.backbone)] = prefix_cache(kv)
        return self.backbone(
            input_ids=input_ids, attention_mask=mask, position_ids=positions_after_prefix(attention_mask, n), use_cache=True, **kwargs
        )

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, task_ids: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encoder inputs with the prompt (seq2seq, seq_cls): ``(inputs_embeds, mask, position_ids, token_index)``.

        An encoder sees every position at once, so the padding side is free: the prompt and the input are packed from
        the first position with the padding after them, whatever the tokenizer's side. There each model's own default
        position ids are the ones of the unpadded input (RoBERTa counts from ``padding_idx + 1``, BART adds its offset
        and takes no ``position_ids``), so the encoder is run without ``position_ids``.
        """
        attention_mask = self._check_inputs(input_ids, attention_mask, task_ids)
        prompt = self.shallow_prompt(task_ids, input_ids.shape[0])
        return pack_prompt(prompt, self.embed_inputs(input_ids, attention_mask), attention_mask, "right")

    # ----- the task's forward, losses and generation --------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits when the model classifies (``seq_cls``, or a causal LM with a verbalizer), else token logits."""
        if self.classifies:
            return self.class_logits(input_ids, attention_mask, task_ids)
        return self.strategy.token_outputs(self, input_ids, attention_mask, task_ids)

    def class_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, num_classes]``: the head's logits (seq_cls) or the verbalizer words' summed log-probabilities
        (causal_lm: after the input; seq2seq: as the decoder's target)."""
        return self.strategy.class_logits(self, input_ids, attention_mask, task_ids)

    def lm_outputs(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, targets)`` aligned for the LM loss: causal LMs shift by one, seq2seq targets are the decoder's."""
        return self.strategy.lm_outputs(self, batch)

    def _check_labels(self, labels: torch.Tensor) -> None:
        # Labels on the CPU only, outside a compiled step: reading a GPU tensor's values costs a host sync per step,
        # and inside torch.compile a graph break. The Trainer checks every batch on the CPU before moving it
        # (promptcore.batches.check_labels); this check is for steps called from a loop of one's own.
        if labels.device.type != "cpu" or torch.compiler.is_compiling():
            return
        n = self.config.num_classes
        if n is not None and labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n):
            where = f"the verbalizer has {n} words {self.config.verbalizer}" if self.config.verbalizer else f"the head has {n} classes"
            raise UserError(f"labels range {int(labels.min())}..{int(labels.max())} but {where}; every label must be a class index in 0..{n - 1}")

    def forward_batch(self, batch: dict[str, Any]) -> torch.Tensor:
        self._check_labels(batch["labels"])
        return self.class_logits(batch["input_ids"], batch.get("attention_mask"), batch.get("task_ids"))

    def training_step(self, batch: dict[str, Any]) -> torch.Tensor:
        """The task's mean LM loss over the target tokens, or the classification loss of ``labels``
        (:meth:`forward_batch`)."""
        if self.strategy.learns_tokens(batch, self.classifies):
            return self.strategy.lm_loss(self, batch)
        return super().training_step(batch)

    @torch.no_grad()
    def eval_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Sums over the batch for :meth:`metric_names` plus ``count`` (target tokens, or examples)."""
        if self.strategy.learns_tokens(batch, self.classifies):
            return self.strategy.lm_metrics(self, batch)
        return super().eval_step(batch)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, task_ids: torch.Tensor | None = None, **generate_kwargs: Any) -> torch.Tensor:
        """Generates with the prompts: the new tokens ``[B, new]`` for causal LMs (the input is not repeated),
        the decoder's output for seq2seq. ``generate_kwargs`` go to transformers' ``generate``."""
        attention_mask = self._check_inputs(input_ids, attention_mask, task_ids)
        return self.strategy.generate(self, input_ids, attention_mask, task_ids, **generate_kwargs)

    # ----- memory -----------------------------------------------------------------------------------------------------
    def enable_gradient_checkpointing(self) -> None:
        """Re-computes each frozen transformer layer in backward instead of storing its activations.

        The backbone stays in eval mode (dropout off), where transformers' own checkpointing is inactive and would drop
        the cache anyway; so each layer's forward is wrapped in non-reentrant checkpointing here. Prefix caches are
        stateless (:class:`textpt.cache_layers.PrefixLayer`), so a re-run layer sees the same inputs.
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
            "num_tokens": self.num_prompt_tokens,
            "num_tasks": self.num_tasks,
            "padding_side": self.padding_side,
        }
        if self.config.num_classes is not None:
            cfg["num_classes"] = self.config.num_classes
        if self.config.verbalizer:
            cfg["verbalizer"] = list(self.config.verbalizer)
        if self.head is not None:
            cfg["head"] = "linear"
        if self.pooling is not None:
            cfg["pooling"] = self.pooling
        return cfg


class SoftPromptedModel(TextPromptedModel):
    """The base of the methods that train prompt tokens (config: a :class:`textpt.config.SoftPromptConfig`):
    ``num_tokens`` positions, a bank of ``num_tasks`` prompts, and the token inits."""

    config: SoftPromptConfig

    @property
    def num_prompt_tokens(self) -> int:
        return self.config.num_tokens

    def token_ids(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise UserError(f"init {self.config.init!r}: the tokenizer is needed; call textpt.wrap(model, config, tokenizer=tokenizer)")
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def init_token_ids(self) -> list[int] | None:
        """Token ids a ``text`` or ``labels`` init starts from (None for the other inits)."""
        if self.config.init == "text":
            return self.token_ids(self.config.init_text or "")
        if self.config.init == "labels":
            return [t for w in (self.config.verbalizer or []) for t in self.token_ids(w)]
        return None


class TransformersView(nn.Module):
    """A prompted model seen as transformers' pipelines see a model (``TextPromptedModel.for_transformers()``).

    Two things differ from the prompted model itself, whose ``config`` is its method's config and whose
    :meth:`~TextPromptedModel.generate` returns the new tokens only: here ``config`` is the backbone's (with the
    classifier's ``id2label`` / ``num_labels``), ``generate`` returns the input followed by the new tokens on causal
    LMs (what transformers' ``generate`` returns; the decoder's output on seq2seq models), and the forward returns
    ``logits`` as ``SequenceClassifierOutput`` (class logits of a classifier, token logits of a causal LM). Inputs are
    taken as given: a pipeline tokenizes the text itself, without the prompt's data template.
    """

    main_input_name = "input_ids"

    def __init__(self, model: TextPromptedModel, class_names: list[str] | None = None) -> None:
        import copy

        super().__init__()
        self.model = model
        self.config = copy.deepcopy(model.backbone.config)
        if model.classifies or (model.task == "seq2seq" and model.config.verbalizer):
            fmt = getattr(model, "input_format", None)
            words = model.config.verbalizer
            names = class_names or (fmt.class_names if fmt is not None else None) or ([w.strip() for w in words] if words else None)
            names = names or [f"class {i}" for i in range(int(model.config.num_classes or 0))]
            self.config.id2label = dict(enumerate(names))
            self.config.label2id = {n: i for i, n in enumerate(names)}
            self.config.problem_type = "single_label_classification"

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def generation_config(self) -> Any:
        return self.model.generation_config

    def can_generate(self) -> bool:
        return self.model.can_generate()

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        new = self.model.generate(input_ids, attention_mask, **kwargs)
        return torch.cat([input_ids, new], dim=1) if self.model.strategy.decoder_only else new

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> Any:
        from transformers.modeling_outputs import SequenceClassifierOutput

        logits = self.model.class_logits(input_ids, attention_mask) if self.model.classifies or self.model.task == "seq2seq" else self.model(input_ids, attention_mask)
        return SequenceClassifierOutput(logits=logits)


def _checkpointed(forward):
    def run(*args, **kwargs):
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return run
