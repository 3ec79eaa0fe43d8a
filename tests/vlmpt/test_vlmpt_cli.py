"""``vlmpt train | eval | generate`` end to end on the smoke config (a few steps each)."""

import contextlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from promptcore import TrainConfig, Trainer, load_config, read_prompt_config
from vlmpt.cli import VLMRecipe, main
from vlmpt.peft_export import peft_generate_is_wrong
from vlmpt.inference import load_prompted
from vlmpt.run_config import VLMRunConfig
from vlmpt.synthetic import synthetic_rows

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "smoke" / "vlmpt_tiny.yaml")
FAST = ["--set", "train.max_steps=2", "--set", "data.num_samples=8", "--set", "data.num_eval_samples=4", "--set", "train.batch_size=4"]


def _json_out(capsys) -> dict:
    out = capsys.readouterr().out
    return json.loads(out[out.index("{"):])


def test_train_eval_generate(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "-c", SMOKE, "-o", str(run), *FAST]) == 0
    result = _json_out(capsys)
    assert result["step"] == 2 and (run / "best" / "prompts.safetensors").is_file()
    recorded = read_prompt_config(run / "best")
    assert recorded["program"] == "vlmpt" and recorded["model"]["name"] == "random:qwen2_vl" and recorded["inputs"]["template"] == "{question}"
    assert load_config(VLMRunConfig, run / "config.yaml").model.name == "random:qwen2_vl"

    assert main(["eval", "-c", SMOKE, "--prompts", str(run / "best"), *FAST]) == 0
    metrics = _json_out(capsys)
    assert metrics["count"] == 4 and metrics["loss"] > 0
    for key in ("exact_match", "token_f1"):
        assert 0 <= metrics[f"{key}_low"] <= metrics[key] <= metrics[f"{key}_high"] <= 1
    assert metrics["exact_match_high"] > 0  # an interval, not a point, on 4 rows
    assert metrics == result["eval"]  # the eval command rebuilds what training evaluated
    assert main(["eval", "--prompts", str(run / "best")]) == 0  # the model, data, task and seed the folder records
    assert _json_out(capsys) == metrics
    assert main(["eval", "--prompts", str(run / "best"), "--set", "data.num_eval_samples=2"]) == 0
    assert _json_out(capsys)["count"] == 2
    assert main(["export-peft", "--prompts", str(run / "best"), "-o", str(tmp_path / "adapter")]) == 2
    assert capsys.readouterr().err.startswith("error: PEFT export of a qwen2_vl prompt is refused: PEFT calls the model with inputs_embeds")
    again = load_prompted(run / "best").save_prompts(tmp_path / "again")  # a folder saved again keeps what eval reads
    assert VLMRecipe().config_from_prompts(str(again)) == VLMRecipe().config_from_prompts(str(run / "best"))
    older = tmp_path / "older"  # a folder from before prompt folders recorded the data section
    shutil.copytree(run / "best", older)
    meta = json.loads((older / "prompt_config.json").read_text())
    (older / "prompt_config.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "data"}))
    assert main(["eval", "--prompts", str(older)]) == 2
    assert re.search(r"^error: prompt folder .*older records no data section .* run 'vlmpt eval -c CONFIG --prompts", capsys.readouterr().err)

    image = tmp_path / "red.png"
    synthetic_rows(1)["image"][0].save(image)
    assert main(["generate", "-c", SMOKE, "--prompts", str(run / "best"), str(image), str(image), "--question", "what colour is it ?", *FAST]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"[1] {image}" and out[2] == f"[2] {image}" and out[1] == out[3] and out[1].startswith("    ")


def test_classify_by_class_words(tmp_path, capsys):
    run, classify = tmp_path / "run", ["--set", "task.type=classify", "--set", "data.label_column=label"]
    assert main(["train", "-c", SMOKE, "-o", str(run), *FAST, *classify]) == 0
    metrics = _json_out(capsys)["eval"]
    assert {"accuracy", "accuracy_low", "accuracy_high"} <= set(metrics) and "exact_match" not in metrics
    assert metrics["accuracy_low"] <= metrics["accuracy"] <= metrics["accuracy_high"]
    image = tmp_path / "red.png"
    synthetic_rows(1)["image"][0].save(image)
    assert main(["generate", "-c", SMOKE, "--prompts", str(run / "best"), str(image), "--question", "what colour is it ?", *FAST, *classify]) == 0
    lines = capsys.readouterr().out.splitlines()
    probs = {m[1]: float(m[2]) for m in (re.match(r"^    (\S+)  ([0-9.]+)$", line) for line in lines[1:]) if m}
    assert set(probs) == {"red", "green", "blue", "yellow", "black", "white"} and sum(probs.values()) == pytest.approx(1, abs=1e-3)


@pytest.mark.parametrize("model_type", ["llava", "qwen2_5_vl"])
def test_other_architectures_train(model_type, tmp_path, capsys):
    assert main(["train", "-c", SMOKE, "-o", str(tmp_path / "run"), *FAST, "--set", "train.max_steps=1", "--set", f"model.name=random:{model_type}"]) == 0
    assert _json_out(capsys)["step"] == 1
    if model_type == "llava":  # PEFT's prompt tuning is right on LLaVA (tests/vlmpt/test_vlm_peft_export.py)
        warns = peft_generate_is_wrong("llava")  # PEFT before 0.22
        with pytest.warns(UserWarning, match="PEFT's forward gives this prompt's logits, but its cached generate") if warns else contextlib.nullcontext():
            assert main(["export-peft", "--prompts", str(tmp_path / "run" / "last"), "-o", str(tmp_path / "adapter")]) == 0
        assert capsys.readouterr().out.strip() == str(tmp_path / "adapter")
        adapter = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
        assert (adapter["peft_type"], adapter["num_virtual_tokens"], adapter["base_model_name_or_path"]) == ("PROMPT_TUNING", 4, "random:llava")


def test_only_the_prompt_changes():
    recipe = VLMRecipe()
    cfg = load_config(VLMRunConfig, SMOKE, ["data.num_samples=8", "data.eval_split=null"])
    model = recipe.build_model(cfg)
    data = recipe.build_data(cfg, model)
    backbone = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    prompt = model.prompts.weight.detach().clone()
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["prompts.weight"]
    Trainer(model, TrainConfig(max_steps=2, batch_size=4, lr=0.1, progress_bar=False, tensorboard=False), data.train, None, data.collate_fn).fit()
    assert not torch.equal(model.prompts.weight, prompt)
    assert all(torch.equal(v, backbone[k]) for k, v in model.backbone.state_dict().items())


@pytest.mark.parametrize("argv, message", [
    (["train", "-c", SMOKE, "--set", "data.templat=x"], r"data.templat: unknown key for VLMDataConfig. Did you mean 'template'"),
    (["train", "-c", SMOKE, "--set", "model.name=random:qwen3_vl"], r"model.name: 'random:qwen3_vl': no tiny model of type 'qwen3_vl'"),
    (["train", "-c", SMOKE, "--set", "data.answer_column=reply"], r"split 'train' has no column 'reply'"),
    (["train", "-c", SMOKE, "--set", "task.max_new_tokens=0"], r"task.max_new_tokens: must be a positive number of tokens"),
    (["eval", "-c", SMOKE], r"--prompts: required"),
    (["eval"], r"give the prompt folder with --prompts DIR .* or a run config with -c CONFIG"),
    (["eval", "--prompts", "/no/such/folder"], "/no/such/folder"),
    (["export-peft", "-o", "adapter"], "give the prompt folder to export with --prompts DIR"),
    (["export-peft", "-c", SMOKE, "--prompts", "/no/such/folder", "-o", "adapter"], "/no/such/folder"),
    (["train", "-c", SMOKE, "--set", "task.type=classify"], r"data.label_column: task.type classify reads each row's class from a label column"),
    (["train", "-c", SMOKE, "--set", "task.class_names=[a, b]"], r"task.class_names: \['a', 'b'\] are the words of a classify task's classes"),
    (["generate", "-c", SMOKE, "--prompts", "/no/such/folder", "x.png"], "/no/such/folder"),
    (["generate", "-c", SMOKE, "--prompts", "x", "x.png", "--max-new-tokens", "0"], "--max-new-tokens must be positive"),
])
def test_errors_exit_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    # one error (a config's problems are listed under its error line, one per line)
    assert err.startswith("error: ") and err.count("error: ") == 1 and re.search(message, err), err
    assert "Traceback" not in err


@pytest.mark.slow
def test_python_dash_m_vlmpt():
    out = subprocess.run([sys.executable, "-m", "vlmpt", "generate", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("usage: vlmpt generate"), out.stderr
