"""``textpt train | eval | generate`` end to end on the smoke config, one run per task type (a few steps each)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from promptcore.config import load_config
from promptcore.methods import method_names
from textpt.config import SoftPromptConfig
from textpt.cli import TextRecipe, main
from textpt.run_config import TextRunConfig

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "smoke" / "textpt_tiny.yaml")
FAST = ["--set", "train.max_steps=3", "--set", "data.num_samples=24", "--set", "data.num_eval_samples=8", "--set", "train.batch_size=8"]
TASKS = {
    "causal_lm": [],
    "seq_cls": ["--set", "model.task=seq_cls", "--set", "model.name=random:bert"],
    "seq2seq": ["--set", "model.task=seq2seq", "--set", "model.name=random:t5", "--set", "model.kwargs={d_model: 32, d_ff: 64, d_kv: 16, num_layers: 2, num_heads: 2}"],
}


def _json_out(capsys) -> dict:
    out = capsys.readouterr().out
    return json.loads(out[out.index("{"):])


def _probabilities(out: str) -> list[tuple[str, float]]:
    return [(m[1], float(m[2])) for m in re.finditer(r"^    (\S+)  ([0-9.]+)$", out, re.M)]


# every task with the smoke config's prompt tuning; prefix tuning on an encoder and an encoder-decoder
RUNS = [(task, []) for task in TASKS] + [(task, ["--set", "prompt.method=prefix"]) for task in ("seq_cls", "seq2seq")]


@pytest.mark.parametrize("task,method", RUNS, ids=[f"{t}-{'prefix' if m else 'prompt_tuning'}" for t, m in RUNS])
def test_train_eval_generate_for_each_task(task, method, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "-c", SMOKE, "-o", str(run), *FAST, *TASKS[task], *method]) == 0
    result = _json_out(capsys)
    assert result["step"] == 3
    assert (run / "best" / "prompts.safetensors").is_file()
    saved = load_config(TextRunConfig, run / "config.yaml")
    assert saved.model.task == task and saved.prompt.method == ("prefix" if method else "prompt_tuning")
    # the run records the resolved config: the synthetic data's class count, and its keywords as the verbalizer
    assert saved.prompt.num_classes == 2 and TextRecipe().resolve_config(saved) is saved
    assert saved.prompt.verbalizer == (None if task == "seq_cls" else [" excellent", " terrible"])

    assert main(["eval", "-c", SMOKE, "--prompts", str(run / "best"), *FAST, *TASKS[task], *method]) == 0
    metrics = _json_out(capsys)
    assert metrics["count"] > 0 and metrics["loss"] > 0
    if task != "seq2seq":
        assert 0 <= metrics["accuracy"] <= 1

    assert main(["generate", "-c", SMOKE, "--prompts", str(run / "best"), "a good movie", "a bad film", *FAST, *TASKS[task], *method]) == 0
    out = capsys.readouterr().out
    assert "[1] a good movie" in out and "[2] a bad film" in out
    probs = _probabilities(out)
    # verbalizer words (causal_lm, seq2seq) or the synthetic data's class names (seq_cls): the same keywords
    assert sorted(w for w, _ in probs) == ["excellent", "excellent", "terrible", "terrible"]
    for i in (0, 2):
        assert probs[i][1] >= probs[i + 1][1]  # sorted, most likely first
        assert probs[i][1] + probs[i + 1][1] == pytest.approx(1.0, abs=2e-4)


@pytest.mark.slow
def test_smoke_config_learns_well_above_chance(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "-c", SMOKE, "-o", str(run)]) == 0
    result = _json_out(capsys)
    assert result["eval"]["accuracy"] >= 0.65  # chance is 0.5; the full run reaches about 0.74


def test_causal_lm_generation_training_and_generate(tmp_path, capsys):
    rows = {"question": ["one plus one", "two plus two", "one plus two"] * 4, "answer": ["two", "four", "three"] * 4}
    pd.DataFrame(rows).to_csv(tmp_path / "qa.csv", index=False)
    data = [
        "--set", "data.source=csv", "--set", f"data.data_files={{train: {tmp_path / 'qa.csv'}, test: {tmp_path / 'qa.csv'}}}",
        "--set", "data.text_column=question", "--set", "data.target_column=answer", "--set", "data.label_column=null",
        "--set", "data.template='question : {question} answer :'", "--set", "train.max_steps=2", "--set", "train.batch_size=4",
    ]
    run = tmp_path / "run"
    assert main(["train", "-c", SMOKE, "-o", str(run), *data]) == 0
    assert "token_accuracy" in _json_out(capsys)["eval"]
    assert main(["generate", "-c", SMOKE, "--prompts", str(run / "best"), "one plus one", "--max-new-tokens", "3", *data]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "[1] one plus one"
    assert out[1].startswith("    ") and 1 <= len(out[1].split()) <= 3


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "-c", SMOKE, "--set", "data.templat=x"], r"data.templat: unknown key for TextDataConfig. Did you mean 'template'"),
        (["train", "-c", SMOKE, "--set", "model.task=seq_cls", "--set", "data.num_classes=3", "--set", "prompt.num_classes=2"],
         "prompt.num_classes: 2 does not match data.num_classes 3"),
        (["generate", "-c", SMOKE, "--prompts", "/no/such/folder", "text"], "/no/such/folder"),
        (["generate", "-c", SMOKE, "--prompts", "x", "text", "--max-new-tokens", "0"], "--max-new-tokens must be positive"),
        (["generate", "-c", SMOKE, "--prompts", "x", "text", "--task", "3"], "--task 3 is not a task of the prompt bank; give 0..0"),
        (["train", "-c", SMOKE, "--set", "data.template='{title}: {text}'", "--set", "train.max_steps=1"],
         "template names column 'title', which split 'train' does not have"),
    ],
)
def test_errors_exit_2_with_a_clear_message(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and re.search(message, err), err


def test_generate_with_prompts_of_another_model(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "-c", SMOKE, "-o", str(run), *FAST]) == 0
    capsys.readouterr()
    assert main(["generate", "-c", SMOKE, "--prompts", str(run / "best"), "text", "--set", "model.kwargs.hidden_size=48"]) == 2
    assert "prompt dim 32 does not match backbone width 48" in capsys.readouterr().err


@pytest.mark.slow
def test_python_dash_m_textpt():
    out = subprocess.run([sys.executable, "-m", "textpt", "generate", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "--max-new-tokens" in out.stdout


@pytest.mark.parametrize("path", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs" / "textpt").rglob("*.yaml")) + ["configs/smoke/textpt_tiny.yaml"])
def test_every_textpt_config_validates(path):
    cfg = load_config(TextRunConfig, ROOT / path)
    assert cfg.train.lr > 0 and cfg.prompt.method in method_names("text")
    assert cfg.prompt.num_tokens > 0 if isinstance(cfg.prompt, SoftPromptConfig) else cfg.prompt.method in ("linear_probe", "zero_shot")
