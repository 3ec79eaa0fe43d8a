"""Text-side input checks: each bad input is one clear error (a UserError; the CLI prints one ``error:`` line and
exits 2) before any work, and what is cut is said once."""

from pathlib import Path

import pytest
import torch

from promptcore import ConfigError, UserError, load_config
from textpt import PromptTuningConfig, TextModelConfig, load_model_and_tokenizer
from textpt.cli import TextRecipe, main
from textpt.data import model_input_budget
from textpt.run_config import TextRunConfig
from tiny_text import TINY_CONFIGS

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "smoke" / "textpt_tiny.yaml")
FAST = ["--set", "train.max_steps=1", "--set", "data.num_samples=8", "--set", "data.num_eval_samples=8", "--set", "train.batch_size=8"]


# ----- model.kwargs ------------------------------------------------------------------------------------------------
def test_random_model_kwargs_typos_are_refused_with_close_matches():
    with pytest.raises(ConfigError, match=r"model.kwargs: 'hidden_sise' is not a field of the llama config \(LlamaConfig\), which "
                                          r"would ignore them and build its default. 'hidden_sise': Did you mean 'hidden_size'"):
        load_config(TextRunConfig, {"model": {"name": "random:llama", "kwargs": {"hidden_sise": 32}}})
    # a field of another model type is as silent as a typo: refused too
    with pytest.raises(ConfigError, match=r"'d_ff' is not a field of the llama config"):
        load_config(TextRunConfig, {"model": {"name": "random:llama", "kwargs": {"d_ff": 64}}})
    for model_type, kwargs in TINY_CONFIGS.items():  # the tests' configs, including names mapped by attribute_map
        TextModelConfig(name=f"random:{model_type}", kwargs=kwargs)


@pytest.fixture
def gpt2_folder(tmp_path):
    model, tok = load_model_and_tokenizer(TextModelConfig(name="random:gpt2", kwargs=TINY_CONFIGS["gpt2"]))
    model.save_pretrained(tmp_path / "gpt2")
    tok.save_pretrained(tmp_path / "gpt2")
    return str(tmp_path / "gpt2")


@pytest.mark.parametrize("key,match", [("revison", "Did you mean 'revision'"), ("n_layr", "Did you mean 'n_layer'")])
def test_pretrained_model_kwargs_typos_are_refused_with_close_matches(gpt2_folder, key, match):
    cfg = load_config(TextRunConfig, {"model": {"name": gpt2_folder, "kwargs": {key: 1}}, "prompt": {"verbalizer": [" good", " bad"]}})
    with pytest.raises(UserError, match=rf"model.kwargs.{key}: neither an argument of from_pretrained nor a field of the model's config.*{match}"):
        TextRecipe().build_model(cfg)
    cfg = load_config(TextRunConfig, {"model": {"name": gpt2_folder, "kwargs": {"n_layer": 1}}, "prompt": {"verbalizer": [" good", " bad"]}})
    assert TextRecipe().build_model(cfg).backbone.config.n_layer == 1  # a config field is taken


# ----- lengths -----------------------------------------------------------------------------------------------------
def test_a_tokenizer_without_a_maximum_falls_back_to_the_position_count(tmp_path):
    # The built-in tokenizer states no maximum; the Llama config has 128 positions. A 1,000-word row is cut to them,
    # so it does not pad its batch to 1,000 tokens, and the fallback is said once.
    (tmp_path / "train.csv").write_text("text,label\n" + "good " * 1000 + ",1\nbad,0\n")
    cfg = load_config(TextRunConfig, {
        "model": {"name": "random:llama", "kwargs": {**TINY_CONFIGS["llama"], "max_position_embeddings": 128}},
        "prompt": {"num_tokens": 8, "verbalizer": [" bad", " good"]},
        "data": {"source": "csv", "data_files": {"train": str(tmp_path / "train.csv")}, "eval_split": None},
    })
    recipe = TextRecipe()
    model = recipe.build_model(cfg)
    with pytest.warns(UserWarning, match=r"states no maximum length; inputs are cut to the model's 128 positions .* less the prompt's 8") as record:
        bundle = recipe.build_data(cfg, model)
    assert sum("states no maximum length" in str(w.message) for w in record) == 1
    assert bundle.info["max_length"] == 120 and bundle.info["train"]["truncated"] == 1
    batch = bundle.collate_fn([bundle.train[0], bundle.train[1]])
    assert batch["input_ids"].shape[1] == 120
    with torch.no_grad():
        model.eval_step(batch)  # fits the model's positions with the prompt


def test_an_explicit_max_length_needs_no_fallback(recwarn):
    model = TextRecipe().build_model(load_config(TextRunConfig, {"model": {"name": "random:llama", "kwargs": TINY_CONFIGS["llama"]}, "prompt": {"verbalizer": [" bad", " good"]}}))
    assert model_input_budget(model, max_length=50) == 50
    assert not [w for w in recwarn if "states no maximum" in str(w.message)]


def test_generate_says_when_it_cuts_an_input(capsys):
    long = "a good movie " * 20
    with pytest.warns(UserWarning, match=r"shortened 1 of 2 input texts to 12 tokens .* 'text' field was cut on the right"):
        assert main(["generate", "-c", SMOKE, "--set", "prompt={method: zero_shot}", "--set", "data.max_length=12", long, "short one"]) == 0
    assert "[2] short one" in capsys.readouterr().out


# ----- data files and verbalizers through the CLI -------------------------------------------------------------------
def test_a_csv_that_is_not_utf8_is_one_error_line(tmp_path, capsys):
    bad = tmp_path / "train.csv"
    bad.write_bytes("text,label\nun caf\u00e9 terrible,0\n".encode("latin-1"))
    args = ["--set", f"data={{source: csv, data_files: {{train: {bad}}}, eval_split: null}}", "--set", "prompt.verbalizer=[' bad', ' good']"]
    assert main(["train", "-c", SMOKE, "-o", str(tmp_path / "run"), *FAST, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and f"{bad} is not UTF-8 text" in err[0]


def test_label_words_the_tokenizer_cannot_tell_apart_stop_the_run(tmp_path, capsys):
    args = ["--set", "prompt.verbalizer=[' xyzzy', ' plugh']"]  # both <unk> for the built-in tokenizer
    assert main(["train", "-c", SMOKE, "-o", str(tmp_path / "run"), *FAST, *args]) == 2
    assert "verbalizer: ' xyzzy' and ' plugh' are the same tokens [0]" in capsys.readouterr().err
    assert not (tmp_path / "run" / "best").exists()


def test_python_users_get_the_same_verbalizer_check():
    import textpt

    backbone, tok = load_model_and_tokenizer(TextModelConfig(name="random:gpt2", kwargs=TINY_CONFIGS["gpt2"]))
    with pytest.raises(UserError, match="are the same tokens"):
        textpt.wrap(backbone, PromptTuningConfig(verbalizer=[" xyzzy", " plugh"]), tokenizer=tok)
