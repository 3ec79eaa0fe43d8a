"""Trains the toy model in one process of a ``torchrun`` launch and saves each rank's final prompts and metrics.

Usage: torchrun --standalone --nproc_per_node N train_toy_distributed.py OUT_DIR
Writes OUT_DIR/run (the run directory, rank 0) and OUT_DIR/rank{R}.safetensors + OUT_DIR/rank{R}.json per rank;
then the same with per-module rates where only the last rank asks to stop: OUT_DIR/stop_run, OUT_DIR/stop_rank{R}.*.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from toy_prompted import DISTRIBUTED_TRAIN, STOP_AT_STEP, StopAt, distributed_run_args, exit_skipping_teardown, toy_model  # noqa: E402

from promptcore import Trainer, TrainConfig  # noqa: E402


def main() -> int:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    train, evaluation = distributed_run_args()
    world = int(os.environ["WORLD_SIZE"])
    # The same global batch as the 1-process run: per-process batch = global / processes.
    config = TrainConfig(**{**DISTRIBUTED_TRAIN, "batch_size": DISTRIBUTED_TRAIN["batch_size"] // world})
    rank = int(os.environ["RANK"])
    model = toy_model(seed=10)
    with torch.no_grad():
        model.prompts.weight.add_(rank)  # prompts initialised differently per process: rank 0's must win
    trainer = Trainer(model, config, train, evaluation, run_dir=str(out / "run"))
    result = trainer.fit()
    save_file({k: v.contiguous() for k, v in model.prompt_state_dict().items()}, str(out / f"rank{rank}.safetensors"))

    # A backbone that differs between processes (built without a common seed) is refused on every process.
    try:
        Trainer(toy_model(seed=20 + rank), config, train)
        refused = ""
    except ValueError as e:
        refused = str(e)
    (out / f"rank{rank}.json").write_text(json.dumps({"world_size": trainer.world_size, "result": result, "refused": refused}))

    # One process asks to stop: every process must stop after the same step.
    config = TrainConfig(**{**DISTRIBUTED_TRAIN, "batch_size": DISTRIBUTED_TRAIN["batch_size"] // world, "param_groups": {"head": {"lr": 0.01}}})
    callbacks = [StopAt(STOP_AT_STEP, f"rank {rank} stops")] if rank == world - 1 else []
    model = toy_model(seed=10)
    result = Trainer(model, config, train, evaluation, run_dir=str(out / "stop_run"), callbacks=callbacks).fit()
    save_file({k: v.contiguous() for k, v in model.prompt_state_dict().items()}, str(out / f"stop_rank{rank}.safetensors"))
    (out / f"stop_rank{rank}.json").write_text(json.dumps({"result": result}))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    exit_skipping_teardown(main())
