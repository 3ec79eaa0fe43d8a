"""Weight-only quantization of frozen weights (``model.quantization``), shared by the vision and text packages.

The kinds, the library behind each, the check that it is installed (one message naming the pip extra), torchao's
int8 recipe and the nf4 conversion. The packages differ only in when they apply it: :mod:`vpt.backbones` quantizes
a built backbone in place (:func:`quantize_linear_weights`); :mod:`textpt.loading` hands transformers a
quantization config at load time for ``int8`` / ``int4``, built from the same recipe, and converts a loaded model's
linear layers for ``nf4``. The libraries are imported when a kind is used, never before.

- ``int8``: torchao's int8 weight-only quantization (CPU and GPU), every linear layer.
- ``int4``: optimum-quanto's int4 weights (torchao's int4 kernels need a GPU or bfloat16); text models only.
- ``nf4``: torchao's ``NF4Tensor``, QLoRA's 4-bit NormalFloat (blocks of :data:`NF4_BLOCK` weights with an 8-bit
  absmax each, double-quantized with a float32 scale per :data:`NF4_SCALER_BLOCK` blocks), on the CPU and GPU.
  A layer computes by dequantizing its weight to the input's dtype (``float64`` inputs compute in ``float64``), so
  its output is exactly a plain linear layer's on the dequantized weight. The one kind that FSDP2 shards: the
  tensor type carries FSDP2's all-gather hooks (:func:`promptcore.distributed.check_shardable_weights`).
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any, Iterable, Literal

from torch import nn

from .errors import UserError
from .library_notes import import_torchao_quietly
from .memory_model import NF4_BLOCK, NF4_DOUBLE_QUANT_BLOCK

logger = logging.getLogger(__name__)

QuantKind = Literal["int8", "int4", "nf4"]

# The library behind each kind: (import name, pip name).
QUANT_LIBRARIES: dict[str, tuple[str, str]] = {
    "int8": ("torchao", "torchao"),
    "int4": ("optimum.quanto", "optimum-quanto"),
    "nf4": ("torchao", "torchao"),
}
# QLoRA's layout, as torchtune and torchao's to_nf4 default: 64 weights per absmax, 256 absmax values per scale.
NF4_SCALER_BLOCK = NF4_DOUBLE_QUANT_BLOCK
# An nf4 weight holds a whole number of scaler blocks: its size must be a multiple of this.
NF4_WEIGHTS_PER_SCALE = NF4_BLOCK * NF4_SCALER_BLOCK


def require_quant_library(kind: str) -> None:
    """Raises :class:`UserError` naming the pip extra when the library of quantization ``kind`` is missing."""
    if kind not in QUANT_LIBRARIES:
        raise UserError(f"model.quantization: unknown kind {kind!r}; choose one of {', '.join(QUANT_LIBRARIES)} or null")
    module, package = QUANT_LIBRARIES[kind]
    if importlib.util.find_spec(module.split(".")[0]) is None or importlib.util.find_spec(module) is None:
        raise UserError(
            f"model.quantization: {kind} needs the {package} package, which is not installed; "
            f"pip install 'prompttune[quant]' (or pip install {package}), or set model.quantization: null"
        )


def int8_weight_only() -> Any:
    """torchao's int8 weight-only config (``Int8WeightOnlyConfig()``), after checking that torchao is installed."""
    require_quant_library("int8")
    import_torchao_quietly()
    from torchao.quantization import Int8WeightOnlyConfig

    return Int8WeightOnlyConfig()


_QUANTO_CPU: Any = None  # the library registration that routes quanto's CPU unpacking through torch (kept alive)


def unpack_quanto_with_torch() -> None:
    """Makes optimum-quanto unpack int4 / int2 weights on the CPU with torch operations instead of its C++ kernel.

    quanto compiles that kernel (a C++ extension built with ninja and the system compiler, inside the installed
    package) the first time a packed weight is used on the CPU: a minute or more on a small machine, without a word,
    and an error on a machine without a compiler. The torch operations give the same bits
    (``tests/promptcore/test_quantization.py``) in about 1.1-1.2x the kernel's time for the unpacking alone
    (a 4096 x 4096 int4 weight, 2-core CPU). GPU kernels are untouched. Idempotent.
    """
    global _QUANTO_CPU
    if _QUANTO_CPU is not None:
        return
    import torch
    import optimum.quanto  # noqa: F401  defines quanto::unpack and registers its CPU kernel, which this replaces

    library = torch.library.Library("quanto", "IMPL")
    library.impl("unpack", unpack_bits, "CPU")
    _QUANTO_CPU = library


