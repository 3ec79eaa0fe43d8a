"""Pooling of seq_cls models (``model.pooling``): each choice reads the features it names, padding-correct, ``auto``
follows the checkpoint, and a pooling the model cannot provide is refused."""

import json

import pytest
import torch

import textpt
from promptcore import UserError
from promptcore.files import PromptFileError
from textpt import LinearProbeConfig, PromptTuningConfig, TextModelConfig, load_model_and_tokenizer
from textpt.padding import repad
from tiny_text import TINY_CONFIGS

ROWS = [[5, 6, 7, 8, 9], [11, 12], [13, 14, 15]]
DEBERTA = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 64}


def load(model_type="bert", kwargs=None, **cfg):
    torch.manual_seed(0)
    return load_model_and_tokenizer(
        TextModelConfig(name=f"random:{model_type}", task="seq_cls", kwargs=kwargs or TINY_CONFIGS[model_type], dtype="float64", **cfg)
    )


def probe(pooling, model_type="bert", kwargs=None):
    backbone, tok = load(model_type, kwargs)
    return textpt.wrap(backbone, LinearProbeConfig(num_classes=3), tokenizer=tok, pooling=pooling)


@pytest.mark.parametrize("pooling", ["cls", "mean", "last", "pooler"])
def test_each_pooling_reads_the_features_it_names(pooling):
    model = probe(pooling)
    for row in ROWS:
        ids = torch.tensor([row])
        hidden = model.backbone(input_ids=ids).last_hidden_state
        expected = {"cls": hidden[:, 0], "mean": hidden.mean(1), "last": hidden[:, -1], "pooler": model.backbone.pooler(hidden)}[pooling]
        torch.testing.assert_close(model(ids), model.head(expected), rtol=0, atol=1e-12)


@pytest.mark.parametrize("pooling", ["cls", "mean", "last", "pooler"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_prompted_batch_equals_each_example_alone(pooling, side):
    backbone, tok = load(padding_side=side)
    model = textpt.wrap(backbone, PromptTuningConfig(num_tokens=3, init_std=1.0, num_classes=3), tokenizer=tok, pooling=pooling)
    with torch.no_grad():
        model.head.weight.mul_(50)
    ids, mask = repad(ROWS, tok.pad_token_id, side, torch.device("cpu"))
    alone = torch.cat([model(torch.tensor([r])) for r in ROWS])
    torch.testing.assert_close(model(ids, mask), alone, rtol=0, atol=1e-10)


def test_mean_averages_the_input_tokens_not_the_prompt():
    backbone, tok = load()
    model = textpt.wrap(backbone, PromptTuningConfig(num_tokens=3, init_std=1.0, num_classes=3), tokenizer=tok, pooling="mean")
    ids = torch.tensor([ROWS[0]])
    x = torch.cat([model.shallow_prompt(None, 1), model.embedding(ids)], dim=1)
    hidden = model.backbone(inputs_embeds=x).last_hidden_state
    torch.testing.assert_close(model(ids), model.head(hidden[:, 3:].mean(1)), rtol=0, atol=1e-12)
    assert not torch.allclose(model(ids), model.head(hidden.mean(1)))


def test_auto_is_the_pooler_where_the_model_has_one_else_the_first_token():
    assert probe("auto").pooling == "pooler"  # BERT, as trained with its pooler
    assert probe("auto", "deberta-v2", DEBERTA).pooling == "cls"  # DeBERTa-v2's AutoModel has no pooler
    modernbert = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "classifier_pooling": "mean"}
    assert probe("auto", "modernbert", modernbert).pooling == "mean"  # ModernBERT's classifier_pooling


def sentence_transformers_folder(tmp_path, flags):
    backbone, tok = load()
    folder = tmp_path / "st"
    backbone.save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]))
    (folder / "1_Pooling").mkdir()
    modes = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "lasttoken")
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **{f"pooling_mode_{m}": m in flags for m in modes}}))
    return folder


