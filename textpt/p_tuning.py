"""P-tuning (Liu et al. 2021): prompt tuning whose virtual tokens are produced by a small encoder while training.

The encoder (``reparam: mlp`` or ``lstm``, :class:`promptcore.PromptEncoder`) couples the tokens and eases
optimisation; it is folded into plain embeddings when the prompts are saved, so a P-tuning prompt file is a prompt
tuning file and loads at inference without the encoder. Everything else (placement, padding, the shared-prefix
path, generation) is prompt tuning's, which is why this method is a thin subclass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from promptcore import SoftPrompt, register_method
from promptcore.errors import UserError

from .prompt_tuning import PromptTuningConfig, PromptTuningModel, prompt_init


@dataclass
class PTuningConfig(PromptTuningConfig):
    """P-tuning (``method: p_tuning``): prompt tuning's fields plus the encoder.

    Attributes:
        reparam: the encoder, ``mlp`` or ``lstm`` (a 2-layer bidirectional LSTM followed by an MLP, the structure of
            the official ``LAMA/p_tuning/prompt_encoder.py``; see :class:`promptcore.PromptEncoder`). The official
            encoder's inputs are an ``nn.Embedding``, drawn N(0, 1): ``init: random`` with ``init_std: 1.0``.
        reparam_hidden: the encoder's hidden width (default: the model's width).
    """

    method: Literal["p_tuning"] = "p_tuning"
    reparam: Literal["mlp", "lstm"] = "mlp"
    reparam_hidden: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_tasks > 1:
            raise UserError("num_tasks: a prompt bank (num_tasks > 1) holds plain prompts; P-tuning's encoder is for one task")
        if self.reparam_hidden is not None and self.reparam_hidden <= 0:
            raise UserError(f"reparam_hidden: must be a positive width or null, got {self.reparam_hidden}")


class PTuningModel(PromptTuningModel):
    """Prompt tuning with P-tuning's reparameterisation encoder (``config.reparam``, default ``mlp``)."""

    method = "p_tuning"
    config: PTuningConfig

    def _build_prompts(self) -> nn.Module:
        return SoftPrompt(
            self.config.num_tokens, self.dim, reparam=self.config.reparam, reparam_hidden=self.config.reparam_hidden, **prompt_init(self)
        )


register_method("p_tuning", PTuningConfig, PTuningModel, kind="text", summary="P-tuning: prompts from an MLP/LSTM encoder (Liu et al. 2021)")
