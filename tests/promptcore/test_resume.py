"""Resume: a run killed with SIGKILL mid-epoch, or stopped with Ctrl-C, and resumed ends bitwise equal (prompts,
best prompts, metrics.jsonl) to a run that was never interrupted. The toy model has prompt dropout, so the RNG
state must be restored exactly for this to hold."""

import json
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
sys.path.insert(0, str(SCRIPTS))

from toy_prompted import RESUME_TRAIN, resume_run_args, toy_model  # noqa: E402

from promptcore import Trainer, TrainConfig  # noqa: E402

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
