"""P-tuning (Liu et al. 2021): prompt tuning whose virtual tokens are produced by a small encoder while training.

The encoder (``reparam: mlp`` or ``lstm``, :class:`promptcore.PromptEncoder`) couples the tokens and eases
optimisation; it is folded into plain embeddings when the prompts are saved, so a P-tuning prompt file is a prompt
tuning file and loads at inference without the encoder. Everything else (placement, padding, the shared-prefix
path, generation) is prompt tuning's, which is why this method is a thin subclass.
"""

from __future__ import annotations

from torch import nn

from promptcore import SoftPrompt, register_method

from .config import PTuningConfig
from .prompt_tuning import PromptTuningModel, prompt_init


class PTuningModel(PromptTuningModel):
    """Prompt tuning with P-tuning's reparameterisation encoder (``config.reparam``, default ``mlp``)."""

    method = "p_tuning"
    config: PTuningConfig

    def _build_prompts(self) -> nn.Module:
        return SoftPrompt(
            self.config.num_tokens, self.dim, reparam=self.config.reparam, reparam_hidden=self.config.reparam_hidden, **prompt_init(self)
        )


register_method("p_tuning", PTuningConfig, PTuningModel, kind="text", summary="P-tuning: prompts from an MLP/LSTM encoder (Liu et al. 2021)")
