"""A ``random:`` model without ``model.kwargs`` is its architecture's default size: above a billion parameters
(llama's 6.7B) it is refused before any weight is allocated, naming the size and how to ask for a small one."""

import pytest

from textpt import ModelLoadError, TextModelConfig, load_model_and_tokenizer


def test_a_default_size_llama_is_refused_with_its_size():
    with pytest.raises(ModelLoadError, match=r"random:llama without model.kwargs is its default size, 6,[\d,]+ parameters \([\d.]+ GiB in float32\); give small sizes"):
        load_model_and_tokenizer(TextModelConfig(name="random:llama"))


def test_a_small_default_model_and_any_given_size_still_build():
    model, _ = load_model_and_tokenizer(TextModelConfig(name="random:t5", task="seq2seq"))
    assert sum(p.numel() for p in model.parameters()) < 10**9
    model, _ = load_model_and_tokenizer(TextModelConfig(name="random:llama", kwargs={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}))
    assert sum(p.numel() for p in model.parameters()) < 10**6
