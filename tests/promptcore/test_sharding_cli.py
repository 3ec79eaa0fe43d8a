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
SCRIPT = Path(__file__).parent / "scripts" / "cli_killed_at.py"
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
VPT = [str(ROOT / "configs/smoke/vpt_tiny.yaml"), "--set", "train.epochs=2", "--set", "train.save_every_steps=4"]
TEXT = [str(ROOT / "configs/smoke/textpt_tiny.yaml"), "--set", "train.epochs=1"]
SMOKE = {"vpt": VPT, "textpt": TEXT}

pytestmark = pytest.mark.slow  # every test starts processes


def launch(tool: str, argv: list[str], out: Path, nproc: int = 2, kill_at: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("KILL_AT_STEP", None)
    if kill_at is not None:
        env["KILL_AT_STEP"] = str(kill_at)
    cmd = [TORCHRUN, "--standalone", "--nproc_per_node", str(nproc), str(SCRIPT), tool, "train", "-c", *argv, "-o", str(out)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


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
def fsdp_runs(tmp_path_factory) -> dict[str, Path]:
    runs = {}
    for tool in ("vpt", "textpt"):
        out = tmp_path_factory.mktemp(f"{tool}_fsdp") / "run"
        proc = launch(tool, [*SMOKE[tool], "--set", "train.distributed=fsdp"], out)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[tool] = out
    return runs


@pytest.mark.parametrize("tool", ["vpt", "textpt"])
def test_fsdp_under_torchrun_equals_one_process(fsdp_runs, tool, tmp_path):
    sharded = prompts(fsdp_runs[tool])
    assert_close_prompts(sharded, one_process(tool, tmp_path / "single"), 1e-4)
    config = json.loads((fsdp_runs[tool] / "last" / "prompt_config.json").read_text())
    # The prompt file is the same few-KB file as a 1-process run's: the prompts only, no frozen weight.
    assert (fsdp_runs[tool] / "last" / "prompts.safetensors").stat().st_size < 64 * 1024
    assert config["method"]
    # The backbone fingerprint, taken before sharding, is the 1-process run's, in last/ and best/.
    single = json.loads((tmp_path / "single" / "last" / "prompt_config.json").read_text())["backbone_fingerprint"]
    assert isinstance(single, str) and len(single) == 16
    for folder in ("last", "best"):
        assert json.loads((fsdp_runs[tool] / folder / "prompt_config.json").read_text())["backbone_fingerprint"] == single


def test_ddp_is_the_default_with_several_processes(fsdp_runs, tmp_path):
    proc = launch("vpt", VPT, tmp_path / "ddp")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_close_prompts(prompts(tmp_path / "ddp"), prompts(fsdp_runs["vpt"]), 1e-5)


def test_fsdp_run_killed_with_sigkill_resumes_to_the_uninterrupted_prompts(fsdp_runs, tmp_path, capsys):
    run = tmp_path / "run"
    # 12 steps; a checkpoint every 4 and at each epoch's end (step 6); killed at the end of step 7.
    killed = launch("vpt", [*VPT, "--set", "train.distributed=fsdp"], run, kill_at=7)
    assert killed.returncode != 0
    state = json.loads((run / "state" / "trainer_state.json").read_text())
    assert state["progress"]["step"] == 6 and state["world_size"] == 2
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("KILL_AT_STEP", None)
    resumed = subprocess.run(
        [TORCHRUN, "--standalone", "--nproc_per_node", "2", str(SCRIPT), "vpt", "train", "--resume", str(run)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ours, theirs = prompts(run), prompts(fsdp_runs["vpt"])
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), f"{key} differs from the uninterrupted run"
    assert (run / "metrics.jsonl").read_text() == (fsdp_runs["vpt"] / "metrics.jsonl").read_text()

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


def test_two_nodes_over_loopback_equal_two_processes_on_one_node(fsdp_runs, tmp_path):
    port = free_port()
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("KILL_AT_STEP", None)
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
    assert_close_prompts(prompts(out), prompts(fsdp_runs["vpt"]), 1e-6)


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


def test_fsdp_with_gradient_checkpointing_gives_the_same_prompts(fsdp_runs, tmp_path):
    # The fast VPT-deep path runs each block through its call under activation checkpointing: FSDP gathers the
    # block's weights again for the recomputation.
    proc = launch("vpt", [*VPT, "--set", "train.distributed=fsdp", "--set", "train.gradient_checkpointing=true"], tmp_path / "gc")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_close_prompts(prompts(tmp_path / "gc"), prompts(fsdp_runs["vpt"]), 1e-6)
