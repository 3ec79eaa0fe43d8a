"""Prompt server benchmark: ratios and percentiles measured in one run, on loopback, with bounded load.

(a) The Ray Serve application with dynamic batching (``max_batch_size`` 32: requests of different prompts share one
    forward) against the same application taking one request at a time (``max_batch_size`` 1): ``--clients``
    concurrent clients (32), requests spread over ``--num-prompts`` prompts. Throughput ratio (closed loop: each
    client sends its next request when the last is answered), then p50 / p99 latency at three offered loads (open
    loop at 25%, 50% and 90% of the batched server's throughput; latency counts from the scheduled send time).
(b) ``--num-prompts`` (100) prompts served from one backbone against one model copy per prompt: tensor bytes of
    each, as a multiple of one backbone.
(c) Loading a prompt: p99 of moving a prompt from the CPU tier to the device (a registry holding one prompt on the
    device, requests alternating) and of opening a prompt folder from disk (validation included).

The toy backend (``tests/promptcore/scripts/serving_toy.py``, ``--dim`` wide) runs without any download; a real
backend is ``--kind vision`` or ``--kind text`` with ``--prompts DIR`` (a folder of prompt folders that classify) and
``--input FILE`` (an image or a text file sent in every request). ``--kind vision`` without them makes
``--num-prompts`` VPT-deep prompts (10 tokens, 2 to 10 classes, random values) on ``--vision-model`` (random weights)
and sends one 224 x 224 image.

Run: ``python bench/serve.py [--kind toy] [--clients 32] [--requests 512] [--num-prompts 100] [--write FILE]``.
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "promptcore" / "scripts"))  # the toy backend the tests use

from emit import emit  # noqa: E402
from serving_toy import ToyBackend, build_toy, make_prompt  # noqa: E402

from promptcore.serving import PromptRegistry, load_serve_config  # noqa: E402
from promptcore.serving.backend import backend_for  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def toy_prompts(root: Path, n: int, dim: int) -> Path:
    backend = ToyBackend(dim=dim)
    for i in range(n):
        make_prompt(root / f"p{i:03d}", backend, length=4 + i % 8, num_classes=2 + i % 9, seed=i)
    return root


def vision_prompts(root: Path, n: int, model: str) -> Path:
    """``n`` VPT-deep prompt folders (10 tokens, 2 to 10 classes, random values) on backbone ``model`` built with
    random weights from seed 0, recording what the vision backend rebuilds it from."""
    import vpt
    from vpt.serving import record_backbone

    section = vpt.BackboneConfig(model, pretrained=False)
    torch.manual_seed(0)
    backbone = vpt.create_model(section)
    for i in range(n):
        prompted = vpt.wrap(backbone, vpt.VPTConfig(method="vpt_deep", num_tokens=10, num_classes=2 + i % 9))
        generator = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for p in prompted.prompt_parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=generator))
        record_backbone(prompted, section, 0)
        prompted.save_prompts(root / f"p{i:03d}")
    return root


def closed_loop(url: str, jobs: list[dict], clients: int) -> tuple[float, list[float]]:
    """Requests/s and latencies with ``clients`` clients, each sending its next request when the last returns."""
    latencies: list[float] = []
    lock = threading.Lock()
    it = iter(jobs)

    def client() -> None:
        with httpx.Client(timeout=120) as c:
            while True:
                with lock:
                    job = next(it, None)
                if job is None:
                    return
                start = time.perf_counter()
                c.post(f"{url}/v1/classify", json=job).raise_for_status()
                with lock:
                    latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(jobs) / (time.perf_counter() - start), latencies


def open_loop(url: str, jobs: list[dict], clients: int, rate: float) -> list[float]:
    """Latencies at ``rate`` requests/s offered by ``clients`` clients, from each request's scheduled send time."""
    latencies: list[float] = []
    lock = threading.Lock()
    start = time.perf_counter() + 0.2

    def client(k: int) -> None:
        with httpx.Client(timeout=120) as c:
            for i in range(k, len(jobs), clients):
                due = start + i / rate
                time.sleep(max(0.0, due - time.perf_counter()))
                c.post(f"{url}/v1/classify", json=jobs[i]).raise_for_status()
                with lock:
                    latencies.append(time.perf_counter() - due)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def serving(args: argparse.Namespace, prompts: Path, names: list[str], payload: str) -> list[str]:
    import ray
    from ray import serve

    from promptcore.serving.app import build_application

    port = free_port()
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level="error", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests/promptcore/scripts")])}})
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}"
    jobs = [{"model": names[i % len(names)], "input": payload, "top_k": 1} for i in range(args.requests)]
    results: dict[int, dict] = {}
    try:
        def deploy(batch: int) -> None:
            config = load_serve_config({"kind": "text" if args.kind == "toy" else args.kind, "prompts": str(prompts),
                                        "model": {"dim": args.dim} if args.kind == "toy" else None,
                                        "max_batch_size": batch, "batch_wait_timeout_s": args.wait, "max_queue": 4 * args.clients})
            serve.run(build_application(config, build_toy if args.kind == "toy" else None), name="bench", route_prefix="/")

        for batch in (32, 1):
            deploy(batch)
            closed_loop(url, jobs[: args.clients * 2], args.clients)  # warm-up
            throughput, _ = closed_loop(url, jobs, args.clients)
            results[batch] = {"throughput": throughput, "loads": {}}
            serve.delete("bench")
        for batch in (32, 1):
            deploy(batch)
            for fraction in (0.25, 0.5, 0.9):
                lat = open_loop(url, jobs, args.clients, fraction * results[32]["throughput"])
                results[batch]["loads"][fraction] = (percentile(lat, 50), percentile(lat, 99))
            serve.delete("bench")
    finally:
        serve.shutdown()
        ray.shutdown()
    ratio = results[32]["throughput"] / results[1]["throughput"]
    lines = [
        f"(a) {args.clients} concurrent clients, {args.requests} requests over {len(names)} prompts; "
        f"batched {results[32]['throughput']:.1f} req/s, one at a time {results[1]['throughput']:.1f} req/s: "
        f"**throughput ratio {ratio:.2f}x**",
        "",
        "| offered load (of batched capacity) | batched p50 / p99 (ms) | one at a time p50 / p99 (ms) |",
        "|---|---|---|",
    ]
    for fraction in (0.25, 0.5, 0.9):
        b, s = results[32]["loads"][fraction], results[1]["loads"][fraction]
        lines.append(f"| {fraction:.0%} ({fraction * results[32]['throughput']:.0f} req/s) | {b[0] * 1e3:.1f} / {b[1] * 1e3:.1f} | {s[0] * 1e3:.1f} / {s[1] * 1e3:.1f} |")
    return lines


