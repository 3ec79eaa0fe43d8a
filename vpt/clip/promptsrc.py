"""PromptSRC (Khattak et al., "Self-regulating Prompts: Foundational Model Adaptation without Forgetting", ICCV
2023): IVLP's deep prompts on both towers, regularised towards the frozen CLIP, and averaged over epochs.

As the official code computes it (``muzairkhattak/PromptSRC trainers/promptsrc.py``, ``CustomCLIP.forward`` and
``PromptSRC.forward_backward``), for a batch of images with labels::

    L = CE(logits, y)
        + logit_loss_weight * KL(p_frozen || p_prompted)        # sum over the batch's logits / their number
        + text_loss_weight  * L1(t̂, ĥ)                           # mean over classes and dimensions
        + image_loss_weight * L1(v̂, v̂_frozen)                    # mean over images and dimensions

- ``t̂``: the prompted text features of the classes, ``ĥ`` the frozen CLIP's: the raw ``encode_text`` features of
  every template of ``templates`` averaged, then normalised (textual diversity; PromptSRC's 60 ImageNet templates,
  ``fixed_embeddings`` in its ``VLPromptLearner``);
- ``v̂``: the prompted image features, ``v̂_frozen`` the frozen CLIP's (its image tower without prompts), both
  normalised;
- the frozen logits are ``logit_scale * v̂_frozen @ ĥ.T``; KL at temperature 1 (``F.kl_div(..., reduction="sum",
  log_target=True) / logits.numel()``); weights 1, 25 and 10 in the official configs.

Gaussian prompt aggregation (GPA) is the ``gpa`` callback of this module (:class:`GaussianPromptAggregation`,
``train.callbacks: [{name: gpa, mean: 15, std: 1}]``): at the end of each epoch ``e`` (1-based) it adds the
prompts times ``N(e; mean, std)`` (the weights over the run's epochs normalised to sum to 1) to a running sum,
and at the end of the last epoch it loads the sum into the prompts, which are then evaluated and saved. A
callback because the aggregation is a schedule over the training run (it needs the epoch count and the epoch
ends, which the trainer owns), it applies unchanged to any prompted model, and its running sum goes into the
trainer's checkpoints through the callback state, so a resumed run aggregates exactly as an uninterrupted one.
"""

from __future__ import annotations

import base64
import math
import sys
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from promptcore import register_method
from promptcore.callbacks import Callback, register_callback
from promptcore.errors import UserError

from .config import PromptSRCConfig
from .maple import IVLP

if TYPE_CHECKING:
    from promptcore.trainer import Trainer


