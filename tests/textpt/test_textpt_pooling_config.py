"""``TextModelConfig(pooling=...)`` acts from Python: ``load_model_and_tokenizer`` records it and ``textpt.wrap`` uses
it unless given another pooling."""

import pytest
import torch

import textpt
import promptcore
from textpt import LinearProbeConfig, PromptTuningConfig, TextModelConfig, load_model_and_tokenizer
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


def test_promptcore_wrap_builds_the_recorded_pooling_and_reloads_a_trained_head(tmp_path):
    # what a run of model.pooling: mean saves, rebuilt from the same config through promptcore.wrap: same logits
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    backbone, tok = load(pooling="mean")
    trained = textpt.wrap(backbone, PromptTuningConfig(num_tokens=2, num_classes=3), tokenizer=tok)
    with torch.no_grad():
        trained.head.weight.normal_()  # a head no fresh model would have
    trained.save_prompts(tmp_path / "best")
    backbone, tok = load(pooling="mean")
    again = promptcore.wrap(backbone, PromptTuningConfig(num_tokens=2, num_classes=3), tokenizer=tok)
    assert again.pooling == "mean"
    again.load_prompts(tmp_path / "best")
    torch.testing.assert_close(again(ids), trained(ids), rtol=0, atol=0)
    # the pooling matters here: the pooler's features give other logits
    again.set_pooling("pooler")
    assert not torch.allclose(again(ids), trained(ids))
