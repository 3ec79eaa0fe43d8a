"""Resume: a run killed with SIGKILL mid-epoch, or stopped with Ctrl-C, and resumed ends bitwise equal (prompts,
best prompts, metrics.jsonl) to a run that was never interrupted. The toy model has prompt dropout, so the RNG
state must be restored exactly for this to hold."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPTS = Path(__file__).parent / "scripts"

from toy_prompted import RESUME_TRAIN, LrRecorder, SigintAt, resume_run_args, toy_model  # noqa: E402

from promptcore import Trainer, TrainConfig  # noqa: E402
from promptcore.runs import RunDirError  # noqa: E402
from promptcore.trainer import TrainingInterrupted  # noqa: E402

TOTAL_STEPS = 15


def run_in_process(run_dir: Path, resume: bool = False) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocess runs, so float results can be compared bitwise
    try:
        train, evaluation = resume_run_args()
        return Trainer(toy_model(), TrainConfig(**RESUME_TRAIN), train, evaluation, run_dir=run_dir, resume=resume).fit()
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    run_in_process(run_dir)
    return run_dir


def start_training(run_dir: Path, pause_at_step: int) -> subprocess.Popen:
    """Starts the run in a subprocess; its training step ``pause_at_step`` sleeps, so the test can interrupt it there."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(SCRIPTS / "train_toy.py"), str(run_dir), "--pause-at-step", str(pause_at_step), "--pause", "3"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def checkpoint_step(run_dir: Path) -> int:
    """Step of the run's training state (-1 when there is none yet or it is being replaced)."""
    try:
        return json.loads((run_dir / "state/trainer_state.json").read_text())["progress"]["step"]
    except (FileNotFoundError, json.JSONDecodeError):
        return -1


