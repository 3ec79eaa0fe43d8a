"""Vision data (vpt.data): sources, the backbone's own transforms, few-shot sampling, hold-out, bad input."""

from __future__ import annotations

from dataclasses import replace as dataclass_replace
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import vpt.assets
from vpt.backbones import FAMILIES
from vpt.synthetic import SyntheticImages

from promptcore.config import ConfigError, load_config
from promptcore.data import few_shot_indices
from vpt.data import (
    SOURCES,
    DataError,
    DataSource,
    LabeledImages,
    VisionDataConfig,
    build_vision_data,
    holdout_indices,
    load_sources,
    regroup_classes,
    resolve_image_config,
    to_rgb,
)

COLORS = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}


@pytest.fixture(scope="module")
def vit() -> torch.nn.Module:
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2, embed_dim=64, num_heads=2, num_classes=0)


def write_image_tree(root: Path, per_class: dict[str, int], mode: str = "RGB", size: tuple[int, int] = (40, 30)) -> None:
    for name, count in per_class.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            color = COLORS[name] if mode != "L" else 40 * i
            Image.new(mode, size, color).save(root / name / f"{i}.png")


def data_cfg(**kw) -> VisionDataConfig:
    return load_config(VisionDataConfig, kw)


def test_imagefolder_with_split_folders_and_backbone_transform(tmp_path: Path, vit: torch.nn.Module) -> None:
    write_image_tree(tmp_path / "train", {"blue": 3, "green": 4, "red": 5}, size=(40, 30))
    write_image_tree(tmp_path / "test", {"blue": 1, "green": 1, "red": 1}, mode="RGBA", size=(64, 64))
    cfg = data_cfg(source="imagefolder", data_dir=str(tmp_path))
    bundle = build_vision_data(cfg, resolve_image_config(vit))
    assert bundle.class_names == ["blue", "green", "red"] and bundle.info["num_classes"] == 3
    assert len(bundle.train) == 12 and len(bundle.eval) == 3
    item = bundle.eval[2]
    # RGBA 64x64 -> RGB at the ViT's own 32x32, normalised with timm's mean/std (0.5): red is (+1, -1, -1).
    assert item["pixel_values"].shape == (3, 32, 32) and item["labels"] == 2
    torch.testing.assert_close(item["pixel_values"][:, 16, 16], torch.tensor([1.0, -1.0, -1.0]))
    batch = bundle.collate_fn([bundle.train[0], bundle.train[5]])
    assert batch["pixel_values"].shape == (2, 3, 32, 32) and batch["labels"].dtype == torch.long


def test_flat_imagefolder_holdout_and_few_shot(tmp_path: Path, vit: torch.nn.Module) -> None:
    write_image_tree(tmp_path, {"blue": 6, "green": 6, "red": 6}, mode="L")
    with pytest.raises(DataError, match="has no 'train' sub-folder, so it is read as one training set, but data.eval_split is 'test'"):
        load_sources(data_cfg(source="imagefolder", data_dir=str(tmp_path)))
    cfg = data_cfg(source="imagefolder", data_dir=str(tmp_path), eval_split=None, val_fraction=0.25, shots=2, seed=3)
    bundle = build_vision_data(cfg, resolve_image_config(vit))
    assert len(bundle.eval) == 4 and len(bundle.train) == 6
    assert set(bundle.train.indices).isdisjoint(bundle.eval.indices)
    assert sorted(bundle.train.labels) == [0, 0, 1, 1, 2, 2]
    assert bundle.train[0]["pixel_values"].shape == (3, 32, 32)  # grayscale became 3 channels
    again = build_vision_data(cfg, resolve_image_config(vit))
    assert again.train.indices == bundle.train.indices and again.eval.indices == bundle.eval.indices
    with pytest.raises(DataError, match=r"class 0 \('blue'\) has 4 image\(s\), fewer than shots=5; lower data.shots"):
        build_vision_data(load_config(VisionDataConfig, {**cfg.__dict__, "synthetic": {}, "shots": 5}), resolve_image_config(vit))


