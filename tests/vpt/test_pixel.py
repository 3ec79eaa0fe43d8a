"""Pixel prompts (vpt.pixel) on tiny random timm models: a ViT and tf_efficientnet_lite0 (a CNN)."""

from __future__ import annotations

import pytest
import timm
import torch

import promptcore
from promptcore import PromptFileError
from promptcore.config import ConfigError, load_config
from vpt.synthetic import SyntheticImages
from vpt.pixel import PixelPromptConfig, PixelPromptModel


def tiny_vit(num_classes: int = 0) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2, embed_dim=64, num_heads=2, num_classes=num_classes
    ).eval()


@pytest.fixture(scope="module")
def effnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0).eval()


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("method", ["pixel_pad", "pixel_fixed_patch"])
def test_prompt_layout_matches_plain_construction(method: str) -> None:
    p, h = 3, 32
    model = PixelPromptModel(tiny_vit(), PixelPromptConfig(method=method, prompt_size=p, num_classes=2)).double()
    with torch.no_grad():
        model.prompts.weight.copy_(torch.randn_like(model.prompts.weight))
    x = torch.randn(2, 3, h, h, dtype=torch.float64)
    # Plain reference: a full-size prompt image built by slicing, then added.
    mask = torch.zeros(h, h, dtype=torch.bool)
    if method == "pixel_pad":
        mask[:p], mask[-p:], mask[:, :p], mask[:, -p:] = True, True, True, True
    else:
        mask[:p, :p] = True
    full = torch.zeros(3, h, h, dtype=torch.float64)
    full[:, mask] = model.prompts.weight[0]
    torch.testing.assert_close(model.apply_prompt(x), x + full, rtol=0, atol=0)
    assert model.prompts.weight.shape == (1, 3, int(mask.sum()))


def test_random_patch_moves_in_training_and_sits_top_left_in_eval() -> None:
    p = 4
    model = PixelPromptModel(tiny_vit(), PixelPromptConfig(method="pixel_random_patch", prompt_size=p, init="uniform", num_classes=2))
    x = torch.zeros(1, 3, 32, 32)
    positions = set()
    torch.manual_seed(1)
    model.train()
    for _ in range(8):
        rows, cols = model.apply_prompt(x)[0, 0].nonzero(as_tuple=True)
        assert rows.max() - rows.min() == p - 1 and cols.max() - cols.min() == p - 1 and rows.numel() == p * p
        positions.add((int(rows.min()), int(cols.min())))
    assert len(positions) > 1
    model.eval()
    rows, cols = model.apply_prompt(x)[0, 0].nonzero(as_tuple=True)
    assert (int(rows.min()), int(cols.min()), int(rows.max()), int(cols.max())) == (0, 0, p - 1, p - 1)


def test_zero_prompt_changes_nothing() -> None:
    backbone = tiny_vit(num_classes=3)
    model = PixelPromptModel(backbone, PixelPromptConfig(prompt_size=4, init="zeros", head="backbone"))
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), backbone(x), rtol=0, atol=0)


def test_cnn_only_prompt_and_head_train_backbone_unchanged(effnet: torch.nn.Module) -> None:
    model = promptcore.wrap(effnet, PixelPromptConfig(method="pixel_pad", prompt_size=6, num_classes=3, image_size=64))
    assert isinstance(model, PixelPromptModel) and model.feature_dim == effnet.num_features
    before = snapshot(effnet)
    opt = torch.optim.SGD(list(model.prompt_parameters()), lr=0.5)
    data = SyntheticImages(24, 3, image_size=64, seed=1)
    model.train()
    for step in range(3):
        batch = {"pixel_values": data.images[step * 8 : (step + 1) * 8], "labels": data.labels[step * 8 : (step + 1) * 8]}
        opt.zero_grad()
        model.training_step(batch).backward()
        with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
        assert with_grad == {"prompts.weight", "head.weight", "head.bias"}
        opt.step()
    after = snapshot(effnet)
    assert before.keys() == after.keys()
    for key in before:  # BatchNorm running stats included: the frozen CNN stays in eval mode
        assert torch.equal(before[key], after[key]), key


def test_save_load_gives_identical_outputs(tmp_path, effnet: torch.nn.Module) -> None:
    cfg = PixelPromptConfig(method="pixel_fixed_patch", prompt_size=8, num_classes=4, image_size=64, num_tasks=2)
    a = PixelPromptModel(effnet, cfg)
    x = torch.randn(3, 3, 64, 64)
    tasks = torch.tensor([0, 1, 1])
    a.save_prompts(tmp_path / "p")
    torch.manual_seed(123)  # a differently initialised model
    b = PixelPromptModel(effnet, cfg)
    assert not torch.equal(a(x, tasks), b(x, tasks))
    b.load_prompts(tmp_path / "p")
    torch.testing.assert_close(b(x, tasks), a(x, tasks), rtol=0, atol=0)


def test_prompt_file_for_another_layout_is_refused(tmp_path) -> None:
    vit = tiny_vit()
    PixelPromptModel(vit, PixelPromptConfig(prompt_size=4, num_classes=2)).save_prompts(tmp_path / "p")
    other = PixelPromptModel(vit, PixelPromptConfig(prompt_size=5, num_classes=2))
    with pytest.raises(PromptFileError, match="prompt_size 4 does not match the model's prompt_size 5"):
        other.load_prompts(tmp_path / "p")