def unpack_bits(packed: Any, bits: int) -> Any:
    """The ``8 // bits`` values of ``bits`` bits packed in each byte of ``packed`` (uint8), lowest bits first, as
    quanto packs them: the values of bit slot ``i`` of every byte, for ``i`` = 0, 1, ..., joined along dimension 0."""
    import torch

    width = 2**bits - 1
    return torch.cat([(packed >> (bits * i)) & width for i in range(8 // bits)]).to(torch.uint8)


def is_nf4(tensor: Any) -> bool:
    """Whether ``tensor`` (a parameter, or the local tensor of a sharded one) is torchao's ``NF4Tensor``."""
    return type(tensor).__name__ == "NF4Tensor"


def quantize_nf4(model: nn.Module, keep: Iterable[nn.Module] = ()) -> int:
    """Stores the weights of ``model``'s linear layers as torchao ``NF4Tensor`` s, in place, and returns how many.

    The modules in ``keep`` (and those inside them) stay as they are: a causal LM's head, as QLoRA leaves it.
    A weight whose size is not a multiple of :data:`NF4_WEIGHTS_PER_SCALE` (64 x 256, the double-quantized layout)
    cannot be stored in nf4 and stays in its dtype; their number is logged. Biases stay in their dtype.

    Raises:
        UserError: torchao is not installed, or no linear layer of ``model`` has a weight nf4 can store.
    """
    require_quant_library("nf4")
    import_torchao_quietly()
    try:  # where torchao 0.18 has it
        from torchao.quantization import to_nf4
    except ImportError:  # older torchao releases, which the prompttune[quant] extra allows
        from torchao.dtypes import to_nf4

    kept = {id(m) for k in keep for m in k.modules()}
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear) and id(m) not in kept]
    fits = [(name, m) for name, m in linears if m.weight.numel() % NF4_WEIGHTS_PER_SCALE == 0 and not is_nf4(m.weight)]
    if not fits:
        sizes = sorted({m.weight.numel() for _, m in linears})
        raise UserError(
            f"model.quantization: nf4 stores weights in blocks of {NF4_BLOCK} x {NF4_SCALER_BLOCK} = "
            f"{NF4_WEIGHTS_PER_SCALE} values, and no linear layer of {type(model).__name__} has a weight whose size is a "
            f"multiple of it (sizes: {', '.join(map(str, sizes[:6])) or 'no linear layers'}); use model.quantization: int8 "
            f"for a model this small, or null"
        )
    for _, module in fits:
        weight = module.weight.detach().contiguous()
        module.weight = nn.Parameter(to_nf4(weight, NF4_BLOCK, NF4_SCALER_BLOCK), requires_grad=False)
    left = [name for name, m in linears if not is_nf4(m.weight)]
    if left:
        logger.warning(
            "model.quantization: nf4: %d of %d linear weights stay in their dtype, their size not a multiple of %d "
            "(e.g. %s)", len(left), len(linears), NF4_WEIGHTS_PER_SCALE, left[0],
        )
    return len(fits)


def quantize_linear_weights(model: nn.Module, kind: str, keep: Iterable[nn.Module] = ()) -> None:
    """Stores the weights of ``model``'s linear layers in ``kind`` (``int8``: torchao's weight-only int8, every
    linear layer; ``nf4``: :func:`quantize_nf4`, the modules in ``keep`` left out), in place; the layers compute in
    their input's dtype, and gradients reach the inputs.

    Raises:
        UserError: a kind other than ``int8`` or ``nf4``, or torchao is not installed.
    """
    if kind == "nf4":
        quantize_nf4(model, keep)
        return
    if kind != "int8":
        raise UserError(f"model.quantization: {kind!r} applies to text models only; a built backbone takes int8, nf4 (or null)")
    config = int8_weight_only()
    from torchao.quantization import quantize_

    quantize_(model, config)


__all__ = [
    "NF4_SCALER_BLOCK",
    "NF4_WEIGHTS_PER_SCALE",
    "QUANT_LIBRARIES",
    "QuantKind",
    "int8_weight_only",
    "is_nf4",
    "quantize_linear_weights",
    "quantize_nf4",
    "require_quant_library",
]
