"""Prompt bank: one frozen encoder, one prompt set and head per task, tasks mixed in one batch."""

from __future__ import annotations

import pytest
import torch

import vpt
from vpt import VPTConfig

from test_backbones import images, tiny


@pytest.mark.parametrize("key,method,fast", [("timm_cls", "vpt_deep", "auto"), ("hf_clip", "vpt_deep", "off"), ("open_clip", "vpt_shallow", "auto")])
def test_mixed_batch_equals_each_task_run_alone(key, method, fast):
    torch.manual_seed(0)
    model = vpt.wrap(tiny(key), VPTConfig(method=method, num_tokens=3, num_classes=4, num_tasks=3, fast=fast)).double()
    with torch.no_grad():
        model.prompts.weight.normal_()
        model.head.bias.normal_()
    x = images(6)
    task_ids = torch.tensor([2, 0, 1, 1, 2, 0])
    mixed = model(x, task_ids)
    for task in range(3):
        rows = task_ids == task
        alone = model(x[rows], torch.full((int(rows.sum()),), task))
        torch.testing.assert_close(mixed[rows], alone, rtol=0, atol=1e-10)
    # and tasks really differ: the same images under another task give other logits
    assert not torch.allclose(model(x, torch.zeros(6, dtype=torch.long)), model(x, torch.ones(6, dtype=torch.long)))


def test_each_task_has_its_own_prompts_and_head():
    model = vpt.wrap(tiny("timm_cls"), VPTConfig(num_tokens=2, num_classes=5, num_tasks=4)).double()
    assert model.prompts.weight.shape == (4, 2, 2, 64)
    assert model.head.weight.shape == (4, 5, 64) and model.head.bias.shape == (4, 5)
    model(images(2), torch.tensor([3, 3])).sum().backward()
    assert model.prompts.weight.grad[:3].abs().sum() == 0 and model.prompts.weight.grad[3].abs().sum() > 0
    assert model.head.weight.grad[:3].abs().sum() == 0 and model.head.weight.grad[3].abs().sum() > 0


def test_task_ids_are_checked():
    bank = vpt.wrap(tiny("timm_cls"), VPTConfig(num_tokens=2, num_classes=3, num_tasks=2)).double()
    with pytest.raises(ValueError, match="prompt bank of 2 tasks; pass task_ids"):
        bank(images(2))
    with pytest.raises(ValueError, match=r"task_ids must lie in \[0, 1\] for 2 task\(s\), found 0..2"):
        bank(images(2), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="task_ids must be 2 integers"):
        bank(images(2), torch.tensor([0]))
    single = vpt.wrap(tiny("timm_cls"), VPTConfig(num_tokens=2, num_classes=3)).double()
    torch.testing.assert_close(single(images(2), torch.tensor([0, 0])), single(images(2)), rtol=0, atol=0)
    assert bank.forward_batch({"pixel_values": images(2), "task_ids": torch.tensor([1, 0])}).shape == (2, 3)
