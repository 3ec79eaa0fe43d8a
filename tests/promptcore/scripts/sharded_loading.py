"""Trains tiny text models under FSDP2 in one process of a ``torchrun`` launch, with and without sharded loading,
and records what each process allocated while the model was set up.

Usage: torchrun --standalone --nproc_per_node 2 sharded_loading.py OUT_DIR FOLDER
FOLDER is a tiny Llama written by ``save_pretrained`` (a checkpoint read from disk). For each case (``llama``:
``random:llama``, rotary buffers, untied head, ``train.fsdp.shard_vocabulary: true``; ``gpt2``: ``random:gpt2``, tied embeddings; ``folder``: FOLDER) and
each ``train.fsdp.sharded_loading`` (``false``, ``true``) it writes the run to OUT_DIR/CASE_MODE (prompt folders on
rank 0) and OUT_DIR/CASE_MODE/rank{R}.json: the peak of the bytes of tensor storage allocated from the start of
the model's build to the end of the trainer's set-up, the data's left out (``setup_peak``), the whole frozen model's bytes (``full``) and the
bytes this process holds of it after the set-up (``local``; ``local_by_name`` per parameter). The ``llama`` case with sharded loading runs through
the ``textpt train`` command line; the others through the same calls in Python. First, OUT_DIR/nf4_fsdp and
OUT_DIR/nf4_ddp: a Llama with ``model.quantization: nf4`` under FSDP2 (which shards its 4-bit weights) and DDP.
Then the vocabulary-parallel embedding and LM head (``train.fsdp.shard_vocabulary``) in float64:
OUT_DIR/vocabulary/rank{R}.json holds, per case (tied and untied head; the LM loss on the fast and the concatenated
path, packed; verbalizer classification by one-token and two-token words), the largest difference from the
unsharded model on this process's batch of the loss, the eval metrics, the whole logits and their gradient, the
prompt gradients and the prompts after three Adam steps (gradients summed over the processes in both); and
OUT_DIR/vocab_tied_true and OUT_DIR/vocab_tied_false, training runs under FSDP2 with sharded loading, with and
without the vocabulary sharded (their rank{R}.json as the other cases').
"""

from __future__ import annotations

import copy
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
from promptcore.vocab_parallel import vocabulary_shards
from textpt.cli import TextRecipe, main
from textpt.run_config import TextRunConfig

ROOT = Path(__file__).resolve().parents[3]
CONFIG = str(ROOT / "configs/smoke/textpt_tiny.yaml")
COMMON = ["train.distributed=fsdp", "train.epochs=1", "train.batch_size=16", "data.num_samples=96", "data.num_eval_samples=32", "train.tensorboard=false"]
GPT2 = "model.kwargs={n_embd: 32, n_layer: 2, n_head: 2, n_positions: 128, initializer_range: 0.3}"
CASES = {
    "gpt2": ["model.name=random:gpt2", GPT2],
    "folder": ["model.name={folder}", "model.kwargs={}"],
    # last: the command line ends the process group when it returns; with the vocabulary sharded (set on the command
    # line with sharded loading, in Python without)
    "llama": ["train.fsdp.shard_vocabulary=true"],
}
# The nf4 cases (QLoRA's 4-bit weights; FSDP2 shards them, DDP leaves them whole): a random float64 Llama (the run
# then equals the 1-process one to rounding) whose linear weights hold whole nf4 scale blocks on each of 2 processes
# (256 x 256: 4 blocks), built whole on every process (no sharded loading).
NF4_KWARGS = "model.kwargs={hidden_size: 256, intermediate_size: 512, num_hidden_layers: 2, num_attention_heads: 4, max_position_embeddings: 128, initializer_range: 0.3}"
NF4 = ["model.quantization=nf4", "model.dtype=float64", NF4_KWARGS, "data.num_samples=64"]
# Vocabulary sharding (train.fsdp.shard_vocabulary: true; auto leaves the tiny vocabulary whole) in float64, tied head.
VOCAB = ["model.dtype=float64", "train.fsdp.shard_vocabulary=true", "train.fsdp.sharded_loading=false", "model.kwargs.tie_word_embeddings=true"]
# The training run: two epochs of two steps, the model filled in by sharded loading.
VOCAB_RUN = [*VOCAB, "data.num_samples=64", "train.epochs=2"]
VOCAB_CASES = {
    "tied_lm_fast": ["model.kwargs.tie_word_embeddings=true"],
    "untied_lm_concat_packed": ["model.kwargs.tie_word_embeddings=false", "prompt.fast='off'", "data.packing=true"],
    "tied_classify": ["model.kwargs.tie_word_embeddings=true"],
    "untied_classify_two_token_words": ["model.kwargs.tie_word_embeddings=false", "prompt.fast='off'", "prompt.verbalizer=[' very good', ' very bad']"],
}


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
    # A weight sharded by vocabulary holds its rows; the whole one has vocab_size of them (a DTensor counts whole).
    rows = {id(m.weight): m.vocab_size * m.weight.shape[1] for m in vocabulary_shards(model)}
    full = sum(rows.get(id(p), p.numel()) * p.element_size() for p in frozen)
    report = {"setup_peak": peak, "full": full, "local": local_bytes(frozen)}
    report["local_by_name"] = {n: local_bytes([p]) for n, p in model.named_parameters() if not p.requires_grad}
    trainer.fit()
    return report


