"""VisualPromptModel: what trains, prompt files, heads, bad input, and learning on synthetic images."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import promptcore
import vpt
from promptcore import PromptFileError, load_config
from vpt.synthetic import SyntheticImages
from vpt import BackboneConfig, VPTConfig, VisualPromptModel, create_model

from test_backbones import TINY, images, tiny


def test_promptcore_wrap_and_vpt_wrap_build_the_model():
    model = promptcore.wrap(tiny("timm_cls"), VPTConfig(num_tokens=2, num_classes=3))
    assert isinstance(model, VisualPromptModel) and vpt.wrap is promptcore.wrap
    assert model.forward_batch({"pixel_values": images(), "labels": torch.zeros(3, dtype=torch.long)}).shape == (3, 3)


@pytest.mark.parametrize("method", ["vpt_shallow", "vpt_deep"])
def test_only_prompt_and_head_parameters_train(method):
    model = vpt.wrap(tiny("hf_vit"), VPTConfig(method=method, num_tokens=4, num_classes=3, projection=8)).double()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"prompts.weight", "prompt_proj.weight", "prompt_proj.bias", "head.weight", "head.bias"}
    layers = 2 if method == "vpt_deep" else 1
    assert model.prompts.weight.shape == ((layers, 4, 8) if method == "vpt_deep" else (4, 8))
    F.cross_entropy(model(images()), torch.tensor([0, 1, 2])).backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == trainable
    assert all(p.grad is None for p in model.backbone.parameters())


def test_xavier_init_uses_vpt_bound_from_patch_size_and_width():
    model = vpt.wrap(tiny("timm_cls"), VPTConfig(num_tokens=50, num_classes=2))
    bound = promptcore.vpt_xavier_bound(8 * 8, 64)
    w = model.prompts.weight
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound


def test_training_learns_and_leaves_the_backbone_unchanged():
    torch.manual_seed(0)
    backbone = create_model(TINY["timm_reg_noembedcls_ls"])
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    model = vpt.wrap(backbone, VPTConfig(method="vpt_deep", num_tokens=4, num_classes=4, dropout=0.1))
    train = SyntheticImages(num_samples=96, num_classes=4, image_size=32, noise=0.5, seed=0)
    val = SyntheticImages(num_samples=64, num_classes=4, image_size=32, noise=0.5, seed=0, split="validation")
    opt = torch.optim.AdamW(model.prompt_parameters(), lr=3e-3)
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in model.prompt_parameters()}
    model.train()
    for _ in range(5):
        for i in range(0, len(train), 32):
            batch = {"pixel_values": train.images[i : i + 32], "labels": train.labels[i : i + 32]}
            loss = model.training_step(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    stats = model.eval_step({"pixel_values": val.images, "labels": val.labels})
    accuracy = float(stats["accuracy"] / stats["count"])
    assert accuracy >= 0.7, f"validation accuracy {accuracy:.2f} (chance 0.25)"
    assert not backbone.training
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, before[k]), f"backbone tensor {k} changed"


@pytest.mark.parametrize("key,method,head", [("open_clip", "vpt_deep", "prompt_mean"), ("hf_siglip", "vpt_shallow", "linear")])
def test_save_load_gives_identical_outputs(tmp_path, key, method, head):
    cfg = VPTConfig(method=method, num_tokens=3, num_classes=4, head=head, projection=16, num_tasks=2)
    torch.manual_seed(0)
    model = vpt.wrap(tiny(key), cfg).double()
    with torch.no_grad():
        model.prompts.weight.normal_()
    model.save_prompts(tmp_path / "p")
    torch.manual_seed(1)
    other = vpt.wrap(tiny(key), cfg).double()
    task_ids = torch.tensor([1, 0, 1])
    assert not torch.equal(other(images(), task_ids), model(images(), task_ids))
    meta = other.load_prompts(tmp_path / "p")
    assert meta["method"] == method and meta["dim"] == 64 and meta["backbone"] == TINY[key].name
    assert torch.equal(other(images(), task_ids), model(images(), task_ids))


def test_prompt_file_for_another_width_or_depth_is_rejected(tmp_path):
    model = vpt.wrap(tiny("timm_cls"), VPTConfig(num_tokens=3, num_classes=4))
    model.save_prompts(tmp_path / "p")
    wider = create_model(BackboneConfig("timm:vit_base_patch16_224", pretrained=False, kwargs={**TINY["timm_cls"].kwargs, "embed_dim": 32}))
    with pytest.raises(PromptFileError, match=r"prompt dim 64 does not match backbone width 32"):
        vpt.wrap(wider, VPTConfig(num_tokens=3, num_classes=4)).load_prompts(tmp_path / "p")
    deeper = create_model(BackboneConfig("timm:vit_base_patch16_224", pretrained=False, kwargs={**TINY["timm_cls"].kwargs, "depth": 3}))
    with pytest.raises(PromptFileError, match=r"prompt depth 2 does not match the model's prompted layers 3"):
        vpt.wrap(deeper, VPTConfig(num_tokens=3, num_classes=4)).load_prompts(tmp_path / "p")
    with pytest.raises(PromptFileError, match=r"prompt method 'vpt_deep' does not match the model's method 'vpt_shallow'"):
        vpt.wrap(tiny("timm_cls"), VPTConfig(method="vpt_shallow", num_tokens=3, num_classes=4)).load_prompts(tmp_path / "p")
    with pytest.warns(UserWarning, match=r"trained on backbone 'timm:vit_base_patch16_224', loading into 'hf:tiny-vit'"):
        vpt.wrap(tiny("hf_vit"), VPTConfig(num_tokens=3, num_classes=4)).load_prompts(tmp_path / "p")


def test_image_of_another_size_gives_a_clear_error():
    model = vpt.wrap(tiny("open_clip"), VPTConfig(num_tokens=2, num_classes=3)).double()
    with pytest.raises(ValueError, match=r"image size 48x48 does not match the input size 32x32 of backbone open_clip:tiny; resize"):
        model(torch.zeros(2, 3, 48, 48, dtype=torch.float64))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"num_tokens": 0, "num_classes": 2}, "num_tokens: must be a positive integer"),
        ({"num_tokens": -3, "num_classes": 2}, "num_tokens: must be a positive integer"),
        ({"num_classes": 0}, "num_classes: the 'linear' head needs a positive number of classes"),
        ({"num_classes": 2, "dropout": 1.0}, r"dropout: must lie in \[0, 1\)"),
        ({"num_classes": 2, "head": "lineer"}, r"head: unknown VPT head 'lineer'. Did you mean 'linear'\?"),
        ({"num_classes": 3, "class_names": ["a", "b"]}, "num_classes: 3 does not match the 2 class_names"),
    ],
)
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VPTConfig(**kwargs)


def test_unset_num_classes_is_refused_when_the_head_is_built():
    # The config may leave it null (the CLI fills it from the data); wrapping without it names the field.
    with pytest.raises(ValueError, match=r"num_classes: the 'linear' head needs the number of classes; set prompt.num_classes"):
        vpt.wrap(tiny("timm_cls"), VPTConfig(num_tokens=2))


def test_config_loads_from_yaml_dict_with_field_errors():
    cfg = load_config(VPTConfig, {"method": "vpt_shallow", "num_tokens": 5, "num_classes": 10})
    assert cfg.method == "vpt_shallow" and cfg.init == "xavier" and cfg.fast == "auto"
    with pytest.raises(promptcore.ConfigError, match=r"num_tokens: must be a positive integer"):
        load_config(VPTConfig, {"num_tokens": 0, "num_classes": 10})


def test_linear_head_without_class_token_reads_the_backbone_pooling():
    model = vpt.wrap(tiny("timm_nocls_avg"), VPTConfig(num_tokens=2, num_classes=3, head="linear")).double()
    features = {}
    model.head.register_forward_hook(lambda m, args, out: features.setdefault("x", args[0]))
    model(images())
    tb = model.tokens
    h = tb.embed(images())
    p = model.prompt_tokens()[0]
    for i in range(tb.depth):
        h = tb.run_block(i, torch.cat([p[i].expand(3, -1, -1), h[:, 2:] if i else h], dim=1))
    torch.testing.assert_close(features["x"], tb.pool(h[:, 2:]), rtol=0, atol=1e-10)
