"""Packed against padded batches: textpt train steps on Rotten Tomatoes' real lengths, in one run.

The reviews of the offline ``rotten_tomatoes`` asset are tokenized as ``textpt train`` tokenizes them (template
``"Review: {text}\\nSentiment:"``) and drawn in seeded random batches, as the trainer draws them; each batch is then
run as a train step (forward and backward) twice, once packed (``data.packing: true``, :mod:`textpt.packing`) and
once padded (``data.packing: false``, the reference path), the two interleaved and alternating which goes first.
Two objectives: ``classify`` (the verbalizer's words scored after each review, the LM head on the last token only)
and ``lm`` (the LM loss on every token of the review, the LM head on every real token). Reports the padding share of
the padded batches, the summed step times and their ratio packed / padded (lower is better), and the largest loss
difference between the two (float32). The CPU time of the process is summed too: on a busy machine the wall time of
each step depends on the other jobs, and with ``--threads 1`` its CPU time hardly does.

The model is the SmolLM2-135M asset by default (``--model``: any ``textpt`` model name); ``--tiny`` runs a random
2-layer Llama of width 32 with the built-in word-level tokenizer instead, for a quick check of the script.

Usage: ``python bench/packing.py [--batches 8] [--batch 32] [--tokens 20] [--fast auto|off] [--model NAME | --tiny]
[--layers N] [--threads N] [--write FILE]`` (``--layers``: the model's first ``N`` layers only, a quicker run at the same widths;
``--write`` appends the markdown to ``FILE``).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

import textpt
from textpt import PromptTuningConfig, TextModelConfig
from textpt.data import TextDataConfig, build_text_data, model_input_budget

from emit import emit, machine_line  # bench/emit.py: scripts run as `python bench/NAME.py`

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 256}
VERBALIZER = [" negative", " positive"]


def timed(fn, device: torch.device) -> tuple[float, float, float]:
    """``(seconds, process CPU seconds, loss)`` of one call of ``fn`` (a train step returning its loss)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, cpu = time.perf_counter(), time.process_time()
    loss = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - cpu, float(loss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=8, help="timed batches per objective")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=20, help="prompt tokens")
    parser.add_argument("--fast", choices=["auto", "off"], default="auto", help="prompt tuning's shared-prefix path")
    parser.add_argument("--model", default="asset:smollm2_135m")
    parser.add_argument("--tiny", action="store_true", help="a random 2-layer Llama of width 32 (checks the script)")
    parser.add_argument("--layers", type=int, help="keep the model's first LAYERS layers (a shallower model of the same width)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--write", help="markdown file to append the table to")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    name, kwargs = ("random:llama", TINY) if args.tiny else (args.model, {})
    if args.layers is not None:
        kwargs = {**kwargs, "num_hidden_layers": args.layers}
    backbone, tok = textpt.load_model_and_tokenizer(TextModelConfig(name=name, kwargs=kwargs, dtype=args.dtype, padding_side="left"))
    model = textpt.wrap(backbone.to(device), PromptTuningConfig(num_tokens=args.tokens, init="vocab", fast=args.fast, verbalizer=VERBALIZER), tokenizer=tok)
    needed = args.batch * (args.batches + 1)
    data_cfg = TextDataConfig(source="asset", name="rotten_tomatoes", template="Review: {text}\nSentiment:", max_train_samples=needed, eval_split=None)
    data = build_text_data(data_cfg, tok, task="causal_lm", max_length=model_input_budget(model, 256), verbalizer=VERBALIZER)
    order = np.random.default_rng(0).permutation(len(data.train))
    batches = []
    for i in range(args.batches + 1):  # the first one warms up
        batch = data.collate_fn([data.train[int(j)] for j in order[i * args.batch:(i + 1) * args.batch]])
        batches.append({k: v.to(device) for k, v in batch.items()})
    rows = []
    for objective in ("classify", "lm"):
        times, cpu_times = {True: [], False: []}, {True: [], False: []}
        diff, real, padded = 0.0, 0, 0
        for i, batch in enumerate(batches):
            if objective == "lm":
                batch = {k: v for k, v in batch.items() if k != "labels"}
                batch["lm_labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
            losses = {}
            for packing in (True, False) if i % 2 == 0 else (False, True):
                model.set_packing(packing)

                def step():
                    loss = model.training_step(batch)
                    loss.backward()
                    return loss.detach()

                seconds, cpu_seconds, losses[packing] = timed(step, device)
                model.zero_grad(set_to_none=True)
                if i > 0:
                    times[packing].append(seconds)
                    cpu_times[packing].append(cpu_seconds)
            if i > 0:
                diff = max(diff, abs(losses[True] - losses[False]))
                real += int(batch["attention_mask"].sum()) + args.tokens * batch["input_ids"].shape[0]
                padded += batch["input_ids"].numel() + args.tokens * batch["input_ids"].shape[0]
        row = {"objective": objective, "packed": sum(times[True]), "padded": sum(times[False]), "pad_share": 1 - real / padded, "diff": diff}
        row["ratio"] = row["packed"] / row["padded"]
        row["cpu_ratio"] = sum(cpu_times[True]) / sum(cpu_times[False])
        rows.append(row)
        print(row, flush=True)
    machine = machine_line(device, load_before)
    lines = [
        f"# Packed / padded train steps on Rotten Tomatoes' lengths ({name})",
        "",
        f"Machine: {machine}; torch {torch.__version__}. Prompt tuning, {args.tokens} prompt tokens, fast: {args.fast}, "
        f"frozen weights {args.dtype}{f', first {args.layers} layers' if args.layers else ''}, {args.batches} batches of {args.batch} reviews (seeded draw; one more warms up), "
        f"each run packed and padded, interleaved. Ratio: packed / padded summed step time (lower is better); "
        f"CPU-time ratio: the same for the process's CPU time (with one thread, less sensitive to other jobs on the machine).",
        "",
        "| objective | padding share of the padded batches | packed (s) | padded (s) | ratio | CPU-time ratio | max loss diff |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['objective']} | {r['pad_share']:.2f} | {r['packed']:.3f} | {r['padded']:.3f} | {r['ratio']:.2f} | {r['cpu_ratio']:.2f} | {r['diff']:.1e} |")
    emit(lines, args.write)


if __name__ == "__main__":
    main()
