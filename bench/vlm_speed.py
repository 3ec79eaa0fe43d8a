"""vlmpt train steps on LLaVA (random weights) against PEFT prompt tuning and full fine-tuning, in one run.

One backbone object serves every side: ``vlm_prompt_tuning``, ``vlm_prefix`` and ``vlm_vpt`` with ``deep: true``
(vlmpt, the same number of prompt tokens each), PEFT's prompt tuning
(``PromptTuningConfig``, task ``CAUSAL_LM``, which runs a training step on LLaVA; the failures reported for PEFT on
these models are in generation and prefix tuning, docs/vlm.md), and full fine-tuning (every backbone weight trainable, the same LM loss).
A train step is the forward and backward of the next-token loss over every input token (no optimizer step), on a
batch of ``--batch`` examples: ``--text`` text tokens around one image's placeholders. ``--shape llava_7b`` is
LLaVA-1.5-7B's (Llama-2-7B language model, CLIP ViT-L/14 at 336 pixels: 576 image tokens); ``tiny`` is the tests'
tiny LLaVA, for a smoke run. Measures, interleaving the sides (each timed once untimed first, the order rotating
between repeats):

- train step time, medians, and the ratios vlmpt / PEFT and vlmpt / full fine-tuning (lower is better);
- on CUDA, the peak allocated bytes of a train step above the memory held before it, as ratios to PEFT's and full
  fine-tuning's.

Usage: ``python bench/vlm_speed.py [--shape tiny|llava_7b] [--dtype float32|bfloat16] [--repeats 3] [--batch 4]
[--tokens 16] [--layers N] [--write FILE]`` (``--write`` appends the markdown to ``FILE``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import peft
import torch
import transformers

import vlmpt
from promptcore import wrap
from vlmpt.synthetic import tiny_backbone

from emit import emit, machine_line  # bench/emit.py: scripts run as `python bench/NAME.py`

LLAVA_7B = dict(
    text_config=dict(
        model_type="llama", vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, pad_token_id=0,
    ),
    vision_config=dict(
        model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
        num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768,
    ),
    image_token_id=32000, vision_feature_layer=-2, vision_feature_select_strategy="default",
)


def build(shape: str, dtype: torch.dtype, device: torch.device, layers: int | None) -> torch.nn.Module:
    """The frozen LLaVA of ``shape`` (random weights) on ``device`` in ``dtype``."""
    if shape == "tiny":
        return tiny_backbone("llava").to(device, dtype)
    config = transformers.LlavaConfig(**LLAVA_7B)
    if layers is not None:
        config.text_config.num_hidden_layers = layers
    with device:
        model = transformers.LlavaForConditionalGeneration(config).to(dtype).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def batch_of(backbone: torch.nn.Module, size: int, text: int, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """``size`` examples of ``text // 4`` text tokens, one image's placeholders, the rest of the text tokens."""
    vision = backbone.config.vision_config
    image_tokens = (vision.image_size // vision.patch_size) ** 2
    image_id = backbone.config.image_token_id
    generator = torch.Generator().manual_seed(0)
    words = torch.randint(3, min(image_id, backbone.config.text_config.vocab_size) - 1, (size, text), generator=generator)
    ids = torch.cat([words[:, : text // 4], torch.full((size, image_tokens), image_id), words[:, text // 4 :]], dim=1)
    pixels = torch.randn(size, 3, vision.image_size, vision.image_size, generator=generator)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device), "pixel_values": pixels.to(device, dtype)}


def timed(fn, device: torch.device) -> tuple[float, int]:
    """Seconds ``fn`` takes and, on CUDA, the peak bytes it allocates above what was allocated before it."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter() - start, torch.cuda.max_memory_allocated() - before
    return time.perf_counter() - start, 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=["tiny", "llava_7b"], default="llava_7b")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16", help="the frozen weights' precision")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--text", type=int, default=64, help="text tokens per example, besides the image's")
    parser.add_argument("--tokens", type=int, default=16, help="prompt tokens (vlmpt and PEFT) and prefix positions")
    parser.add_argument("--layers", type=int, default=None, help="fewer language-model layers than the shape's, for a quick check")
    parser.add_argument("--write", help="markdown file to append the table to")
    args = parser.parse_args()
    load_before = os.getloadavg()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype)
    backbone = build(args.shape, dtype, device, args.layers)
    batch = batch_of(backbone, args.batch, args.text, device, dtype)
    labels = batch["input_ids"]

    shallow = wrap(backbone, vlmpt.VLMPromptTuningConfig(num_tokens=args.tokens))
    deep = wrap(backbone, vlmpt.VLMPrefixConfig(num_tokens=args.tokens))
    vision = wrap(backbone, vlmpt.VLMVisionPromptConfig(num_tokens=args.tokens, deep=True))
    peft_model = peft.get_peft_model(backbone, peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=args.tokens))
    peft_model.prompt_encoder.to(device)

    def full_step() -> None:
        for p in backbone.parameters():
            p.requires_grad_(True)
        backbone(**batch, labels=labels).loss.backward()
        for p in backbone.parameters():
            p.requires_grad_(False)
            p.grad = None

    steps = {
        "vlm_prompt_tuning": lambda: shallow.training_step(batch).backward(),
        "vlm_prefix": lambda: deep.training_step(batch).backward(),
        "vlm_vpt (deep)": lambda: vision.training_step(batch).backward(),
        "PEFT prompt tuning": lambda: peft_model(**batch, labels=labels).loss.backward(),
        "full fine-tuning": full_step,
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    memory: dict[str, int] = {}
    for name, step in steps.items():
        step()  # untimed: the first backward costs several times a later one
    names = list(steps)
    for r in range(args.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            seconds, peak = timed(steps[name], device)
            times[name].append(seconds)
            memory[name] = max(memory.get(name, 0), peak)
            for model in (shallow, deep, vision, peft_model):
                model.zero_grad(set_to_none=True)
    med = {name: statistics.median(t) for name, t in times.items()}
    print({"median_s": med, "peak_bytes": memory}, flush=True)

    image_tokens = batch["input_ids"].shape[1] - args.text
    layers = backbone.config.text_config.num_hidden_layers
    lines = [
        f"# vlmpt vs PEFT prompt tuning and full fine-tuning (LLaVA, {args.shape} shapes, random weights)",
        "",
        f"Machine: {machine_line(device, load_before)}; torch {torch.__version__}, peft {peft.__version__}. {layers} language-model "
        f"layers, batch {args.batch} x ({args.text} text + {image_tokens} image tokens), frozen weights {args.dtype}, {args.tokens} "
        f"prompt tokens, median of {args.repeats} interleaved repeats of a train step (forward + backward, no optimizer step).",
        "",
        "| method | train step (s) | time / PEFT | time / full fine-tuning | peak memory / PEFT | peak memory / full fine-tuning |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        mem = ("n/a (CPU)", "n/a (CPU)") if device.type != "cuda" else (
            f"{memory[name] / memory['PEFT prompt tuning']:.2f}", f"{memory[name] / memory['full fine-tuning']:.2f}"
        )
        lines.append(
            f"| {name} | {med[name]:.4f} | {med[name] / med['PEFT prompt tuning']:.2f} | {med[name] / med['full fine-tuning']:.2f} | {mem[0]} | {mem[1]} |"
        )
    emit(lines, args.write)


if __name__ == "__main__":
    main()
