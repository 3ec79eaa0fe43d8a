"""Frozen-weight memory of a quantized backbone (fp32 vs int8 vs int4 vs nf4), and prompt-tuning accuracy on it.

Model: the packaged SmolLM2-135M-Instruct (``asset:smollm2_135m``, offline); ``--random`` builds a random Llama of
its shapes instead (saved to a temporary folder). Each setting loads in a fresh process, which reports:

- frozen bytes: bytes held by the model's parameters and buffers, counting the inner tensors of quantized weights
  (what stays resident for the whole run);
- resident MiB after loading (``VmRSS``, after ``malloc_trim``) and the process peak (``VmHWM``): the peak includes the float32 weights
  read from the folder before they are quantized, so it is no lower than fp32's.

``--fsdp N`` adds the frozen weights each of N processes holds with nf4 weights under FSDP2 (a ``torchrun`` launch on
the CPU, gloo: the trainer's set-up shards the model), counted as ``promptcore.memory.module_bytes`` counts them,
against the fp32 model unsharded. ``--tiny`` uses a random Llama of width 256 and 2 layers (a smoke run).

``--accuracy`` also trains the demo's prompt (configs/demo/causal_lm_prompt.yaml, sizes from ``--train`` and
``--test``) on the fp32 and the int8 backbone and reports test accuracy with its 95% Wilson interval.

Run: ``python bench/quant.py [--kinds fp32 int8 int4 nf4] [--random | --tiny] [--fsdp 2] [--accuracy --train 192 --test 200] [--write FILE]``
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from emit import emit  # bench/emit.py: scripts run as `python bench/NAME.py`

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python bench/NAME.py`: make `demo.stats` importable
    sys.path.insert(0, str(ROOT))
DEMO = ROOT / "configs" / "demo" / "causal_lm_prompt.yaml"
SMOLLM2_SHAPES = {
    "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
    "num_key_value_heads": 3, "vocab_size": 49152, "max_position_embeddings": 8192, "tie_word_embeddings": True,
}
TINY_SHAPES = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 128}
SMOKE = ROOT / "configs" / "smoke" / "textpt_tiny.yaml"


def _status_mib(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child_env() -> dict[str, str]:
    """The environment of a child process: this one's, with the repository first on the import path."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def measure(name: str, kind: str) -> dict:
    """Loads ``name`` with quantization ``kind`` in this process and returns its figures."""
    import gc

    from promptcore.memory import module_bytes
    from textpt.config import TextModelConfig
    from textpt.loading import load_model_and_tokenizer

    quantization = None if kind == "fp32" else kind
    start = time.perf_counter()
    model, _ = load_model_and_tokenizer(TextModelConfig(name=name, quantization=quantization))
    seconds = time.perf_counter() - start
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand the freed float32 copies back, so the resident set is what stays
    return {"kind": kind, "frozen_bytes": module_bytes(model), "rss_mib": _status_mib("VmRSS"), "peak_mib": _status_mib("VmHWM"), "load_s": seconds}


def fsdp_worker(name: str, out: Path) -> None:
    """One process of the ``--fsdp`` launch: sets up a run of ``name`` with nf4 weights under FSDP2 (the trainer's
    set-up shards it) and writes the frozen bytes this process holds and the fp32 model's to ``out``/rank{R}.json."""
    import torch

    from promptcore import Trainer, load_config
    from promptcore.memory import tensor_bytes
    from promptcore.recipe import resolve_config
    from textpt.cli import TextRecipe
    from textpt.run_config import TextRunConfig

    torch.set_num_threads(1)
    recipe = TextRecipe()
    overrides = [f"model.name={name}", "model.kwargs={}", "model.quantization=nf4", "train.distributed=fsdp",
                 "data.num_samples=16", "data.num_eval_samples=8", "train.batch_size=4"]
    cfg = resolve_config(recipe, load_config(TextRunConfig, str(SMOKE), overrides))
    model = recipe.build_model(cfg)
    data = recipe.build_data(cfg, model)
    Trainer(model, cfg.train, data.train, None, data.collate_fn)
    frozen = [p for p in model.parameters() if not p.requires_grad]
    figures = {"local_bytes": tensor_bytes(frozen), "fp32_bytes": sum(p.numel() * 4 for p in frozen)}
    (out / f"rank{os.environ['RANK']}.json").write_text(json.dumps(figures))


