"""promptcore.quantization: the one check and message both packages give when a kind's library is missing, the
kinds a built backbone takes, and nf4 (torchao's NF4Tensor): a text model's forward and input gradients equal a plain
model's on the dequantized weights in float64, its bytes are the memory model's, and the sharding engines take or
refuse each kind with the reason. Under torchrun, tests/promptcore/test_sharded_loading.py trains nf4 under FSDP2
and DDP."""

import copy
import importlib.util
import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from promptcore.errors import UserError
from promptcore.quantization import QUANT_LIBRARIES, is_nf4, quantize_linear_weights, require_quant_library

HAS_TORCHAO = importlib.util.find_spec("torchao") is not None
needs_torchao = pytest.mark.skipif(not HAS_TORCHAO, reason="torchao is not installed (pip install 'prompttune[quant]')")
# A Llama whose linear weights (128 x 128, 256 x 128) hold whole nf4 scale blocks (64 x 256 values).
NF4_LLAMA = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 64}


@pytest.mark.parametrize("kind", sorted(QUANT_LIBRARIES))
def test_a_missing_library_names_the_package_and_the_extra(kind, monkeypatch):
    module, package = QUANT_LIBRARIES[kind]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.split(".")[0] == module.split(".")[0] else real(name, *a))
    with pytest.raises(UserError, match=rf"model.quantization: {kind} needs the {package} package.*pip install 'prompttune\[quant\]'"):
        require_quant_library(kind)
    with pytest.raises(UserError, match="needs the torchao package") if kind in ("int8", "nf4") else pytest.raises(UserError, match="text models only"):
        quantize_linear_weights(nn.Linear(2, 2), kind)


def test_an_unknown_kind_lists_the_known_ones():
    with pytest.raises(UserError, match=r"unknown kind 'int3'; choose one of int8, int4, nf4 or null"):
        require_quant_library("int3")


def nf4_llama(dtype: str = "float64"):
    from textpt.config import TextModelConfig
    from textpt.loading import load_model_and_tokenizer

    torch.manual_seed(0)
    return load_model_and_tokenizer(TextModelConfig(name="random:llama", kwargs=NF4_LLAMA, quantization="nf4", dtype=dtype))


