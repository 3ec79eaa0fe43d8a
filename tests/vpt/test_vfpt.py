"""VFPT: a share of each layer's prompts goes through a 2D FFT before insertion. Share 0 is VPT-deep exactly; the
Fourier prompts the blocks see are the FFT of the learned prompts; the fast VPT-deep path equals the plain one."""

from __future__ import annotations

import pytest
import torch

import vpt
from promptcore import PromptFileError
from vpt import VFPTConfig, VPTConfig
from vpt.vfpt import fourier_prompts

from test_backbones import images, tiny
from test_fast_deep import ATOL, _assert_equal, forward


def vfpt(key: str = "timm_cls", seed: int = 0, **cfg) -> vpt.VFPTModel:
    backbone = tiny(key)  # built (seeded) before the prompts' seed
    torch.manual_seed(seed)
    return vpt.wrap(backbone, VFPTConfig(**{"num_tokens": 4, "num_classes": 3, **cfg})).double()


@pytest.mark.parametrize("fast", ["on", "off"])
def test_share_zero_is_vpt_deep(fast) -> None:
    model = vfpt(fourier_share=0.0, fast=fast)
    torch.manual_seed(0)
    deep = vpt.wrap(tiny("timm_cls"), VPTConfig(method="vpt_deep", num_tokens=4, num_classes=3, fast=fast)).double()
    assert torch.equal(model.prompts.weight, deep.prompts.weight) and model.config.num_fourier_tokens == 0
    assert torch.equal(forward(model, images()), forward(deep, images()))


def test_the_fourier_prompts_are_the_fft_of_the_learned_prompts() -> None:
    model = vfpt(num_tokens=5, fourier_share=0.5)  # floor(5 * 0.5) = 2 Fourier prompts per layer
    weight = model.prompts.weight  # [layers, 5, width]
    tokens = model.prompt_tokens()[0]
    # The official transform: FFT over the width, then over the prompts, real part.
    official = torch.fft.fft(torch.fft.fft(weight[:, :2], dim=-1), dim=-2).real
    torch.testing.assert_close(tokens[:, :2], official, rtol=0, atol=ATOL)
    assert torch.equal(tokens[:, 2:], weight[:, 2:])
    # The plain path inserts exactly these after the class token of every block.
    seen = []
    hooks = [b.register_forward_pre_hook(lambda m, args: seen.append(args[0][:, 1:6].detach())) for b in model.backbone.blocks]
    try:
        model.fast = False
        model(images())
    finally:
        for h in hooks:
            h.remove()
    for layer, block_input in enumerate(seen):
        torch.testing.assert_close(block_input, tokens[layer].expand_as(block_input), rtol=0, atol=0)


def test_dims_and_location_choices() -> None:
    p = torch.randn(2, 6, 8, dtype=torch.float64)
    torch.testing.assert_close(fourier_prompts(p, 3, "sequence")[:, :3], torch.fft.fft(p[:, :3], dim=-2).real)
    torch.testing.assert_close(fourier_prompts(p, 3, "hidden")[:, :3], torch.fft.fft(p[:, :3], dim=-1).real)
    appended = fourier_prompts(p, 2, "all", "append")
    assert torch.equal(appended[:, :4], p[:, 2:])
    torch.testing.assert_close(appended[:, 4:], torch.fft.fft2(p[:, :2]).real)
    assert torch.equal(fourier_prompts(p, 0), p) and fourier_prompts(p.bfloat16(), 2).dtype == torch.bfloat16


@pytest.mark.parametrize("key", ["timm_reg_noembedcls_ls", "open_clip", "hf_vit"])
def test_fast_equals_plain_with_dropout_projection_and_a_bank(key) -> None:
    cfg = dict(num_tokens=5, num_classes=3, fourier_share=0.6, dropout=0.2, projection=16, num_tasks=2)
    plain, fast = vfpt(key, fast="off", **cfg), vfpt(key, fast="auto", **cfg)
    fast.load_state_dict(plain.state_dict())
    plain.train(), fast.train()
    _assert_equal(plain, fast, images(4), task_ids=torch.tensor([1, 0, 0, 1]))


def test_the_prompt_file_records_the_fourier_settings_and_refuses_others(tmp_path) -> None:
    model = vfpt(fourier_share=0.5)
    model.save_prompts(tmp_path / "p")
    other = vfpt(fourier_share=1.0)
    with pytest.raises(PromptFileError, match="fourier_share 0.5 does not match the model's fourier_share 1.0"):
        other.load_prompts(tmp_path / "p")
    again = vfpt(seed=5, fourier_share=0.5)
    again.load_prompts(tmp_path / "p")
    assert torch.equal(again(images()), model(images()))


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match=r"fourier_share: must lie in \[0, 1\]"):
        VFPTConfig(num_classes=2, fourier_share=1.5)
    with pytest.raises(ValueError, match="method: 'vpt_deep' is not a method of VFPTConfig; use 'vfpt'"):
        VFPTConfig(method="vpt_deep", num_classes=2)
    with pytest.raises(ValueError, match="method: 'vfpt' is not a method of VPTConfig"):
        VPTConfig(method="vfpt", num_classes=2)
    assert VFPTConfig(num_classes=2).deep and not VPTConfig(method="vpt_shallow", num_classes=2).deep
