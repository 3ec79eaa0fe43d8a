"""vlmpt at scale, in one process: ``model.quantization: int8 | nf4`` stores the language model's linear weights
quantized (vision tower, projector, LM head and embeddings stay float), and prompted logits and prompt gradients
equal those of the same model on its dequantized weights in float64; the sharding engines refuse what they cannot
shard, and sharded loading (text models only) is refused; the CLI refuses a kind it does not take. Under torchrun, tests/contract/test_sharded_contract.py runs every vlmpt method
under FSDP2 and DDP, and an nf4 language model under FSDP2."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

import promptcore
import vlmpt
from promptcore.distributed import check_shardable_weights, checksum
from promptcore.errors import UserError
from promptcore.quantization import is_nf4
from vlmpt.config import VLMModelConfig
from vlmpt.loading import load_model_and_processor
from vlmpt.synthetic import collate_examples, tiny_examples

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao is not installed (pip install 'prompttune[quant]')")
SMOKE = Path(__file__).resolve().parents[2] / "configs/smoke/vlmpt_tiny.yaml"
# A tiny LLaVA language model whose linear weights fill nf4's 64 x 256-value blocks (the projector maps the vision
# tower's 32 features into its 128).
NF4_TEXT = {"hidden_size": 128, "intermediate_size": 256, "num_key_value_heads": 2}


def quantized_llava(kind: str | None) -> nn.Module:
    """The tiny LLaVA of :data:`NF4_TEXT` through the loader, its language model in ``kind``, in float64 (nf4 is
    quantized from float64; int8 from float32, the rest of the model then cast: torchao's int8 linear computes in
    its input's dtype)."""
    dtype = "float64" if kind != "int8" else "float32"
    backbone, _ = load_model_and_processor(VLMModelConfig(name="random:llava", dtype=dtype, quantization=kind, kwargs=NF4_TEXT))
    return backbone.double()


def dequantized(backbone: nn.Module) -> nn.Module:
    """A copy of ``backbone`` whose quantized linear weights are plain float64 tensors of their dequantized values
    (an int8 weight's values times its row's scale, exact in float64)."""
    plain = copy.deepcopy(backbone)
    for module in plain.modules():
        weight = getattr(module, "weight", None)
        if not isinstance(module, nn.Linear) or type(weight.detach()) is torch.Tensor:
            continue
        if is_nf4(weight):
            values = weight.get_original_weight()
        else:
            assert list(weight.block_size) == [1, weight.shape[1]], "int8 per-row scales"
            values = weight.qdata.double() * weight.scale.double().reshape(-1, 1)
        module.weight = nn.Parameter(values.double(), requires_grad=False)
    return plain


@pytest.mark.parametrize("kind", ["nf4", "int8"])
def test_a_quantized_language_model_gives_the_logits_of_its_dequantized_weights_in_float64(kind):
    backbone = quantized_llava(kind)
    language_model = backbone.get_decoder()
    quantized = {n for n, m in backbone.named_modules() if isinstance(m, nn.Linear) and type(m.weight.detach()) is not torch.Tensor}
    lm_linears = {f"model.language_model.{n}" for n, m in language_model.named_modules() if isinstance(m, nn.Linear)}
    assert quantized == lm_linears and len(quantized) == 14  # 2 layers of 7 linear layers
    # The vision tower, the projector, the LM head and the embeddings stay plain float64.
    for part in (backbone.model.vision_tower, backbone.model.multi_modal_projector, backbone.lm_head, backbone.get_input_embeddings()):
        assert all(type(p.detach()) is torch.Tensor and p.dtype == torch.float64 for p in part.parameters())
    config = vlmpt.VLMPromptTuningConfig(num_tokens=3, seed=0, init_std=1.0)
    model, reference = promptcore.wrap(backbone, config), promptcore.wrap(dequantized(backbone), config)
    batch = collate_examples(tiny_examples(backbone, num_examples=3, seed=7))
    batch["pixel_values"] = batch["pixel_values"].double()
    got, expected = model(**batch), reference(**batch)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    got.pow(2).sum().backward()
    expected.pow(2).sum().backward()
    torch.testing.assert_close(model.prompts.weight.grad, reference.prompts.weight.grad, rtol=1e-9, atol=1e-12)
    assert all(p.grad is None for p in backbone.parameters())
    # The quantized weights are not the float ones: the model differs from the one never quantized.
    plain = promptcore.wrap(quantized_llava(None), config)
    assert (plain(**batch) - got).abs().max() > 1e-6


def test_the_sharding_engines_refuse_what_they_cannot_shard():
    int8, nf4 = quantized_llava("int8"), quantized_llava("nf4")
    # Every engine first compares the frozen weights' checksums between processes; a quantized weight's are those of
    # its stored tensors (it cannot sum itself), and tell two weights apart.
    for model in (int8, nf4):
        layers = model.get_decoder().layers
        first, second = (checksum(layer.mlp.down_proj.weight.detach()) for layer in layers)
        assert torch.isfinite(first) and first != second
        assert checksum(copy.deepcopy(layers[0].mlp.down_proj.weight).detach()) == first
    with pytest.raises(UserError, match=r"fsdp shards plain float weights and nf4 weights .*quantized \(Int8Tensor\).*any quantization under ddp"):
        check_shardable_weights(int8, "fsdp", 2)
    with pytest.raises(UserError, match=r"deepspeed shards plain float weights \(ZeRO-3 flattens .*quantized \(NF4Tensor\)"):
        check_shardable_weights(nf4, "deepspeed")
    # nf4 over 2 processes needs 2 whole blocks per weight: 128 x 128 holds one.
    with pytest.raises(UserError, match=r"fsdp cannot shard the nf4 weight model.language_model.layers.0.self_attn.k_proj.weight \(128, 128\) over 2"):
        check_shardable_weights(nf4, "fsdp", 2)


def test_quantization_refusals_name_the_fix():
    with pytest.raises(UserError, match=r"int8 quantizes float32, bfloat16 or float16 weights, and model.dtype is float64"):
        load_model_and_processor(VLMModelConfig(name="random:llava", dtype="float64", quantization="int8"))
    # The default tiny model (width 32) has no weight that fills nf4's blocks.
    with pytest.raises(UserError, match=r"nf4 stores weights in blocks of 64 x 256 = 16384 values.*use model.quantization: int8"):
        load_model_and_processor(VLMModelConfig(name="random:llava", quantization="nf4"))


def test_the_cli_refuses_a_quantization_it_does_not_take(capsys):
    from vlmpt.cli import main

    assert main(["train", "-c", str(SMOKE), "--set", "model.quantization=int4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: ") and "Traceback" not in "".join(err)
    assert err[-1].strip() == "- model.quantization: 'int4' is not one of 'int8', 'nf4'. Did you mean 'int8' or 'nf4'?"


def test_sharded_loading_is_refused_for_a_vision_language_model():
    from promptcore.distributed import FSDPConfig, check_sharded_loading
    from promptcore.engines import FSDPEngine

    model = promptcore.wrap(vlmpt.tiny_backbone("llava"), vlmpt.VLMPromptTuningConfig(num_tokens=2))
    assert not check_sharded_loading(model, FSDPEngine, FSDPConfig(), 2)  # auto: every process builds the whole model
    with pytest.raises(UserError, match=r"sharded_loading: true, but VLMPromptTuningModel was built whole on every process: sharded loading covers Hugging Face text models"):
        check_sharded_loading(model, FSDPEngine, FSDPConfig(sharded_loading=True), 2)
