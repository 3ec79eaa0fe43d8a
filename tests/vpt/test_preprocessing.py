"""Preprocessing the data section sets: augmentation choices, overrides of the backbone's mean / std / resize /
crop_pct / interpolation, each pipeline checked against torchvision built by hand, and the overrides recorded in
the run's files so that eval and predict preprocess as training did."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from PIL import Image
from torchvision import transforms as T

from promptcore.config import ConfigError, load_config
from vpt.cli import main
from vpt.data import (
    DataError,
    VisionDataConfig,
    build_transform,
    build_vision_data,
    preprocessing_overrides,
    resolve_image_config,
    with_data_overrides,
)

IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
BILINEAR, BICUBIC = T.InterpolationMode.BILINEAR, T.InterpolationMode.BICUBIC


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0).eval()


@pytest.fixture(scope="module")
def vit() -> torch.nn.Module:
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2, embed_dim=64, num_heads=2, num_classes=0)


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8))


def data(**kw) -> VisionDataConfig:
    return load_config(VisionDataConfig, kw)


def by_hand(steps: list, mean=IMAGENET["mean"], std=IMAGENET["std"]) -> T.Compose:
    return T.Compose([*steps, T.ToTensor(), T.Normalize(mean, std)])


def same_draws(a, b, image: Image.Image, seed: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """Both transforms on ``image`` from the same random state (torchvision draws from torch, timm from random)."""
    outputs = []
    for transform in (a, b):
        torch.manual_seed(seed)
        random.seed(seed)
        outputs.append(transform(image))
    return outputs[0], outputs[1]


def test_imagenet_statistics_replace_efficientnet_lite0s_own_from_yaml_and_python(lite0, tmp_path) -> None:
    own = resolve_image_config(lite0)
    assert own.mean == own.std == (0.5, 0.5, 0.5)  # tf_efficientnet_lite0's pretrained config
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump({"source": "synthetic", **IMAGENET}))
    for cfg in (load_config(VisionDataConfig, path), VisionDataConfig(mean=IMAGENET["mean"], std=IMAGENET["std"])):
        image = with_data_overrides(own, cfg)
        assert image.mean == tuple(IMAGENET["mean"]) and image.std == tuple(IMAGENET["std"])
        assert image.size == own.size and image.crop_pct == own.crop_pct and image.resize is None  # geometry kept
        red = build_transform(image)(Image.new("RGB", (300, 250), (255, 0, 0)))
        expected = (torch.tensor([1.0, 0.0, 0.0]) - torch.tensor(IMAGENET["mean"])) / torch.tensor(IMAGENET["std"])
        torch.testing.assert_close(red[:, 100, 100], expected)
    own_red = build_transform(own)(Image.new("RGB", (300, 250), (255, 0, 0)))
    torch.testing.assert_close(own_red[:, 100, 100], torch.tensor([1.0, -1.0, -1.0]))  # its own 0.5 / 0.5


def test_mean_and_std_keep_the_familys_own_transform(lite0, photo) -> None:
    own = resolve_image_config(lite0)
    image = with_data_overrides(own, data(**IMAGENET))
    expected = timm.data.create_transform(input_size=(3, 224, 224), crop_pct=own.crop_pct, interpolation=own.interpolation, **IMAGENET)
    torch.testing.assert_close(build_transform(image)(photo), expected(photo), rtol=0, atol=0)


def test_resize_and_crop_pct_evaluate_with_the_resize_and_centre_crop_asked_for(lite0, photo) -> None:
    own = resolve_image_config(lite0)
    cases = {
        # VPT's FGVC evaluation: the shorter side to 256 (torchvision's default bilinear), centre crop 224.
        "resize": (dict(resize=256, interpolation="bilinear", **IMAGENET), [T.Resize(256, interpolation=BILINEAR), T.CenterCrop(224)]),
        # crop_pct 1.0: straight to 224 x 224 (VPT's VTAB evaluation); the aspect ratio is not kept.
        "squash": (dict(crop_pct=1.0, interpolation="bilinear", **IMAGENET), [T.Resize((224, 224), interpolation=BILINEAR)]),
        "crop_pct": (dict(crop_pct=0.8, **IMAGENET), [T.Resize(280, interpolation=BICUBIC), T.CenterCrop(224)]),
    }
    for name, (keys, steps) in cases.items():
        transform = build_transform(with_data_overrides(own, data(**keys)))
        out = transform(photo)
        assert out.shape == (3, 224, 224), name
        torch.testing.assert_close(out, by_hand(steps)(photo), rtol=0, atol=0, msg=name)
        # Training without augmentation uses the same pipeline.
        torch.testing.assert_close(build_transform(with_data_overrides(own, data(**keys)), train=True)(photo), out, rtol=0, atol=0)


def test_augmentations_match_torchvision_built_by_hand(vit, photo) -> None:
    own = resolve_image_config(vit)  # 32 x 32, timm's 0.5 / 0.5
    half = dict(mean=[0.5] * 3, std=[0.5] * 3)
    rrc = data(augment="rrc_flip", augment_scale=[0.5, 1.0], interpolation="bicubic")
    crop = data(augment="crop_flip", resize=36, interpolation="bilinear")
    pairs = {
        "rrc_flip": (rrc, by_hand([T.RandomResizedCrop((32, 32), scale=(0.5, 1.0), interpolation=BICUBIC), T.RandomHorizontalFlip()], **half)),
        "crop_flip": (crop, by_hand([T.Resize(36, interpolation=BILINEAR), T.RandomCrop((32, 32)), T.RandomHorizontalFlip()], **half)),
    }
    for name, (cfg, expected) in pairs.items():
        ours = build_transform(with_data_overrides(own, cfg), train=True, augment=cfg.augment, scale=cfg.augment_scale)
        outputs = [same_draws(ours, expected, photo, seed) for seed in range(6)]
        for got, want in outputs:
            torch.testing.assert_close(got, want, rtol=0, atol=0, msg=name)
        assert len({tuple(got.flatten()[:64].tolist()) for got, _ in outputs}) > 1, f"{name} drew the same crop every time"
        # Evaluation never augments.
        assert torch.equal(build_transform(with_data_overrides(own, cfg))(photo), build_transform(with_data_overrides(own, cfg))(photo))


def test_library_augmentation_is_the_familys_and_the_old_booleans_still_work(vit, photo) -> None:
    assert data(augment=True).augment == "library" and data(augment=False).augment == "none"
    assert VisionDataConfig(augment=True).augment == "library"
    image = resolve_image_config(vit)
    ours = build_transform(image, train=True, augment="library")
    theirs = timm.data.create_transform(input_size=(3, 32, 32), is_training=True, mean=image.mean, std=image.std,
                                        interpolation=image.interpolation, crop_pct=image.crop_pct, **image.options)
    got, want = same_draws(ours, theirs, photo)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    # Without any override, evaluation is the family's own transform, as before these keys existed.
    assert with_data_overrides(image, data()) is image


def test_build_vision_data_applies_the_overrides_and_reports_them(vit, tmp_path) -> None:
    for name, rgb in (("blue", (0, 0, 255)), ("red", (255, 0, 0))):
        (tmp_path / "train" / name).mkdir(parents=True)
        (tmp_path / "test" / name).mkdir(parents=True)
        Image.new("RGB", (40, 30), rgb).save(tmp_path / "train" / name / "0.png")
        Image.new("RGB", (40, 30), rgb).save(tmp_path / "test" / name / "0.png")
    cfg = data(source="imagefolder", data_dir=str(tmp_path), crop_pct=1.0, **IMAGENET)
    bundle = build_vision_data(cfg, resolve_image_config(vit))
    red = bundle.eval[1]["pixel_values"]
    torch.testing.assert_close(red[:, 5, 5], (torch.tensor([1.0, 0.0, 0.0]) - torch.tensor(IMAGENET["mean"])) / torch.tensor(IMAGENET["std"]))
    assert "data overrides mean, std, resize" in bundle.info["transform"] and bundle.info["augment"] == "none"


def test_bad_preprocessing_values_get_one_clear_error_each(vit) -> None:
    problems = {
        "augment: 'rcc_flip'": dict(augment="rcc_flip"),
        "augment_scale: only augment 'rrc_flip' reads it": dict(augment="library", augment_scale=[0.5, 1.0]),
        "augment_scale: must be \\[low, high\\]": dict(augment="rrc_flip", augment_scale=[0.9, 0.5]),
        "resize: 256 and crop_pct: 0.875 both set": dict(resize=256, crop_pct=0.875),
        "'crop_flip' resizes before its random crop; set data.resize": dict(augment="crop_flip"),
        "crop_pct: must lie in \\(0, 1\\]": dict(crop_pct=1.2),
        "std: must be positive": dict(std=[0.2, 0.0, 0.2]),
        "interpolation: 'cubic' is not one of": dict(interpolation="cubic"),
    }
    for message, keys in problems.items():
        with pytest.raises(ConfigError, match=message):
            data(**keys)
    with pytest.raises(ValueError, match="augment: 'rcc_flip' is not one of none, library, rrc_flip, crop_flip. Did you mean 'rrc_flip'"):
        VisionDataConfig(augment="rcc_flip")
    image = resolve_image_config(vit)
    with pytest.raises(DataError, match="data.mean: 1 values for a backbone with 3 input channels"):
        with_data_overrides(image, data(mean=[0.5]))
    with pytest.raises(DataError, match="data.resize: 24 px is smaller than the 32x32 crop"):
        with_data_overrides(image, data(resize=24))


# ----- recorded in the run, used by eval and predict -------------------------------------------------------------
def write_folder(root: Path) -> None:
    rng = np.random.default_rng(3)
    colors = {"blue": (20, 40, 230), "green": (30, 220, 40), "red": (230, 30, 20)}
    for split, n in (("train", 4), ("test", 2)):
        for name, rgb in colors.items():
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                noise = rng.integers(-20, 20, (30, 44, 3))
                Image.fromarray(np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)).save(root / split / name / f"{i}.png")


def test_the_run_records_the_overrides_and_eval_and_predict_preprocess_as_training_did(tmp_path, capsys) -> None:
    write_folder(tmp_path / "data")
    model = {"name": "timm:vit_tiny_patch16_224", "pretrained": False, "kwargs": {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 2}}
    overrides = {"mean": [0.2, 0.3, 0.4], "std": [0.5, 0.6, 0.7], "crop_pct": 1.0, "interpolation": "bilinear"}
    full = {
        "model": model,
        "prompt": {"method": "vpt_deep", "num_tokens": 2},
        "data": {"source": "imagefolder", "data_dir": str(tmp_path / "data"), "augment": "rrc_flip", **overrides},
        "train": {"epochs": 1, "batch_size": 4, "lr": 0.05, "tensorboard": False, "progress_bar": False},
    }
    (tmp_path / "full.yaml").write_text(yaml.safe_dump(full))
    assert main(["train", "-c", str(tmp_path / "full.yaml"), "-o", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    meta = json.loads((tmp_path / "run" / "last" / "prompt_config.json").read_text())
    assert meta["preprocessing"] == overrides
    recorded = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]
    assert {k: recorded[k] for k in overrides} == overrides and recorded["augment"] == "rrc_flip"
    assert preprocessing_overrides(load_config(VisionDataConfig, {k: v for k, v in recorded.items() if k != "synthetic"})) == overrides

    # Eval with a config that leaves the preprocessing unset takes it from the prompt folder ...
    bare = {**full, "data": {"source": "imagefolder", "data_dir": str(tmp_path / "data")}}
    (tmp_path / "bare.yaml").write_text(yaml.safe_dump(bare))

    def evaluate(config: str, prompts: Path) -> dict:
        assert main(["eval", "-c", config, "--prompts", str(prompts)]) == 0
        out = capsys.readouterr().out
        return json.loads(out[out.index("{") :])

    trained = evaluate(str(tmp_path / "full.yaml"), tmp_path / "run" / "last")
    assert evaluate(str(tmp_path / "bare.yaml"), tmp_path / "run" / "last") == trained
    # ... which is what makes the difference: the same prompts without the record evaluate otherwise.
    stripped = tmp_path / "stripped"
    stripped.mkdir()
    (stripped / "prompts.safetensors").write_bytes((tmp_path / "run" / "last" / "prompts.safetensors").read_bytes())
    (stripped / "prompt_config.json").write_text(json.dumps({**meta, "preprocessing": {}}))
    assert evaluate(str(tmp_path / "bare.yaml"), stripped)["loss"] != pytest.approx(trained["loss"], abs=1e-6)

    # Predict from a config holding only the model and the prompt: the prompt folder's pipeline and class names.
    only = {"model": model, "prompt": {"method": "vpt_deep", "num_tokens": 2}}
    (tmp_path / "only.yaml").write_text(yaml.safe_dump(only))
    image = str(tmp_path / "data" / "test" / "red" / "0.png")

    def predict(config: str, prompts: Path = tmp_path / "run" / "last") -> list[str]:
        assert main(["predict", "-c", config, "--prompts", str(prompts), image, "--top-k", "3"]) == 0
        return capsys.readouterr().out.splitlines()

    lines = predict(str(tmp_path / "only.yaml"))
    assert lines == predict(str(tmp_path / "full.yaml")) and {line.split()[1] for line in lines[1:]} == {"blue", "green", "red"}
    assert predict(str(tmp_path / "only.yaml"), stripped) != lines
    # A preprocessing key the config does set is the user's choice, used with a warning.
    with pytest.warns(UserWarning, match=r"data.crop_pct: the config sets 0.5, but the prompts .* were trained with 1.0"):
        assert main(["predict", "-c", str(tmp_path / "only.yaml"), "--set", "data.crop_pct=0.5", "--prompts", str(tmp_path / "run" / "last"), image]) == 0
    capsys.readouterr()


def test_pixel_prompts_follow_the_recorded_image_size_in_predict(tmp_path, capsys) -> None:
    write_folder(tmp_path / "data")
    model = {"name": "timm:resnet10t", "pretrained": False, "kwargs": {"num_classes": 0}}
    full = {
        "model": model,
        "prompt": {"method": "pixel_pad", "prompt_size": 3},
        "data": {"source": "imagefolder", "data_dir": str(tmp_path / "data"), "image_size": 40},
        "train": {"epochs": 1, "max_steps": 1, "batch_size": 4, "tensorboard": False, "progress_bar": False},
    }
    (tmp_path / "full.yaml").write_text(yaml.safe_dump(full))
    assert main(["train", "-c", str(tmp_path / "full.yaml"), "-o", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    meta = json.loads((tmp_path / "run" / "last" / "prompt_config.json").read_text())
    assert meta["image_size"] == [40, 40] and meta["preprocessing"] == {"image_size": 40}
    assert meta["class_names"] == ["blue", "green", "red"]  # recorded from the data: pixel prompts have no names
    (tmp_path / "only.yaml").write_text(yaml.safe_dump({"model": model, "prompt": {"method": "pixel_pad", "prompt_size": 3}}))
    image = str(tmp_path / "data" / "test" / "red" / "0.png")
    # Without the record, the prompt would be laid out at resnet10t's own 176 px and the file would not fit.
    assert main(["predict", "-c", str(tmp_path / "only.yaml"), "--prompts", str(tmp_path / "run" / "last"), image]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("0.png") and {line.split()[1] for line in lines[1:]} == {"blue", "green", "red"}
