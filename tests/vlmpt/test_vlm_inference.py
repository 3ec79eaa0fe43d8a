"""Inference from a prompt folder: ``vlmpt.load_prompted`` rebuilds the trained model bitwise, ``vlmpt.answer`` /
``vlmpt.classify`` encode images as training did, and ``vlmpt generate --prompts DIR`` runs without a config."""

import re
from pathlib import Path

import pytest
import torch

import vlmpt
from promptcore import PromptFileError, TrainConfig, Trainer, load_config, wrap
from promptcore.errors import UserError
from promptcore.trainer import seed_everything
from vlmpt.cli import VLMRecipe, main
from vlmpt.run_config import VLMRunConfig
from vlmpt.synthetic import synthetic_rows, tiny_backbone, tiny_processor

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "smoke" / "vlmpt_tiny.yaml")
QUESTION = "what colour is it ?"
CLASSIFY = ["task.type=classify", "data.label_column=label"]


def trained(tmp_path: Path, *overrides: str) -> tuple[vlmpt.VLMPromptedModel, Path]:
    """A model trained for two steps as ``vlmpt train`` builds it, and the prompt folder it saved."""
    cfg = load_config(VLMRunConfig, SMOKE, ["data.num_samples=8", "data.eval_split=null", "train.seed=3", *overrides])
    seed_everything(cfg.train.seed)
    recipe = VLMRecipe()
    model = recipe.build_model(cfg)
    data = recipe.build_data(cfg, model)
    initial = model.prompts.weight.detach().clone()
    Trainer(model, TrainConfig(max_steps=2, batch_size=4, lr=0.3, progress_bar=False, tensorboard=False), data.train, None, data.collate_fn).fit()
    assert not torch.equal(model.prompts.weight, initial)
    folder = model.save_prompts(tmp_path / "prompts")
    return model.eval(), folder


def test_a_trained_then_loaded_prompt_gives_bitwise_equal_outputs(tmp_path):
    model, folder = trained(tmp_path, "data.max_length=30")
    loaded = vlmpt.load_prompted(folder)
    assert not loaded.training and loaded.data_config.max_length == 30 and loaded.answer_scorer.max_new_tokens == 4
    images = synthetic_rows(3, seed=1, split="test")["image"]
    batch = vlmpt.encode_images(model, images, QUESTION)
    assert torch.equal(model(**batch), loaded(**vlmpt.encode_images(loaded, images, QUESTION)))
    new, scores = model.generate(4, return_scores=True, **batch)
    new_loaded, scores_loaded = loaded.generate(4, return_scores=True, **batch)
    assert torch.equal(new, new_loaded) and torch.equal(scores, scores_loaded)
    assert vlmpt.answer(loaded, images, QUESTION) == vlmpt.answer(model, images, QUESTION) == model.answer_scorer.decode(new)
    # on a backbone and processor the caller holds: the same model
    own = vlmpt.load_prompted(folder, tiny_backbone("qwen2_vl", 3, initializer_range=0.3), tiny_processor("qwen2_vl"))
    assert torch.equal(own(**batch), model(**batch))
    # an image file, by path
    images[0].save(tmp_path / "a.png")
    assert vlmpt.answer(loaded, [tmp_path / "a.png"], QUESTION) == vlmpt.answer(loaded, images[:1], QUESTION)


def test_a_loaded_classifier_gives_the_class_probabilities_of_the_trained_one(tmp_path):
    model, folder = trained(tmp_path, *CLASSIFY)
    loaded = vlmpt.load_prompted(folder)
    assert loaded.answer_scorer.class_names == ["red", "green", "blue", "yellow", "black", "white"]
    images = synthetic_rows(2, seed=1)["image"]
    probs = vlmpt.classify(loaded, images, QUESTION)
    assert torch.equal(probs, vlmpt.classify(model, images, QUESTION))
    torch.testing.assert_close(probs.sum(-1), torch.ones(2))
    with pytest.raises(UserError, match=r"answer\(\) writes answers of a generate task; this prompt classifies"):
        vlmpt.answer(loaded, images, QUESTION)


def test_inference_errors(tmp_path):
    plain = wrap(tiny_backbone("qwen2_vl"), vlmpt.VLMPromptTuningConfig(num_tokens=2))
    with pytest.raises(UserError, match=r"has no processor and data config to encode images with; load it with vlmpt.load_prompted"):
        vlmpt.encode_images(plain, synthetic_rows(1)["image"], QUESTION)
    folder = plain.save_prompts(tmp_path / "plain")
    with pytest.raises(PromptFileError, match=r"records no method_config .*promptcore.wrap\(backbone, config\).load_prompts\(folder\)"):
        vlmpt.load_prompted(folder)
    plain.record_in_prompt_files(method_config={"method": "vlm_prompt_tuning", "num_tokens": 2})
    folder = plain.save_prompts(tmp_path / "plain")
    with pytest.raises(PromptFileError, match=r"records no model section; pass the backbone and its processor"):
        vlmpt.load_prompted(folder)
    with pytest.raises(PromptFileError, match=r"records no task section .*vlmpt generate -c CONFIG --prompts"):
        vlmpt.load_prompted(folder, tiny_backbone("qwen2_vl"), tiny_processor("qwen2_vl"))
    model, folder = trained(tmp_path)
    with pytest.warns(UserWarning, match="weights fingerprint .* the same architecture with other frozen weights"):
        vlmpt.load_prompted(folder, tiny_backbone("qwen2_vl", 4, initializer_range=0.3))  # not the weights trained on
    with pytest.raises(UserError, match="no images given"):
        vlmpt.answer(model, [], QUESTION)
    with pytest.raises(UserError, match=r"data.template '\{question\}' cannot be filled"):
        vlmpt.answer(model, synthetic_rows(1)["image"])
    with pytest.raises(UserError, match=r"image .*nowhere.png does not exist"):
        vlmpt.answer(model, [tmp_path / "nowhere.png"], QUESTION)


def test_generate_without_a_config_reads_the_prompt_folder(tmp_path, capsys):
    run = tmp_path / "run"
    fast = ["--set", "train.max_steps=2", "--set", "data.num_samples=8", "--set", "data.num_eval_samples=4", "--set", "train.batch_size=4"]
    assert main(["train", "-c", SMOKE, "-o", str(run), *fast, "--set", "train.seed=5"]) == 0
    capsys.readouterr()
    image = tmp_path / "red.png"
    synthetic_rows(1)["image"][0].save(image)
    args = [str(image), "--question", QUESTION]
    assert main(["generate", "--prompts", str(run / "best"), *args]) == 0
    alone = capsys.readouterr().out
    with pytest.warns(UserWarning, match="built with train.seed 5; building it with that seed"):
        assert main(["generate", "-c", SMOKE, "--prompts", str(run / "best"), *args, *fast]) == 0
    assert capsys.readouterr().out == alone and alone.startswith(f"[1] {image}\n    ")


@pytest.mark.parametrize("argv, message", [
    (["generate", "x.png"], r"give the prompt folder with --prompts DIR"),
    (["generate", "--prompts", "p", "x.png", "--set", "train.lr=1"], r"--set changes a run config; give it with -c CONFIG"),
    (["generate", "--prompts", "/no/such/folder", "x.png"], "/no/such/folder"),
])
def test_generate_errors_exit_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("error: ") == 1 and re.search(message, err) and "Traceback" not in err, err
