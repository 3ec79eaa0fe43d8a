"""The trainer's settings from the command line (the toy recipe and runner of test_cli.py): callbacks and per-module rates from
YAML, resuming with a changed length, and every refusal as one ``error:`` line with exit status 2."""

import json
import math
from pathlib import Path

import pytest
import yaml


from test_cli import run_cli  # noqa: E402

from promptcore.cli import EXIT_ERROR  # noqa: E402


@pytest.fixture
def config_file(tmp_path) -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump({
        "train": {
            "epochs": 2, "batch_size": 8, "lr": 0.05, "progress_bar": False, "tensorboard": False, "log_every_steps": 5,
            "param_groups": {"head": {"lr": 0.01}}, "callbacks": ["step_timer", {"name": "early_stopping", "patience": 5}],
        },
    }))
    return path


def test_train_with_groups_and_callbacks_then_resume_longer(tmp_path, config_file, capsys):
    run = tmp_path / "run"
    code, out, err = run_cli(["train", "-c", config_file, "-o", run], capsys)
    assert code == 0, err
    assert json.loads(out)["step"] == 10 and json.loads(out)["stopped"] is None
    first = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # Step 5 of a 10-step cosine, each group at its own base rate.
    assert first[0]["step"] == 5 and first[0]["lr/prompts"] == pytest.approx(0.05 * 0.5 * (1 + math.cos(math.pi * 4 / 10)))
    assert first[0]["lr/head"] == pytest.approx(first[0]["lr/prompts"] / 5)
    assert len((run / "step_times.jsonl").read_text().splitlines()) == 10

    code, out, err = run_cli(["train", "--resume", run, "--set", "train.epochs=3"], capsys)
    assert code == 0, err
    assert json.loads(out)["step"] == 15
    assert "with a changed config (train.epochs 2 -> 3)" in err
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == 3
    assert yaml.safe_load((run / "config.original.yaml").read_text())["train"]["epochs"] == 2
    assert len((run / "step_times.jsonl").read_text().splitlines()) == 15


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lr=nan", "train.lr: must be a positive finite number, got nan"),
        ("train.param_groups={head: {lr: .inf}}", "train.param_groups.head.lr: must be a positive finite number, got inf"),
        ("train.callbacks=[early_stoping]", "train.callbacks[0]: unknown callback 'early_stoping'. Did you mean 'early_stopping'?"),
        ("train.param_groups={heads: {lr: 0.1}}", "train.param_groups.heads: ToyPrompted has no trainable module 'heads'. Did you mean 'head'? Its trainable modules are prompts, head"),
        ("train.metric=f1", "metric: 'f1' is not among the eval metrics of ToyPrompted (loss, accuracy); set train.metric to one of them"),
        ("train.warmup_type=constant", "train.warmup_lr: required"),
    ],
)
def test_bad_train_settings_print_one_line_and_leave_no_run_directory(tmp_path, config_file, capsys, override, message):
    code, out, err = run_cli(["train", "-c", config_file, "-o", tmp_path / "run", "--set", override, "--set", "train.warmup_epochs=1"], capsys)
    assert code == EXIT_ERROR and out == ""
    assert err.startswith("error: ") and message in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_resume_refusals_are_one_line(tmp_path, config_file, capsys):
    run = tmp_path / "run"
    assert run_cli(["train", "-c", config_file, "-o", run, "--set", "train.max_steps=3"], capsys)[0] == 0
    code, _, err = run_cli(["train", "--resume", run, "--set", "train.seed=4"], capsys)
    assert code == EXIT_ERROR and "the data order would differ (seed: run has 0, now 4)" in err and "Traceback" not in err
    code, _, err = run_cli(["train", "--resume", run, "--set", "train.optimizer=sgd"], capsys)
    assert code == EXIT_ERROR and "optimizer: run has 'adamw', now 'sgd'" in err
