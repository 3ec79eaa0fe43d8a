"""The one API every prompted model follows, vision or text.

A :class:`PromptedModel` holds a frozen ``backbone`` and the trainable prompt modules (``prompt_modules()``:
the prompts, and a head where the method has one). Everything the trainer, the prompt files and the CLIs need
goes through the methods defined here.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .files import PromptFileError, load_prompt_files, save_prompt_files
from .fingerprint import FINGERPRINT_KEY, backbone_fingerprint

# Config keys a prompt file must share with the model, and how to name them in a mismatch message:
# (what the file's value is, what the model's value is).
COMPAT_LABELS: dict[str, tuple[str, str]] = {
    "method": ("prompt method", "the model's method"),
    "dim": ("prompt dim", "backbone width"),
    "num_tokens": ("prompt length", "the model's prompt length"),
    "num_layers": ("prompt depth", "the model's prompted layers"),
    "num_tasks": ("number of tasks", "the model's number of tasks"),
    "num_classes": ("number of classes", "the model's head size"),
    "head": ("head type", "the model's head type"),
    "task": ("task type", "the model's task type"),
}


class PromptedModel(nn.Module):
    """Base class of prompted models.

    Subclasses set ``self.backbone`` (frozen) and their prompt modules, and implement :meth:`prompt_config` and
    :meth:`forward_batch` (or :meth:`training_step` / :meth:`eval_step` directly).

    Attributes:
        prompt_module_names: attribute names of the trainable modules; the defaults cover ``prompts`` and ``head``.
        compat_keys: :meth:`prompt_config` keys a prompt file must match to load.
    """

    prompt_module_names: tuple[str, ...] = ("prompts", "head")
    compat_keys: tuple[str, ...] = tuple(COMPAT_LABELS)

    backbone: nn.Module

    # ----- what is trained -------------------------------------------------------------------------------------
    def prompt_modules(self) -> dict[str, nn.Module]:
        """The trainable modules by name (the only ones whose parameters the trainer updates and files hold)."""
        return {n: m for n in self.prompt_module_names if isinstance(m := getattr(self, n, None), nn.Module)}

    def prompt_parameters(self) -> Iterator[nn.Parameter]:
        seen: set[int] = set()
        for module in self.prompt_modules().values():
            for p in module.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield p

    def named_prompt_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        ids = {id(p) for p in self.prompt_parameters()}
        for name, p in self.named_parameters():
            if id(p) in ids:
                yield name, p

    def freeze_backbone(self) -> "PromptedModel":
        """Freezes every parameter except the prompt parameters (one pass over all named parameters)."""
        trainable = {id(p) for p in self.prompt_parameters()}
        for p in self.parameters():
            p.requires_grad_(id(p) in trainable)
        return self

    def backbone_is_placed(self) -> bool:
        """Whether the backbone's weights stay where and as they were loaded (spread over devices by a device map,
        or quantized): :meth:`to` and the casts then move the prompt modules only. ``False`` here."""
        return False

    def follow_backbone_device(self) -> "PromptedModel":
        """Moves the prompt modules to the backbone's device when every backbone weight sits on one device.

        Prompts are built on the CPU; wrapping a backbone that already lives on a GPU would otherwise leave them
        there and fail at the first step with a device mismatch. A placed backbone (spread by a device map) is
        left as its loader placed it."""
        backbone = self._modules.get("backbone")
        if backbone is None or self.backbone_is_placed():
            return self
        devices = {t.device for t in backbone.parameters()} | {t.device for t in backbone.buffers()}
        if len(devices) == 1:
            device = next(iter(devices))
            if any(t.device != device for t in self.prompt_parameters()):
                self.to(device)
        return self

    def _apply(self, fn: Any, recurse: bool = True) -> "PromptedModel":
        # nn.Module.to / .cuda / .float all end here: a placed backbone is left out of them.
        backbone = self._modules.get("backbone")
        if not recurse or backbone is None or not self.backbone_is_placed():
            return super()._apply(fn, recurse)
        modules = self._modules
        self._modules = {name: m for name, m in modules.items() if m is not backbone}
        try:
            return super()._apply(fn, recurse)
        finally:
            self._modules = modules

    def train(self, mode: bool = True) -> "PromptedModel":
        """Sets train mode on the prompt modules only: frozen modules always stay in eval mode."""
        super().train(mode)
        if getattr(self, "backbone", None) is not None:
            self.backbone.eval()
        return self

    def count_parameters(self) -> tuple[int, int]:
        """``(trainable, total)`` parameter counts."""
        trainable = sum(p.numel() for p in self.prompt_parameters())
        total = sum(p.numel() for p in self.parameters())
        return trainable, total

    def print_trainable_parameters(self) -> str:
        """Prints and returns ``trainable params: N || all params: M || trainable%: P`` (as PEFT prints it)."""
        trainable, total = self.count_parameters()
        line = f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / max(total, 1):.4f}"
        print(line)
        return line

    # ----- prompt state and files -------------------------------------------------------------------------------
    def prompt_config(self) -> dict[str, Any]:
        """What a prompt file records about the model: at least ``method`` and ``backbone``, plus the sizes
        (``dim``, ``num_tokens``, ``num_layers`` ...) that must match to load it."""
        raise NotImplementedError(f"{type(self).__name__} must implement prompt_config()")

    def prompt_state_dict(self) -> dict[str, torch.Tensor]:
        """The prompt tensors (reparameterisation encoders folded in) and the head, detached."""
        sd: dict[str, torch.Tensor] = {}
        for name, module in self.prompt_modules().items():
            state = module.folded_state() if hasattr(module, "folded_state") else module.state_dict()
            for key, value in state.items():
                sd[f"{name}.{key}"] = value.detach()
        return sd

    @torch.no_grad()
    def load_prompt_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Loads tensors written by :meth:`prompt_state_dict`; names and shapes must match exactly."""
        expected = self.prompt_state_dict()
        missing = sorted(set(expected) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(expected))
        problems = []
        if missing:
            problems.append(f"missing tensors {missing}")
        if unexpected:
            problems.append(f"unexpected tensors {unexpected}")
        for key in sorted(set(expected) & set(state_dict)):
            if tuple(state_dict[key].shape) != tuple(expected[key].shape):
                problems.append(f"tensor {key} has shape {tuple(state_dict[key].shape)}, the model expects {tuple(expected[key].shape)}")
        if problems:
            raise PromptFileError(f"prompt state does not fit {type(self).__name__} ({self._backbone_label()}): " + "; ".join(problems))
        for name, module in self.prompt_modules().items():
            if hasattr(module, "fold"):
                module.fold()  # the file holds folded embeddings; the encoder is not needed to reproduce them
            sub = {k[len(name) + 1 :]: v for k, v in state_dict.items() if k.startswith(name + ".")}
            own = module.state_dict()
            for key, value in sub.items():
                own[key].copy_(value.to(own[key].dtype))

    def record_in_prompt_files(self, **values: Any) -> None:
        """Adds ``values`` (JSON-serialisable) to the config of every prompt folder :meth:`save_prompts` writes
        from now on, beside :meth:`prompt_config`: what the prompts were trained with that the model itself does not
        hold (the vision recipe records the data section's preprocessing, so evaluation and prediction can
        preprocess images as training did). They are not compared when a prompt folder is loaded."""
        self.__dict__.setdefault("_prompt_file_records", {}).update(values)

    def save_prompts(self, directory: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
        """Writes ``prompts.safetensors`` + ``prompt_config.json`` into ``directory`` (replaced atomically); the
        config records the frozen backbone's weights fingerprint (:mod:`promptcore.fingerprint`)."""
        config = {**self.prompt_config(), **self.__dict__.get("_prompt_file_records", {}), **(extra or {})}
        fingerprint = self.backbone_fingerprint()
        if fingerprint is not None:
            config[FINGERPRINT_KEY] = fingerprint
        return save_prompt_files(directory, self.prompt_state_dict(), config)

    def check_prompt_config(self, found: dict[str, Any], source: str = "prompt file") -> None:
        """Raises :class:`PromptFileError` naming every key where ``found`` does not fit this model."""
        expected = self.prompt_config()
        label = self._backbone_label()
        problems = []
        for key in self.compat_keys:
            if key in expected and key in found and found[key] != expected[key]:
                what, theirs = COMPAT_LABELS.get(key, (key, f"the model's {key}"))
                problems.append(f"{what} {found[key]!r} does not match {theirs} {expected[key]!r} ({label})")
        if problems:
            raise PromptFileError(f"{source} does not fit this model: " + "; ".join(problems))
        theirs, ours = found.get(FINGERPRINT_KEY), self.backbone_fingerprint()
        weights = f" (weights fingerprint {theirs}, here {ours})" if theirs and ours else ""
        if found.get("backbone") and expected.get("backbone") and found["backbone"] != expected["backbone"]:
            warnings.warn(
                f"{source} was trained on backbone {found['backbone']!r}, loading into {expected['backbone']!r}{weights} "
                f"(sizes match, so it loads; check that this is intended)",
                stacklevel=3,
            )
        elif theirs and ours and theirs != ours:
            warnings.warn(
                f"{source} was trained on backbone {found.get('backbone', label)!r} with weights fingerprint {theirs}; "
                f"this {expected.get('backbone', label)!r} has {ours}: the same architecture with other frozen weights "
                f"(another checkpoint or pretrained tag, or a random backbone built with another seed), so the prompts "
                f"will not work as trained. Load them into the backbone they were trained on",
                stacklevel=3,
            )

    def load_prompts(self, directory: str | os.PathLike) -> dict[str, Any]:
        """Loads a prompt folder written by :meth:`save_prompts`, after checking it fits; returns its config."""
        tensors, meta = load_prompt_files(directory)
        self.check_prompt_config(meta, source=f"prompt folder {directory}")
        self.load_prompt_state_dict(tensors)
        return meta

    def backbone_fingerprint(self) -> str | None:
        """A short hash of the frozen backbone's weights (:func:`promptcore.fingerprint.backbone_fingerprint`);
        None for a model without a ``backbone`` module."""
        backbone = getattr(self, "backbone", None)
        return backbone_fingerprint(backbone) if isinstance(backbone, nn.Module) else None

    def _backbone_label(self) -> str:
        try:
            return str(self.prompt_config().get("backbone", type(self.backbone).__name__))
        except NotImplementedError:
            return type(self).__name__

    # ----- training contract ------------------------------------------------------------------------------------
    def enable_gradient_checkpointing(self) -> None:
        """Trades compute for memory in the frozen backbone; subclasses implement it where the backbone allows."""
        raise NotImplementedError(f"{type(self).__name__} does not support gradient checkpointing")

    def forward_batch(self, batch: dict[str, Any]) -> torch.Tensor:
        """Logits ``[batch, num_classes]`` for a collated batch (classification models)."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward_batch() or training_step()/eval_step()")

    def training_step(self, batch: dict[str, Any]) -> torch.Tensor:
        """The mean training loss of a batch (cross-entropy on ``batch['labels']`` by default)."""
        return F.cross_entropy(self.forward_batch(batch).float(), batch["labels"])

    def metric_names(self) -> tuple[str, ...]:
        """The metrics :meth:`eval_step` reports (its keys without ``count``): what ``train.metric`` and the
        early-stopping callback may name, checked before training starts. Override it with :meth:`eval_step`
        when that reports other keys."""
        return ("loss", "accuracy")

    def summarize_metrics(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """The eval metrics the trainer reports, from its averages ``{metric: sum / count}`` (and ``count``): by
        default those; a model may add what is computed from them (the vision-language models add the confidence
        intervals of their answer scores)."""
        return metrics

    @torch.no_grad()
    def eval_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Per-batch sums of each metric plus ``count``; the trainer reports ``sum / count``."""
        logits = self.forward_batch(batch).float()
        labels = batch["labels"]
        return {
            "loss": F.cross_entropy(logits, labels, reduction="sum"),
            "accuracy": (logits.argmax(-1) == labels).sum().float(),
            "count": torch.tensor(float(labels.numel()), device=logits.device),
        }
