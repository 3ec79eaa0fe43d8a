"""The fast VPT-deep path equals the plain concatenation in float64: logits and gradients, every family. Every
comparison checks that the fast path ran for the fast model and not for the plain one."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import pytest
import torch

import vpt
from vpt import BackboneConfig, VPTConfig, create_model, fast_deep
from vpt.fast_deep import fast_unsupported

from test_backbones import TINY, images, tiny

ATOL = 1e-10


@contextmanager
def fast_block_calls() -> Iterator[list[int]]:
    """Counts the calls of the fast path's block (``vpt.fast_deep.fast_block``) in the ``with`` block: ``[count]``."""
    original, calls = fast_deep.fast_block, [0]

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    fast_deep.fast_block = counted
    try:
        yield calls
    finally:
        fast_deep.fast_block = original


def forward(model, x, task_ids=None) -> torch.Tensor:
    """``model(x, task_ids)``, checking that the fast path ran exactly when the model chose it."""
    with fast_block_calls() as calls:
        out = model(x, task_ids)
    assert (calls[0] > 0) == model.fast, f"fast path ran {calls[0]} times for a model with fast={model.fast}"
    return out


def _pair(backbone, **cfg):
    """The same prompted model twice (same parameters): plain path and fast path."""
    torch.manual_seed(0)
    plain = vpt.wrap(backbone, VPTConfig(fast="off", **cfg)).double()
    fast = vpt.wrap(backbone, VPTConfig(fast="auto", **cfg)).double()
    fast.load_state_dict(plain.state_dict())
    return plain, fast


def _run(model, x, task_ids=None, seed=0):
    torch.manual_seed(seed)  # the same dropout draws in both paths
    model.zero_grad()
    logits = forward(model, x, task_ids)
    (logits * torch.linspace(-1, 1, logits.numel(), dtype=logits.dtype).view_as(logits)).sum().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_prompt_parameters()}


