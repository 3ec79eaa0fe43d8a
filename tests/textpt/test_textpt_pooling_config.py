"""``TextModelConfig(pooling=...)`` acts from Python: ``load_model_and_tokenizer`` records it and ``textpt.wrap`` uses
it unless given another pooling."""

import pytest
import torch

import textpt
from textpt import LinearProbeConfig, TextModelConfig, load_model_and_tokenizer
from tiny_text import TINY_CONFIGS


def load(**cfg):
    torch.manual_seed(0)
    return load_model_and_tokenizer(TextModelConfig(name="random:bert", task="seq_cls", kwargs=TINY_CONFIGS["bert"], **cfg))


@pytest.mark.parametrize("pooling", ["cls", "mean", "last"])
def test_config_pooling_reaches_the_wrapped_model(pooling):
    backbone, tok = load(pooling=pooling)
    assert textpt.wrap(backbone, LinearProbeConfig(num_classes=3), tokenizer=tok).pooling == pooling


def test_wrap_pooling_overrides_the_config_and_auto_stays_the_default():
    backbone, tok = load(pooling="mean")
    assert textpt.wrap(backbone, LinearProbeConfig(num_classes=3), tokenizer=tok, pooling="last").pooling == "last"
    backbone, tok = load()
    assert textpt.wrap(backbone, LinearProbeConfig(num_classes=3), tokenizer=tok).pooling == "pooler"  # BERT's auto
