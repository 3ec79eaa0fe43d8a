"""Mixed-task batches against single-task batches of the same size: the model side of serving, no HTTP.

Each figure is the throughput of batches whose rows are drawn from ``--num-prompts`` different, separately built
prompts of one frozen backbone, divided by the throughput of batches whose rows all use one prompt (same batch size,
same inputs, measured in one run, interleaved). Near 1: mixing tasks costs nothing.

- ``vpt_deep``: VPT-deep prompts (``--vision-tokens`` tokens, 10 classes each) on a ViT-B/16-shaped timm model
  (random weights), through :class:`vpt.VisionBackend` (``classify``: preprocessing excluded, the prepared pixels
  are reused).
- ``text_pt``: prompt tuning (``--text-tokens`` tokens, a two-word verbalizer each) on a SmolLM2-135M-shaped Llama
  (random weights), through :func:`textpt.mixed.class_scores`.

Run alone (nothing else on the machine): ``python bench/mixed_batch.py [--quick] [--write bench/RESULTS.md]``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from emit import emit  # noqa: E402

import textpt  # noqa: E402
import vpt  # noqa: E402
from textpt import mixed  # noqa: E402
from vpt.serving import record_backbone  # noqa: E402

SMOLLM2 = dict(
    hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
    vocab_size=49152, max_position_embeddings=2048, tie_word_embeddings=True,
)


def interleaved(runs: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds of each callable, the callables taking turns (one warm-up call each first)."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


@torch.no_grad()
def vision(num_prompts: int, batch: int, tokens: int, repeats: int, size: int) -> tuple[float, dict[str, float]]:
    section = vpt.BackboneConfig("timm:vit_base_patch16_224", pretrained=False, kwargs={"img_size": size})
    torch.manual_seed(0)
    backbone = vpt.create_model(section)
    backend = vpt.VisionBackend(backbone)
    prompts = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(num_prompts):
            model = vpt.wrap(backbone, vpt.VPTConfig(method="vpt_deep", num_tokens=tokens, num_classes=10))
            generator = torch.Generator().manual_seed(i)
            for p in model.prompt_parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=generator))
            record_backbone(model, section, 0)
            prompts.append(backend.open_prompt(model.save_prompts(Path(tmp) / f"p{i}"), f"p{i}"))
    image = Image.new("RGB", (size, size), "gray")
    mixed_rows = [backend.prepare(prompts[(7 * j) % num_prompts], "classify", image, {"top_k": 1}) for j in range(batch)]
    single_rows = [backend.prepare(prompts[0], "classify", image, {"top_k": 1}) for _ in range(batch)]
    times = interleaved({"mixed": lambda: backend.classify(mixed_rows), "single": lambda: backend.classify(single_rows)}, repeats)
    return times["single"] / times["mixed"], times


@torch.no_grad()
def text(num_prompts: int, batch: int, tokens: int, length: int, repeats: int) -> tuple[float, dict[str, float]]:
    torch.manual_seed(0)
    lm, tokenizer = textpt.load_model_and_tokenizer(textpt.TextModelConfig(name="random:llama", kwargs=SMOLLM2))
    models = []
    for i in range(num_prompts):
        config = textpt.PromptTuningConfig(num_tokens=tokens, verbalizer=[" negative", " positive"], seed=i)
        models.append(textpt.wrap(lm, config, tokenizer=tokenizer).eval())
    generator = torch.Generator().manual_seed(1)
    rows = [torch.randint(10, 1000, (length - j % 8,), generator=generator).tolist() for j in range(batch)]
    mixed_models = [models[(7 * j) % num_prompts] for j in range(batch)]
    times = interleaved(
        {"mixed": lambda: mixed.class_scores(mixed_models, rows), "single": lambda: mixed.class_scores([models[0]] * batch, rows)},
        repeats,
    )
    return times["single"] / times["mixed"], times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script runs")
    parser.add_argument("--num-prompts", type=int, default=100)
    parser.add_argument("--vision-tokens", type=int, default=10)
    parser.add_argument("--text-tokens", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", help="append the markdown to this file")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    if args.quick:
        v_ratio, v_times = vision(8, 4, 2, 1, 64)
        t_ratio, t_times = text(8, 4, 4, 8, 1)
        v_shape, t_shape = "ViT-B/16 at 64 px, batch 4, 8 prompts (--quick)", "batch 4 x 8 tokens, 8 prompts (--quick)"
    else:
        v_ratio, v_times = vision(args.num_prompts, 16, args.vision_tokens, args.repeats, 224)
        t_ratio, t_times = text(args.num_prompts, 32, args.text_tokens, 48, args.repeats)
        v_shape = f"ViT-B/16 at 224 px, batch 16, {args.vision_tokens} prompt tokens, {args.num_prompts} prompts"
        t_shape = f"batch 32 x 41-48 tokens, {args.text_tokens} prompt tokens, {args.num_prompts} prompts"
    machine = f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"
    emit([
        f"### Mixed-task batches / single-task batches ({machine}, float32)",
        "",
        "| model | shape | single-task batch | mixed batch | throughput, mixed / single |",
        "|---|---|---|---|---|",
        f"| VPT-deep (`vpt.VisionBackend.classify`) | {v_shape} | {v_times['single'] * 1e3:.0f} ms | {v_times['mixed'] * 1e3:.0f} ms | {v_ratio:.2f} |",
        f"| prompt tuning, SmolLM2-135M shapes (`textpt.mixed.class_scores`) | {t_shape} | {t_times['single'] * 1e3:.0f} ms | {t_times['mixed'] * 1e3:.0f} ms | {t_ratio:.2f} |",
    ], args.write)


if __name__ == "__main__":
    main()
