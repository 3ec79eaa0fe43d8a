"""Multi-process training: a 2-process CPU run (torchrun, gloo) matches a 1-process run with the same global batch.

Each process takes its slice of every global batch; the prompt gradients are summed across processes, so the
two runs differ only by float rounding. A stop asked by one process (a callback) stops every process after the same
step, also with per-module learning rates. ``accelerate launch --cpu --num_processes 2`` would start one process on
a machine like CI's, so the test launches with torchrun, which Accelerate picks up the same way.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPTS = Path(__file__).parent / "scripts"

from toy_prompted import DISTRIBUTED_TRAIN, STOP_AT_STEP, StopAt, distributed_run_args, toy_model  # noqa: E402

from promptcore import Trainer, TrainConfig  # noqa: E402

pytestmark = pytest.mark.slow  # every test starts processes


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> Path:
    """The output folder of one 2-process torchrun launch of scripts/train_toy_distributed.py."""
    out = tmp_path_factory.mktemp("torchrun")
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(SCRIPTS / "train_toy_distributed.py"), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_two_process_cpu_run_matches_one_process_run(launched, tmp_path):
    train, evaluation = distributed_run_args()
    model = toy_model(seed=10)  # rank 0's initialisation
    single = Trainer(model, TrainConfig(**DISTRIBUTED_TRAIN), train, evaluation, run_dir=tmp_path / "single").fit()

    reports = [json.loads((launched / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in reports] == [2, 2]
    for report in reports:
        assert report["refused"].startswith("frozen weights differ between the 2 processes (backbone.1.weight, backbone.1.bias")
    ranks = [load_file(launched / f"rank{r}.safetensors") for r in range(2)]
    for key, value in model.prompt_state_dict().items():
        assert torch.equal(ranks[0][key], ranks[1][key]), f"{key} differs between the processes"
        torch.testing.assert_close(ranks[0][key], value, rtol=1e-4, atol=1e-5)
    assert ranks[0]["prompts.weight"].abs().sum() > 0
    multi = reports[0]["result"]
    assert multi["step"] == single["step"] == 12  # 6 global batches per epoch
    assert multi["eval"]["count"] == single["eval"]["count"] == 21  # every eval row once across the shards
    for key in ("loss", "accuracy"):
        assert abs(multi["eval"][key] - single["eval"][key]) < 1e-4
    multi_lines = [json.loads(line) for line in (launched / "run/metrics.jsonl").read_text().splitlines()]
    single_lines = [json.loads(line) for line in (tmp_path / "single/metrics.jsonl").read_text().splitlines()]
    assert [(r["split"], r["step"]) for r in multi_lines] == [(r["split"], r["step"]) for r in single_lines]
    for a, b in zip(multi_lines, single_lines):
        assert abs(a["loss"] - b["loss"]) < 1e-4


def test_a_stop_asked_by_one_process_stops_every_process(launched, tmp_path):
    train, evaluation = distributed_run_args()
    model = toy_model(seed=10)
    config = TrainConfig(**{**DISTRIBUTED_TRAIN, "param_groups": {"head": {"lr": 0.01}}})
    single = Trainer(model, config, train, evaluation, run_dir=tmp_path / "single", callbacks=[StopAt(STOP_AT_STEP, "rank 1 stops")]).fit()

    reports = [json.loads((launched / f"stop_rank{r}.json").read_text())["result"] for r in range(2)]
    assert [r["step"] for r in reports] == [STOP_AT_STEP, STOP_AT_STEP] == [single["step"]] * 2
    assert [r["stopped"] for r in reports] == ["rank 1 stops", "rank 1 stops"] == [single["stopped"]] * 2
    ranks = [load_file(launched / f"stop_rank{r}.safetensors") for r in range(2)]
    for key, value in model.prompt_state_dict().items():
        assert torch.equal(ranks[0][key], ranks[1][key]), f"{key} differs between the processes"
        torch.testing.assert_close(ranks[0][key], value, rtol=1e-4, atol=1e-5)
    multi_lines = [json.loads(line) for line in (launched / "stop_run/metrics.jsonl").read_text().splitlines()]
    single_lines = [json.loads(line) for line in (tmp_path / "single/metrics.jsonl").read_text().splitlines()]
    assert [sorted(r) for r in multi_lines] == [sorted(r) for r in single_lines]
    assert {"lr/prompts", "lr/head"} <= set(multi_lines[0])
    for a, b in zip(multi_lines, single_lines):
        assert abs(a["loss"] - b["loss"]) < 1e-4
    state = json.loads((launched / "stop_run/state/trainer_state.json").read_text())
    assert state["progress"]["stop_reason"] == "rank 1 stops" and state["groups"] == ["prompts", "head"]