def test_class_groups_regroup_labels_and_leave_out_unlisted_classes(tmp_path: Path, vit: torch.nn.Module) -> None:
    write_image_tree(tmp_path / "train", {"blue": 3, "green": 4, "red": 5, "white": 2}, mode="L")
    write_image_tree(tmp_path / "test", {"blue": 1, "green": 2, "red": 1, "white": 1}, mode="L")
    plain_train, plain_eval = load_sources(data_cfg(source="imagefolder", data_dir=str(tmp_path)))
    groups = {"warm": ["red"], "cool": ["blue", "green"]}  # white is in no group: its rows are left out
    cfg = load_config(VisionDataConfig, {"source": "imagefolder", "data_dir": str(tmp_path), "class_groups": groups})
    train, evals = load_sources(cfg)
    assert train.class_names == ["warm", "cool"] and len(train) == 12 and len(evals) == 4
    for regrouped, plain in ((train, plain_train), (evals, plain_eval)):
        kept = [i for i, y in enumerate(plain.labels) if plain.class_names[y] != "white"]
        expected = [0 if plain.class_names[plain.labels[i]] == "red" else 1 for i in kept]
        assert regrouped.labels == expected
        for j, i in enumerate(kept):  # row j of the regrouped data is row i of the plain data, image and all
            assert np.array_equal(np.asarray(regrouped.load(j)), np.asarray(plain.load(i)))
            assert regrouped.label_of(j) == plain.label_of(i) and regrouped.check(j) is None
    bundle = build_vision_data(dataclass_replace(cfg, shots=2), resolve_image_config(vit))
    assert bundle.class_names == ["warm", "cool"] and bundle.info["num_classes"] == 2
    assert sorted(bundle.train.labels) == [0, 0, 1, 1] and sorted(bundle.eval.labels) == [0, 1, 1, 1]
    # data without class names: its label ids as strings
    images = LabeledImages(load=lambda i: i, labels=[0, 1, 2, 1], class_names=None, name="ids")
    assert regroup_classes(images, {"a": ["2"], "b": ["0", "1"]}).labels == [1, 1, 0, 1]


def test_class_groups_errors_name_the_field() -> None:
    base = {"source": "synthetic", "num_classes": None}
    with pytest.raises(ConfigError, match="class_groups: give at least two groups"):
        load_config(VisionDataConfig, {**base, "class_groups": {"all": ["class 0"]}})
    with pytest.raises(ConfigError, match="class_groups.b: class 'class 1' is already in group 'a'"):
        load_config(VisionDataConfig, {**base, "class_groups": {"a": ["class 1"], "b": ["class 1"]}})
    with pytest.raises(ConfigError, match="class_groups.b: an empty group"):
        load_config(VisionDataConfig, {**base, "class_groups": {"a": ["class 1"], "b": []}})
    with pytest.raises(ConfigError, match="class_names: class_groups names the new classes"):
        load_config(VisionDataConfig, {**base, "class_groups": {"a": ["x"], "b": ["y"]}, "class_names": ["a", "b"]})
    with pytest.raises(ConfigError, match="num_classes: 3, but class_groups makes 2 classes"):
        load_config(VisionDataConfig, {**base, "class_groups": {"a": ["x"], "b": ["y"]}, "num_classes": 3})
    images = LabeledImages(load=lambda i: i, labels=[0, 1], class_names=["Sandal", "Bag"], name="shoes")
    with pytest.raises(DataError, match=r"class_groups.b: shoes has no class 'Sandl'; its classes are \['Sandal', 'Bag'\]. Did you mean 'Sandal'"):
        regroup_classes(images, {"a": ["Bag"], "b": ["Sandl"]})


def test_few_shot_draw_is_seeded_and_per_class() -> None:
    labels = [i % 4 for i in range(40)]
    a = few_shot_indices(labels, 3, seed=0)
    assert a == few_shot_indices(labels, 3, seed=0) and a != few_shot_indices(labels, 3, seed=1)
    assert sorted(labels[i] for i in a) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    with pytest.raises(ValueError, match=r"class 2 \('cat'\) has 0 image\(s\), fewer than shots=1"):
        few_shot_indices([0, 1, 0, 1], 1, seed=0, class_names=["a", "b", "cat"])
    train, held = holdout_indices(10, 0.3, seed=0)
    assert len(held) == 3 and sorted(train + held) == list(range(10)) and holdout_indices(10, 0.3, seed=0) == (train, held)


