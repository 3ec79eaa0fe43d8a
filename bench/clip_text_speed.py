"""CLIP text-side speed of the prompt learners: the exact shared-prefix path against the plain 77-token path.

Measured in one run, as ratios on the same machine:

1. CoOp text step (forward + backward over all class prompts, unified 16-token context, class name at the end)
   for 100 and 1000 classes: fast / 77-token time (target <= 0.25 at 100 classes).
2. CoCoOp training throughput (images/s, forward + backward) at batch 32: batched fast path against a per-image
   loop on the 77-token path (the official implementation's batch-size-1 scheme).
3. Peak memory of each measurement: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the peak resident set
   (VmHWM) of a fresh process minus its resident set before the first step, so it counts the step's tensors only.

Random weights with the ViT-B/16 CLIP text tower's shapes (width 512, 8 heads, context 77, embed 512); ``--layers``
sets the depth (12 in ViT-B/16; fewer keeps a CPU run short, and both paths scale with it alike).

    python bench/clip_text_speed.py --layers 12            # GPU / patient CPU
    python bench/clip_text_speed.py --layers 2 --repeats 2  # 2-core CPU in a few minutes

``--write FILE`` appends the markdown to ``FILE``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

from emit import emit  # bench/emit.py: scripts run as `python bench/NAME.py`

WORDS = "cat dog golden retriever sea lion red fox tabby cat sports car pickup truck oak tree".split()


def class_names(n: int) -> list[str]:
    """Distinct names of 1 to 3 words, as real class lists have."""
    return [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(1 + i % 3)) + f" {i}" for i in range(n)]


def build(method: str, classes: int, layers: int, device: str):
    import open_clip

    import promptcore
    import vpt.clip as vc

    torch.manual_seed(0)
    clip = open_clip.CLIP(
        embed_dim=512,
        vision_cfg=dict(layers=1, width=64, head_width=32, patch_size=16, image_size=32),
        text_cfg=dict(context_length=77, vocab_size=49408, width=512, heads=8, layers=layers),
    )
    names = class_names(classes)
    cfg = vc.CoOpConfig(class_names=names, n_ctx=16) if method == "coop" else vc.CoCoOpConfig(class_names=names)
    return promptcore.wrap(clip, cfg).to(device)


def rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def measure(method: str, path: str, classes: int, layers: int, repeats: int, batch: int, device: str) -> dict:
    """One measurement (run in a fresh process so CPU peak memory is its own)."""
    model = build(method, classes, layers, device)
    model.fast = path == "fast"
    images = torch.randn(batch, 3, 32, 32, device=device)

    def step():
        if method == "coop":
            model.text_features().square().sum().backward()
        elif path == "fast":
            model(images).logsumexp(-1).sum().backward()
        else:
            for i in range(batch):  # the official scheme: one image at a time
                model(images[i : i + 1]).logsumexp(-1).sum().backward()

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    step()  # warm-up
    model.zero_grad()
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base = rss_kb("VmRSS")
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
        model.zero_grad()
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else (rss_kb("VmHWM") - base) / 1024
    return {"seconds": min(times), "peak_mib": peak}


def run_child(args: argparse.Namespace, method: str, path: str, classes: int) -> dict:
    cmd = [sys.executable, __file__, "--child", method, path, str(classes), "--layers", str(args.layers),
           "--repeats", str(args.repeats), "--batch", str(args.batch), "--device", args.device]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--coop-classes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--cocoop-classes", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--write", help="markdown file to append the figures to")
    parser.add_argument("--child", nargs=3, metavar=("METHOD", "PATH", "CLASSES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, path, classes = args.child
        print(json.dumps(measure(method, path, int(classes), args.layers, args.repeats, args.batch, args.device)))
        return
    torch_threads = torch.get_num_threads()
    lines = [
        "### clip_text_speed",
        "",
        f"device {args.device} ({torch_threads} threads), text tower width 512, 8 heads, {args.layers} layers, context 77",
        "",
        "CoOp text step (forward + backward over all class prompts, 16 context tokens):",
        "",
        "| classes | fast s | 77-token s | ratio | fast peak MiB | 77-token peak MiB |",
        "|---|---|---|---|---|---|",
    ]
    for c in args.coop_classes:
        f, r = run_child(args, "coop", "fast", c), run_child(args, "coop", "reference", c)
        lines.append(f"| {c} | {f['seconds']:.3f} | {r['seconds']:.3f} | {f['seconds'] / r['seconds']:.3f} | {f['peak_mib']:.0f} | {r['peak_mib']:.0f} |")
    c = args.cocoop_classes
    f, r = run_child(args, "cocoop", "fast", c), run_child(args, "cocoop", "reference", c)
    lines += [
        "",
        f"CoCoOp training step at batch {args.batch}, {c} classes (forward + backward):",
        "",
        "| scheme | images/s | peak MiB |",
        "|---|---|---|",
        f"| batched, shared prefix | {args.batch / f['seconds']:.1f} | {f['peak_mib']:.0f} |",
        f"| per-image loop, 77 tokens | {args.batch / r['seconds']:.1f} | {r['peak_mib']:.0f} |",
        f"| speed-up | {r['seconds'] / f['seconds']:.1f}x | |",
    ]
    emit(lines, args.write)


if __name__ == "__main__":
    main()
