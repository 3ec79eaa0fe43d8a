"""VPT speed and memory benchmark: ratios measured in one run on one machine.

ViT-B/16 shapes (timm ``vit_base_patch16_224``, random weights), 50 deep prompts, batch 8 on CPU (128 with bf16
autocast on CUDA). Measured, with interleaved repeats (median):

- train step (forward, backward, SGD step on the prompts and head): fast VPT-deep / plain concatenation;
- train step: fast VPT-deep / the same frozen backbone without prompts, backward to the input only (the floor);
- peak memory of a training step: VPT-deep / full fine-tuning (SGD with momentum for both). On CUDA
  ``torch.cuda.max_memory_allocated``. On CPU there is no allocator peak counter, so it is the sum of what a step
  holds at its peak: parameters + gradients + optimizer state + the bytes autograd saves for backward (counted with
  ``torch.autograd.graph.saved_tensors_hooks``, each storage once, parameters excluded);
- inference images/s with 0, 10, 50, 100 deep prompts (fast path).

Run: ``python bench/vpt_speed.py [--repeats 3] [--batch 8] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

import vpt
from vpt import BackboneConfig, VPTConfig, create_model

from emit import emit  # bench/emit.py: scripts run as `python bench/NAME.py`

NUM_CLASSES = 100


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def build(device: torch.device, num_tokens: int, fast: str) -> vpt.VisualPromptModel:
    torch.manual_seed(0)
    backbone = create_model(BackboneConfig("timm:vit_base_patch16_224", pretrained=False, kwargs={"num_classes": 0}))
    return vpt.wrap(backbone, VPTConfig(method="vpt_deep", num_tokens=num_tokens, num_classes=NUM_CLASSES, fast=fast)).to(device)


def vpt_step(model, opt, images, labels, device) -> None:
    with _autocast(device):
        loss = F.cross_entropy(model(images).float(), labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def floor_step(backbone, images, device) -> None:
    """Frozen backbone, no prompts, backward to the input only: the least any prompt method can cost."""
    x = images.detach().requires_grad_(True)
    with _autocast(device):
        out = backbone(x)
    out.float().square().mean().backward()


def timed(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def saved_bytes(fn, params: list[torch.Tensor]) -> tuple[int, torch.Tensor]:
    """Runs ``fn`` (returns a loss) and counts the bytes autograd saves for backward: each storage once,
    parameters excluded (they are counted as parameters). Returns ``(bytes, loss)``."""
    param_ptrs = {p.untyped_storage().data_ptr() for p in params}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in param_ptrs:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn()
    return sum(seen.values()), loss


def memory_ratio(device: torch.device, batch: int) -> dict[str, float]:
    """Peak training memory of VPT-deep and of full fine-tuning, in MiB."""
    images = torch.randn(batch, 3, 224, 224, device=device)
    labels = torch.randint(0, NUM_CLASSES, (batch,), device=device)
    results = {}
    for name in ("vpt_deep", "full_finetune"):
        model = build(device, 50, "auto")
        if name == "full_finetune":
            for p in model.parameters():
                p.requires_grad_(True)
        trainable = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(trainable, lr=1e-3, momentum=0.9)
        model.train()
        if device.type == "cuda":
            vpt_step(model, opt, images, labels, device)  # optimizer state exists from here on
            torch.cuda.reset_peak_memory_stats()
            vpt_step(model, opt, images, labels, device)
            results[name] = torch.cuda.max_memory_allocated() / 2**20
        else:
            saved, loss = saved_bytes(lambda: F.cross_entropy(model(images).float(), labels), list(model.parameters()))
            loss.backward()
            opt.step()
            param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
            grad_bytes = sum(p.numel() * p.element_size() for p in trainable)
            state_bytes = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values() if torch.is_tensor(t))
            results[name] = (param_bytes + grad_bytes + state_bytes + saved) / 2**20
            results[f"{name}_saved"] = saved / 2**20
        model = opt = None  # free this model before the next is built (the lambda above holds the name)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=None, help="default 8 on CPU, 128 on CUDA")
    parser.add_argument("--write", help="markdown file to append the table to")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = args.batch or (128 if device.type == "cuda" else 8)
    torch.manual_seed(0)
    images = torch.randn(batch, 3, 224, 224, device=device)
    labels = torch.randint(0, NUM_CLASSES, (batch,), device=device)

    fast, plain = build(device, 50, "auto"), build(device, 50, "off")
    assert fast.fast and not plain.fast
    fast.train(), plain.train()
    opts = {m: torch.optim.SGD(list(m.prompt_parameters()), lr=1e-3, momentum=0.9) for m in (fast, plain)}
    backbone = fast.backbone
    steps = {
        "fast": lambda: vpt_step(fast, opts[fast], images, labels, device),
        "plain": lambda: vpt_step(plain, opts[plain], images, labels, device),
        "floor": lambda: floor_step(backbone, images, device),
    }
    for fn in steps.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(args.repeats):
        for name, fn in steps.items():
            times[name].append(timed(fn, device))
    med = {k: statistics.median(v) for k, v in times.items()}
    print({k: [round(t, 3) for t in v] for k, v in times.items()})
    plain = opts = None  # free the plain model before the inference models are built

    infer: dict[int, list[float]] = {0: [], 10: [], 50: [], 100: []}
    models = {n: build(device, n, "auto").eval() for n in infer if n}

    @torch.no_grad()
    def run_infer(n: int) -> None:
        with _autocast(device):
            (models[n](images) if n else backbone(images))

    for n in infer:
        run_infer(n)
    for _ in range(args.repeats):
        for n in infer:
            infer[n].append(batch / timed(lambda: run_infer(n), device))
    ips = {n: statistics.median(v) for n, v in infer.items()}
    models = None

    mem = memory_ratio(device, batch)
    machine = (
        f"{torch.cuda.get_device_name()} (bf16 autocast)" if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads ({platform.processor() or platform.machine()}), float32"
    )
    mem_method = (
        "torch.cuda.max_memory_allocated" if device.type == "cuda"
        else "params + grads + optimizer state + autograd-saved tensor bytes (saved_tensors_hooks)"
    )
    ratio_plain = med["fast"] / med["plain"]
    ratio_floor = med["fast"] / med["floor"]
    ratio_mem = mem["vpt_deep"] / mem["full_finetune"]
    lines = [
        "# vpt speed benchmark",
        "",
        f"`python bench/vpt_speed.py` on {machine}; ViT-B/16 (timm vit_base_patch16_224, random weights), "
        f"224x224, batch {batch}, 50 deep prompts unless stated, {args.repeats} interleaved repeats (median), "
        f"torch {torch.__version__}. The machine was shared with other jobs, so absolute times are noisy; "
        f"ratios are taken within one run.",
        "",
        "| measure | value | target | met |",
        "|---|---|---|---|",
        f"| train step, fast VPT-deep / plain concatenation | {ratio_plain:.3f} ({med['fast']:.2f} s / {med['plain']:.2f} s) | <= 0.85 | {'yes' if ratio_plain <= 0.85 else 'NO'} |",
        f"| train step, fast VPT-deep / frozen backbone without prompts, input-gradient backward | {ratio_floor:.3f} ({med['fast']:.2f} s / {med['floor']:.2f} s) | <= 1.10 | {'yes' if ratio_floor <= 1.10 else 'NO'} |",
        f"| peak training memory, VPT-deep / full fine-tuning | {ratio_mem:.3f} ({mem['vpt_deep']:.0f} MiB / {mem['full_finetune']:.0f} MiB) | <= 0.6 | {'yes' if ratio_mem <= 0.6 else 'NO'} |",
        "",
        f"Memory measured as: {mem_method}; both with SGD + momentum.",
    ]
    if device.type == "cpu":
        lines.append(
            f"Autograd-saved activations alone: VPT-deep {mem['vpt_deep_saved']:.0f} MiB, full fine-tuning "
            f"{mem['full_finetune_saved']:.0f} MiB (prompt gradients need the activations of every block above them)."
        )
    lines += [
        "",
        "| deep prompts per layer | 0 (backbone alone) | 10 | 50 | 100 |",
        "|---|---|---|---|---|",
        "| inference images/s (fast path) | " + " | ".join(f"{ips[n]:.2f}" for n in infer) + " |",
        "",
    ]
    emit(lines, args.write)


if __name__ == "__main__":
    main()
