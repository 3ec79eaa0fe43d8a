"""``model.quantization: int8`` on vision backbones (torchao's weight-only int8 on every linear layer): prompts train
through it, the VPT-deep fast path equals the plain path on it, and a device map is refused with the alternative.
``nf4`` (torchao's NF4Tensor): the fast path on it equals the plain path on its dequantized weights in float64."""

import copy
import dataclasses
import json
import importlib.util

import pytest
import torch

import vpt
from promptcore.config import ConfigError, load_config
from vpt import VPTConfig, create_model
from vpt.run_config import VisionRunConfig

from test_backbones import TINY, images

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao is not installed (pip install 'prompttune[quant]')")


def _stored(t: torch.Tensor) -> torch.Tensor:
    """The stored numbers of ``t``: the inner tensors of a quantized weight, joined."""
    if hasattr(t, "__tensor_flatten__"):
        return torch.cat([getattr(t, n).detach().flatten().float() for n in t.__tensor_flatten__()[0]])
    return t.detach().flatten().float()


def _linear_bytes(model: torch.nn.Module) -> int:
    total = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            w = m.weight
            inner = [getattr(w, n) for n in w.__tensor_flatten__()[0]] if hasattr(w, "__tensor_flatten__") else [w]
            total += sum(x.numel() * x.element_size() for x in inner)
    return total


@pytest.mark.parametrize("key", ["timm_cls", "open_clip", "hf_vit"])
def test_int8_backbone_trains_prompts_and_keeps_the_fast_path_exact(key):
    torch.manual_seed(0)
    full = create_model(TINY[key])
    torch.manual_seed(0)
    quantized = create_model(dataclasses.replace(TINY[key], quantization="int8"))
    assert _linear_bytes(quantized) <= 0.4 * _linear_bytes(full)
    cfg = dict(method="vpt_deep", num_tokens=3, num_classes=5)
    torch.manual_seed(0)
    reference = vpt.wrap(full, VPTConfig(fast="off", **cfg))
    plain = vpt.wrap(quantized, VPTConfig(fast="off", **cfg))
    fast = vpt.wrap(quantized, VPTConfig(fast="auto", **cfg))
    for model in (plain, fast):
        model.load_prompt_state_dict(reference.prompt_state_dict())
    assert fast.fast and not plain.fast
    x = images(dtype=torch.float32)
    expected = reference(x)
    got_plain, got_fast = plain(x), fast(x)
    torch.testing.assert_close(got_fast, got_plain, rtol=1e-4, atol=1e-4)
    assert (got_plain - expected).abs().max() <= 0.1 * expected.std()
    before = {n: _stored(t) for n, t in quantized.state_dict().items()}
    optimizer = torch.optim.SGD(list(fast.prompt_parameters()), lr=0.5)
    start = fast.prompts.weight.detach().clone()
    for _ in range(2):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(fast(x), torch.tensor([0, 1, 2])).backward()
        assert fast.prompts.weight.grad.abs().sum() > 0
        assert all(p.grad is None for p in quantized.parameters())
        optimizer.step()
    assert not torch.equal(fast.prompts.weight.detach(), start)
    assert all(torch.equal(_stored(t), before[n]) for n, t in quantized.state_dict().items())


def test_a_vision_device_map_is_refused_naming_fsdp():
    with pytest.raises(ConfigError, match=r"model.device_map: vision backbones are built whole.*train.distributed: fsdp"):
        load_config(VisionRunConfig, {"model": {"name": "timm:vit_base_patch16_224", "device_map": "auto"}})


def test_prompts_of_an_int8_backbone_save_and_load(tmp_path):
    torch.manual_seed(0)
    quantized = create_model(dataclasses.replace(TINY["hf_vit"], quantization="int8"))
    model = vpt.wrap(quantized, VPTConfig(method="vpt_deep", num_tokens=3, num_classes=5))
    model.save_prompts(tmp_path / "p")
    assert json.loads((tmp_path / "p" / "prompt_config.json").read_text())["method"] == "vpt_deep"
    other = vpt.wrap(quantized, VPTConfig(method="vpt_deep", num_tokens=3, num_classes=5))
    other.load_prompts(tmp_path / "p")
    torch.testing.assert_close(other.prompts.weight, model.prompts.weight)


def test_quantized_weights_record_no_fingerprint():
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    from promptcore.fingerprint import backbone_fingerprint

    model = torch.nn.Sequential(torch.nn.Linear(64, 64))
    assert backbone_fingerprint(model) is not None
    quantize_(model, Int8WeightOnlyConfig())
    assert backbone_fingerprint(model) is None  # reading int8 weights as floats fails (and would not compare)


def test_nf4_vision_backbone_equals_its_dequantized_weights_in_float64_on_the_fast_path():
    from promptcore.quantization import is_nf4, quantize_linear_weights

    kwargs = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 128, "num_heads": 4}  # weights of 128 x 128 and up
    built = create_model(vpt.BackboneConfig("timm:vit_base_patch16_224", pretrained=False, quantization="nf4", kwargs=kwargs))
    linears = [m for m in built.blocks.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(is_nf4(m.weight) for m in linears)
    cfg = dict(method="vpt_deep", num_tokens=3, num_classes=5)
    torch.manual_seed(0)
    plain = create_model(vpt.BackboneConfig("timm:vit_base_patch16_224", pretrained=False, kwargs=kwargs))
    reference = vpt.wrap(plain, VPTConfig(fast="off", **cfg)).to(torch.float64)
    fast = vpt.wrap(copy.deepcopy(plain), VPTConfig(fast="auto", **cfg)).to(torch.float64)
    # Quantized in float64 (a cast after quantizing would dequantize: NF4Tensor.to(dtype) is the float weight).
    quantize_linear_weights(fast.backbone, "nf4")
    assert is_nf4(fast.backbone.blocks[0].attn.qkv.weight)
    reference.backbone.load_state_dict({n: t.get_original_weight() if is_nf4(t) else t for n, t in fast.backbone.state_dict().items()})
    fast.load_prompt_state_dict(reference.prompt_state_dict())
    assert fast.fast
    x = images(dtype=torch.float64)
    torch.testing.assert_close(fast(x), reference(x), rtol=1e-10, atol=1e-10)
    torch.nn.functional.cross_entropy(fast(x), torch.tensor([0, 1, 2])).backward()
    assert fast.prompts.weight.grad.abs().sum() > 0 and all(p.grad is None for p in fast.backbone.parameters())
