"""Backbones by name and their token view, on tiny random models of timm, open_clip and transformers (offline).

``TINY`` is imported by the other vpt test files and the contract suite (the pytest config puts this folder on sys.path).
"""

from __future__ import annotations

import pytest
import torch

import vpt
from promptcore.errors import UserError
from vpt import BackboneConfig, create_model, token_backbone
from vpt.backbones import FAMILIES, BackboneFamily, backbone_name

_VIT = dict(img_size=32, patch_size=8, depth=2, embed_dim=64, num_heads=4)
_OPEN_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 1},
}
_HF = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32, patch_size=8)

TINY: dict[str, BackboneConfig] = {
    "timm_cls": BackboneConfig("timm:vit_base_patch16_224", pretrained=False, kwargs=_VIT),
    "timm_nocls_avg": BackboneConfig("timm:vit_base_patch16_224", pretrained=False, kwargs={**_VIT, "class_token": False, "global_pool": "avg"}),
    "timm_reg_noembedcls_ls": BackboneConfig(
        "timm:vit_base_patch16_224", pretrained=False, kwargs={**_VIT, "reg_tokens": 2, "no_embed_class": True, "init_values": 0.1}
    ),
    "timm_reg_avg_fcnorm": BackboneConfig(
        "timm:vit_base_patch16_224", pretrained=False, kwargs={**_VIT, "reg_tokens": 3, "global_pool": "avg", "fc_norm": True}
    ),
    "open_clip": BackboneConfig("open_clip:tiny", kwargs={"model_cfg": _OPEN_CLIP}),
    "open_clip_ls_avg": BackboneConfig(
        "open_clip:tiny",
        kwargs={"model_cfg": {**_OPEN_CLIP, "vision_cfg": {**_OPEN_CLIP["vision_cfg"], "ls_init_value": 0.1, "pool_type": "avg"}}},
    ),
    "hf_vit": BackboneConfig("hf:tiny-vit", kwargs={"config": {**_HF, "model_type": "vit"}}),
    "hf_clip": BackboneConfig("hf:tiny-clip", kwargs={"config": {**_HF, "model_type": "clip_vision_model"}}),
    "hf_siglip": BackboneConfig("hf:tiny-siglip", kwargs={"config": {**_HF, "model_type": "siglip_vision_model"}}),
}

_CACHE: dict[str, torch.nn.Module] = {}


def tiny(key: str, dtype: torch.dtype = torch.float64) -> torch.nn.Module:
    """A tiny backbone built once per session (seeded), converted to ``dtype``; callers must not modify it."""
    if key not in _CACHE:
        torch.manual_seed(0)
        _CACHE[key] = create_model(TINY[key])
    return _CACHE[key].to(dtype)


