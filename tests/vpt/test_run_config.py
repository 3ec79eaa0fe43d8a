"""Run configs are resolved without mutation: values left to the data come back in a new config, which is what the
run records."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import timm
import yaml

from promptcore.config import to_dict
from vpt import LinearProbeConfig, PixelPromptConfig, VisionRunConfig, VPTConfig, load_run_config, resolve_run_config
from vpt.cli import VisionRecipe, main
from vpt.data import SyntheticDataConfig, VisionDataConfig

from test_backbones import TINY, tiny

SMOKE = str(Path(__file__).resolve().parents[2] / "configs" / "smoke" / "vpt_tiny.yaml")


@pytest.fixture(scope="module")
def cnn():
    return timm.create_model("resnet10t", pretrained=False, num_classes=0).eval()  # its own input size is 176


def synthetic(**kw) -> VisionDataConfig:
    return VisionDataConfig(source="synthetic", synthetic=SyntheticDataConfig(num_train=8, num_eval=8), **kw)


def test_pixel_prompts_are_laid_out_at_the_size_the_data_is_resized_to(cnn):
    cfg = VisionRunConfig(model=TINY["timm_cls"], prompt=PixelPromptConfig(prompt_size=4), data=synthetic(image_size=64, num_classes=3))
    before = to_dict(cfg)
    resolved = resolve_run_config(cfg, cnn)
    assert to_dict(cfg) == before, "resolution changed the config it was given"
    assert resolved.prompt.image_size == 64 and resolved.prompt.num_classes == 3
    assert vpt_wrap_size(cnn, resolved.prompt) == (64, 64)
    # Without data.image_size, the backbone's own input size.
    assert resolve_run_config(dataclasses.replace(cfg, data=synthetic(num_classes=3)), cnn).prompt.image_size == 176


def vpt_wrap_size(backbone, prompt) -> tuple[int, int]:
    import vpt

    return vpt.wrap(backbone, prompt).image_size


def test_set_values_are_kept_and_a_resolved_config_resolves_to_itself(cnn):
    cfg = VisionRunConfig(model=TINY["timm_cls"], prompt=PixelPromptConfig(prompt_size=4, num_classes=5, image_size=96), data=synthetic(image_size=64))
    assert resolve_run_config(cfg, cnn) is cfg
    cfg = VisionRunConfig(model=TINY["timm_cls"], prompt=LinearProbeConfig(), data=synthetic())
    resolved = resolve_run_config(cfg, cnn)
    assert resolved.prompt.num_classes == 4 and resolve_run_config(resolved, cnn) is resolved


def test_class_names_come_from_the_data_only_when_the_head_size_does_not():
    data = synthetic(num_classes=3)
    both = resolve_run_config(VisionRunConfig(model=TINY["timm_cls"], prompt=VPTConfig(num_tokens=2), data=data), tiny("timm_cls"))
    assert both.prompt.num_classes == 3 and both.prompt.class_names == ["class 0", "class 1", "class 2"]
    sized = resolve_run_config(VisionRunConfig(model=TINY["timm_cls"], prompt=VPTConfig(num_tokens=2, num_classes=3), data=data), tiny("timm_cls"))
    assert sized.prompt.class_names is None


def test_the_recipe_leaves_the_config_alone_and_the_run_records_the_resolved_one(tmp_path, capsys):
    cfg = load_run_config(SMOKE, ["prompt={method: pixel_pad, prompt_size: 2}", "train.max_steps=1", "train.epochs=1"])
    before = to_dict(cfg)
    model = VisionRecipe().build_model(cfg)
    assert to_dict(cfg) == before and cfg.prompt.num_classes is None
    assert model.config.num_classes == 4 and model.config.image_size == 32
    argv = ["train", "-c", SMOKE, "--set", "prompt={method: pixel_pad, prompt_size: 2}", "--set", "train.max_steps=1"]
    assert main([*argv, "-o", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    written = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert written["prompt"]["num_classes"] == 4 and written["prompt"]["image_size"] == 32
    assert load_run_config(tmp_path / "run" / "config.yaml").prompt == model.config