def test_learns_on_synthetic_images() -> None:
    torch.manual_seed(0)
    model = PixelPromptModel(tiny_vit(), PixelPromptConfig(method="pixel_pad", prompt_size=4, num_classes=4, init="zeros"))
    train, test = SyntheticImages(256, 4, image_size=32, seed=3), SyntheticImages(128, 4, image_size=32, seed=3, split="test")
    opt = torch.optim.AdamW(list(model.prompt_parameters()), lr=0.02)
    model.train()
    for _ in range(4):
        for i in range(0, 256, 32):
            opt.zero_grad()
            model.training_step({"pixel_values": train.images[i : i + 32], "labels": train.labels[i : i + 32]}).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(test.images).argmax(-1) == test.labels).float().mean().item()
    assert accuracy > 0.6, accuracy  # chance is 0.25


def test_mixed_task_batch_equals_per_task_runs() -> None:
    torch.manual_seed(0)
    model = PixelPromptModel(tiny_vit(), PixelPromptConfig(prompt_size=4, num_classes=3, num_tasks=3)).double().eval()
    with torch.no_grad():
        for p in model.prompt_parameters():
            p.copy_(torch.randn_like(p))
    x = torch.randn(7, 3, 32, 32, dtype=torch.float64)
    tasks = torch.tensor([2, 0, 1, 1, 0, 2, 2])
    mixed = model(x, tasks)
    for t in range(3):
        sel = tasks == t
        torch.testing.assert_close(mixed[sel], model(x[sel], tasks[sel]), rtol=1e-12, atol=1e-12)
    # Tasks really differ: the same images under another task give other logits.
    assert not torch.allclose(model(x, torch.zeros_like(tasks)), mixed)


def test_open_clip_and_hf_backbones_take_pixel_prompts() -> None:
    open_clip = pytest.importorskip("open_clip")
    transformers = pytest.importorskip("transformers")
    clip = open_clip.CLIP(
        embed_dim=32,
        vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=1, head_width=32),
        text_cfg=dict(context_length=8, vocab_size=50, width=32, heads=2, layers=1),
    ).eval()
    m = PixelPromptModel(clip, PixelPromptConfig(prompt_size=4, num_classes=5))
    assert m.feature_dim == 32 and m(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    vit = transformers.ViTModel(
        transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=1, num_attention_heads=2, intermediate_size=96)
    ).eval()
    m = PixelPromptModel(vit, PixelPromptConfig(prompt_size=4, num_classes=5))
    assert m.image_size == (32, 32) and m.feature_dim == 48 and m(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_bad_input_messages() -> None:
    vit = tiny_vit()
    with pytest.raises(ValueError, match="a pad of 16 px leaves no image inside a 32x32 input"):
        PixelPromptModel(vit, PixelPromptConfig(prompt_size=16, num_classes=2))
    with pytest.raises(ValueError, match="a 40 px patch does not fit a 32x32 input"):
        PixelPromptModel(vit, PixelPromptConfig(method="pixel_fixed_patch", prompt_size=40, num_classes=2))
    with pytest.raises(ValueError, match="num_classes: the 'linear' head needs the number of classes"):
        PixelPromptModel(vit, PixelPromptConfig(prompt_size=4))
    with pytest.raises(ValueError, match="head 'backbone' needs the model's classifier"):
        PixelPromptModel(vit, PixelPromptConfig(prompt_size=4, head="backbone"))
    with pytest.raises(ValueError, match="num_classes: 5 does not match the 3 classes of the model's own classifier"):
        PixelPromptModel(tiny_vit(num_classes=3), PixelPromptConfig(prompt_size=4, head="backbone", num_classes=5))
    model = PixelPromptModel(vit, PixelPromptConfig(prompt_size=4, num_classes=2))
    with pytest.raises(ValueError, match="laid out for 3x32x32 images, got 3x48x48"):
        model(torch.randn(1, 3, 48, 48))
    with pytest.raises(ValueError, match=r"task_ids must lie in \[0, 0\]"):
        model(torch.randn(1, 3, 32, 32), torch.tensor([1]))
    with pytest.raises(ConfigError) as err:
        load_config(PixelPromptConfig, {"method": "pixel_pad", "prompt_size": 0, "num_tasks": 1})
    assert "prompt_size: must be a positive number of pixels, got 0" in str(err.value)
    with pytest.raises(ConfigError, match="'pixel_padd' is not one of"):
        load_config(PixelPromptConfig, {"method": "pixel_padd"})


def plain_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3)
    ).eval()


def test_a_plain_torch_cnn_takes_pixel_prompts_with_its_own_classifier() -> None:
    cnn = plain_cnn()
    model = PixelPromptModel(cnn, PixelPromptConfig(prompt_size=2, init="zeros", head="backbone", image_size=16))
    assert model.num_classes == 3 and model.name == "Sequential"
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(model(x), cnn(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="num_classes: 5 does not match the 3 classes of the model's own classifier"):
        PixelPromptModel(cnn, PixelPromptConfig(prompt_size=2, head="backbone", image_size=16, num_classes=5))


def test_a_plain_torch_cnn_needs_its_size_and_has_no_pooled_features() -> None:
    with pytest.raises(ValueError, match=r"cannot read the input size of a Sequential .*set data.image_size"):
        PixelPromptModel(plain_cnn(), PixelPromptConfig(prompt_size=2, head="backbone"))
    with pytest.raises(TypeError, match=r"cannot read pooled features from a torch.nn.modules.container.Sequential.*head 'backbone'"):
        PixelPromptModel(plain_cnn(), PixelPromptConfig(prompt_size=2, num_classes=3, image_size=16))
