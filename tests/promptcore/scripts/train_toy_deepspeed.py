"""From Python, in one process of a ``torchrun`` launch: trains the toy model under DeepSpeed ZeRO-3 (its Linear
layers as the gathered units), then a fresh one with the default engine (DDP) in the same process, each into its
own run directory; writes each trainer's engine, and Accelerate's DeepSpeed mark in the environment after it, to
OUT_DIR/rank{R}.json.

Usage: torchrun --standalone --nproc_per_node N train_toy_deepspeed.py OUT_DIR
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from toy_prompted import DISTRIBUTED_TRAIN, distributed_run_args, toy_model  # noqa: E402

from promptcore import Trainer, TrainConfig  # noqa: E402


def main() -> int:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    train, evaluation = distributed_run_args()
    base = {**DISTRIBUTED_TRAIN, "batch_size": DISTRIBUTED_TRAIN["batch_size"] // int(os.environ["WORLD_SIZE"])}
    zero3 = TrainConfig(**base, distributed="deepspeed", deepspeed={"block_classes": ["Linear"]})
    seen = []
    for name, config in (("deepspeed", zero3), ("ddp", TrainConfig(**base))):
        trainer = Trainer(toy_model(seed=10), config, train, evaluation, run_dir=str(out / name))
        trainer.fit()
        # Accelerate's mark of a DeepSpeed process, which a GPU process's next Accelerator would follow.
        seen.append([type(trainer.engine).__name__, os.environ.get("ACCELERATE_USE_DEEPSPEED")])
    (out / f"rank{trainer.rank}.json").write_text(json.dumps(seen))
    torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
