"""Memory and step time per process: one process unsharded against 2 and 4 processes with FSDP2.

Models (random weights, shapes of real checkpoints, built through the toolkit's recipes as ``vpt train`` /
``textpt train`` build them):

- ``llama``: a Llama with Qwen2.5-0.5B's shapes (hidden 896, 24 layers, 14 heads, 2 key/value heads, MLP 4864,
  vocabulary 151,936, tied embeddings; 494M parameters), prompt tuning with 20 tokens, causal LM verbalizer
  scoring of the synthetic texts.
- ``vit``: timm ``vit_large_patch16_224`` (ViT-L/16, 304M parameters), VPT-deep with 10 tokens per layer, 224 px
  synthetic images.

Each configuration runs ``--steps`` optimizer steps of the trainer with the same global batch (``--global-batch``
rows split over the processes). Per process it reports: the bytes of frozen weights it holds (its shards under
FSDP), its memory after the model was set up (sharded), and its peak memory during training (frozen weights +
activations + prompt state + what FSDP gathers), and the median step time of the steps after the first. Memory is
resident memory (``VmRSS``; the peak is ``VmHWM``, reset after set-up through ``/proc/self/clear_refs``) minus the
process's resident memory before the model was built (the interpreter and the libraries, about 0.7 GiB). The prompts after the last step are compared with the
1-process run's (max absolute difference).

The Llama is read from a safetensors checkpoint that the script writes first (``save_pretrained`` of the random
model), as a real checkpoint would be. Under FSDP the recipe loads it with sharded loading
(``train.fsdp.sharded_loading: auto``): rank 0 reads the checkpoint, the other processes build the model on the meta
device and receive only their shards. The peak memory while loading (from before the build to the end of the
trainer's set-up, ``VmHWM``) is reported for rank 0 and for the largest of the other processes. The ViT is built
whole in every process (sharded loading covers Hugging Face text models).

On a CPU the processes share the cores: step times are for the record, not a speed-up claim. On a GPU machine
(``bench/gpu.sh``) each process takes its own GPU and bf16.

Under FSDP the Llama's tied embedding / LM head is sharded by vocabulary (``train.fsdp.shard_vocabulary: auto``,
on for it: :mod:`promptcore.vocab_parallel`); ``--shard-vocabulary false`` lets FSDP gather it whole as any weight.

Run: ``python bench/scale.py [--model llama|vit|both] [--procs 1,2,4] [--steps 4] [--shard-vocabulary auto|true|false] [--layers N] [--write FILE]``; ``--layers`` builds the Llama with
fewer decoder layers (the same vocabulary), a lighter run that shows the vocabulary's share; ``--tiny`` runs
the same with the smoke configs' sizes (width 32, 2 layers), to check the script, not for figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from emit import emit  # bench/emit.py: scripts run as `python bench/NAME.py`

ROOT = Path(__file__).resolve().parents[1]

LLAMA = {
    "model": {
        "name": "random:llama",
        "task": "causal_lm",
        "kwargs": {
            "hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
            "intermediate_size": 4864, "vocab_size": 151936, "max_position_embeddings": 4096, "tie_word_embeddings": True,
        },
    },
    "prompt": {"method": "prompt_tuning", "num_tokens": 20, "init": "normal"},
    "data": {"source": "synthetic", "num_classes": 2, "num_samples": 64, "num_eval_samples": 8, "keywords_per_text": 4,
             "template": "review : {text} sentiment :", "max_length": 48},
}
VIT = {
    "model": {"name": "timm:vit_large_patch16_224", "pretrained": False},
    "prompt": {"method": "vpt_deep", "num_tokens": 10, "num_classes": 4},
    "data": {"source": "synthetic", "num_classes": 4, "eval_split": "test", "synthetic": {"num_train": 64, "num_eval": 8, "noise": 0.5}},
}


def _vm(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


TINY = {
    "llama": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2, "intermediate_size": 64},
    "vit": {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 4},
}


def spec_of(model_name: str, tiny: bool, checkpoint: Path) -> dict:
    """The run config's sections of ``model_name``: the Llama read from ``checkpoint``, the ViT built in memory."""
    if model_name == "llama":
        return {**LLAMA, "model": {"name": str(checkpoint), "task": "causal_lm"}}
    if not tiny:
        return VIT
    return {**VIT, "model": {**VIT["model"], "kwargs": TINY["vit"]}, "data": {**VIT["data"], "image_size": 32}}