def images(n: int = 3, dtype: torch.dtype = torch.float64, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _library_features(key: str, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the library's own forward gives as pooled features."""
    if key.startswith("timm"):
        return model.forward_head(model.forward_features(x), pre_logits=True)
    if key.startswith("open_clip"):
        return model.encode_image(x)
    out = model(pixel_values=x)
    return out.last_hidden_state.mean(1) if out.pooler_output is None else out.pooler_output


@pytest.mark.parametrize("key", sorted(TINY))
def test_token_view_without_prompts_reproduces_the_library_forward(key):
    """Embedding, blocks and pooling through the seams equal the library's forward: inserting zero prompts is the
    identity of the token path."""
    model = tiny(key)
    tb = token_backbone(model)
    x = images()
    h = tb.embed(x)
    assert h.shape[1] == tb.num_prefix_tokens + (32 // 8) ** 2 and h.shape[2] == tb.width == 64
    for i in range(tb.depth):
        h = tb.run_block(i, h)
    ours = tb.image_embedding(h) if key.startswith("open_clip") else tb.pool(h)
    torch.testing.assert_close(ours, _library_features(key, model, x), rtol=0, atol=1e-12)
    assert tb.pool(h).shape[-1] == tb.pool_dim


def test_prefix_tokens_read_from_the_model():
    assert token_backbone(tiny("timm_cls")).num_prefix_tokens == 1
    assert token_backbone(tiny("timm_nocls_avg")).num_prefix_tokens == 0
    assert token_backbone(tiny("timm_reg_noembedcls_ls")).num_prefix_tokens == 3
    assert token_backbone(tiny("timm_reg_avg_fcnorm")).num_prefix_tokens == 4
    assert token_backbone(tiny("hf_siglip")).num_prefix_tokens == 0
    assert token_backbone(tiny("open_clip")).num_prefix_tokens == 1


def test_sizes_and_names_are_read_not_assumed():
    tb = token_backbone(tiny("timm_cls"))
    assert (tb.width, tb.depth, tb.patch_size, tb.image_size) == (64, 2, (8, 8), (32, 32))
    assert tb.name == "timm:vit_base_patch16_224"
    assert backbone_name(tiny("hf_clip")) == "hf:tiny-clip"
    assert token_backbone(tiny("hf_clip"), name="hf:other").name == "hf:other"


def test_kwargs_pass_through_to_the_builder():
    model = create_model(BackboneConfig("timm:vit_small_patch16_224", pretrained=False, kwargs={**_VIT, "depth": 3, "embed_dim": 32}))
    tb = token_backbone(model)
    assert (tb.width, tb.depth) == (32, 3)


def test_unknown_family_lists_close_matches():
    with pytest.raises(KeyError, match=r"unknown backbone family 'tim'.*Did you mean 'timm'"):
        create_model(BackboneConfig("tim:vit_base_patch16_224"))


def test_unknown_model_names_list_close_matches():
    with pytest.raises(KeyError, match=r"unknown timm model 'vit_base_patch16_22'.*Did you mean .*vit_base_patch16_224"):
        create_model(BackboneConfig("timm:vit_base_patch16_22"))
    with pytest.raises(KeyError, match=r"unknown open_clip model 'ViT-B-61'.*Did you mean .*ViT-B-16"):
        create_model(BackboneConfig("open_clip:ViT-B-61"))


def test_name_without_family_is_rejected_with_an_example():
    with pytest.raises(ValueError, match=r"name: 'vit_base_patch16_224' is not 'family:model'.*'timm:vit_base_patch16_224'"):
        BackboneConfig("vit_base_patch16_224")


def test_hf_config_needs_a_supported_vision_model_type():
    with pytest.raises(ValueError, match=r"model_type 'bert' is not a supported vision encoder; supported: vit"):
        create_model(BackboneConfig("hf:x", kwargs={"config": {"model_type": "bert"}}))


def test_cnn_has_no_token_view_and_suggests_pixel_prompts():
    cnn = create_model(BackboneConfig("timm:resnet10t", pretrained=False, kwargs={"num_classes": 4}))
    with pytest.raises(TypeError, match=r"has no token sequence.*pixel prompts: set prompt.method: pixel_pad"):
        token_backbone(cnn)
    with pytest.raises(TypeError, match="pixel_pad"):
        vpt.wrap(cnn, vpt.VPTConfig(num_classes=4))


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_checkpoint_file_loads_strictly(tmp_path, suffix):
    source = create_model(TINY["timm_cls"])
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    else:
        torch.save({"state_dict": source.state_dict()}, path)
    cfg = BackboneConfig(TINY["timm_cls"].name, checkpoint=str(path), kwargs=TINY["timm_cls"].kwargs)
    loaded = create_model(cfg)
    for (name, a), b in zip(source.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


def test_checkpoint_of_another_architecture_is_rejected(tmp_path):
    from safetensors.torch import save_file

    other = create_model(BackboneConfig("timm:vit_base_patch16_224", pretrained=False, kwargs={**_VIT, "depth": 3}))
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "w.safetensors"))
    cfg = BackboneConfig(TINY["timm_cls"].name, checkpoint=str(tmp_path / "w.safetensors"), kwargs=_VIT)
    with pytest.raises(ValueError, match=r"does not fit backbone timm:vit_base_patch16_224: 0 missing keys.*unexpected keys"):
        create_model(cfg)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_model(BackboneConfig(TINY["timm_cls"].name, checkpoint=str(tmp_path / "nope.pth"), kwargs=_VIT))


def test_family_registry_is_strict():
    assert {"timm", "open_clip", "hf", "asset"} <= set(FAMILIES)
    with pytest.raises(KeyError, match="already registered"):
        FAMILIES.add("timm", BackboneFamily())


def test_a_pretrained_name_loads_its_weights_by_default_and_says_how_to_get_them(tmp_path, monkeypatch):
    # No network and an empty cache: the default must try to load weights, and fail in one line saying what to do.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert BackboneConfig("timm:vit_tiny_patch16_224").library_weights
    with pytest.raises(UserError, match=r"model.name: cannot load the pretrained weights of timm:vit_tiny_patch16_224 .*model.pretrained: false"):
        create_model(BackboneConfig("timm:vit_tiny_patch16_224", kwargs=_VIT))
    with pytest.raises(UserError, match=r"open_clip:ViT-B-16 names no pretrained weights; add a pretrained tag.*model.pretrained: false"):
        create_model(BackboneConfig("open_clip:ViT-B-16"))


def test_a_random_backbone_is_built_only_when_asked_and_says_so(capsys):
    create_model(TINY["timm_cls"])
    assert "model: timm:vit_base_patch16_224 has random weights (pretrained: false)" in capsys.readouterr().err
    create_model(TINY["hf_vit"])
    assert "model: hf:tiny-vit has random weights (built from a config dict in model.kwargs)" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"pretrained: true, but kwargs.config builds the model from a config dict"):
        BackboneConfig("hf:tiny-vit", pretrained=True, kwargs=TINY["hf_vit"].kwargs)


def test_a_typo_in_model_kwargs_names_the_key_and_the_close_match():
    with pytest.raises(UserError, match=r"model.kwargs.embed_dimm: not an argument of timm:vit_base_patch16_224's builder.*Did you mean 'embed_dim'"):
        create_model(BackboneConfig("timm:vit_base_patch16_224", pretrained=False, kwargs={**_VIT, "embed_dimm": 64}))


def test_unknown_pretrained_tags_list_close_matches():
    with pytest.raises(UserError, match=r"timm has no pretrained tag 'vit_tiny_patch16_224.augreg_in21kk'.*Did you mean 'vit_tiny_patch16_224.augreg_in21k'"):
        create_model(BackboneConfig("timm:vit_tiny_patch16_224.augreg_in21kk"))
    with pytest.raises(UserError, match=r"open_clip:ViT-B-32 has no pretrained tag 'openaii'.*Did you mean 'openai'"):
        create_model(BackboneConfig("open_clip:ViT-B-32:openaii"))
