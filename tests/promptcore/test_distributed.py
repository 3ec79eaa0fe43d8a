"""Multi-process training: a 2-process CPU run (torchrun, gloo) matches a 1-process run with the same global batch.

Each process takes its slice of every global batch; the prompt gradients are summed across processes, so the
two runs differ only by float rounding. ``accelerate launch --cpu --num_processes 2`` would start one process on
a machine like CI's, so the test launches with torchrun, which Accelerate picks up the same way.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

SCRIPTS = Path(__file__).parent / "scripts"
sys.path.insert(0, str(SCRIPTS))

from toy_prompted import DISTRIBUTED_TRAIN, distributed_run_args, toy_model  # noqa: E402

from promptcore import Trainer, TrainConfig  # noqa: E402


def test_two_process_cpu_run_matches_one_process_run(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(SCRIPTS / "train_toy_distributed.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    train, evaluation = distributed_run_args()
    model = toy_model(seed=10)  # rank 0's initialisation
    single = Trainer(model, TrainConfig(**DISTRIBUTED_TRAIN), train, evaluation, run_dir=tmp_path / "single").fit()

    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in reports] == [2, 2]
    for report in reports:
        assert report["refused"].startswith("frozen weights differ between the 2 processes (backbone.1.weight, backbone.1.bias")
    ranks = [load_file(tmp_path / f"rank{r}.safetensors") for r in range(2)]
    for key, value in model.prompt_state_dict().items():
        assert torch.equal(ranks[0][key], ranks[1][key]), f"{key} differs between the processes"
        torch.testing.assert_close(ranks[0][key], value, rtol=1e-4, atol=1e-5)
    assert ranks[0]["prompts.weight"].abs().sum() > 0
    multi = reports[0]["result"]
    assert multi["step"] == single["step"] == 12  # 6 global batches per epoch
    assert multi["eval"]["count"] == single["eval"]["count"] == 21  # every eval row once across the shards
    for key in ("loss", "accuracy"):
        assert abs(multi["eval"][key] - single["eval"][key]) < 1e-4
    multi_lines = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    single_lines = [json.loads(line) for line in (tmp_path / "single/metrics.jsonl").read_text().splitlines()]
    assert [(r["split"], r["step"]) for r in multi_lines] == [(r["split"], r["step"]) for r in single_lines]
    for a, b in zip(multi_lines, single_lines):
        assert abs(a["loss"] - b["loss"]) < 1e-4