class PromptSRC(IVLP):
    """PromptSRC on an open_clip CLIP model with a ViT image tower. Trainable: IVLP's ``prompts.ctx``,
    ``prompts.text_deep`` and ``prompts.vision``. The frozen text features of the current classes are
    :meth:`~vpt.clip.base.CLIPPromptModel.zeroshot_text_features`: the raw template features averaged, then
    normalised (the official code computes them once, for the training classes).

    Args:
        model, tokenizer, name: see :class:`vpt.clip.base.CLIPModel`.
        config: :class:`PromptSRCConfig`.
    """

    method = "promptsrc"
    zeroshot_normalize_each = False  # textual diversity: raw template features averaged, then one normalisation

    def consistency_losses(
        self, image: torch.Tensor, text: torch.Tensor, logits: torch.Tensor, frozen_image: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The three unweighted self-consistency terms for prompted image features ``[B, E]``, text features
        ``[C, E]`` and logits ``[B, C]``, and the frozen image features ``[B, E]``: ``text`` and ``image`` (L1 of
        the normalised features) and ``logits`` (KL of the prompted from the frozen distribution)."""
        frozen_text = self.zeroshot_text_features()
        dtype = logits.dtype
        frozen_logits = self.clip_logits(frozen_image, frozen_text)
        kl = F.kl_div(F.log_softmax(logits, -1), F.log_softmax(frozen_logits.to(dtype), -1), reduction="sum", log_target=True)
        return {
            "text": F.l1_loss(F.normalize(text.to(dtype), dim=-1), frozen_text.to(dtype)),
            "image": F.l1_loss(F.normalize(image.to(dtype), dim=-1), F.normalize(frozen_image.to(dtype), dim=-1)),
            "logits": kl / logits.numel(),
        }

    def training_step(self, batch: dict[str, Any]) -> torch.Tensor:
        """Cross-entropy plus the weighted self-consistency terms (see the module docstring)."""
        pixel_values = batch["pixel_values"]
        image = self.vision_tower.encode(pixel_values, self.vision_prompts())
        text = self.text_features()
        logits = self.clip_logits(image, text)
        with torch.no_grad():
            frozen_image = self.backbone.encode_image(pixel_values)
        terms = self.consistency_losses(image, text, logits, frozen_image)
        c = self.config
        return (
            F.cross_entropy(logits, batch["labels"])
            + c.logit_loss_weight * terms["logits"]
            + c.text_loss_weight * terms["text"]
            + c.image_loss_weight * terms["image"]
        )


class GaussianPromptAggregation(Callback):
    """PromptSRC's Gaussian-weighted prompt aggregation over epochs (registered as ``gpa``).

    The prompts at the end of epoch ``e`` (1-based, of ``N = train.epochs``) get the weight ``g(e) / sum_k g(k)``,
    ``g`` the normal density with ``mean`` and ``std``; the running weighted sum is loaded into the prompts at the
    end of the last epoch, before that epoch's evaluation and checkpoint, as the official trainer loads it after
    the last batch (``previous_model_gpa``). Official values: base-to-new ``mean 15, std 1`` (20 epochs); few-shot
    ``30, 30`` or ``45, 5`` (50 epochs, by dataset); cross-dataset ``6, 10``. A run that ends before its last
    epoch (``max_steps``, a stop) keeps its last prompts and says so; resuming it finishes the aggregation. When
    a resumed run changes ``train.epochs``, the epochs already added keep their weights.

    The official code averages the whole model's state dict; the frozen weights come out unchanged (the weights
    sum to 1), so averaging the prompt parameters is the same aggregation.

    Args:
        mean: the Gaussian's mean, in epochs (1-based).
        std: its standard deviation, in epochs (> 0).
    """

    def __init__(self, mean: float, std: float) -> None:
        for name, value in (("mean", mean), ("std", std)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UserError(f"{name}: must be a finite number of epochs, got {value!r}")
        if std <= 0:
            raise UserError(f"std: must be > 0 epochs, got {std}")
        self.mean, self.std = float(mean), float(std)
        self.sum: dict[str, torch.Tensor] | None = None
        self.added: list[int] = []
        self._state: dict[str, Any] = {}

    def weights(self, epochs: int) -> list[float]:
        """The normalised weight of each epoch ``1 .. epochs`` (index 0 is epoch 1)."""
        density = [math.exp(-0.5 * ((e - self.mean) / self.std) ** 2) for e in range(1, epochs + 1)]
        total = sum(density)
        return [d / total for d in density]

    def on_epoch_end(self, trainer: "Trainer") -> None:
        epoch, epochs = trainer.progress.epoch, trainer.config.epochs
        weight = self.weights(epochs)[epoch]
        params = dict(trainer.model.named_prompt_parameters())
        with torch.no_grad():
            if self.sum is None:
                self.sum = {n: p.detach() * weight for n, p in params.items()}
            else:
                self.sum = {n: self.sum[n].to(p.device) + p.detach() * weight for n, p in params.items()}
            self.added.append(epoch)
            if epoch == epochs - 1:
                for n, p in params.items():
                    p.copy_(self.sum[n])
        self._state = {"added": list(self.added), "sum": _encode(self.sum)}

    def on_train_end(self, trainer: "Trainer") -> None:
        done, epochs = trainer.progress.epoch, trainer.config.epochs
        if done < epochs and trainer.is_main:
            print(
                f"gpa: the run ended after {done} of {epochs} epochs; the prompts are the last trained ones, not the "
                f"Gaussian average (resume the run to finish it)",
                file=sys.stderr,
            )

    def state_dict(self) -> dict[str, Any]:
        return self._state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.added = list(state["added"])
        self.sum = _decode(state["sum"])
        self._state = dict(state)


def _encode(tensors: dict[str, torch.Tensor]) -> str:
    """Tensors as text for the JSON callback state (safetensors bytes, base64): exact, and never unpickled."""
    from safetensors.torch import save

    return base64.b64encode(save({n: t.detach().cpu().contiguous() for n, t in tensors.items()})).decode("ascii")


def _decode(text: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(base64.b64decode(text))


register_method("promptsrc", PromptSRCConfig, PromptSRC, kind="vision", summary="PromptSRC: IVLP prompts regularised towards frozen CLIP")
register_callback("gpa", GaussianPromptAggregation)


__all__ = ["GaussianPromptAggregation", "PromptSRC", "PromptSRCConfig"]
