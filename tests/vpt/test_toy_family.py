"""A backbone family registered from a test file (tests/vpt/toy_family.py) runs through the whole vision stack:
``vpt train`` builds it by name, reads its image config and transforms, and trains on its pooled features and its
own classifier."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from toy_family import ToyCNN, ToyFamily
from vpt.backbones import FAMILIES, backbone_name, family_of
from vpt.cli import main
from vpt.data import build_transform, resolve_image_config


@pytest.fixture
def toyfamily():
    with FAMILIES.temporarily("toyfamily", ToyFamily()) as family:
        yield family
    assert "toyfamily" not in FAMILIES


def write_config(path: Path, prompt: dict) -> str:
    config = {
        "model": {"name": "toyfamily:small", "kwargs": {"image_size": 20, "width": 8, "num_classes": 4}},
        "prompt": prompt,
        "data": {"source": "synthetic", "synthetic": {"num_train": 64, "num_eval": 32}},
        "train": {"epochs": 1, "max_steps": 3, "batch_size": 16, "lr": 0.05, "tensorboard": False, "progress_bar": False},
    }
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_the_family_answers_for_its_models(toyfamily):
    model = ToyCNN(image_size=20)
    assert family_of(model) is toyfamily and backbone_name(model) == "toyfamily:unnamed"
    image = resolve_image_config(model)
    assert image.size == (20, 20) and image.source == "toy family" and image.family is toyfamily
    red = build_transform(image)(Image.new("RGB", (50, 30), (255, 0, 0)))
    assert red.shape == (3, 20, 20)  # its mean 0.5 and std 0.25: red is (2, -2, -2)
    torch.testing.assert_close(red[:, 10, 10], torch.tensor([2.0, -2.0, -2.0]))


@pytest.mark.parametrize("head", ["linear", "backbone"])
def test_vpt_train_runs_pixel_prompts_on_the_toy_family(toyfamily, tmp_path, capsys, head):
    config = write_config(tmp_path / "toy.yaml", {"method": "pixel_pad", "prompt_size": 2, "head": head})
    assert main(["train", "-c", config, "-o", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{") :])["step"] == 3
    meta = json.loads((tmp_path / "run" / "last" / "prompt_config.json").read_text())
    assert meta["backbone"] == "toyfamily:small" and meta["image_size"] == [20, 20] and meta["num_classes"] == 4
    assert meta["dim"] == (8 if head == "linear" else None)


def test_vpt_train_runs_the_linear_probe_on_the_toy_family(toyfamily, tmp_path, capsys):
    config = write_config(tmp_path / "toy.yaml", {"method": "linear_probe"})
    assert main(["train", "-c", config, "-o", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    meta = json.loads((tmp_path / "run" / "last" / "prompt_config.json").read_text())
    expected = {"method": "linear_probe", "backbone": "toyfamily:small", "dim": 8, "num_classes": 4, "head": "linear"}
    assert {k: meta[k] for k in expected} == expected