def write_checkpoint(tiny: bool, folder: Path, layers: int | None = None) -> None:
    """The random Llama (``LLAMA``'s shapes, or ``TINY``'s; ``layers`` decoder layers, default the shapes' own)
    written as a safetensors checkpoint with its tokenizer."""
    import torch

    from textpt.config import TextModelConfig
    from textpt.loading import load_model_and_tokenizer

    torch.manual_seed(0)
    kwargs = {**LLAMA["model"]["kwargs"], **(TINY["llama"] if tiny else {}), **({"num_hidden_layers": layers} if layers else {})}
    model, tokenizer = load_model_and_tokenizer(TextModelConfig(name="random:llama", task="causal_lm", kwargs=kwargs))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def worker(model_name: str, steps: int, global_batch: int, out: Path, keep_whole: list[str], tiny: bool, shard_vocabulary: str) -> None:
    """One process of a launch: builds the model with the recipe, trains ``steps`` steps, writes its figures."""
    import torch

    from promptcore.callbacks import StepTimer
    from promptcore.cli import build_model_and_data
    from promptcore.config import load_config
    from promptcore.distributed import local_bytes
    from promptcore.trainer import Trainer

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if model_name == "llama":
        from textpt.cli import TextRecipe as Recipe
    else:
        from vpt.cli import VisionRecipe as Recipe
    spec = spec_of(model_name, tiny, out / "llama-checkpoint")
    cuda = torch.cuda.is_available()
    train = {
        "epochs": 1, "max_steps": steps, "batch_size": global_batch // world, "lr": 0.01, "optimizer": "adamw",
        "metric": "loss", "metric_mode": "min", "eval_every_epochs": 0, "tensorboard": False, "progress_bar": False,
        "distributed": "fsdp" if world > 1 else "auto", "mixed_precision": "bf16" if cuda else "no",
    }
    if world > 1:
        train["fsdp"] = {"keep_whole": keep_whole, "shard_vocabulary": {"true": True, "false": False}.get(shard_vocabulary, shard_vocabulary)}
    recipe = Recipe()
    import ctypes
    import gc

    import promptcore.trainer  # noqa: F401  (everything imported before the baseline is read)

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    baseline = _vm("VmRSS")  # the interpreter and the libraries, before any model exists
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak resident memory
    cfg = load_config(recipe.config_class, {**spec, "train": train})
    cfg, model, data = build_model_and_data(recipe, cfg)
    timer = StepTimer()
    trainer = Trainer(model, cfg.train, data.train, None, data.collate_fn, callbacks=[timer])
    prompt_ids = {id(p) for p in model.prompt_parameters()}
    frozen = local_bytes(p for p in model.parameters() if id(p) not in prompt_ids)
    loading = _vm("VmHWM")
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # the unsharded weights the set-up freed go back to the system
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    set_up = _vm("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak resident memory
    start = time.perf_counter()
    trainer.fit()
    wall = time.perf_counter() - start
    times = [timer.times[s] for s in sorted(timer.times)][1:] or list(timer.times.values())
    record = {
        "model": model_name, "procs": world, "rank": rank, "frozen_bytes": frozen,
        "peak_rss_loading": loading - baseline, "rss_after_setup": set_up - baseline, "peak_rss_training": max(_vm("VmHWM"), set_up) - baseline, "baseline": baseline, "step_seconds": statistics.median(times), "wall": wall,
        "gpu_peak": torch.cuda.max_memory_allocated() if cuda else None,
        "prompts": {k: v.float().flatten()[:64].tolist() for k, v in model.prompt_state_dict().items()},
    }
    (out / f"{model_name}-{world}-{rank}.json").write_text(json.dumps(record))


def launch(model_name: str, procs: int, steps: int, global_batch: int, out: Path, keep_whole: list[str], tiny: bool, shard_vocabulary: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])), "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // procs))}
    # glibc keeps freed blocks below its (growing) mmap threshold in its heap, so resident memory would count memory
    # freed long ago (FSDP's per-block gathers); a fixed threshold returns every large block to the system at once.
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
    me = [str(Path(__file__).resolve()), "--worker", model_name, "--steps", str(steps), "--global-batch", str(global_batch), "--out", str(out), *(["--keep-whole", *keep_whole] if keep_whole else []), *(["--tiny"] if tiny else []), "--shard-vocabulary", shard_vocabulary]
    if procs == 1:
        cmd = [sys.executable, *me]
    else:
        torchrun = str(Path(sys.executable).with_name("torchrun"))
        cmd = [torchrun, "--standalone", "--nproc_per_node", str(procs), *me]
    subprocess.run(cmd, env=env, check=True)