def wait_for_checkpoint(proc: subprocess.Popen, run_dir: Path, min_step: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        step = checkpoint_step(run_dir)
        if step >= min_step:
            return step
        if proc.poll() is not None:
            pytest.fail(f"training exited early ({proc.returncode}): {proc.stderr.read()}")
        time.sleep(0.01)
    proc.kill()
    pytest.fail(f"no checkpoint at step >= {min_step} within {timeout} s")


def assert_same_run(run_dir: Path, reference: Path) -> None:
    for folder in ("last", "best"):
        ours, theirs = load_file(run_dir / folder / "prompts.safetensors"), load_file(reference / folder / "prompts.safetensors")
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert torch.equal(ours[key], theirs[key]), f"{folder}/{key} differs from the uninterrupted run"
    assert (run_dir / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()
    ours, theirs = (json.loads((d / "state/trainer_state.json").read_text()) for d in (run_dir, reference))
    assert ours["progress"] == theirs["progress"] and ours["rng"] == theirs["rng"]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted_run(tmp_path, reference):
    run_dir = tmp_path / "run"
    # Step 6 is the first mid-epoch checkpoint of epoch 1 (5 steps per epoch); the kill strikes in step 7.
    proc = start_training(run_dir, pause_at_step=7)
    wait_for_checkpoint(proc, run_dir, min_step=6)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert checkpoint_step(run_dir) == 6
    killed_lines = len((run_dir / "metrics.jsonl").read_text().splitlines())

    result = run_in_process(run_dir, resume=True)
    assert result["step"] == TOTAL_STEPS
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) > killed_lines
    assert_same_run(run_dir, reference)


@pytest.mark.slow
def test_ctrl_c_saves_last_and_state_then_resume_equals_uninterrupted_run(tmp_path, reference):
    run_dir = tmp_path / "run"
    proc = start_training(run_dir, pause_at_step=7)
    wait_for_checkpoint(proc, run_dir, min_step=6)
    os.kill(proc.pid, signal.SIGINT)  # in step 7: the trainer finishes it, saves and exits
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "training interrupted at step 7: last/ and the training state were saved" in stderr
    # Step 7 has no periodic checkpoint (every 2 steps): the state and last/ were written on the interruption.
    assert checkpoint_step(run_dir) == 7
    assert json.loads((run_dir / "last/prompt_config.json").read_text())["step"] == 7

    result = run_in_process(run_dir, resume=True)
    assert result["step"] == TOTAL_STEPS
    assert_same_run(run_dir, reference)


def test_resuming_a_finished_run_changes_nothing(tmp_path, reference):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    result = run_in_process(run_dir, resume=True)
    assert result["step"] == TOTAL_STEPS and result["eval"]["count"] == 12
    assert_same_run(run_dir, reference)


# ----- resuming with a changed config ------------------------------------------------------------------------------
def small(**kw) -> TrainConfig:
    return TrainConfig(**{**RESUME_TRAIN, **kw})


def test_resume_with_more_epochs_recomputes_the_schedule_and_records_the_config(tmp_path, capsys):
    run = tmp_path / "run"
    train, evaluation = resume_run_args()
    Trainer(toy_model(), small(epochs=2, warmup_steps=2), train, evaluation, run_dir=run).fit()
    original = (run / "config.yaml").read_text()
    recorder = LrRecorder()
    trainer = Trainer(toy_model(), small(epochs=4, warmup_steps=2), train, evaluation, run_dir=run, resume=True, callbacks=[recorder])
    err = capsys.readouterr().err
    assert "resume " in err and "at step 10 with a changed config (train.epochs 2 -> 4)" in err
    assert "cosine over 20 steps" in err and "continues from step 10" in err
    result = trainer.fit()
    assert result["step"] == 20 and result["epoch"] == 3 and result["epochs_done"] == 4
    # Steps 11-20 follow the schedule of the 20-step run from where it stands, with no restart of the warmup.
    assert sorted(recorder.lrs) == list(range(11, 21))
    for step, lrs in recorder.lrs.items():
        assert lrs["all"] == trainer.schedule.lr(step - 1, 0.05)
    assert trainer.schedule.total_steps == 20 and recorder.lrs[11]["all"] == pytest.approx(0.05 * 0.5 * (1 + math.cos(math.pi * 8 / 18)))
    assert (run / "config.original.yaml").read_text() == original
    assert "epochs: 4" in (run / "config.yaml").read_text() and "epochs: 2" in original
    assert json.loads((run / "state/trainer_state.json").read_text())["train"]["epochs"] == 4

    # A shorter run: the resumed run is past the new end, so it only finishes (eval, checkpoint); the first
    # config stays recorded.
    result = Trainer(toy_model(), small(epochs=1, warmup_steps=2), train, evaluation, run_dir=run, resume=True).fit()
    assert result["step"] == 20
    assert (run / "config.original.yaml").read_text() == original and "epochs: 1" in (run / "config.yaml").read_text()


def test_resume_mid_run_with_fewer_epochs_stops_at_the_new_end(tmp_path):
    run = tmp_path / "run"
    train, evaluation = resume_run_args()
    with pytest.raises(TrainingInterrupted):
        Trainer(toy_model(), small(), train, evaluation, run_dir=run, callbacks=[SigintAt(6)]).fit()
    result = Trainer(toy_model(), small(epochs=2), train, evaluation, run_dir=run, resume=True).fit()
    assert result["step"] == 10 and result["epoch"] == 1 and result["epochs_done"] == 2


@pytest.mark.parametrize(
    "change, message",
    [
        ({"seed": 1}, r"data order would differ \(seed: run has 0, now 1\)"),
        ({"grad_accum_steps": 2}, r"data order would differ \(grad_accum_steps: run has 1, now 2\)"),
        ({"optimizer": "sgd"}, r"cannot resume .*: optimizer: run has 'adamw', now 'sgd'; the run's optimizer state and best/ belong to its settings"),
        ({"metric": "loss"}, r"metric: run has 'accuracy', now 'loss'"),
        ({"param_groups": {"head": {"lr": 0.01}}}, r"optimizer groups \(train.param_groups\): run has \['all'\], now \['prompts', 'head'\]"),
    ],
)
def test_resume_refuses_what_would_change_the_data_order_or_the_optimizer_state(tmp_path, change, message):
    run = tmp_path / "run"
    train, evaluation = resume_run_args()
    Trainer(toy_model(), small(epochs=1), train, evaluation, run_dir=run).fit()
    with pytest.raises(RunDirError, match=message):
        Trainer(toy_model(), small(epochs=1, **change), train, evaluation, run_dir=run, resume=True)


def test_resume_refuses_prompts_of_another_shape_and_a_backbone_whose_weights_changed(tmp_path):
    run = tmp_path / "run"
    train, evaluation = resume_run_args()
    Trainer(toy_model(), small(epochs=1), train, evaluation, run_dir=run).fit()
    with pytest.raises(RunDirError, match=r"prompts the config builds now do not fit the run's \(prompts.weight has shape \(3, 16\) in the run, \(5, 16\) now\)"):
        Trainer(toy_model(num_tokens=5), small(epochs=2), train, evaluation, run_dir=run, resume=True)
    # Same shapes, other frozen weights (a random backbone built with another seed): the fingerprints differ.
    with pytest.raises(RunDirError, match=r"trained on a backbone with weights fingerprint [0-9a-f]{16}, the model built now \(toy-mlp\) has [0-9a-f]{16}"):
        Trainer(toy_model(seed=1), small(epochs=2), train, evaluation, run_dir=run, resume=True)
    assert Trainer(toy_model(), small(epochs=2), train, evaluation, run_dir=run, resume=True).fit()["epochs_done"] == 2


def test_param_groups_ctrl_c_then_resume_equals_uninterrupted_run(tmp_path):
    groups = dict(param_groups={"head": {"lr": 0.01, "weight_decay": 0.1}}, weight_decay=0.01, optimizer="adafactor_t5x", scheduler="linear", warmup_steps=3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train, evaluation = resume_run_args()
        Trainer(toy_model(), small(**groups), train, evaluation, run_dir=tmp_path / "ref").fit()
        run = tmp_path / "run"
        with pytest.raises(TrainingInterrupted, match="interrupted at step 8"):
            Trainer(toy_model(), small(**groups), train, evaluation, run_dir=run, callbacks=[SigintAt(7)]).fit()
        Trainer(toy_model(), small(**groups), train, evaluation, run_dir=run, resume=True).fit()
    finally:
        torch.set_num_threads(threads)
    assert_same_run(run, tmp_path / "ref")
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"lr/prompts", "lr/head"} <= set(lines[0])
