"""Trains tiny text models under FSDP2 in one process of a ``torchrun`` launch, with and without sharded loading,
and records what each process allocated while the model was set up.

Usage: torchrun --standalone --nproc_per_node 2 sharded_loading.py OUT_DIR FOLDER
FOLDER is a tiny Llama written by ``save_pretrained`` (a checkpoint read from disk). For each case (``llama``:
``random:llama``, rotary buffers, untied head; ``gpt2``: ``random:gpt2``, tied embeddings; ``folder``: FOLDER) and
each ``train.fsdp.sharded_loading`` (``false``, ``true``) it writes the run to OUT_DIR/CASE_MODE (prompt folders on
rank 0) and OUT_DIR/CASE_MODE/rank{R}.json: the peak of the bytes of tensor storage allocated from the start of
the model's build to the end of the trainer's set-up, the data's left out (``setup_peak``), the whole frozen model's bytes (``full``) and the
bytes this process holds of it after the set-up (``local``; ``local_by_name`` per parameter). The ``llama`` case with sharded loading runs through
the ``textpt train`` command line; the others through the same calls in Python. First, OUT_DIR/nf4_fsdp and
OUT_DIR/nf4_ddp: a Llama with ``model.quantization: nf4`` under FSDP2 (which shards its 4-bit weights) and DDP.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path

import torch
from torch.profiler import record_function

from promptcore import Trainer, load_config
from promptcore.distributed import local_bytes
from promptcore.recipe import resolve_config
from promptcore.trainer import seed_everything
from textpt.cli import TextRecipe, main
from textpt.run_config import TextRunConfig

ROOT = Path(__file__).resolve().parents[3]
CONFIG = str(ROOT / "configs/smoke/textpt_tiny.yaml")
COMMON = ["train.distributed=fsdp", "train.epochs=1", "train.batch_size=16", "data.num_samples=96", "data.num_eval_samples=32", "train.tensorboard=false"]
GPT2 = "model.kwargs={n_embd: 32, n_layer: 2, n_head: 2, n_positions: 128, initializer_range: 0.3}"
CASES = {
    "gpt2": ["model.name=random:gpt2", GPT2],
    "folder": ["model.name={folder}", "model.kwargs={}"],
    "llama": [],  # last: the command line ends the process group when it returns
}
# The nf4 cases (QLoRA's 4-bit weights; FSDP2 shards them, DDP leaves them whole): a random float64 Llama (the run
# then equals the 1-process one to rounding) whose linear weights hold whole nf4 scale blocks on each of 2 processes
# (256 x 256: 4 blocks), built whole on every process (no sharded loading).
NF4_KWARGS = "model.kwargs={hidden_size: 256, intermediate_size: 512, num_hidden_layers: 2, num_attention_heads: 4, max_position_embeddings: 128, initializer_range: 0.3}"
NF4 = ["model.quantization=nf4", "model.dtype=float64", NF4_KWARGS, "data.num_samples=64"]


def allocation_peak(fn, leave_out: str):
    """``fn()`` and the peak of the bytes of CPU tensor storage allocated while it ran and not yet freed, from the
    allocator's events as the profiler records them; allocations made inside ``record_function(leave_out)`` (the
    data) are not counted.

    Private API, read from torch 2.14 (``torch/profiler/_memory_profiler.py`` walks the same tree): the result's
    ``experimental_event_tree``, ``_EventType.Allocation`` and its ``extra_fields`` (``ptr``, ``alloc_size``,
    ``device``); the test fails loudly when they disappear."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    events: list[tuple[int, int, int]] = []
    skipped: list[tuple[int, int]] = []
    nodes = list(prof.profiler.kineto_results.experimental_event_tree())
    while nodes:
        node = nodes.pop()
        if node.name == leave_out:
            skipped.append((node.start_time_ns, node.end_time_ns))
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            events.append((node.start_time_ns, node.extra_fields.ptr, node.extra_fields.alloc_size))
        nodes.extend(node.children)
    live: dict[int, int] = {}
    now = peak = 0
    for time, ptr, size in sorted(events):
        if size > 0 and not any(a <= time <= b for a, b in skipped):
            live[ptr] = size
            now += size
            peak = max(peak, now)
        elif size < 0 and ptr in live:
            now -= live.pop(ptr)
    return out, peak


def run_python(overrides: list[str], run_dir: Path) -> dict:
    def set_up():
        cfg = resolve_config(recipe, load_config(TextRunConfig, CONFIG, overrides))
        seed_everything(cfg.train.seed)  # as build_model_and_data, with the data built apart
        model = recipe.build_model(cfg)
        with record_function("data"):
            data = recipe.build_data(cfg, model)
        return model, Trainer(model, cfg.train, data.train, data.eval, data.collate_fn, run_dir=run_dir)

    recipe = TextRecipe()
    (model, trainer), peak = allocation_peak(set_up, "data")
    frozen = [p for p in model.parameters() if not p.requires_grad]
    report = {"setup_peak": peak, "full": sum(p.numel() * p.element_size() for p in frozen), "local": local_bytes(frozen)}
    report["local_by_name"] = {n: local_bytes([p]) for n, p in model.named_parameters() if not p.requires_grad}
    trainer.fit()
    return report


def main_script() -> int:
    out, folder = Path(sys.argv[1]), sys.argv[2]
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    for engine in ("fsdp", "ddp"):
        run_dir = out / f"nf4_{engine}"
        report = run_python([*COMMON, *NF4, f"train.distributed={engine}"], run_dir)
        (run_dir / f"rank{rank}.json").write_text(json.dumps(report))
    for case, extra in CASES.items():
        for mode in ("false", "true"):
            run_dir = out / f"{case}_{mode}"
            overrides = [*COMMON, *(e.replace("{folder}", folder) for e in extra), f"train.fsdp.sharded_loading={mode}"]
            if case == "llama" and mode == "true":
                argv = ["train", "-c", CONFIG, *(a for o in overrides for a in ("--set", o)), "-o", str(run_dir)]
                if main(argv) != 0:
                    return 1
                continue
            report = run_python(overrides, run_dir)
            (run_dir / f"rank{rank}.json").write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main_script())
