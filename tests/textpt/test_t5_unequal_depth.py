"""T5 with a decoder deeper than its encoder generates (transformers sizes its own cache by the encoder's depth), the
same tokens with the cache as without it."""

import pytest
import torch

import textpt
from textpt import PrefixConfig, PromptTuningConfig, TextModelConfig, load_model_and_tokenizer

T5 = {"d_model": 32, "d_ff": 64, "d_kv": 16, "num_layers": 2, "num_decoder_layers": 3, "num_heads": 2}


@pytest.mark.parametrize("config", [PromptTuningConfig(num_tokens=3, init_std=1.0), PrefixConfig(num_tokens=3)], ids=["prompt_tuning", "prefix"])
def test_generate_with_a_deeper_decoder(config):
    torch.manual_seed(0)
    backbone, tok = load_model_and_tokenizer(TextModelConfig(name="random:t5", task="seq2seq", kwargs=T5))
    model = textpt.wrap(backbone, config, tokenizer=tok)
    ids, mask = torch.tensor([[5, 6, 7, 1], [8, 9, 1, 0]]), torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    cached = model.generate(ids, mask, max_new_tokens=6)
    assert cached.shape == (2, 7)
    assert torch.equal(cached, model.generate(ids, mask, max_new_tokens=6, use_cache=False))