def _parquet(tmp_path: Path, name: str, columns: dict, features=None) -> str:
    import datasets

    path = tmp_path / f"{name}.parquet"
    datasets.Dataset.from_dict(columns, features=features).to_parquet(str(path))
    return str(path)


def test_hf_parquet_files_with_custom_columns(tmp_path: Path, vit: torch.nn.Module) -> None:
    import datasets

    features = datasets.Features({"picture": datasets.Image(), "target": datasets.Value("int64")})
    rows = {"picture": [Image.new("RGB", (20, 20), (255, 0, 0)), Image.new("L", (50, 50), 10)] * 3, "target": [0, 1] * 3}
    files = {"train": _parquet(tmp_path, "train", rows, features), "validation": _parquet(tmp_path, "val", rows, features)}
    cfg = data_cfg(source="hf", name="parquet", data_files=files, image_column="picture", label_column="target", eval_split="validation")
    bundle = build_vision_data(cfg, resolve_image_config(vit))
    assert bundle.class_names == ["0", "1"] and len(bundle.train) == 6 and len(bundle.eval) == 6
    assert bundle.train[1]["pixel_values"].shape == (3, 32, 32)
    with pytest.raises(DataError, match=r"no split 'test'; splits found: \['train', 'validation'\]"):
        load_sources(data_cfg(source="hf", name="parquet", data_files=files, image_column="picture", label_column="target"))
    with pytest.raises(DataError, match=r"label column 'label' not found in dataset 'parquet' split 'train'; columns found: \['picture', 'target'\]"):
        load_sources(data_cfg(source="hf", name="parquet", data_files=files, image_column="picture", eval_split=None))
    with pytest.raises(DataError, match="label 1 of row 1 in dataset 'parquet' split 'train' is out of range: the model has 1 classes"):
        build_vision_data(cfg, resolve_image_config(vit), num_classes=1)


def test_hf_string_labels_and_empty_split_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")})
    files = {"train": _parquet(tmp_path, "s", {"image": [Image.new("RGB", (8, 8))], "label": ["cat"]}, features)}
    with pytest.raises(DataError, match=r"label column 'label' .* holds Value\('string'\) values; expected integer class ids"):
        load_sources(data_cfg(source="hf", name="parquet", data_files=files, eval_split=None))
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    empty = datasets.Dataset.from_dict({"image": [], "label": []}, features=features)
    files = {"train": _parquet(tmp_path, "e", {"image": [], "label": []}, features)}
    with pytest.raises(DataError, match="could not load dataset 'parquet' .*check data.name, data.data_files"):
        load_sources(data_cfg(source="hf", name="parquet", data_files=files, eval_split=None))
    one = datasets.Dataset.from_dict({"image": [Image.new("RGB", (8, 8))], "label": [1]}, features=features)
    monkeypatch.setattr(vpt.assets, "load_dataset", lambda name: datasets.DatasetDict({"train": one, "test": empty}))
    with pytest.raises(DataError, match="asset 'fake' split 'test' has no rows"):
        load_sources(data_cfg(source="asset", name="fake"))
    datasets.DatasetDict({"train": one}).save_to_disk(str(tmp_path / "saved"))
    train, _ = load_sources(data_cfg(source="hf", name=str(tmp_path / "saved"), eval_split=None))
    assert train.labels == [1] and train.class_names == ["a", "b"]


def test_synthetic_source_at_backbone_size(vit: torch.nn.Module) -> None:
    cfg = data_cfg(source="synthetic", num_classes=3, synthetic={"num_train": 30, "num_eval": 9}, shots=4)
    bundle = build_vision_data(cfg, resolve_image_config(vit))
    assert len(bundle.train) == 12 and len(bundle.eval) == 9 and bundle.info["num_classes"] == 3
    assert bundle.train[0]["pixel_values"].shape == (3, 32, 32)