def memory_and_loading(args: argparse.Namespace, prompts: Path, names: list[str]) -> list[str]:
    model = {"dim": args.dim} if args.kind == "toy" else None
    folders = [prompts / n for n in names]
    builder = build_toy if args.kind == "toy" else backend_for(args.kind)
    device = torch.device(args.device)
    from promptcore.serving import Limits

    backend = builder(model, folders, device, Limits())
    registry = PromptRegistry(backend, prompts, device_capacity=1)
    for name in names:
        registry.add(name)
    prompt_bytes = [registry.get(n).info.nbytes for n in names]
    one = (backend.backbone_nbytes + sum(prompt_bytes)) / backend.backbone_nbytes
    copies = sum(backend.backbone_nbytes + b for b in prompt_bytes) / backend.backbone_nbytes
    tier = []
    for i in range(args.load_repeats):
        prompt = registry.get(names[i % len(names)])
        start = time.perf_counter()
        with registry.pinned([prompt]):
            if device.type == "cuda":
                torch.cuda.synchronize()
            tier.append(time.perf_counter() - start)
    registry.load_seconds.clear()
    for i in range(args.load_repeats):
        name = names[i % len(names)]
        registry.remove(name)
        registry.add(name)
    disk = list(registry.load_seconds)
    return [
        f"(b) {len(names)} prompts on one backbone ({backend.backbone_nbytes / 2**20:.2f} MiB, prompts "
        f"{statistics.mean(prompt_bytes) / 1024:.1f} KiB each): **{one:.4f}x one backbone**; one model copy per prompt: "
        f"{copies:.1f}x",
        f"(c) loading a prompt, p99 over {args.load_repeats}: **from the CPU tier {percentile(tier, 99) * 1e3:.3f} ms** "
        f"(device {device}), **from disk {percentile(disk, 99) * 1e3:.2f} ms** (p50 {percentile(disk, 50) * 1e3:.2f} ms)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=["toy", "vision", "text"], default="toy")
    parser.add_argument("--prompts", help="a folder of prompt folders (vision / text; the toy makes its own)")
    parser.add_argument("--input", help="the image or text file every request sends (vision / text)")
    parser.add_argument("--dim", type=int, default=256, help="toy backbone width")
    parser.add_argument("--vision-model", default="timm:vit_tiny_patch16_224", help="backbone of the made vision prompts")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=512)
    parser.add_argument("--num-prompts", type=int, default=100)
    parser.add_argument("--wait", type=float, default=0.01, help="batch_wait_timeout_s of the batched server")
    parser.add_argument("--load-repeats", type=int, default=200)
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray cluster")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-http", action="store_true", help="only (b) and (c)")
    parser.add_argument("--write", help="append the markdown to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.kind == "toy":
            prompts = toy_prompts(Path(tmp) / "prompts", args.num_prompts, args.dim)
            payload = "a request of some length " * 4
        elif args.kind == "vision" and not args.prompts and not args.input:
            import io

            from PIL import Image

            prompts = vision_prompts(Path(tmp) / "prompts", args.num_prompts, args.vision_model)
            image = io.BytesIO()
            Image.new("RGB", (224, 224), (120, 60, 200)).save(image, format="PNG")
            payload = base64.b64encode(image.getvalue()).decode()
        else:
            if not args.prompts or not args.input:
                parser.error("--kind vision / text need --prompts DIR and --input FILE (or, for vision, neither)")
            prompts = Path(args.prompts)
            data = Path(args.input).read_bytes()
            payload = base64.b64encode(data).decode() if args.kind == "vision" else data.decode()
        names = sorted(p.name for p in prompts.iterdir() if p.is_dir() and not p.name.startswith("."))[: args.num_prompts]
        lines = [f"### bench/serve.py ({args.kind}, {platform.machine()}, torch {torch.__version__}, {os.cpu_count()} CPUs)", ""]
        if not args.skip_http:
            lines += serving(args, prompts, names, payload) + [""]
        lines += memory_and_loading(args, prompts, names)
    emit(lines, args.write)


if __name__ == "__main__":
    main()