def dequantized(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose nf4 weights are plain tensors of their dequantized values."""
    plain = copy.deepcopy(model)
    for module in plain.modules():
        if isinstance(module, nn.Linear) and is_nf4(module.weight):
            module.weight = nn.Parameter(module.weight.get_original_weight(), requires_grad=False)
    return plain


@needs_torchao
def test_an_nf4_text_model_equals_the_plain_model_on_its_dequantized_weights_in_float64():
    model, tokenizer = nf4_llama()
    linears = {n: m.weight for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert all(is_nf4(w) for n, w in linears.items() if n != "lm_head")
    # As QLoRA: the LM head and the embeddings stay in the model's dtype.
    assert type(model.lm_head.weight) is nn.Parameter and type(model.get_input_embeddings().weight) is nn.Parameter
    assert all(w.dtype == torch.float64 and not w.requires_grad for w in linears.values())
    reference = dequantized(model)
    ids = torch.randint(0, len(tokenizer), (2, 9))
    embeds = model.get_input_embeddings()(ids).detach()
    got_in, ref_in = embeds.clone().requires_grad_(True), embeds.clone().requires_grad_(True)
    got, expected = model(inputs_embeds=got_in).logits, reference(inputs_embeds=ref_in).logits
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    weights = torch.randn_like(got)
    (got * weights).sum().backward()
    (expected * weights).sum().backward()
    assert got_in.grad.abs().sum() > 0
    torch.testing.assert_close(got_in.grad, ref_in.grad, rtol=1e-12, atol=1e-12)
    assert all(p.grad is None for p in model.parameters())
    # The 4-bit weights are not the float ones: the reference is a different model from the unquantized one.
    torch.manual_seed(0)
    w = torch.randn(128, 128, dtype=torch.float64)
    quantized = nn.Linear(128, 128, bias=False, dtype=torch.float64)
    quantized.weight = nn.Parameter(w.clone(), requires_grad=False)
    quantize_linear_weights(quantized, "nf4")
    error = (quantized.weight.get_original_weight() - w).abs().max()
    assert 0 < error < 0.2 * w.abs().max()


@needs_torchao
def test_nf4_bytes_are_the_memory_models():
    from promptcore.memory import module_bytes, tensor_bytes
    from promptcore.memory_model import linear_weight_bytes

    model, _ = nf4_llama("float32")
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and is_nf4(module.weight):
            rows, cols = module.weight.shape
            # The memory model's 4 bits, 8-bit absmax per 64 and float32 scale per 256 blocks, and torchao's per-tensor
            # extras: the mean of the absmax values (float32) and its 16-value NormalFloat table (float32).
            assert tensor_bytes([module.weight]) == linear_weight_bytes(rows, cols, "nf4") + 4 + 16 * 4, name
    fp32 = sum(p.numel() * 4 for p in model.parameters()) + sum(b.numel() * b.element_size() for b in model.buffers())
    assert module_bytes(model) < fp32


@needs_torchao
def test_nf4_weights_that_do_not_fill_its_blocks_stay_float_and_are_logged(caplog):
    model = nn.Sequential(nn.Linear(128, 128), nn.Linear(128, 10))
    with caplog.at_level(logging.WARNING, logger="promptcore.quantization"):
        quantize_linear_weights(model, "nf4")
    assert is_nf4(model[0].weight) and type(model[0].bias) is nn.Parameter
    assert type(model[1].weight) is nn.Parameter
    assert "1 of 2 linear weights stay in their dtype, their size not a multiple of 16384 (e.g. 1)" in caplog.text
    with pytest.raises(UserError, match=r"nf4 stores weights in blocks of 64 x 256 = 16384 values.*\(sizes: 20, 40\); use model.quantization: int8"):
        quantize_linear_weights(nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 8)), "nf4")


@needs_torchao
def test_the_sharding_engines_take_nf4_and_refuse_what_they_cannot_shard():
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    from promptcore.distributed import check_shardable_weights

    nf4 = nn.Sequential(nn.Linear(128, 256), nn.LayerNorm(256))
    quantize_linear_weights(nf4, "nf4")
    check_shardable_weights(nf4, "fsdp", 2)  # 256 rows, 2 scale blocks: one each
    with pytest.raises(UserError, match=r"fsdp cannot shard the nf4 weight 0.weight \(256, 128\) over 4 processes.*\(2 blocks\)"):
        check_shardable_weights(nf4, "fsdp", 4)
    with pytest.raises(UserError, match=r"deepspeed shards plain float weights \(ZeRO-3 flattens .*quantized \(NF4Tensor\).*nf4 under train.distributed: fsdp, any quantization under ddp"):
        check_shardable_weights(nf4, "deepspeed")
    int8 = nn.Sequential(nn.Linear(64, 64))
    quantize_(int8, Int8WeightOnlyConfig())
    with pytest.raises(UserError, match=r"fsdp shards plain float weights and nf4 weights .*quantized \(Int8Tensor\)"):
        check_shardable_weights(int8, "fsdp", 2)


def test_quantized_models_are_not_built_for_sharded_loading():
    from promptcore.distributed import FSDPConfig, uses_sharded_loading

    assert uses_sharded_loading("fsdp", FSDPConfig(), 2)
    assert not uses_sharded_loading("fsdp", FSDPConfig(), 2, "nf4")
    with pytest.raises(UserError, match="sharded_loading: true, but model.quantization: nf4 quantizes the whole model on every process"):
        uses_sharded_loading("fsdp", FSDPConfig(sharded_loading=True), 2, "nf4")


@needs_torchao
def test_the_cli_refuses_an_nf4_model_too_small_for_its_blocks_in_one_line(capsys):
    from textpt.cli import main

    smoke = Path(__file__).resolve().parents[2] / "configs/smoke/textpt_tiny.yaml"
    assert main(["train", "-c", str(smoke), "--set", "model.quantization=nf4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: model.quantization: nf4 stores weights in blocks of 64 x 256") and "Traceback" not in "".join(err)


@needs_torchao
def test_an_nf4_model_is_not_built_for_sharded_loading(monkeypatch):
    import textpt
    from textpt.config import TextModelConfig

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with textpt.sharded_loading(), pytest.raises(UserError, match="nf4 quantizes the whole model on every process .* cannot be built for sharded loading"):
        textpt.load_model_and_tokenizer(TextModelConfig(name="random:llama", kwargs=NF4_LLAMA, quantization="nf4"))


@pytest.mark.skipif(importlib.util.find_spec("optimum") is None or importlib.util.find_spec("optimum.quanto") is None, reason="optimum-quanto is not installed (pip install 'prompttune[quant]')")
@pytest.mark.parametrize("bits", [2, 4])
def test_quanto_unpacks_on_the_cpu_through_torch_what_it_packed(bits):
    from optimum.quanto.tensor.packed import PackedTensor

    from promptcore.quantization import unpack_quanto_with_torch

    unpack_quanto_with_torch()
    unpack_quanto_with_torch()  # idempotent
    values = torch.randint(0, 2**bits, (64, 24), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    packed = PackedTensor.pack(values, bits=bits)
    assert packed._data.numel() == values.numel() * bits // 8  # really packed
    assert torch.equal(packed.unpack(), values)
    assert torch.equal(torch.ops.quanto.unpack(packed._data, bits), values)