def test_transforms_from_each_library() -> None:
    import open_clip
    import transformers

    eff = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    cfg = resolve_image_config(eff)
    assert cfg.size == (224, 224) and cfg.family is FAMILIES.get("timm")
    assert resolve_image_config(eff, image_size=64).size == (64, 64)
    clip = open_clip.CLIP(
        embed_dim=16,
        vision_cfg=dict(image_size=48, patch_size=8, width=32, layers=1, head_width=16),
        text_cfg=dict(context_length=8, vocab_size=50, width=16, heads=1, layers=1),
    )
    cfg = resolve_image_config(clip)
    assert cfg.size == (48, 48) and cfg.family is FAMILIES.get("open_clip") and cfg.mean == open_clip.OPENAI_DATASET_MEAN
    from vpt.data import build_transform

    assert build_transform(cfg)(to_rgb(Image.new("L", (100, 60)))).shape == (3, 48, 48)
    hf = transformers.ViTModel(transformers.ViTConfig(image_size=40, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64))
    cfg = resolve_image_config(hf)
    assert cfg.size == (40, 40) and cfg.mean == (0.5, 0.5, 0.5) and "no image processor" in cfg.source
    assert build_transform(cfg)(to_rgb(np.zeros((10, 70), dtype=np.uint8))).shape == (3, 40, 40)
    with pytest.raises(ValueError, match="cannot read the input size of a Conv2d"):
        resolve_image_config(torch.nn.Conv2d(3, 3, 1))


def test_config_errors_name_their_fields() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(VisionDataConfig, {"source": "hf"})
    assert "name: required for source 'hf'" in str(err.value)
    with pytest.raises(ConfigError, match="set eval_split: null to use the hold-out"):
        load_config(VisionDataConfig, {"val_fraction": 0.1})
    with pytest.raises(ConfigError, match="shots: must be a positive number of images per class"):
        load_config(VisionDataConfig, {"shots": 0})
    with pytest.raises(ConfigError, match="label_colum: unknown key for VisionDataConfig. Did you mean 'label_column'"):
        load_config(VisionDataConfig, {"label_colum": "y"})
    with pytest.raises(DataError, match="image column 'image' holds int values"):
        to_rgb(3)


def test_synthetic_images_are_seeded_and_splits_differ():
    a, b = SyntheticImages(16, 4, seed=3), SyntheticImages(16, 4, seed=3)
    assert (a.images == b.images).all() and (a.labels == b.labels).all()
    assert not (SyntheticImages(16, 4, seed=3, split="test").images == a.images).all()


def test_unknown_source_lists_close_matches() -> None:
    with pytest.raises(ConfigError, match=r"source: unknown data source 'hff'. Did you mean 'hf'\? Known: asset, hf, imagefolder, synthetic"):
        load_config(VisionDataConfig, {"source": "hff"})


def test_a_source_registered_outside_the_library_loads_by_name(vit: torch.nn.Module) -> None:
    def load(cfg: VisionDataConfig, image_config) -> tuple[LabeledImages, LabeledImages]:
        colors = [(255, 0, 0), (0, 0, 255)]
        images = [Image.new("RGB", (12, 12), colors[i % 2]) for i in range(6)]
        part = LabeledImages(load=images.__getitem__, labels=[i % 2 for i in range(6)], class_names=["red", "blue"], name=cfg.name)
        return part, part

    with SOURCES.temporarily("colors", DataSource(load, requires=(("name", "what to call it"),))):
        with pytest.raises(ConfigError, match=r"name: required for source 'colors' \(what to call it\)"):
            load_config(VisionDataConfig, {"source": "colors"})
        bundle = build_vision_data(data_cfg(source="colors", name="two colors"), resolve_image_config(vit))
    assert "colors" not in SOURCES
    assert bundle.class_names == ["red", "blue"] and len(bundle.train) == 6
    assert bundle.eval[1]["pixel_values"].shape == (3, 32, 32) and bundle.eval[1]["labels"] == 1