def _assert_equal(plain, fast, x, task_ids=None):
    assert fast.fast and not plain.fast
    lp, gp = _run(plain, x, task_ids)
    lf, gf = _run(fast, x, task_ids)
    torch.testing.assert_close(lf, lp, rtol=0, atol=ATOL)
    assert gp.keys() == gf.keys() and "prompts.weight" in gp
    for name in gp:
        assert gp[name].abs().sum() > 0, f"no gradient reached {name}"
        torch.testing.assert_close(gf[name], gp[name], rtol=0, atol=ATOL, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("key", sorted(TINY))
@pytest.mark.parametrize("head", ["linear", "prompt_mean", "backbone_pool"])
def test_fast_deep_equals_plain(key, head):
    plain, fast = _pair(tiny(key), method="vpt_deep", num_tokens=3, num_classes=5, head=head)
    plain.train(), fast.train()
    _assert_equal(plain, fast, images())


@pytest.mark.parametrize("key", ["timm_reg_noembedcls_ls", "open_clip", "hf_clip"])
def test_fast_deep_equals_plain_with_prompt_dropout_and_projection(key):
    plain, fast = _pair(tiny(key), method="vpt_deep", num_tokens=4, num_classes=3, dropout=0.3, projection=16)
    plain.train(), fast.train()
    _assert_equal(plain, fast, images())
    torch.manual_seed(0)
    first = forward(fast, images())
    second = forward(fast, images())
    assert not torch.equal(first, second), "prompt dropout should be active in training mode"
    plain.eval(), fast.eval()
    torch.testing.assert_close(forward(fast, images()), forward(plain, images()), rtol=0, atol=ATOL)


@pytest.mark.parametrize("key", ["timm_cls", "timm_nocls_avg", "open_clip", "hf_siglip"])
def test_fast_deep_equals_plain_with_a_prompt_bank(key):
    plain, fast = _pair(tiny(key), method="vpt_deep", num_tokens=2, num_classes=4, num_tasks=3)
    _assert_equal(plain, fast, images(5), task_ids=torch.tensor([2, 0, 1, 2, 0]))


@pytest.mark.parametrize("key", ["timm_reg_noembedcls_ls", "hf_vit", "open_clip_ls_avg"])
def test_shallow_runs_the_plain_path_and_matches_a_hand_concatenation(key):
    """Shallow prompts have no fast path; the model's shallow forward equals prompts concatenated by hand."""
    backbone = tiny(key)
    _, model = _pair(backbone, method="vpt_shallow", num_tokens=3, num_classes=5, head="backbone_pool")
    assert not model.fast
    tb, x = model.tokens, images()
    h = tb.embed(x)
    pre = tb.num_prefix_tokens
    h = torch.cat([h[:, :pre], model.prompts.weight.expand(len(x), -1, -1), h[:, pre:]], dim=1)
    for i in range(tb.depth):
        h = tb.run_block(i, h)
    h = torch.cat([h[:, :pre], h[:, pre + 3 :]], dim=1)
    expected = model.head(tb.pool(h))
    torch.testing.assert_close(forward(model, x), expected, rtol=0, atol=ATOL)


def test_fast_on_with_shallow_is_rejected_in_the_config():
    with pytest.raises(ValueError, match="fast: 'on' applies to deep prompts only, not 'vpt_shallow'"):
        VPTConfig(method="vpt_shallow", num_classes=2, fast="on")


def test_unsupported_blocks_fall_back_under_auto_and_raise_under_on():
    cfg = dict(TINY["open_clip"].kwargs["model_cfg"])
    cfg["vision_cfg"] = {**cfg["vision_cfg"], "qk_norm": True}  # open_clip's CustomResidualAttentionBlock
    backbone = create_model(BackboneConfig("open_clip:tiny-qknorm", kwargs={"model_cfg": cfg})).double()
    assert "CustomResidualAttentionBlock" in fast_unsupported(vpt.token_backbone(backbone), 2)
    auto = vpt.wrap(backbone, VPTConfig(num_tokens=2, num_classes=3))
    assert not auto.fast
    assert forward(auto, images()).shape == (3, 3)
    with pytest.raises(ValueError, match=r"fast: 'on' but the fast VPT-deep path does not apply to open_clip:tiny-qknorm"):
        vpt.wrap(backbone, VPTConfig(num_tokens=2, num_classes=3, fast="on"))


def test_fast_path_in_bfloat16_is_close_to_plain():
    """Mixed precision runs (CUDA + bf16) use the same code; on CPU bf16 the two paths agree to bf16 precision."""
    backbone = create_model(TINY["timm_cls"]).to(torch.bfloat16)
    torch.manual_seed(0)
    plain = vpt.wrap(backbone, VPTConfig(num_tokens=3, num_classes=4, fast="off")).to(torch.bfloat16)
    fast = vpt.wrap(backbone, VPTConfig(num_tokens=3, num_classes=4)).to(torch.bfloat16)
    fast.load_state_dict(plain.state_dict())
    assert fast.fast and not plain.fast
    x = images(dtype=torch.bfloat16)
    torch.testing.assert_close(forward(fast, x).float(), forward(plain, x).float(), rtol=0.05, atol=0.05)


def test_gradient_checkpointing_gives_the_same_gradients():
    plain, fast = _pair(tiny("hf_vit"), method="vpt_deep", num_tokens=3, num_classes=5)
    fast.enable_gradient_checkpointing()
    plain.enable_gradient_checkpointing()
    reference, _ = _pair(tiny("hf_vit"), method="vpt_deep", num_tokens=3, num_classes=5)
    assert fast.fast and not plain.fast and not reference.fast
    lr, gr = _run(reference, images())
    for model in (plain, fast):
        lm, gm = _run(model, images())
        torch.testing.assert_close(lm, lr, rtol=0, atol=ATOL)
        for name in gr:
            torch.testing.assert_close(gm[name], gr[name], rtol=0, atol=ATOL)
