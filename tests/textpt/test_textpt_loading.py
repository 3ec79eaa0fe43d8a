"""Loading models and tokenizers by name."""

import logging

import pytest

from textpt import TextModelConfig, load_model_and_tokenizer
from textpt.loading import ModelLoadError, prepare_tokenizer, resolve_name, tiny_tokenizer
from tiny_text import TINY_CONFIGS
from promptcore import ConfigError, UserError, load_config


@pytest.mark.parametrize("model_type,task", [("gpt2", "causal_lm"), ("llama", "causal_lm"), ("t5", "seq2seq"), ("bert", "seq_cls")])
def test_random_models_load_frozen_with_a_pad_token(model_type, task, caplog):
    with caplog.at_level(logging.WARNING, logger="textpt.loading"):
        model, tok = load_model_and_tokenizer(TextModelConfig(name=f"random:{model_type}", task=task, kwargs=TINY_CONFIGS[model_type]))
    assert not any(p.requires_grad for p in model.parameters())
    assert tok.pad_token == tok.eos_token == "</s>"
    assert "tokenizer has no pad token; padding with '</s>'" in caplog.text
    assert model.get_input_embeddings().weight.shape[0] >= len(tok)


def test_tokenizer_without_pad_eos_or_unk():
    tok = tiny_tokenizer()
    tok.eos_token = None
    tok.unk_token = None
    with pytest.raises(ModelLoadError, match="has no pad, EOS or UNK token to pad with"):
        prepare_tokenizer(tok)


def test_bad_names():
    with pytest.raises(ModelLoadError, match="neither a local folder nor a prefixed name; use 'hf:ORG/NAME'"):
        resolve_name("no/such/folder")
    with pytest.raises(ModelLoadError, match="has nothing after 'hf:'"):
        resolve_name("hf:")
    with pytest.raises(ModelLoadError, match="random:nosuchmodel"):
        load_model_and_tokenizer(TextModelConfig(name="random:nosuchmodel"))


def test_vocab_too_small_for_tokenizer():
    with pytest.raises(ModelLoadError, match="raise model.kwargs.vocab_size to at least"):
        load_model_and_tokenizer(TextModelConfig(name="random:gpt2", kwargs={**TINY_CONFIGS["gpt2"], "vocab_size": 10}))


def test_local_folder_round_trip(tmp_path):
    model, tok = load_model_and_tokenizer(TextModelConfig(name="random:gpt2", kwargs=TINY_CONFIGS["gpt2"]))
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    again, tok2 = load_model_and_tokenizer(TextModelConfig(name=str(tmp_path), padding_side="right"))
    assert type(again) is type(model) and tok2.padding_side == "right"


def test_model_config_errors():
    with pytest.raises(ConfigError, match="dtype: 'float8' is not one of"):
        load_config(TextModelConfig, {"name": "random:gpt2", "dtype": "float8"})
    with pytest.raises(ConfigError, match="task: 'clasify' is not one of 'causal_lm', 'seq2seq', 'seq_cls'"):
        load_config(TextModelConfig, {"name": "random:gpt2", "task": "clasify"})


def test_a_hub_name_fails_at_once_when_the_hub_cannot_be_reached(monkeypatch, tmp_path):
    # HF_HUB_OFFLINE unset: the connection probe finds the hub unreachable, and the load runs in offline mode (no
    # retries), then names the offline assets.
    import socket

    from huggingface_hub import constants

    from promptcore import hub

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", *hub.PROXY_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # nothing cached
    hub._unreachable.cache_clear()
    try:
        with pytest.raises(UserError, match=r"cannot load hf:gpt2 \(it could not be fetched, 127.0.0.1 cannot be reached .*"
                                            r"'python -m promptcore.assets list' \(docs/assets.md\)"):
            load_model_and_tokenizer(TextModelConfig("hf:gpt2"))
    finally:
        hub._unreachable.cache_clear()
    assert not constants.HF_HUB_OFFLINE