def batch_of(model, rank: int, lm: bool) -> dict:
    """A padded batch of this process (its own shapes: the processes' batches differ in length): random token ids,
    class labels, and for ``lm`` targets with ignored positions."""
    generator = torch.Generator().manual_seed(10 + rank)
    b, length = 3, 9 + 4 * rank
    ids = torch.randint(3, model.embedding.weight.shape[0], (b, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, : 2 + rank] = 0  # padding (on the tokenizer's side)
    if model.padding_side == "right":
        mask = mask.flip(1)
    batch = {"input_ids": ids, "attention_mask": mask}
    if lm:
        batch["lm_labels"] = ids.masked_fill(mask == 0, -100).masked_fill(torch.rand(b, length, generator=generator) < 0.3, -100)
    else:
        batch["labels"] = torch.tensor([0, 1, rank % 2])
    return batch


def difference(a, b) -> float:
    return max(((x - y).abs().max().item() for x, y in zip(a, b)), default=0.0)


def vocabulary_case(overrides: list[str], lm: bool) -> dict:
    """The largest differences between the model sharded by vocabulary under FSDP2 and the unsharded model on this
    process's batch (see the module's docstring)."""
    import torch.distributed as dist

    from promptcore.distributed import FSDPConfig, StepModule, call_through, shard_model
    from promptcore.vocab_parallel import parallel_head

    recipe = TextRecipe()
    cfg = resolve_config(recipe, load_config(TextRunConfig, CONFIG, [*COMMON, *VOCAB, *overrides]))
    seed_everything(cfg.train.seed)
    model = recipe.build_model(cfg)
    plain = copy.deepcopy(model)
    rank, world = dist.get_rank(), dist.get_world_size()
    step = StepModule(model)
    shard_model(step, model, FSDPConfig(shard_vocabulary=True), world, torch.device("cpu"))
    assert parallel_head(model.backbone) is not None and parallel_head(plain.backbone) is None
    batch = batch_of(plain, rank, lm)
    found: dict[str, float] = {}

    def gradients(module, params, run) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``run(module)`` and the gradients of ``params`` of its backward."""
        loss = run(module)
        loss.backward()
        grads = [p.grad.clone() for p in params]
        for p in params:
            p.grad = None
        return loss.detach(), grads

    sharded_params, plain_params = list(model.prompt_parameters()), list(plain.prompt_parameters())
    loss, grads = gradients(step, sharded_params, lambda m: m(batch))
    loss_plain, grads_plain = gradients(plain, plain_params, lambda m: m.training_step(batch))
    found["loss"] = (loss - loss_plain).abs().item()
    found["prompt_gradients"] = difference(grads, grads_plain)
    metrics, metrics_plain = step(batch, "eval"), plain.eval_step(batch)
    found["eval_metrics"] = max((metrics[k] - metrics_plain[k]).abs().item() for k in metrics_plain)
    # Whole logits (the head called outside the loss) and their backward.
    weights = torch.randn(*batch["input_ids"].shape, plain.backbone.config.vocab_size, generator=torch.Generator().manual_seed(rank), dtype=torch.float64)

    def weighted_logits(m):
        return (m.token_logits(batch["input_ids"], batch["attention_mask"]) * weights).sum()

    whole, whole_grads = gradients(model, sharded_params, lambda m: call_through(step, lambda: weighted_logits(m)))
    whole_plain, whole_grads_plain = gradients(plain, plain_params, weighted_logits)
    found["whole_logits"] = (whole - whole_plain).abs().item()
    found["whole_logits_gradients"] = difference(whole_grads, whole_grads_plain)
    # Three Adam steps, the prompt gradients summed over the processes, as the engines do.
    optimizers = [torch.optim.Adam(params, lr=0.1) for params in (sharded_params, plain_params)]
    for _ in range(3):
        for run, params, optimizer in zip((lambda: step(batch), lambda: plain.training_step(batch)), (sharded_params, plain_params), optimizers):
            run().backward()
            for p in params:
                dist.all_reduce(p.grad)
            optimizer.step()
            optimizer.zero_grad()
    found["prompts_after_steps"] = difference(sharded_params, plain_params)
    found["prompt_gradient_norm"] = sum(g.norm().item() for g in grads_plain)  # not zero: the comparison means something
    return found


def main_script() -> int:
    out, folder = Path(sys.argv[1]), sys.argv[2]
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    for engine in ("fsdp", "ddp"):
        run_dir = out / f"nf4_{engine}"
        report = run_python([*COMMON, *NF4, f"train.distributed={engine}"], run_dir)
        (run_dir / f"rank{rank}.json").write_text(json.dumps(report))
    found = {name: vocabulary_case(extra, "_lm_" in name) for name, extra in VOCAB_CASES.items()}
    (out / "vocabulary").mkdir(exist_ok=True)
    (out / "vocabulary" / f"rank{rank}.json").write_text(json.dumps(found))
    for mode in ("true", "false"):
        run_dir = out / f"vocab_tied_{mode}"
        report = run_python([*COMMON, *VOCAB_RUN, "train.fsdp.sharded_loading=true", f"train.fsdp.shard_vocabulary={mode}"], run_dir)
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
