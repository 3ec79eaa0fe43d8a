"""``data.max_eval_samples``: vision runs evaluate on the first N evaluation images, as text runs do."""

import pytest
import timm
import torch

from promptcore import UserError
from promptcore.config import load_config
from vpt.data import VisionDataConfig, build_vision_data, resolve_image_config


@pytest.fixture(scope="module")
def image_config():
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2, embed_dim=64, num_heads=2, num_classes=0)
    return resolve_image_config(vit)


def bundle(image_config, **kw):
    return build_vision_data(load_config(VisionDataConfig, {"source": "synthetic", "synthetic": {"num_train": 40, "num_eval": 30}, **kw}), image_config)


@pytest.mark.parametrize("split", [{}, {"eval_split": None, "val_fraction": 0.5}])
def test_max_eval_samples_keeps_the_first_evaluation_images(image_config, split):
    full, short = bundle(image_config, **split), bundle(image_config, max_eval_samples=7, **split)
    assert len(full.eval) > 7 and len(short.eval) == short.info["num_eval"] == 7
    assert len(short.train) == len(full.train)
    for i in range(7):
        assert torch.equal(short.eval[i]["pixel_values"], full.eval[i]["pixel_values"]) and short.eval[i]["labels"] == full.eval[i]["labels"]
    assert len(bundle(image_config, max_eval_samples=1000, **split).eval) == len(full.eval)


def test_max_eval_samples_must_be_positive():
    with pytest.raises(UserError, match="max_eval_samples: must be a positive number"):
        VisionDataConfig(max_eval_samples=0)