def test_16_bit_and_float_images_convert_to_rgb_without_losing_their_range(tmp_path: Path) -> None:
    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as image:
        assert image.mode in ("I;16", "I")
        rgb = np.asarray(to_rgb(image))
    # Plain convert("RGB") clamps at 255 and turns 99.6% of this ramp white; scaled, it stays a ramp.
    expected = np.rint(ramp * (255 / 65535)).astype(np.uint8)
    assert (rgb[..., 0] == expected).all() and (rgb[..., 0] == rgb[..., 2]).all()
    assert (rgb == 255).mean() < 0.01
    np.testing.assert_array_equal(np.asarray(to_rgb(ramp))[..., 1], expected)
    floats = np.linspace(0.0, 1.0, 256, dtype=np.float32).reshape(16, 16)
    np.testing.assert_array_equal(np.asarray(to_rgb(Image.fromarray(floats, mode="F")))[..., 0], np.arange(256, dtype=np.uint8).reshape(16, 16))


def write_bad_images(root: Path) -> tuple[Path, Path]:
    write_image_tree(root, {"blue": 3, "green": 3})
    empty = root / "blue" / "empty.png"
    empty.write_bytes(b"")
    whole = (root / "green" / "0.png").read_bytes()
    truncated = root / "green" / "truncated.png"
    truncated.write_bytes(whole[: len(whole) // 2])
    return empty, truncated


def test_unreadable_images_are_all_named_before_training_or_skipped_and_counted(tmp_path: Path, vit: torch.nn.Module, capsys) -> None:
    empty, truncated = write_bad_images(tmp_path / "train")
    write_image_tree(tmp_path / "test", {"blue": 1, "green": 1})
    (tmp_path / "test" / "blue" / "not_an_image.png").write_text("hello")
    cfg = data_cfg(source="imagefolder", data_dir=str(tmp_path))
    with pytest.raises(DataError, match=r"3 of 11 images cannot be read: .*empty.png: an empty file; .*truncated.png: .*; .*not_an_image.png: UnidentifiedImageError.*data.on_bad_rows: skip"):
        build_vision_data(cfg, resolve_image_config(vit))
    bundle = build_vision_data(data_cfg(source="imagefolder", data_dir=str(tmp_path), on_bad_rows="skip"), resolve_image_config(vit))
    assert len(bundle.train) == 6 and len(bundle.eval) == 2
    assert [row.split(":")[0] for row in bundle.info["skipped_rows"]] == [str(empty), str(truncated), str(tmp_path / "test" / "blue" / "not_an_image.png")]
    assert "skipping 2 unreadable image(s) of 8 (data.on_bad_rows: skip)" in capsys.readouterr().err
    for i in range(len(bundle.train)):
        bundle.train[i]  # every image left in reads


def test_an_image_over_the_decompression_limit_is_named(tmp_path: Path, vit: torch.nn.Module, monkeypatch) -> None:
    write_image_tree(tmp_path / "train", {"blue": 2, "green": 2}, size=(40, 30))
    Image.new("RGB", (200, 200)).save(tmp_path / "train" / "blue" / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 200 x 200 is over twice the limit: PIL refuses it
    cfg = data_cfg(source="imagefolder", data_dir=str(tmp_path), eval_split=None, val_fraction=0.25)
    with pytest.raises(DataError, match=r"1 of 5 images cannot be read: .*huge.png: DecompressionBombError"):
        build_vision_data(cfg, resolve_image_config(vit))


def test_an_unscanned_source_names_a_bad_image_when_it_is_read(vit: torch.nn.Module) -> None:
    images = LabeledImages(load=lambda i: {"bytes": b"not an image"}, labels=[0, 1], class_names=None, name="rows 'train'")
    bundle = build_vision_data(data_cfg(source="imagefolder", data_dir="."), resolve_image_config(vit), 2, sources=(images, None))
    with pytest.raises(DataError, match=r"image 0 of rows 'train' cannot be read \(UnidentifiedImageError"):
        bundle.train[0]
