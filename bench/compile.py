"""Step time with ``train.compile: true`` over the plain (eager) step: a vision and a text method through the Trainer.

Vision: VPT-deep (on its fast path) over a timm ViT; text: prompt tuning of a random Llama for sequence
classification, on texts of random lengths (so the compiled step meets a new length in most batches, and a short last
batch). Each side trains ``--steps`` steps in one epoch, with the same model weights and batches; the seconds of each
step come from the trainer's own step records (:class:`promptcore.callbacks.StepInfo`). Reported: the first step
(where compilation happens), and the median of the steps after the first ``--warmup`` ones, as a ratio eager /
compiled (above 1: the compiled step is faster).

Sizes: ``--size tiny`` (ViT img 32 / patch 8 / depth 2 / width 64, Llama width 32 with 2 layers: a CPU smoke run) or
``--size real`` (ViT-B/16 at 224, a random Llama of SmolLM2-135M's shapes, texts of 32 to 256 tokens: for GPUs, with
``--mixed-precision bf16``). No weights are downloaded.

Run: ``python bench/compile.py [--size tiny] [--steps 12] [--mixed-precision no] [--backend inductor] [--write FILE]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any, Callable

import torch

import promptcore.engines.base as engines_base
from promptcore import Trainer, TrainConfig
from promptcore.callbacks import Callback

from emit import emit, machine_line  # bench/emit.py: scripts run as `python bench/NAME.py`

SIZES = {
    "tiny": {
        "vit": {"name": "timm:vit_tiny_patch16_224", "kwargs": {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 2}, "image": 32, "batch": 16},
        "llama": {"kwargs": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}, "lengths": (4, 24), "batch": 16},
    },
    "real": {
        "vit": {"name": "timm:vit_base_patch16_224", "kwargs": {}, "image": 224, "batch": 64},
        "llama": {
            "kwargs": {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3},
            "lengths": (32, 256),
            "batch": 32,
        },
    },
}


class StepSeconds(Callback):
    """Keeps each training step's seconds, as the trainer measured them."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_step_end(self, trainer: Any, info: Any) -> None:
        self.seconds.append(info.seconds)


def vision(size: dict[str, Any], steps: int) -> tuple[Callable[[], Any], Any, None]:
    import vpt
    from vpt.synthetic import SyntheticImages

    def build() -> Any:
        torch.manual_seed(0)
        backbone = vpt.create_model(vpt.BackboneConfig(size["vit"]["name"], pretrained=False, kwargs=size["vit"]["kwargs"]))
        return vpt.wrap(backbone, vpt.VPTConfig(method="vpt_deep", num_tokens=10, num_classes=10))

    data = SyntheticImages(num_samples=steps * size["vit"]["batch"], num_classes=10, image_size=size["vit"]["image"], seed=0)
    return build, data, None


def text(size: dict[str, Any], steps: int) -> tuple[Callable[[], Any], Any, Any]:
    import textpt
    from textpt import TextModelConfig, load_model_and_tokenizer
    from textpt.tasks import TextCollator

    config = TextModelConfig(name="random:llama", task="seq_cls", kwargs=size["llama"]["kwargs"], padding_side="left")

    def build() -> Any:
        torch.manual_seed(0)
        backbone, tokenizer = load_model_and_tokenizer(config)
        return textpt.wrap(backbone, textpt.PromptTuningConfig(num_tokens=20, num_classes=2), tokenizer=tokenizer)

    _, tokenizer = load_model_and_tokenizer(config)
    low, high = size["llama"]["lengths"]
    g = torch.Generator().manual_seed(0)
    # One row short of whole batches: the epoch ends with a short batch, as real data does.
    num = steps * size["llama"]["batch"] - 1
    rows = [
        {"input_ids": torch.randint(5, 100, (int(torch.randint(low, high + 1, (1,), generator=g)),), generator=g).tolist(), "labels": i % 2}
        for i in range(num)
    ]
    return build, rows, TextCollator(tokenizer.pad_token_id, "left")


def run(build: Callable[[], Any], data: Any, collate: Any, batch: int, args: argparse.Namespace, compiled: bool) -> list[float]:
    timer = StepSeconds()
    config = TrainConfig(
        epochs=1, batch_size=batch, lr=1e-2, mixed_precision=args.mixed_precision, compile=compiled, progress_bar=False,
        tensorboard=False, log_every_steps=args.steps,
    )
    Trainer(build(), config, data, collate_fn=collate, callbacks=[timer]).fit()
    return timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2, help="steps left out of the median (compilation, a new length's first run)")
    parser.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default="no")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (aot_eager: a quick smoke run of the script)")
    parser.add_argument("--write", help="markdown file to append the figures to")
    args = parser.parse_args()
    if args.steps <= args.warmup:
        parser.error(f"--steps ({args.steps}) must be more than --warmup ({args.warmup})")
    engines_base.COMPILE_BACKEND = args.backend
    load = os.getloadavg()
    size = SIZES[args.size]
    rows = []
    for name, make, batch in (("VPT-deep, timm ViT", vision, size["vit"]["batch"]), ("prompt tuning, random Llama", text, size["llama"]["batch"])):
        build, data, collate = make(size, args.steps)
        start = time.perf_counter()
        eager = run(build, data, collate, batch, args, compiled=False)
        compiled = run(build, data, collate, batch, args, compiled=True)
        steady = [statistics.median(s[args.warmup :]) for s in (eager, compiled)]
        rows.append(
            f"| {name} | {batch} | {1000 * eager[0]:.0f} / {compiled[0]:.1f} s | {1000 * steady[0]:.1f} | {1000 * steady[1]:.1f} | "
            f"**{steady[0] / steady[1]:.2f}** | {time.perf_counter() - start:.0f} s |"
        )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    lines = [
        "# train.compile: compiled step over the eager step",
        "",
        f"`python bench/compile.py --size {args.size} --steps {args.steps} --warmup {args.warmup} --mixed-precision "
        f"{args.mixed_precision} --backend {args.backend}`, torch {torch.__version__}; {machine_line(device, load)}.",
        "",
        f"One epoch of {args.steps} steps per side through the Trainer, the same weights and batches; text lengths vary "
        f"per batch and the last text batch is short. Steady step: median of the steps after the first {args.warmup}.",
        "",
        "| method | batch | first step eager (ms) / compiled (s) | eager ms/step | compiled ms/step | eager / compiled | wall, both sides |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    emit(lines, args.write)


if __name__ == "__main__":
    main()
