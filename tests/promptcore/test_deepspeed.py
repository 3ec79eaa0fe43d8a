"""``vpt train`` / ``textpt train`` with ``train.distributed: deepspeed`` (DeepSpeed ZeRO-3 through Accelerate) under
torchrun on CPU processes (DeepSpeed's CPU accelerator, gloo): the prompts and the optimizer state equal a 1-process
run's with the same global batch, also after the vpt run was killed with SIGKILL and resumed; each process holds
half of the frozen weights (and of the prompts) between steps, with vpt on its fast VPT-deep path; the prompt files
are whole and load in one process.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest
import torch

pytest.importorskip("deepspeed", reason="train.distributed: deepspeed needs the prompttune[deepspeed] extra")
pytestmark = pytest.mark.slow

from promptcore import Trainer, TrainConfig, UserError  # noqa: E402
from promptcore.engines import DeepSpeedEngine  # noqa: E402
from test_sharding_cli import ROOT, TORCHRUN, assert_close_prompts, launch, prompts, run_here  # noqa: E402
from toy_prompted import toy_data, toy_model  # noqa: E402

# One epoch of 6 steps; the training state is also written every 2 steps, so a run killed at step 3 resumes at 2.
SMOKE = {
    "vpt": [str(ROOT / "configs/smoke/vpt_tiny.yaml"), "--set", "train.epochs=1", "--set", "train.save_every_steps=2"],
    "textpt": [str(ROOT / "configs/smoke/textpt_tiny.yaml"), "--set", "train.epochs=1"],
}
DEEPSPEED = ["--set", "train.distributed=deepspeed"]


# CPU processes on any machine: two processes cannot share one GPU under NCCL.
CPU = {"CUDA_VISIBLE_DEVICES": "", "DS_ACCELERATOR": "cpu"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Per tool, a folder with the 2-process deepspeed run, the held elements of each of its processes (``held/``)
    and the 1-process run with the same global batch (twice the per-process batch), in this process. The vpt run is
    killed with SIGKILL at the end of step 3; one launch then resumes it from its training state of step 2 and runs
    textpt."""
    root = tmp_path_factory.mktemp("deepspeed")
    out = {tool: root / tool for tool in ("vpt", "textpt")}
    train = lambda tool: [tool, "train", "-c", *SMOKE[tool], *DEEPSPEED, "-o", str(out[tool] / "deepspeed")]
    killed = launch(train("vpt"), KILL_AT_STEP="3", **CPU)
    assert killed.returncode != 0
    state = json.loads((out["vpt"] / "deepspeed" / "state" / "trainer_state.json").read_text())
    assert state["progress"]["step"] == 2 and state["world_size"] == 2
    proc = launch(["vpt", "train", "--resume", str(out["vpt"] / "deepspeed")], train("textpt"), HELD_DIR=str(root / "held"), **CPU)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # CPU processes leave out DeepSpeed's shared-memory kernel (a C++ build of about a minute): gloo collectives
    assert "shm_comm" not in proc.stdout + proc.stderr, proc.stdout[-3000:]
    for tool, base in out.items():
        (root / "held" / tool).rename(base / "held")
        assert run_here(tool, ["train", "-c", *SMOKE[tool], "--set", "train.batch_size=64", "-o", str(base / "single")]) == 0
    return out


