"""Fingerprints of frozen backbones: which weights a prompt file was trained on, cheaply.

A backbone's name (``timm:vit_base_patch16_224``) says which architecture the prompts need, not which weights: two
checkpoints of one architecture, or two random backbones built with different seeds, have the same name and the
same shapes, so prompts of one load into the other without a complaint and then give chance results. A prompt
file therefore records :func:`backbone_fingerprint`, a hash of a few of the frozen weights, and loading or resuming
compares it (:meth:`promptcore.PromptedModel.check_prompt_config`, :func:`promptcore.preflight.check_resume`).

Cost: at most :data:`NUM_TENSORS` tensors, :data:`SAMPLES` evenly spaced values of each; microseconds to a few
milliseconds for any model size.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

FINGERPRINT_KEY = "backbone_fingerprint"
NUM_TENSORS = 4
SAMPLES = 1024


@torch.no_grad()
def backbone_fingerprint(backbone: nn.Module) -> str | None:
    """16 hex digits identifying ``backbone``'s weights: a SHA-256 over the names, shapes and ``SAMPLES`` evenly
    spaced values (as float64) of the first, last and two middle parameters (buffers when it has none).

    Equal weights give equal fingerprints whatever the device or dtype the values are read in is (values are
    compared as float64); weights that differ anywhere in the sampled values give different ones. None when the
    weights are not all on this process (sharded ``DTensor`` parameters, DeepSpeed ZeRO-3 placeholders, the meta
    device): reading them would need a collective the saving process alone cannot run, so nothing is recorded; nor
    for quantized weights, whose values are not those of the float checkpoint they came from."""
    named = list(backbone.named_parameters()) or list(backbone.named_buffers())
    if not named:
        return "none"
    picks = sorted({0, len(named) // 3, (2 * len(named)) // 3, len(named) - 1})[:NUM_TENSORS]
    digest = hashlib.sha256()
    for i in picks:
        name, tensor = named[i]
        if type(tensor).__name__ == "DTensor" or tensor.device.type == "meta" or tensor.numel() == 0:
            return None
        if type(tensor.detach()) is not torch.Tensor:
            return None  # quantized weights (torchao, optimum-quanto tensor types): not comparable with float ones
        flat = tensor.detach().reshape(-1)
        if flat.numel() > SAMPLES:
            # Integer steps: a float linspace rounds the last index of a large tensor past its end.
            flat = flat[torch.arange(SAMPLES, device=flat.device) * (flat.numel() - 1) // (SAMPLES - 1)]
        digest.update(f"{name}:{tuple(tensor.shape)}:".encode())
        digest.update(flat.to("cpu", torch.float64).numpy().tobytes())
    return digest.hexdigest()[:16]


__all__ = ["FINGERPRINT_KEY", "backbone_fingerprint"]
