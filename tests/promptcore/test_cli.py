"""The shared CLI (promptcore.cli.main) driven by a toy recipe: train, resume, eval, package verbs, clean errors."""

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml


from toy_prompted import ToyPrompted, toy_data  # noqa: E402

from promptcore import TrainConfig  # noqa: E402
from promptcore.errors import UserError  # noqa: E402
from promptcore.cli import EXIT_ERROR, Command, add_config_args, default_run_dir, load_run_config, main, register_command  # noqa: E402
from promptcore.recipe import DataBundle  # noqa: E402


@dataclass
class ToyModelConfig:
    dim: int = 16
    num_tokens: int = 3
    num_classes: int = 4
    backbone: str = "toy-mlp"


@dataclass
class ToyDataConfig:
    num_samples: int = 40
    eval_samples: int = 12
    num_classes: int = 4


@dataclass
class ToyRunConfig:
    model: ToyModelConfig = field(default_factory=ToyModelConfig)
    data: ToyDataConfig = field(default_factory=ToyDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


class ToyRecipe:
    prog = "toypt"
    config_class = ToyRunConfig

    def build_model(self, cfg: ToyRunConfig) -> ToyPrompted:
        if cfg.model.backbone == "bug":
            raise ValueError("an internal inconsistency")  # a bug, not bad input: it must keep its traceback
        if cfg.model.backbone != "toy-mlp":
            raise UserError(f"unknown backbone {cfg.model.backbone!r}; known: toy-mlp")
        return ToyPrompted(dim=cfg.model.dim, num_classes=cfg.model.num_classes, num_tokens=cfg.model.num_tokens)

    def build_data(self, cfg: ToyRunConfig, model: ToyPrompted) -> DataBundle:
        return DataBundle(
            train=toy_data(cfg.data.num_samples, cfg.data.num_classes),
            eval=toy_data(cfg.data.eval_samples, cfg.data.num_classes, split="validation"),
        )



RECIPE = ToyRecipe()
register_command(Command(
    prog="toypt", name="describe", help="print the resolved config", configure=add_config_args,
    run=lambda args: print(json.dumps({"lr": load_run_config(RECIPE, args).train.lr})) or 3,
))


@pytest.fixture
def config_file(tmp_path) -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"dim": 16},
        "train": {"epochs": 2, "batch_size": 8, "lr": 0.05, "progress_bar": False, "tensorboard": False, "log_every_steps": 2},
    }))
    return path


