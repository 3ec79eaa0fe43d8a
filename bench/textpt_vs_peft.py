"""textpt prompt tuning against PEFT prompt tuning on Llama shapes (random weights), in one run.

Same backbone object, same prompt embeddings, batch 16 x 64 input tokens, 20 and 100 prompt tokens by default;
``--shape`` picks SmolLM2-135M's shapes (default) or Llama-3.2-1B's, ``--dtype`` the frozen weights' precision
(prompts stay float32). textpt is timed twice: with its default (``fast: auto``, the shared key/value prefix on
decoder-only models) and with ``fast: off`` (the prompt concatenated to every example, as PEFT does). Measures, for
each prompt length, interleaving the three:

- train step time (forward + backward of the LM loss on the input tokens), ratios textpt / PEFT;
- inference throughput (examples/s of a no-grad forward), ratio textpt / PEFT (as time, lower is better);
- the largest logit difference on the input tokens (float32);
- memory: on CUDA the peak allocated bytes of a train step; on CPU the bytes autograd saves for backward
  (through ``torch.autograd.graph.saved_tensors_hooks``), each storage counted once and the backbone's frozen
  weights left out (both sides share them; textpt's two passes, prompt and input, would otherwise count every
  weight twice): the activations a train step holds until backward, the part of train memory that the prompt
  length changes.

Every timed function runs once untimed first (the first backward costs several times a later one), and the repeats
alternate which implementation goes first, so a call that follows the other model's allocations is not always the
same side's.

Usage: ``python bench/textpt_vs_peft.py [--repeats 3] [--shape smollm2_135m|llama_1b] [--dtype float32|bfloat16] [--write FILE]``
(``--write`` appends the markdown to ``FILE``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import torch
from promptcore.library_notes import import_torchao_quietly

import_torchao_quietly()  # before peft and transformers import it (torch's notes about torchao on every run)
import peft  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

import textpt  # noqa: E402

from emit import emit, machine_line  # bench/emit.py: scripts run as `python bench/NAME.py`

# transformers 5.25's FutureWarning about PEFT 0.21's own use of is_gradient_checkpointing, once per PEFT model
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

SMOLLM2_135M = dict(
    vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
    num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0, tie_word_embeddings=True,
)
LLAMA_32_1B = dict(
    vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
    num_key_value_heads=8, max_position_embeddings=131072, rope_theta=500000.0, tie_word_embeddings=True,
)
SHAPES = {"smollm2_135m": ("SmolLM2-135M", SMOLLM2_135M), "llama_1b": ("Llama-3.2-1B", LLAMA_32_1B)}


def saved_bytes(fn, shared: torch.nn.Module) -> int:
    """Bytes of the distinct storages autograd saves while ``fn`` runs, ``shared``'s parameters left out."""
    weights = {p.untyped_storage().data_ptr() for p in shared.parameters()}
    storages: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(storages.values())


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--tokens", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="smollm2_135m")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="the frozen weights' precision")
    parser.add_argument("--layers", type=int, default=None, help="fewer layers than the shape's, for a quick check")
    parser.add_argument("--write", help="markdown file to append the table to")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    load_before = os.getloadavg()
    shape_name, shape = SHAPES[args.shape]
    args.layers = args.layers or shape["num_hidden_layers"]
    dtype = getattr(torch, args.dtype)
    backbone = LlamaForCausalLM(LlamaConfig(**dict(shape, num_hidden_layers=args.layers))).to(device, dtype).eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    ids = torch.randint(0, shape["vocab_size"], (args.batch, args.length), device=device)
    mask = torch.ones_like(ids)
    rows = []
    for n in args.tokens:
        pt = textpt.wrap(backbone, textpt.PromptTuningConfig(num_tokens=n, init="vocab"), task="causal_lm", name=f"{shape_name} shapes")
        pc = textpt.wrap(backbone, textpt.PromptTuningConfig(num_tokens=n, init="vocab", fast="off"), task="causal_lm", name=f"{shape_name} shapes")
        pm = peft.get_peft_model(backbone, peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n))
        with torch.no_grad():
            pc.prompts.weight.copy_(pt.prompts.weight)
            pm.prompt_encoder["default"].embedding.weight.copy_(pt.prompts.weight)

        def train_textpt():
            pt.training_step({"input_ids": ids, "attention_mask": mask, "lm_labels": ids}).backward()

        def train_concat():
            pc.training_step({"input_ids": ids, "attention_mask": mask, "lm_labels": ids}).backward()

        def train_peft():
            pm(input_ids=ids, attention_mask=mask, labels=ids).loss.backward()

        @torch.no_grad()
        def infer_textpt():
            return pt.token_logits(ids, mask)

        @torch.no_grad()
        def infer_concat():
            return pc.token_logits(ids, mask)

        @torch.no_grad()
        def infer_peft():
            return pm(input_ids=ids, attention_mask=mask).logits[:, n:]

        diff = float((infer_textpt() - infer_peft()).abs().max())
        mem_t = saved_bytes(lambda: pt.training_step({"input_ids": ids, "attention_mask": mask, "lm_labels": ids}), backbone)
        mem_p = saved_bytes(lambda: pm(input_ids=ids, attention_mask=mask, labels=ids).loss, backbone)
        if device.type == "cuda":
            peaks = []
            for fn in (train_textpt, train_peft):
                torch.cuda.reset_peak_memory_stats()
                fn()
                peaks.append(torch.cuda.max_memory_allocated())
            mem_t, mem_p = peaks
        for fn in (train_textpt, train_concat, train_peft, infer_textpt, infer_concat, infer_peft):  # warm-up: allocator, kernels, autograd
            fn()
        train = {"t": [], "c": [], "p": []}
        infer = {"t": [], "c": [], "p": []}
        for i in range(args.repeats):  # interleaved, so drift in machine load hits all alike
            sides = [("t", train_textpt, infer_textpt), ("c", train_concat, infer_concat), ("p", train_peft, infer_peft)]
            for side, train_fn, infer_fn in sides if i % 2 == 0 else sides[::-1]:
                train[side].append(timed(train_fn, device))
                infer[side].append(timed(infer_fn, device))
        med = {k: {s: statistics.median(v[s]) for s in v} for k, v in (("train", train), ("infer", infer))}
        row = {
            "n": n,
            "train_t": med["train"]["t"], "train_p": med["train"]["p"],
            "infer_t": args.batch / med["infer"]["t"], "infer_p": args.batch / med["infer"]["p"],
            "train_ratio": med["train"]["t"] / med["train"]["p"], "infer_ratio": med["infer"]["t"] / med["infer"]["p"],
            "train_concat_ratio": med["train"]["c"] / med["train"]["p"], "infer_concat_ratio": med["infer"]["c"] / med["infer"]["p"],
            "diff": diff, "mem_t": mem_t, "mem_p": mem_p,
        }
        rows.append(row)
        print(row, flush=True)
    machine = machine_line(device, load_before)
    mem_kind = "peak CUDA allocated bytes of a train step" if device.type == "cuda" else "activation bytes saved for backward (CPU)"
    lines = [
        f"# textpt vs PEFT prompt tuning ({shape_name} shapes, random weights)",
        "",
        f"Machine: {machine}; torch {torch.__version__}. {args.layers} layers, batch {args.batch} x {args.length} input tokens, "
        f"frozen weights {args.dtype}, median of {args.repeats} interleaved repeats. Ratios are textpt / PEFT time (lower is better); "
        f"textpt runs with its default (fast: auto, the shared prefix) and with fast: off (concatenation, as PEFT).",
        "",
        f"| prompt tokens | train step textpt (s) | train step PEFT (s) | step ratio | step ratio, fast: off | infer textpt (ex/s) | infer PEFT (ex/s) | "
        f"infer time ratio | infer time ratio, fast: off | max logit diff | memory textpt / PEFT ({mem_kind}) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['train_t']:.3f} | {r['train_p']:.3f} | {r['train_ratio']:.2f} | {r['train_concat_ratio']:.2f} | {r['infer_t']:.1f} | "
            f"{r['infer_p']:.1f} | {r['infer_ratio']:.2f} | {r['infer_concat_ratio']:.2f} | {r['diff']:.1e} | "
            f"{r['mem_t'] / 2**20:.0f} MiB / {r['mem_p'] / 2**20:.0f} MiB ({r['mem_t'] / r['mem_p']:.2f}) |"
        )
    emit(lines, args.write)


if __name__ == "__main__":
    main()
