"""The linear probe (vpt.linear_probe): a head on the frozen backbone's own pooled features, on ViTs and CNNs, from
Python and from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch

import vpt
from vpt import LinearProbe, LinearProbeConfig
from vpt.cli import main

from test_backbones import images, tiny

SMOKE = str(Path(__file__).resolve().parents[2] / "configs" / "smoke" / "vpt_tiny.yaml")


def effnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0).eval().double()


@pytest.mark.parametrize("key", ["timm_cls", "timm_nocls_avg", "open_clip", "hf_vit", "cnn"])
def test_the_head_reads_the_backbones_own_pooled_features(key):
    backbone = effnet() if key == "cnn" else tiny(key)
    x = images(2) if key != "cnn" else torch.randn(2, 3, 64, 64, dtype=torch.float64)
    model = vpt.wrap(backbone, LinearProbeConfig(num_classes=3)).double()
    assert isinstance(model, LinearProbe)
    if key == "cnn" or key.startswith("timm"):
        features = backbone.forward_head(backbone.forward_features(x), pre_logits=True)
    elif key == "open_clip":
        features = backbone.encode_image(x)
    else:
        features = backbone(pixel_values=x).pooler_output
    assert model.feature_dim == features.shape[-1]
    expected = features @ model.head.weight[0].T + model.head.bias[0]
    torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-12)
    assert set(model.prompt_state_dict()) == {"head.weight", "head.bias"}
    model.training_step({"pixel_values": x, "labels": torch.tensor([0, 2])}).backward()
    assert {n for n, p in model.named_parameters() if p.grad is not None} == {"head.weight", "head.bias"}


def test_bad_input_messages():
    with pytest.raises(ValueError, match="num_classes: the linear probe needs the number of classes"):
        vpt.wrap(tiny("timm_cls"), LinearProbeConfig())
    with pytest.raises(ValueError, match="num_classes: must be positive or null, got 0"):
        LinearProbeConfig(num_classes=0)
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
    with pytest.raises(TypeError, match="no backbone family owns a torch.nn.modules.container.Sequential"):
        vpt.wrap(plain, LinearProbeConfig(num_classes=2))


def test_vpt_train_and_eval_run_the_linear_probe(tmp_path, capsys):
    argv = ["-c", SMOKE, "--set", "prompt={method: linear_probe}", "--set", "train.epochs=1", "--set", "data.synthetic.num_eval=32"]
    assert main(["train", *argv, "-o", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{") :])
    meta = json.loads((tmp_path / "run" / "best" / "prompt_config.json").read_text())
    expected = {"method": "linear_probe", "backbone": "timm:vit_tiny_patch16_224", "dim": 64, "num_classes": 4, "head": "linear"}
    assert {k: meta[k] for k in expected} == expected
    assert main(["eval", *argv, "--prompts", str(tmp_path / "run" / "best")]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{") :])["accuracy"] == pytest.approx(result["best"]["value"])
