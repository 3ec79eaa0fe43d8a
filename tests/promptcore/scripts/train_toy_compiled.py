"""Trains the static toy model in one process of a ``torchrun`` launch under DDP and under FSDP2, each plain and
with ``train.compile: true`` (the ``aot_eager`` backend), in float64; saves each run's final prompts per rank and
how many frames torch.compile compiled.

Usage: torchrun --standalone --nproc_per_node N train_toy_compiled.py OUT_DIR
Writes OUT_DIR/{ddp,fsdp}[_compiled]_rank{R}.safetensors and .json.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from toy_prompted import ToyPrompted, exit_skipping_teardown, toy_data  # noqa: E402

import promptcore.engines.base as engines_base  # noqa: E402
from promptcore import Trainer, TrainConfig  # noqa: E402
from promptcore.engines.base import compile_counts  # noqa: E402

# 42 rows in global micro-batches of 8: the last one has 2 rows (one per process of two); 21 eval rows.
# Two micro-batches per step (DDP reduces in the second one's backward only).
COMPILED_TRAIN = dict(epochs=2, batch_size=8, grad_accum_steps=2, lr=0.05, grad_clip=1.0, warmup_steps=2, progress_bar=False, tensorboard=False)


class StaticToy(ToyPrompted):
    """The toy model without its per-step Python counters (torch.compile would compile the step again for each
    value) and without prompt dropout (compiled code draws its random numbers differently). Its loss is taken in
    the model's dtype (``PromptedModel.training_step`` takes it in float32), so a float64 run is float64 throughout."""

    def training_step(self, batch):
        return F.cross_entropy(self.forward_batch(batch), batch["labels"])


def static_toy_model(seed: int = 10) -> StaticToy:
    torch.manual_seed(seed)
    return StaticToy(prompt_dropout=0.0)


def compiled_run_args():
    return toy_data(42), toy_data(21, split="validation")


def main() -> int:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    engines_base.COMPILE_BACKEND = "aot_eager"
    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    train, evaluation = compiled_run_args()
    for engine, extra in (("ddp", {}), ("fsdp", {"fsdp": {"block_classes": ["Linear"]}})):
        for compiled in (False, True):
            # The same global batch as the 1-process run: per-process batch = global / processes.
            per_process = {**COMPILED_TRAIN, "batch_size": COMPILED_TRAIN["batch_size"] // world}
            config = TrainConfig(**per_process, compile=compiled, distributed=engine, **extra)
            model = static_toy_model()
            frames = compile_counts()[0]
            trainer = Trainer(model, config, train, evaluation)
            result = trainer.fit()
            name = f"{engine}{'_compiled' if compiled else ''}_rank{rank}"
            save_file({k: v.contiguous() for k, v in model.prompt_state_dict().items()}, str(out / f"{name}.safetensors"))
            record = {"eval": result["eval"], "frames": compile_counts()[0] - frames, "module": type(trainer.engine.module).__name__}
            (out / f"{name}.json").write_text(json.dumps(record))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    exit_skipping_teardown(main())
