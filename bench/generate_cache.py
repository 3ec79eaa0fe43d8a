"""Generation throughput of prompt tuning: textpt with the prompt cache, textpt without it, and PEFT's ``generate``.

One task's requests (64 by default), each ``--length`` random input tokens, arrive in generate calls of ``--batch``
requests (1 and 8 by default, one table row each); every call decodes ``--new-tokens`` tokens greedily (no
end-of-sequence stop, so every side writes the same number of tokens). The model is a random Llama of SmolLM2-135M's shapes (``--layers`` fewer for a quick check), the
prompt ``--tokens`` long (100 by default), the same embeddings on all three sides:

- textpt, ``prompt_cache: auto``: the prompt's keys and values are computed once for the task and every call starts
  from them (:mod:`textpt.prompt_cache`); each repeat starts with nothing kept, so its first call computes them;
- textpt, ``prompt_cache: false``: each call computes the prompt's keys and values once for its batch (the reference
  path);
- PEFT: the prompt's embeddings are put before every request's input and run through the model with it.

Reported: requests/s of each side (median of ``--repeats`` interleaved repeats, each after an untimed warm-up),
the throughput ratios over PEFT, and the share of requests whose tokens equal PEFT's (float32: greedy ties may
break differently after many tokens, so a share below 1 is worth a look, not a failure).

Usage: ``python bench/generate_cache.py [--repeats 3] [--requests 64] [--batch 1 8] [--tokens 100] [--layers N] [--write FILE]``
"""

from __future__ import annotations

import argparse
import os
import statistics

import peft
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import textpt

from emit import emit, machine_line  # bench/emit.py: scripts run as `python bench/NAME.py`
from textpt_vs_peft import SMOLLM2_135M, timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=64, help="requests of the one task")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="requests per generate call (one row each)")
    parser.add_argument("--tokens", type=int, default=100, help="prompt tokens")
    parser.add_argument("--length", type=int, default=32, help="input tokens per request")
    parser.add_argument("--new-tokens", type=int, default=16, help="tokens generated per request")
    parser.add_argument("--layers", type=int, default=None, help="fewer layers than SmolLM2-135M's 30, for a quick check")
    parser.add_argument("--write", help="markdown file to append the table to")
    args = parser.parse_args()
    for batch in args.batch:
        if args.requests % batch:
            parser.error(f"--requests {args.requests} is not a multiple of --batch {batch}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    load_before = os.getloadavg()
    layers = args.layers or SMOLLM2_135M["num_hidden_layers"]
    backbone = LlamaForCausalLM(LlamaConfig(**dict(SMOLLM2_135M, num_hidden_layers=layers))).to(device).eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    config = textpt.PromptTuningConfig(num_tokens=args.tokens, init="vocab")
    pt = textpt.wrap(backbone, config, task="causal_lm", name="SmolLM2-135M shapes").eval()
    pm = peft.get_peft_model(backbone, peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=args.tokens)).eval()
    with torch.no_grad():
        pm.prompt_encoder["default"].embedding.weight.copy_(pt.prompts.weight)
    ids = torch.randint(0, SMOLLM2_135M["vocab_size"], (args.requests, args.length), device=device)
    decode = {"max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens, "do_sample": False, "eos_token_id": None, "pad_token_id": 0}
    rows = []
    for batch in args.batch:
        calls = [(ids[i:i + batch], torch.ones_like(ids[i:i + batch])) for i in range(0, args.requests, batch)]

        def run_textpt(cache: bool) -> torch.Tensor:
            pt.set_prompt_cache("auto" if cache else False)  # also drops what was kept: each repeat starts cold
            return torch.cat([pt.generate(x, m, **decode) for x, m in calls])

        @torch.no_grad()
        def run_peft() -> torch.Tensor:
            return torch.cat([pm.generate(input_ids=x, attention_mask=m, **decode)[:, -args.new_tokens:] for x, m in calls])

        sides = {"cached": lambda: run_textpt(True), "uncached": lambda: run_textpt(False), "peft": run_peft}
        outputs = {"cached": sides["cached"]()}  # warm-up, and the tokens compared
        assert len(pt.kept_prompt) == 1, "the cached side did not keep the prompt's keys and values"
        outputs.update({name: sides[name]() for name in ("uncached", "peft")})
        times: dict[str, list[float]] = {name: [] for name in sides}
        order = list(sides)
        for i in range(args.repeats):  # interleaved, so drift in machine load hits all alike
            for name in order if i % 2 == 0 else order[::-1]:
                times[name].append(timed(sides[name], device))
        rate = {name: args.requests / statistics.median(t) for name, t in times.items()}
        row = {
            "batch": batch, **rate,
            "same_as_peft": float((outputs["cached"] == outputs["peft"]).all(1).float().mean()),
            "cached_equals_uncached": bool(torch.equal(outputs["cached"], outputs["uncached"])),
        }
        rows.append(row)
        print(row, flush=True)
    lines = [
        "# textpt generate with the prompt cache vs PEFT generate (SmolLM2-135M shapes, random weights)",
        "",
        f"Machine: {machine_line(device, load_before)}; torch {torch.__version__}. {layers} layers, float32, prompt tuning "
        f"with {args.tokens} prompt tokens, {args.requests} requests of one task, {args.length} input tokens and "
        f"{args.new_tokens} greedy new tokens each; median of {args.repeats} interleaved repeats, each timing all "
        f"{args.requests} requests from a cold cache. Throughput in requests/s; ratios over PEFT's (higher is better).",
        "",
        "| requests per call | textpt, cache | textpt, no cache | PEFT | cache / PEFT | no cache / PEFT | cache / no cache | "
        "requests with PEFT's tokens | cache == no cache |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['batch']} | {r['cached']:.2f} | {r['uncached']:.2f} | {r['peft']:.2f} | {r['cached'] / r['peft']:.2f} | "
            f"{r['uncached'] / r['peft']:.2f} | {r['cached'] / r['uncached']:.2f} | {r['same_as_peft']:.0%} | {r['cached_equals_uncached']} |"
        )
    emit(lines, args.write)


if __name__ == "__main__":
    main()