def table(model_name: str, procs: list[int], out: Path) -> list[str]:
    rows = {n: [json.loads((out / f"{model_name}-{n}-{r}.json").read_text()) for r in range(n)] for n in procs}
    base = rows[procs[0]][0]
    lines = [
        "| processes | frozen weights / process | vs 1 | peak memory while loading, rank 0 | vs 1 | other ranks (largest) | vs 1 | memory after set-up | vs 1 | peak memory in training | vs 1 | step time (median) | prompts vs 1 process (max abs diff) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in procs:
        frozen = max(r["frozen_bytes"] for r in rows[n])
        peak = max(r["peak_rss_training"] for r in rows[n])
        setup = max(r["rss_after_setup"] for r in rows[n])
        step = max(r["step_seconds"] for r in rows[n])
        diff = max(abs(a - b) for k in base["prompts"] for a, b in zip(rows[n][0]["prompts"][k], base["prompts"][k]))
        first = rows[n][0]["peak_rss_loading"]
        others = f"{max(r['peak_rss_loading'] for r in rows[n][1:]) / 2**20:,.0f} MiB | {max(r['peak_rss_loading'] for r in rows[n][1:]) / base['peak_rss_loading']:.3f}" if n > 1 else "- | -"
        lines.append(
            f"| {n} | {frozen / 2**20:,.0f} MiB | {frozen / base['frozen_bytes']:.3f} | {first / 2**20:,.0f} MiB | "
            f"{first / base['peak_rss_loading']:.3f} | {others} | {setup / 2**20:,.0f} MiB | "
            f"{setup / base['rss_after_setup']:.3f} | {peak / 2**20:,.0f} MiB | "
            f"{peak / base['peak_rss_training']:.3f} | {step:.2f} s | {diff:.1e} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["llama", "vit", "both"], default="both")
    parser.add_argument("--procs", default="1,2,4")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--global-batch", type=int, default=8)
    parser.add_argument("--write", metavar="FILE", help="append the markdown section to FILE (e.g. bench/RESULTS.md)")
    parser.add_argument("--keep-whole", nargs="+", default=[], metavar="MODULE", help="train.fsdp.keep_whole for the FSDP runs (e.g. embed_tokens)")
    parser.add_argument("--shard-vocabulary", choices=["auto", "true", "false"], default="auto", help="train.fsdp.shard_vocabulary for the FSDP runs")
    parser.add_argument("--layers", type=int, help="the Llama with this many decoder layers (default: its 24), a lighter run of the same vocabulary")
    parser.add_argument("--tiny", action="store_true", help="the smoke configs' sizes: checks the script, gives no figures")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.steps, args.global_batch, Path(args.out), args.keep_whole, args.tiny, args.shard_vocabulary)
        return
    procs = [int(n) for n in args.procs.split(",")]
    models = ["llama", "vit"] if args.model == "both" else [args.model]
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"{os.cpu_count()}-core {platform.machine()} CPU, no GPU"
    lines = [
        "## Several processes: FSDP2 sharding of the frozen backbone (`scale.py`)",
        "",
        f"`python bench/scale.py --model {args.model} --procs {args.procs} --steps {args.steps} --global-batch {args.global_batch}"
        f"{' --keep-whole ' + ' '.join(args.keep_whole) if args.keep_whole else ''} --shard-vocabulary {args.shard_vocabulary}"
        f"{f' --layers {args.layers}' if args.layers else ''}{' --tiny' if args.tiny else ''}` on {device}, "
        f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}. One process unsharded against N processes with "
        f"`train.distributed: fsdp`, the same global batch; figures per process (the largest over the processes).",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if "llama" in models:
            write_checkpoint(args.tiny, out / "llama-checkpoint", args.layers)
        for model_name in models:
            for n in procs:
                launch(model_name, n, args.steps, args.global_batch, out, args.keep_whole, args.tiny, args.shard_vocabulary)
            title = "Llama, Qwen2.5-0.5B shapes (494M parameters) from safetensors, prompt tuning 20 tokens" if model_name == "llama" else "ViT-L/16 (304M parameters), VPT-deep 10 tokens"
            if args.tiny:
                title = f"{model_name}, smoke sizes (not figures)"
            elif args.layers and model_name == "llama":
                title = f"Llama, Qwen2.5-0.5B shapes with {args.layers} of its 24 layers, prompt tuning 20 tokens"
            if args.keep_whole:
                title += f", `train.fsdp.keep_whole: [{', '.join(args.keep_whole)}]`"
            title += f", `train.fsdp.shard_vocabulary: {args.shard_vocabulary}`"
            lines += ["", f"{title}:", "", *table(model_name, procs, out)]
    emit(lines, args.write)


if __name__ == "__main__":
    main()