@pytest.mark.parametrize("tool", ["vpt", "textpt"])
def test_deepspeed_under_torchrun_equals_one_process(runs, tool):
    # vpt: killed and resumed; a resume that lost the optimizer state or the prompts' fp32 copy would differ by far more.
    base = runs[tool]
    assert_close_prompts(prompts(base / "deepspeed"), prompts(base / "single"), 1e-4)
    lines = lambda run: [{k: v for k, v in json.loads(line).items() if k not in ("loss", "accuracy")} for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines(base / "deepspeed") == lines(base / "single")
    # The prompt file is the same few-KB file as a 1-process run's, whole: the prompts only, no frozen weight.
    assert (base / "deepspeed" / "last" / "prompts.safetensors").stat().st_size < 64 * 1024
    config = json.loads((base / "deepspeed" / "last" / "prompt_config.json").read_text())
    assert config["backbone_fingerprint"] == json.loads((base / "single" / "last" / "prompt_config.json").read_text())["backbone_fingerprint"]
    # The training state holds the optimizer state as a 1-process run's optimizer gives it, gathered from the partitions.
    ours = torch.load(base / "deepspeed" / "state" / "tensors.pt", weights_only=True)["optimizer"]
    theirs = torch.load(base / "single" / "state" / "tensors.pt", weights_only=True)["optimizer"]
    assert ours["state"].keys() == theirs["state"].keys() and ours["state"]
    for index, state in theirs["state"].items():
        assert ours["state"][index].keys() == state.keys()
        for key, value in state.items():
            torch.testing.assert_close(ours["state"][index][key], value, rtol=1e-4, atol=1e-6, msg=lambda m, k=key: f"{index}.{k}: {m}")
    assert [g["params"] for g in ours["param_groups"]] == [g["params"] for g in theirs["param_groups"]]


@pytest.mark.parametrize("tool", ["vpt", "textpt"])
def test_each_process_holds_half_of_the_frozen_weights(runs, tool):
    for rank in (0, 1):
        report = json.loads((runs[tool] / "held" / f"rank{rank}.json").read_text())
        # The fast VPT-deep path computes with each block's submodules inside the block's call (its leaf gather).
        assert report["fast"] is (True if tool == "vpt" else None)
        for when in ("begin", "end"):
            n = report[when]
            assert n["frozen_total"] > n["prompt_total"] > 0
            # ZeRO-3 pads each weight to a multiple of the 2 processes: at most one element more per weight.
            assert n["frozen_total"] / 2 <= n["frozen_held"] < n["frozen_total"] / 2 + 1000, (rank, when, n)
            assert math.ceil(n["prompt_total"] / 2) <= n["prompt_held"] <= n["prompt_total"] / 2 + 8, (rank, when, n)
            # Between steps nothing is whole: the prompt files and the training state gather the prompts.
            assert n["frozen_visible"] == 0 and n["prompt_visible"] == 0, (rank, when, n)


def test_prompt_files_load_in_one_process(runs, capsys):
    base = runs["vpt"]
    capsys.readouterr()
    assert run_here("vpt", ["eval", "-c", *SMOKE["vpt"], "--prompts", str(base / "deepspeed" / "last")]) == 0
    metrics = json.loads(capsys.readouterr().out)
    last_eval = [json.loads(line) for line in (base / "deepspeed" / "metrics.jsonl").read_text().splitlines() if '"eval"' in line][-1]
    assert metrics["count"] == 128 and metrics["accuracy"] == last_eval["accuracy"] > 0.5
    assert metrics["loss"] == pytest.approx(last_eval["loss"], abs=1e-5)


def test_one_process_deepspeed_is_refused_before_any_set_up(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    made = []
    monkeypatch.setattr(DeepSpeedEngine, "make_accelerator", classmethod(lambda cls, config: made.append(config)))
    with pytest.raises(UserError, match=r"^train.distributed: deepspeed needs several processes, this run has 1; launch it with `torchrun"):
        Trainer(toy_model(), TrainConfig(distributed="deepspeed"), toy_data())
    assert made == []


def test_from_python_then_another_engine_in_the_same_process(tmp_path):
    # Accelerate marks the process as DeepSpeed's (ACCELERATE_USE_DEEPSPEED) when it makes a DeepSpeed Accelerator,
    # and on GPUs every later Accelerator would follow the mark: the trainer takes it back. Both train the same prompts.
    script = Path(__file__).parent / "scripts" / "train_toy_deepspeed.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **CPU}
    proc = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == [["DeepSpeedEngine", None], ["DDPEngine", None]]
    assert_close_prompts(prompts(tmp_path / "deepspeed"), prompts(tmp_path / "ddp"), 1e-5)