@pytest.mark.parametrize("flag,pooling", [("mean_tokens", "mean"), ("cls_token", "cls"), ("lasttoken", "last")])
def test_auto_follows_a_sentence_transformers_folder(tmp_path, flag, pooling):
    folder = sentence_transformers_folder(tmp_path, {flag})
    backbone, tok = load_model_and_tokenizer(TextModelConfig(name=str(folder), task="seq_cls", dtype="float64"))
    model = textpt.wrap(backbone, LinearProbeConfig(num_classes=2), tokenizer=tok)
    assert model.pooling == pooling
    assert textpt.wrap(backbone, LinearProbeConfig(num_classes=2), tokenizer=tok, pooling="pooler").pooling == "pooler"


def test_a_sentence_transformers_pooling_not_offered_is_refused(tmp_path):
    folder = sentence_transformers_folder(tmp_path, {"max_tokens"})
    backbone, tok = load_model_and_tokenizer(TextModelConfig(name=str(folder), task="seq_cls", dtype="float64"))
    with pytest.raises(UserError, match=r"pools by pooling_mode_max_tokens .*set model.pooling to one of cls, mean, last"):
        textpt.wrap(backbone, LinearProbeConfig(num_classes=2), tokenizer=tok)
    unresolved = textpt.LinearProbeModel(backbone, LinearProbeConfig(num_classes=2), tokenizer=tok)  # no pooling chosen
    with pytest.raises(UserError, match="pooling_mode_max_tokens"):
        unresolved(torch.tensor([ROWS[0]]))
    assert textpt.wrap(backbone, LinearProbeConfig(num_classes=2), tokenizer=tok, pooling="mean").pooling == "mean"


def test_pooler_refused_for_a_model_without_one():
    with pytest.raises(UserError, match=r"'pooler' needs the model's own pooler layer, and DebertaV2Model \(model_type deberta-v2\) has none"):
        probe("pooler", "deberta-v2", DEBERTA)


def test_pooling_refused_for_tasks_that_pool_nothing():
    with pytest.raises(ValueError, match="pooling: 'mean' pools an encoder's features for task seq_cls; a causal_lm model"):
        TextModelConfig(name="random:gpt2", task="causal_lm", pooling="mean")
    with pytest.raises(ValueError, match="pooling: 'bogus' is not one of auto, cls, mean, last, pooler"):
        TextModelConfig(name="random:bert", task="seq_cls", pooling="bogus")
    backbone, tok = load_model_and_tokenizer(TextModelConfig(name="random:gpt2", kwargs=TINY_CONFIGS["gpt2"]))
    with pytest.raises(UserError, match="a causal_lm model pools nothing"):
        textpt.wrap(backbone, PromptTuningConfig(num_tokens=2), tokenizer=tok, pooling="mean")


def test_a_head_trained_on_other_features_does_not_load(tmp_path):
    probe("mean").save_prompts(tmp_path / "p")
    with pytest.raises(PromptFileError, match="pooling"):
        probe("cls").load_prompts(tmp_path / "p")
    probe("mean").load_prompts(tmp_path / "p")


def test_cli_runs_the_pooling_of_the_config_and_refuses_one_the_model_lacks(tmp_path, capsys):
    from test_textpt_cli import FAST, SMOKE, TASKS
    from textpt.cli import main

    run = tmp_path / "run"
    assert main(["train", "-c", SMOKE, "-o", str(run), *FAST, *TASKS["seq_cls"], "--set", "model.pooling=mean"]) == 0
    assert json.loads((run / "best" / "prompt_config.json").read_text())["pooling"] == "mean"
    capsys.readouterr()
    deberta = ["--set", "model.name=random:deberta-v2", "--set", "model.kwargs={hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4}"]
    assert main(["train", "-c", SMOKE, "-o", str(tmp_path / "d"), *FAST, *TASKS["seq_cls"], *deberta, "--set", "model.pooling=pooler"]) == 2
    assert "'pooler' needs the model's own pooler layer, and DebertaV2Model" in capsys.readouterr().err