def run_cli(argv, capsys) -> tuple[int, str, str]:
    code = main(RECIPE, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_then_eval_the_best_prompts(tmp_path, config_file, capsys):
    run = tmp_path / "run"
    code, out, err = run_cli(["train", "-c", config_file, "-o", run, "--set", "train.epochs=1", "--set", "train.seed=3"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["step"] == 5 and result["run_dir"] == str(run)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 1 and saved["train"]["seed"] == 3 and saved["model"]["dim"] == 16

    # The run's resolved config rebuilds the same (seeded, random) backbone the prompts were trained on.
    code, out, err = run_cli(["eval", "-c", run / "config.yaml", "--prompts", run / "best"], capsys)
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics["count"] == 12
    assert metrics["accuracy"] == result["best"]["value"]  # the same prompts on the same eval split


@pytest.mark.parametrize("engine", ["fsdp", "ddp", "deepspeed"])
def test_the_config_of_a_sharded_run_evaluates_in_one_process(tmp_path, config_file, capsys, engine):
    run = tmp_path / "run"
    assert run_cli(["train", "-c", config_file, "-o", run, "--set", "train.epochs=1"], capsys)[0] == 0
    # The config.yaml a run launched with several processes saves (train.distributed set), read outside a launcher.
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved["train"]["distributed"] = engine
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    code, out, err = run_cli(["eval", "-c", run / "config.yaml", "--prompts", run / "best"], capsys)
    assert code == 0, err
    assert json.loads(out)["count"] == 12
    assert err.splitlines() == [f"train.distributed: {engine} outside a launcher means one process: evaluating with the plain engine"]
    # Training in one process with an engine for several stays refused: it would not be the run asked for.
    code, _, err = run_cli(["train", "-c", run / "config.yaml", "-o", tmp_path / "again"], capsys)
    assert code == EXIT_ERROR and f"train.distributed: {engine} needs several processes, this run has 1" in err


def test_existing_run_refused_then_overwritten_and_resume_reads_the_run_config(tmp_path, config_file, capsys):
    run = tmp_path / "run"
    assert run_cli(["train", "-c", config_file, "-o", run, "--set", "train.max_steps=3"], capsys)[0] == 0
    code, out, err = run_cli(["train", "-c", config_file, "-o", run], capsys)
    assert code == EXIT_ERROR and out == ""
    assert err.startswith(f"error: run directory '{run}' already holds a run") and "--overwrite" in err
    assert "Traceback" not in err

    # --resume continues with the run's own config.yaml (max_steps=3 there): a finished run stays finished.
    code, out, err = run_cli(["train", "--resume", run], capsys)
    assert code == 0, err
    assert json.loads(out)["step"] == 3
    code, _, err = run_cli(["train", "--resume", run, "-c", config_file], capsys)
    assert code == EXIT_ERROR and "--resume reads the config saved in" in err and "drop -c" in err

    code, out, err = run_cli(["train", "-c", config_file, "-o", run, "--overwrite", "--set", "train.epochs=1"], capsys)
    assert code == 0, err
    assert json.loads(out)["step"] == 5


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "-c", "{cfg}", "-o", "{tmp}/r", "--set", "train.lrr=0.1"], "train.lrr: unknown key for TrainConfig. Did you mean 'lr'?"),
        (["train", "-c", "{cfg}", "-o", "{tmp}/r", "--set", "train.epochs=zero"], "train.epochs: expected an integer, found str 'zero'"),
        (["train", "-c", "{tmp}/missing.yaml"], "config file '{tmp}/missing.yaml' does not exist"),
        (["train", "-o", "{tmp}/r"], "no config given: pass -c CONFIG"),
        (["train", "--resume", "{tmp}/nothing"], "cannot resume: {tmp}/nothing/config.yaml does not exist"),
        (["eval", "-c", "{cfg}", "--prompts", "{tmp}/nope"], "prompt folder '{tmp}/nope' does not exist"),
        (["eval", "-c", "{cfg}", "--prompts", "{tmp}", "--set", "model.backbone=big"], "unknown backbone 'big'; known: toy-mlp"),
        (["train", "-c", "{cfg}", "-o", "{tmp}/r", "--set", "data.num_classes=6"], "label 5 is out of range for a model with 4 classes"),
    ],
)
def test_known_errors_print_one_clean_line_and_exit_2(tmp_path, config_file, capsys, argv, message):
    argv = [a.format(cfg=config_file, tmp=tmp_path) for a in argv]
    code, out, err = run_cli(argv, capsys)
    assert code == EXIT_ERROR
    assert err.startswith("error: ") and message.format(tmp=tmp_path) in err, err
    assert "Traceback" not in err


def test_a_bug_is_not_mistaken_for_bad_input_and_keeps_its_traceback(config_file, capsys):
    # Only UserError (and its subclasses) means bad input; a ValueError from anywhere else is a bug.
    with pytest.raises(ValueError, match="an internal inconsistency"):
        main(RECIPE, ["eval", "-c", str(config_file), "--set", "model.backbone=bug"])


def test_traceback_flag_reraises(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        main(RECIPE, ["--traceback", "train", "-c", str(tmp_path / "missing.yaml")])


def test_package_verbs_are_added_and_return_their_status(config_file, capsys):
    code, out, _ = run_cli(["describe", "-c", config_file, "--set", "train.lr=0.25"], capsys)
    assert code == 3 and json.loads(out) == {"lr": 0.25}


def test_runs_started_within_one_second_get_their_own_default_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("promptcore.cli.time.strftime", lambda fmt: "20261207-141338")
    recipe = type("R", (), {"prog": "vpt"})()
    first = default_run_dir(recipe, "configs/smoke/vpt_tiny.yaml")
    assert first == Path("runs/vpt-vpt_tiny-20261207-141338")
    first.mkdir(parents=True)
    second = default_run_dir(recipe, "configs/smoke/vpt_tiny.yaml")
    assert second == Path("runs/vpt-vpt_tiny-20261207-141338-2")
    second.mkdir()
    assert default_run_dir(recipe, "configs/smoke/vpt_tiny.yaml").name.endswith("-3")
