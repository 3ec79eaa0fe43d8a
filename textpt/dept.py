"""DePT (Shi & Lipani, ICLR 2024, "DePT: Decomposed Prompt Tuning for Parameter-Efficient Fine-tuning"): a shorter
soft prompt plus a low-rank update of the input's token embeddings, trained with two learning rates.

As the official code builds it (ZhengxiangShi/DePT ``peft/tuners/prompt_tuning_lora.py`` and the
``PROMPT_TUNING_LORA`` branches of ``peft/peft_model.py``):

- the update is ``alpha / sqrt(rank) * A @ B`` with ``A`` of shape ``[max_length, rank]`` (Kaiming-uniform,
  ``a = sqrt(5)``) and ``B`` of shape ``[rank, dim]`` (zeros, so training starts from plain prompt tuning);
- row ``j`` of the update is added to the embedding of the input's ``j``-th token, before the prompt is put in
  front; the prompt's own positions get nothing. The official code pads every input (right, T5) to ``max_length``
  and adds the rows by absolute position; here rows are counted from each example's first real token, which is
  the same for right padding and keeps each example's numbers independent of its padding on either side;
- the prompt is prompt tuning's (its inits; the official run starts from PEFT's text init, ``init: text`` with
  ``init_text_special_tokens: true``);
- ``train.param_groups: {lora: {lr: ...}}`` gives the pair its own learning rate (the official
  ``--lora_embedding_lr``), the prompt keeps ``train.lr``.

The parameter budget: a prompt of ``m`` tokens and rank ``r`` train ``m * d + r * (max_length + d)`` numbers, the
same as a prompt tuning prompt of ``n`` tokens when ``r = (n - m) * d / (max_length + d)``
(:func:`rank_for_budget`); the official README runs ``m = 40, r = 45`` on T5-base (``d = 768``, ``max_length = 256``),
the budget of 100 prompt tokens.

Every input token gets its row, so a causal LM trained on ``lm_labels`` (input and target in one sequence) updates
the target's positions too, as the official forward does, while generation updates the input only (new tokens are
embedded plainly, as the official ``generate`` does). The update changes the token embeddings, so there is no
shared-prefix fast path: the prompt and the updated embeddings are always concatenated.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from promptcore import SoftPrompt, register_method
from promptcore.errors import UserError

from .config import DePTConfig, trainable_dtype
from .model import SoftPromptedModel
from .padding import pack_prompt, pad_token_id
from .prompt_tuning import prompt_init


def rank_for_budget(prompt_tokens: int, num_tokens: int, dim: int, max_length: int) -> int:
    """The largest rank whose DePT (``num_tokens`` prompt tokens, an update over ``max_length`` positions) trains at
    most the numbers of a ``prompt_tokens``-token prompt of width ``dim``: ``(prompt_tokens - num_tokens) * dim //
    (max_length + dim)``. ``rank_for_budget(100, 40, 768, 256) == 45``, the official README's T5-base setting.

    Raises:
        ValueError: the budget leaves no rank.
    """
    rank = (prompt_tokens - num_tokens) * dim // (max_length + dim)
    if rank <= 0:
        raise UserError(
            f"a {num_tokens}-token prompt leaves no rank within the budget of {prompt_tokens} prompt tokens; use a "
            f"shorter prompt or a larger budget"
        )
    return rank


class LowRankUpdate(nn.Module):
    """``alpha / sqrt(rank) * A[j] @ B`` for input position ``j`` (DePT's ``lora_embedding_A`` / ``_B``).

    Args:
        max_length: rows of ``A``, the positions covered.
        rank: the inner size.
        dim: the model's embedding width.
        alpha: the scale's numerator.
        generator: seeds ``A``'s Kaiming-uniform init (``B`` starts at zero).
    """

    def __init__(self, max_length: int, rank: int, dim: int, alpha: float, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.empty(max_length, rank))
        self.B = nn.Parameter(torch.zeros(rank, dim))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5), generator=generator)
        self.scaling = alpha / math.sqrt(rank)

    @property
    def max_length(self) -> int:
        return self.A.shape[0]

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """``[..., dim]``: the update of each position in ``positions`` (integers ``0 .. max_length - 1``)."""
        return self.scaling * (self.A[positions] @ self.B)

    def extra_repr(self) -> str:
        return f"max_length={self.A.shape[0]}, rank={self.A.shape[1]}, dim={self.B.shape[1]}, scaling={self.scaling:.4g}"


class DePTModel(SoftPromptedModel):
    """A shallow prompt before the input and a low-rank update of the input's token embeddings (arguments of
    :class:`textpt.model.TextPromptedModel`). Trainable modules: ``prompts``, ``lora`` (and a ``seq_cls`` head)."""

    method = "dept"
    prompt_module_names = ("prompts", "lora", "head")
    config: DePTConfig

    def __init__(self, backbone: nn.Module, config: DePTConfig, tokenizer: Any = None, task: str | None = None, name: str | None = None) -> None:
        super().__init__(backbone, config, tokenizer, task, name)
        self.prompts = SoftPrompt(config.num_tokens, self.dim, **prompt_init(self)).to(trainable_dtype(backbone))
        generator = torch.Generator().manual_seed(config.seed + 1)  # not the prompt's draws
        self.lora = LowRankUpdate(config.max_length, config.rank, self.dim, config.alpha, generator).to(trainable_dtype(backbone))
        self.freeze_backbone()

    def shallow_prompt(self, task_ids: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        return self.prompts(batch_size)

    def embed_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The token embeddings plus the update: row ``j`` on each example's ``j``-th real token.

        Raises:
            ValueError: an example has more real tokens than the update covers (``max_length``).
        """
        positions = attention_mask.long().cumsum(1) - 1
        longest = int(positions[:, -1].max()) + 1 if positions.numel() else 0
        if longest > self.lora.max_length:
            raise UserError(
                f"an input has {longest} tokens, but DePT's update covers {self.lora.max_length} positions "
                f"(prompt.max_length); cut the inputs to at most {self.lora.max_length} tokens (data.max_length)"
            )
        embeds = self.embedding(input_ids)
        return embeds + self.lora(positions.clamp(min=0)).to(embeds.dtype)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, task_ids: torch.Tensor | None = None, **generate_kwargs: Any) -> torch.Tensor:
        """Causal LMs generate from the prompt and the updated input embeddings (left-aligned, so decoding appends
        after every example's last token) and return the new tokens ``[B, new]``; seq2seq models as prompt tuning."""
        if not self.strategy.decoder_only:
            return super().generate(input_ids, attention_mask, task_ids, **generate_kwargs)
        attention_mask = self._check_inputs(input_ids, attention_mask, task_ids)
        prompt = self.shallow_prompt(task_ids, input_ids.shape[0])
        x, mask, _, _ = pack_prompt(prompt, self.embed_inputs(input_ids, attention_mask), attention_mask, "left")
        generate_kwargs.setdefault("pad_token_id", pad_token_id(self.tokenizer))
        return self.backbone.generate(inputs_embeds=x, attention_mask=mask, **generate_kwargs)

    def prompt_config(self) -> dict[str, Any]:
        return {**super().prompt_config(), "rank": self.config.rank, "max_length": self.config.max_length, "alpha": self.config.alpha}


register_method("dept", DePTConfig, DePTModel, kind="text", summary="DePT: a shorter prompt plus a low-rank update of the input embeddings (Shi & Lipani 2024)")
