"""``vpt train`` / ``textpt train`` under torchrun on CPU (gloo): FSDP2 (``train.distributed: fsdp``) and DDP
(``auto``) give the prompts of a 1-process run with the same global batch, a run killed with SIGKILL resumes to the
same prompts as an uninterrupted one, two launchers of one process each (``--nnodes 2`` over loopback) equal two
processes on one node, and settings that cannot work are refused in one line.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).parent / "scripts" / "cli_runs.py"
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
VPT = [str(ROOT / "configs/smoke/vpt_tiny.yaml"), "--set", "train.epochs=2", "--set", "train.save_every_steps=4"]
TEXT = [str(ROOT / "configs/smoke/textpt_tiny.yaml"), "--set", "train.epochs=1"]
SMOKE = {"vpt": VPT, "textpt": TEXT}
FSDP = ["--set", "train.distributed=fsdp"]

pytestmark = pytest.mark.slow  # every test starts processes


def train(tool: str, argv: list[str], out: Path) -> list[str]:
    return [tool, "train", "-c", *argv, "-o", str(out)]


def launch(*commands: list[str], **env: str) -> subprocess.CompletedProcess:
    """One torchrun launch of two processes running ``commands`` in order (scripts/cli_runs.py), with ``env`` added
    to this process's environment (and none of the script's variables that ``env`` does not set)."""
    full = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for name in ("KILL_AT_STEP", "HELD_DIR"):
        full.pop(name, None)
    joined = [arg for command in commands for arg in ("--then", *command)][1:]
    cmd = [TORCHRUN, "--standalone", "--nproc_per_node", "2", str(SCRIPT), *joined]
    return subprocess.run(cmd, env={**full, **env}, capture_output=True, text=True, timeout=600)


def run_here(tool: str, argv: list[str]) -> int:
    """The command in this process: a 1-process run, or one refused before training, needs no launch of its own."""
    return importlib.import_module(f"{tool}.cli").main(argv)


def prompts(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "last" / "prompts.safetensors")


def assert_close_prompts(a: dict, b: dict, tol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=tol, atol=tol, msg=lambda m, k=key: f"{k}: {m}")


def one_process(tool: str, out: Path) -> dict[str, torch.Tensor]:
    """The 1-process run with the global batch of 2 processes (twice the per-process batch)."""
    assert run_here(tool, ["train", "-c", *SMOKE[tool], "--set", "train.batch_size=64", "-o", str(out)]) == 0
    return prompts(out)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path | dict]:
    """The run folders of two launches. First a vpt FSDP run of 12 steps (a checkpoint every 4 and at each epoch's end,
    step 6) killed with SIGKILL at the end of step 7 (``killed_state``: its training state then). Then one launch runs
    in order: vpt and textpt under FSDP, vpt under the default engine, vpt under FSDP with gradient checkpointing, and
    the resume of the killed run (each command as its own launch would run it: scripts/cli_runs.py)."""
    root = tmp_path_factory.mktemp("launched")
    out = {name: root / name for name in ("vpt", "textpt", "ddp", "gc", "killed")}
    killed = launch(train("vpt", [*VPT, *FSDP], out["killed"]), KILL_AT_STEP="7")
    assert killed.returncode != 0
    state = json.loads((out["killed"] / "state" / "trainer_state.json").read_text())
    proc = launch(
        train("vpt", [*VPT, *FSDP], out["vpt"]),
        train("textpt", [*TEXT, *FSDP], out["textpt"]),
        train("vpt", VPT, out["ddp"]),
        train("vpt", [*VPT, *FSDP, "--set", "train.gradient_checkpointing=true"], out["gc"]),
        ["vpt", "train", "--resume", str(out["killed"])],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {**out, "killed_state": state}


@pytest.mark.parametrize("tool", ["vpt", "textpt"])
def test_fsdp_under_torchrun_equals_one_process(runs, tool, tmp_path):
    sharded = prompts(runs[tool])
    assert_close_prompts(sharded, one_process(tool, tmp_path / "single"), 1e-4)
    config = json.loads((runs[tool] / "last" / "prompt_config.json").read_text())
    # The prompt file is the same few-KB file as a 1-process run's: the prompts only, no frozen weight.
    assert (runs[tool] / "last" / "prompts.safetensors").stat().st_size < 64 * 1024
    assert config["method"]
    # The backbone fingerprint, taken before sharding, is the 1-process run's, in last/ and best/.
    single = json.loads((tmp_path / "single" / "last" / "prompt_config.json").read_text())["backbone_fingerprint"]
    assert isinstance(single, str) and len(single) == 16
    for folder in ("last", "best"):
        assert json.loads((runs[tool] / folder / "prompt_config.json").read_text())["backbone_fingerprint"] == single


def test_ddp_is_the_default_with_several_processes(runs):
    assert_close_prompts(prompts(runs["ddp"]), prompts(runs["vpt"]), 1e-5)


def test_fsdp_run_killed_with_sigkill_resumes_to_the_uninterrupted_prompts(runs, capsys):
    assert runs["killed_state"]["progress"]["step"] == 6 and runs["killed_state"]["world_size"] == 2
    run = runs["killed"]
    ours, theirs = prompts(run), prompts(runs["vpt"])
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), f"{key} differs from the uninterrupted run"
    assert (run / "metrics.jsonl").read_text() == (runs["vpt"] / "metrics.jsonl").read_text()

    # The same run resumed with another number of processes is refused, naming both numbers.
    capsys.readouterr()
    assert run_here("vpt", ["train", "--resume", str(run)]) == 2
    assert "train.distributed: fsdp needs several processes, this run has 1" in capsys.readouterr().err
    assert run_here("vpt", ["train", "--resume", str(run), "--set", "train.distributed=auto"]) == 2
    assert "world_size: run has 2, now 1" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_over_loopback_equal_two_processes_on_one_node(runs, tmp_path):
    port = free_port()
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("KILL_AT_STEP", None)
    env.pop("HELD_DIR", None)
    procs = []
    for node in (0, 1):
        cmd = [
            TORCHRUN, "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(node),
            "--master_addr", "127.0.0.1", "--master_port", str(port),
            str(SCRIPT), "vpt", "train", "-c", *VPT, "--set", "train.distributed=fsdp", "-o", str(out),
        ]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    assert_close_prompts(prompts(out), prompts(runs["vpt"]), 1e-6)


@pytest.mark.parametrize(
    "setting, message",
    [
        (["--set", "train.distributed=fsdp"], "train.distributed: fsdp needs several processes, this run has 1"),
        (["--set", "train.fsdp.reshard_after_forward=false"], "fsdp: set, but train.distributed is 'auto'"),
    ],
)
def test_settings_that_cannot_work_are_refused_in_one_line(tmp_path, setting, message, capsys):
    assert run_here("vpt", ["train", "-c", *VPT, *setting, "-o", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_fsdp_with_gradient_checkpointing_gives_the_same_prompts(runs):
    # The fast VPT-deep path runs each block through its call under activation checkpointing: FSDP gathers the
    # block's weights again for the recomputation.
    assert_close_prompts(prompts(runs["gc"]), prompts(runs["vpt"]), 1e-6)
