"""promptcore.quantization: the one check and message both packages give when a kind's library is missing, and the
kinds a built backbone takes."""

import importlib.util

import pytest
from torch import nn

from promptcore.errors import UserError
from promptcore.quantization import QUANT_LIBRARIES, quantize_linear_weights, require_quant_library


@pytest.mark.parametrize("kind", sorted(QUANT_LIBRARIES))
def test_a_missing_library_names_the_package_and_the_extra(kind, monkeypatch):
    module, package = QUANT_LIBRARIES[kind]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.split(".")[0] == module.split(".")[0] else real(name, *a))
    with pytest.raises(UserError, match=rf"model.quantization: {kind} needs the {package} package.*pip install 'prompttune\[quant\]'"):
        require_quant_library(kind)
    with pytest.raises(UserError, match="needs the torchao package") if kind == "int8" else pytest.raises(UserError, match="text models only"):
        quantize_linear_weights(nn.Linear(2, 2), kind)


def test_an_unknown_kind_lists_the_known_ones():
    with pytest.raises(UserError, match=r"unknown kind 'int3'; choose one of int8, int4 or null"):
        require_quant_library("int3")


@pytest.mark.skipif(importlib.util.find_spec("optimum") is None or importlib.util.find_spec("optimum.quanto") is None, reason="optimum-quanto is not installed (pip install 'prompttune[quant]')")
@pytest.mark.parametrize("bits", [2, 4])
def test_quanto_unpacks_on_the_cpu_through_torch_what_it_packed(bits):
    import torch
    from optimum.quanto.tensor.packed import PackedTensor

    from promptcore.quantization import unpack_quanto_with_torch

    unpack_quanto_with_torch()
    unpack_quanto_with_torch()  # idempotent
    values = torch.randint(0, 2**bits, (64, 24), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    packed = PackedTensor.pack(values, bits=bits)
    assert packed._data.numel() == values.numel() * bits // 8  # really packed
    assert torch.equal(packed.unpack(), values)
    assert torch.equal(torch.ops.quanto.unpack(packed._data, bits), values)
