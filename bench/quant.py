"""Frozen-weight memory of a quantized backbone (fp32 vs int8 vs int4), and prompt-tuning accuracy on it.

Model: the packaged SmolLM2-135M-Instruct (``asset:smollm2_135m``, offline); ``--random`` builds a random Llama of
its shapes instead (saved to a temporary folder). Each setting loads in a fresh process, which reports:

- frozen bytes: bytes held by the model's parameters and buffers, counting the inner tensors of quantized weights
  (what stays resident for the whole run);
- resident MiB after loading (``VmRSS``, after ``malloc_trim``) and the process peak (``VmHWM``): the peak includes the float32 weights
  read from the folder before they are quantized, so it is no lower than fp32's.

``--accuracy`` also trains the demo's prompt (configs/demo/causal_lm_prompt.yaml, sizes from ``--train`` and
``--test``) on the fp32 and the int8 backbone and reports test accuracy with its 95% Wilson interval.

Run: ``python bench/quant.py [--kinds fp32 int8 int4] [--random] [--accuracy --train 192 --test 200] [--write FILE]``
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
    parser.add_argument("--kinds", nargs="+", default=["fp32", "int8", "int4"], choices=["fp32", "int8", "int4"])
    parser.add_argument("--random", action="store_true", help="a random Llama of SmolLM2-135M's shapes")
    parser.add_argument("--accuracy", action="store_true", help="also train the demo prompt on fp32 and int8")
    parser.add_argument("--train", type=int, default=192)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--write", help="append the markdown figures to this file")
    parser.add_argument("--child", nargs=2, metavar=("NAME", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        name = "asset:smollm2_135m"
        if args.random:
            from textpt.config import TextModelConfig
            from textpt.loading import load_model_and_tokenizer

            model, tokenizer = load_model_and_tokenizer(TextModelConfig(name="random:llama", kwargs=SMOLLM2_SHAPES))
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
        lines = [
            (f"`python bench/quant.py {' '.join(sys.argv[1:])}`, {platform.machine()} CPU with {os.cpu_count()} cores, no GPU, "
             f"torch {__import__('torch').__version__}, {time.strftime('%Y-%m-%d')}; model {'random Llama of SmolLM2-135M shapes' if args.random else 'asset:smollm2_135m'}"),
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
        if args.accuracy:
            lines += ["", f"Prompt tuning, configs/demo/causal_lm_prompt.yaml with {args.train} training rows, {args.test} test rows:", "",
                      "| backbone | test accuracy | 95% interval | n | train + eval s |", "|---|---|---|---|---|"]
            for kind in ("fp32", "int8"):
                r = accuracy(name, kind, args.train, args.test, Path(tmp))
                lines.append(f"| {kind} | {r['accuracy']:.3f} | {r['low']:.3f}-{r['high']:.3f} | {r['count']} | {r['seconds']:.0f} |")
        emit(lines, args.write)


if __name__ == "__main__":
    main()
