"""vLLM with ``prompt_embeds`` against textpt (GPU machines with vLLM >= 0.10: ``pip install 'prompttune[vllm]'``).

1. Equality: greedy outputs of ``--n`` prompts (different texts, one prompt) through vLLM, each request sent as
   :func:`textpt.vllm.prompt_embeds` (the prompt's rows spliced into the token embeddings as textpt places them),
   against :meth:`textpt.model.TextPromptedModel.generate` on the same weights. Both run in ``--dtype`` (float32 by
   default, where the two engines' kernels differ least). A row whose tokens differ counts as a tie when, at the
   first differing step, textpt's two best logits are within ``--tie`` of each other (both engines then pick a
   best token by rounding); any other difference fails the check (exit 1).
2. Throughput: vLLM's generated tokens per second on the same requests (``--max-new-tokens`` each, end-of-sequence
   ignored) with ``prompt_embeds`` against plain token prompts (the same texts as token ids, without the prompt),
   in one run: the ratio is the cost of sending embeddings (and of the prompt's extra positions).

The model is ``--model`` (a textpt model name: ``asset:smollm2_135m``, ``hf:ORG/NAME``, a folder), saved as a plain
transformers folder for vLLM to load; the prompt is ``--prompts FOLDER`` (``textpt.load_prompted``) or a 20-token
prompt tuning prompt drawn from the vocabulary.

Run: ``python bench/vllm_check.py [--model asset:smollm2_135m] [--prompts FOLDER] [--n 100] [--max-new-tokens 32]
[--write FILE]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from emit import emit  # bench/emit.py: scripts run as `python bench/NAME.py`

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = "the movie was a story of love and loss with great acting but a dull plot and an ending nobody expected".split()


def texts(n: int) -> list[str]:
    """``n`` different inputs, 6 to 24 words each (seeded)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        k = int(torch.randint(6, 25, (1,), generator=g))
        out.append("Review: " + " ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (k,), generator=g)) + "\nSummary:")
    return out


def build(args: argparse.Namespace):
    import textpt

    if args.prompts:
        model = textpt.load_prompted(args.prompts)
    else:
        backbone, tok = textpt.load_model_and_tokenizer(textpt.TextModelConfig(args.model, dtype=args.dtype))
        model = textpt.wrap(backbone, textpt.PromptTuningConfig(num_tokens=20, init="vocab", fast="off"), tokenizer=tok)
    return model.to(torch.device("cuda")).eval()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="asset:smollm2_135m")
    p.add_argument("--prompts", default=None)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--tie", type=float, default=1e-3)
    p.add_argument("--write", default=None)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("bench/vllm_check.py needs a CUDA GPU and vLLM", file=sys.stderr)
        return 2
    from vllm import LLM, SamplingParams

    from textpt.vllm import prompt_embeds

    model = build(args)
    tok = model.tokenizer
    inputs = [tok(t)["input_ids"] for t in texts(args.n)]
    # textpt: greedy, one request at a time (no padding)
    want = []
    for ids in inputs:
        x = torch.tensor([ids], device="cuda")
        want.append(model.generate(x, torch.ones_like(x), max_new_tokens=args.max_new_tokens, do_sample=False, eos_token_id=None).tolist()[0])
    with tempfile.TemporaryDirectory() as folder:
        model.backbone.save_pretrained(folder)
        tok.save_pretrained(folder)
        llm = LLM(model=folder, enable_prompt_embeds=True, dtype=args.dtype, seed=0)
        greedy = SamplingParams(temperature=0, max_tokens=args.max_new_tokens, ignore_eos=True)
        embeds = [{"prompt_embeds": prompt_embeds(model, ids).to("cpu", getattr(torch, args.dtype))} for ids in inputs]
        got = [list(o.outputs[0].token_ids) for o in llm.generate(embeds, greedy, use_tqdm=False)]
        exact = ties = 0
        failures = []
        for ids, w, g in zip(inputs, want, got):
            if w == g:
                exact += 1
                continue
            step = next(i for i, (a, b) in enumerate(zip(w, g)) if a != b)
            x = torch.tensor([ids + w[:step]], device="cuda")
            with torch.no_grad():
                top = model.last_token_logits(x, torch.ones_like(x)).float()[0].topk(2).values
            margin = float(top[0] - top[1])
            if margin <= args.tie:
                ties += 1
            else:
                failures.append((step, margin))
        # throughput: the same requests as prompt_embeds and as plain token prompts, generating max_new_tokens each
        rates = {}
        plain = [{"prompt_token_ids": ids} for ids in inputs]
        for name, requests in (("prompt_embeds", embeds), ("token prompts", plain)):
            llm.generate(requests[:4], greedy, use_tqdm=False)  # warm up
            torch.cuda.synchronize()
            start = time.perf_counter()
            outputs = llm.generate(requests, greedy, use_tqdm=False)
            torch.cuda.synchronize()
            rates[name] = sum(len(o.outputs[0].token_ids) for o in outputs) / (time.perf_counter() - start)
    lines = [
        f"### vllm_check ({torch.cuda.get_device_name(0)}, {args.model}, {args.dtype})",
        "",
        f"- greedy outputs equal to textpt's generate: {exact} / {args.n} exact, {ties} differing after a near tie (margin <= {args.tie}), "
        f"{len(failures)} other differences" + (f" (first step, margin: {failures[:5]})" if failures else ""),
        f"- vLLM tokens/s: prompt_embeds {rates['prompt_embeds']:.0f}, token prompts {rates['token prompts']:.0f}, "
        f"ratio {rates['prompt_embeds'] / rates['token prompts']:.2f} ({args.n} requests x {args.max_new_tokens} new tokens)",
    ]
    emit(lines, args.write)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