def fsdp_row(name: str, processes: int, out: Path) -> dict:
    """Launches ``processes`` FSDP workers on ``name`` and returns the largest share a process holds."""
    out.mkdir(parents=True, exist_ok=True)
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", str(processes), __file__, "--fsdp-child", name, str(out)]
    # Counted bytes do not depend on the device: the processes run on the CPU (gloo) on a GPU machine too.
    subprocess.run(cmd, check=True, capture_output=True, text=True, env={**child_env(), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(processes)]
    local = max(r["local_bytes"] for r in ranks)
    return {"processes": processes, "local_bytes": local, "fp32_bytes": ranks[0]["fp32_bytes"]}


def accuracy(name: str, kind: str, train: int, test: int, out: Path) -> dict:
    """Trains the demo's prompt on the ``kind`` backbone and returns its test accuracy and interval."""
    from demo.stats import binomial_interval

    sets = ["model.name=" + name, f"data.max_train_samples={train}", f"data.max_eval_samples={test}", "train.progress_bar=false"]
    if kind != "fp32":
        sets.append(f"model.quantization={kind}")
    argv = [sys.executable, "-m", "textpt", "train", "-c", str(DEMO), "-o", str(out / kind)]
    for s in sets:
        argv += ["--set", s]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=child_env(), check=True)
    seconds = time.perf_counter() - start
    result = json.loads(done.stdout[done.stdout.index("{"):])
    metrics = result["eval"]
    acc = float(metrics["accuracy"])
    count = int(metrics.get("count", test))
    low, high = binomial_interval(round(acc * count), count)
    return {"kind": kind, "accuracy": acc, "count": count, "low": low, "high": high, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=["fp32", "int8", "int4", "nf4"], choices=["fp32", "int8", "int4", "nf4"])
    parser.add_argument("--random", action="store_true", help="a random Llama of SmolLM2-135M's shapes")
    parser.add_argument("--tiny", action="store_true", help="a random Llama of width 256, 2 layers (smoke run)")
    parser.add_argument("--fsdp", type=int, metavar="N", help="add nf4 under FSDP over N processes")
    parser.add_argument("--accuracy", action="store_true", help="also train the demo prompt on fp32 and int8")
    parser.add_argument("--train", type=int, default=192)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--write", help="append the markdown figures to this file")
    parser.add_argument("--child", nargs=2, metavar=("NAME", "KIND"), help=argparse.SUPPRESS)
    parser.add_argument("--fsdp-child", nargs=2, metavar=("NAME", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child)))
        return
    if args.fsdp_child:
        fsdp_worker(args.fsdp_child[0], Path(args.fsdp_child[1]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        name = "asset:smollm2_135m"
        if args.random or args.tiny:
            from textpt.config import TextModelConfig
            from textpt.loading import load_model_and_tokenizer

            shapes = TINY_SHAPES if args.tiny else SMOLLM2_SHAPES
            model, tokenizer = load_model_and_tokenizer(TextModelConfig(name="random:llama", kwargs=shapes))
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            name = tmp
        rows = []
        for kind in args.kinds:
            done = subprocess.run([sys.executable, __file__, "--child", name, kind], check=False, capture_output=True, text=True, env=child_env())
            if done.returncode:  # one kind failing (say, its library does not run on this torch) leaves the others
                print(done.stderr, file=sys.stderr)
                rows.append({"kind": kind, "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"})
                continue
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        fp32 = next((r["frozen_bytes"] for r in rows if r["kind"] == "fp32" and "error" not in r), None)
        described = "random Llama of width 256, 2 layers" if args.tiny else "random Llama of SmolLM2-135M shapes" if args.random else "asset:smollm2_135m"
        lines = [
            (f"`python bench/quant.py {' '.join(sys.argv[1:])}`, {platform.machine()} CPU with {os.cpu_count()} cores, no GPU, "
             f"torch {__import__('torch').__version__}, {time.strftime('%Y-%m-%d')}; model {described}"),
            "",
            "| frozen weights | MiB (params + buffers) | / fp32 | resident MiB after load | process peak MiB | load s |",
            "|---|---|---|---|---|---|",
        ]
        for r in rows:
            if "error" in r:
                lines.append(f"| {r['kind']} | failed: {r['error'][:160]} | | | | |")
                continue
            ratio = f"{r['frozen_bytes'] / fp32:.3f}" if fp32 else "-"
            lines.append(f"| {r['kind']} | {r['frozen_bytes'] / 2**20:.1f} | {ratio} | {r['rss_mib']:.0f} | {r['peak_mib']:.0f} | {r['load_s']:.1f} |")
        if args.fsdp:
            r = fsdp_row(name, args.fsdp, Path(tmp) / "fsdp")
            lines += ["", f"| frozen weights per process, nf4 under FSDP ({r['processes']} processes) vs fp32 unsharded | MiB | ratio |",
                      "|---|---|---|",
                      f"| counted bytes (promptcore.memory.module_bytes), the largest process | {r['local_bytes'] / 2**20:.2f} of {r['fp32_bytes'] / 2**20:.2f} | {r['local_bytes'] / r['fp32_bytes']:.4f} |"]
        if args.accuracy:
            lines += ["", f"Prompt tuning, configs/demo/causal_lm_prompt.yaml with {args.train} training rows, {args.test} test rows:", "",
                      "| backbone | test accuracy | 95% interval | n | train + eval s |", "|---|---|---|---|---|"]
            for kind in ("fp32", "int8"):
                r = accuracy(name, kind, args.train, args.test, Path(tmp))
                lines.append(f"| {kind} | {r['accuracy']:.3f} | {r['low']:.3f}-{r['high']:.3f} | {r['count']} | {r['seconds']:.0f} |")
        emit(lines, args.write)


if __name__ == "__main__":
    main()
