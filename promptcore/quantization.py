"""Weight-only quantization of frozen weights (``model.quantization``), shared by the vision and text packages.

The kinds, the library behind each, the check that it is installed (one message naming the pip extra), and torchao's
int8 recipe. The packages differ only in when they apply it: :mod:`vpt.backbones` quantizes a built backbone in place
(:func:`quantize_linear_weights`); :mod:`textpt.loading` hands transformers a quantization config at load time,
built from the same recipe. The libraries are imported when a kind is used, never before.

- ``int8``: torchao's int8 weight-only quantization (CPU and GPU), every linear layer.
- ``int4``: optimum-quanto's int4 weights (torchao's int4 kernels need a GPU or bfloat16); text models only.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

from torch import nn

from .errors import UserError

QuantKind = Literal["int8", "int4"]

# The library behind each kind: (import name, pip name).
QUANT_LIBRARIES: dict[str, tuple[str, str]] = {"int8": ("torchao", "torchao"), "int4": ("optimum.quanto", "optimum-quanto")}


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
    from torchao.quantization import Int8WeightOnlyConfig

    return Int8WeightOnlyConfig()


def quanto_int4() -> Any:
    """optimum-quanto's int4 weight config for transformers (``QuantoConfig(weights="int4")``), after checking that
    quanto is installed; packed weights then unpack on the CPU through torch (:func:`unpack_quanto_with_torch`)."""
    require_quant_library("int4")
    import transformers

    unpack_quanto_with_torch()
    return transformers.QuantoConfig(weights="int4")


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


def quantize_linear_weights(model: nn.Module, kind: str) -> None:
    """Stores the weights of ``model``'s linear layers in ``kind`` (``int8``) with torchao's weight-only
    quantization, in place; the layers compute in their input's dtype, and gradients reach the inputs.

    Raises:
        UserError: a kind other than ``int8``, or torchao is not installed.
    """
    if kind != "int8":
        raise UserError(f"model.quantization: {kind!r} applies to text models only; a built backbone takes int8 (or null)")
    config = int8_weight_only()
    from torchao.quantization import quantize_

    quantize_(model, config)


__all__ = ["QUANT_LIBRARIES", "QuantKind", "int8_weight_only", "quantize_linear_weights", "require_quant_library"]
