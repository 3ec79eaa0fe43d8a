"""Every registered method under FSDP2 sharding, against its unsharded plain path, in float64 (run by torchrun).

Usage: ``torchrun --nproc_per_node 2 sharded_contract.py OUT_DIR``. Each process builds every method's tiny case
twice with the same seed: the reference on the plain path (``fast=False``), unsharded; and the method's own
default path (its fast path where it has one), sharded with :func:`promptcore.distributed.shard_model` exactly as
``train.distributed: fsdp`` shards it. Both get the same batch; the script compares the outputs and the prompt
gradients, counts the fast path's calls, and measures the share of the frozen weights each process holds. The
vision-language cases also run under DDP (:func:`run_ddp`), against the same reference. Results go to
``OUT_DIR/rank{r}.json`` (read by test_sharded_contract.py).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "vpt"))
sys.path.insert(0, str(Path(__file__).parents[1] / "textpt"))  # run by torchrun, outside the pytest config's pythonpath

import cases_text  # noqa: E402,F401  (registers the text methods' cases)
import cases_vision  # noqa: E402,F401  (registers the vision and CLIP methods' cases)
import cases_vlm  # noqa: E402  (registers the vision-language methods' cases; its nf4 case)
from harness import CASES, MethodCase, Spy, method_of, to_float64, variants  # noqa: E402

from promptcore import METHODS  # noqa: E402
from promptcore.distributed import FSDPConfig, local_bytes, shard_model  # noqa: E402
from promptcore.engines.ddp import ignore_frozen_in_ddp  # noqa: E402
from promptcore.plugins import load_plugins  # noqa: E402
from test_backbones import TINY, images  # noqa: E402


def ddp_cases(names: list[str]) -> list[str]:
    """The cases also run under DDP here: the vision-language ones (the text and vision methods train under DDP in
    tests/promptcore/test_sharding_cli.py)."""
    return [name for name in names if method_of(name).startswith("text:vlm_")]


class Output(nn.Module):
    """The case's output as one module call (the sharded root gathers its weights around it)."""

    def __init__(self, model: nn.Module, case) -> None:
        super().__init__()
        self.model, self.case = model, case

    def forward(self, batch):
        return self.case.output(self.model, batch)


def run_case(name: str, world: int, fsdp: FSDPConfig | None = None, case: MethodCase | None = None) -> dict:
    """Method ``name`` (its case ``case``, default its registered one) sharded, against its plain path unsharded."""
    case = case or CASES.get(name)
    fast = True if case.fast_spy is not None else None
    trains = METHODS.get(method_of(name)).trains

    reference = case.build(0, False if fast else None).double()
    reference.freeze_backbone().eval()
    batch = to_float64(case.batch(reference))
    ref_out = case.output(reference, batch)
    if trains:
        ref_out.pow(2).sum().backward()
    ref_grads = [p.grad for p in reference.prompt_parameters()]

    model = case.build(0, fast).double()
    model.freeze_backbone().eval()
    prompt_ids = {id(p) for p in model.prompt_parameters()}
    frozen_total = local_bytes(p for p in model.parameters() if id(p) not in prompt_ids)
    root = Output(model, case)
    units = shard_model(root, model, fsdp or FSDPConfig(), world, torch.device("cpu"))
    frozen_local = local_bytes(p for p in model.parameters() if id(p) not in prompt_ids)
    calls = 0
    if fast:
        with Spy(case.fast_spy) as spy:
            out = root(batch)
            if trains:
                out.pow(2).sum().backward()
        calls = spy.calls
    else:
        out = root(batch)
        if trains:
            out.pow(2).sum().backward()
    grads = [p.grad for p in model.prompt_parameters()]
    grad_diff = 0.0
    missing = sum((a is None) != (b is None) for a, b in zip(grads, ref_grads))
    for a, b in zip(grads, ref_grads):
        if a is not None and b is not None:
            grad_diff = max(grad_diff, float((a - b).abs().max() / b.abs().max().clamp(min=1e-30)))
    return {
        "ok": True,
        "fast": bool(fast),
        "fast_calls": calls,
        "units": len(units),
        "out_diff": float((out.detach() - ref_out.detach()).abs().max() / ref_out.detach().abs().max().clamp(min=1e-30)),
        "grad_diff": grad_diff,
        "grads": sum(g is not None for g in grads),
        "grads_missing_mismatch": missing,
        "frozen_fraction": frozen_local / max(frozen_total, 1),
    }


def run_ddp(name: str, world: int) -> dict:
    """The case's default path under DDP as ``train.distributed: ddp`` wraps it (frozen weights and buffers left out,
    :func:`promptcore.engines.ddp.ignore_frozen_in_ddp`), every process on the same batch, against its plain path in
    one process: the same outputs, and once DDP has averaged them, the prompt gradients of the mean of the processes'
    losses (process ``r`` weights its loss by ``r + 1``, so the average is seen to be taken)."""
    case = CASES.get(name)
    fast = True if case.fast_spy is not None else None
    reference = case.build(0, False if fast else None).double()
    reference.freeze_backbone().eval()
    batch = to_float64(case.batch(reference))
    ref_out = case.output(reference, batch)
    ref_out.pow(2).sum().backward()
    model = case.build(0, fast).double()
    model.freeze_backbone().eval()
    root = Output(model, case)
    ignore_frozen_in_ddp(root)
    ddp = nn.parallel.DistributedDataParallel(root)  # held until the backward is done: its reducer averages there
    out = ddp(batch)
    (out.pow(2).sum() * (dist.get_rank() + 1)).backward()
    mean_weight = (world + 1) / 2
    pairs = list(zip(model.prompt_parameters(), reference.prompt_parameters()))
    return {
        "ok": True,
        "out_diff": float((out.detach() - ref_out.detach()).abs().max() / ref_out.detach().abs().max()),
        "grad_diff": max(
            float((a.grad - mean_weight * b.grad).abs().max() / (mean_weight * b.grad).abs().max()) for a, b in pairs if b.grad is not None
        ),
        "grads": sum(a.grad is not None for a, _ in pairs),
        "grads_missing_mismatch": sum((a.grad is None) != (b.grad is None) for a, b in pairs),
    }


def run_family(key: str, world: int) -> dict:
    """VPT-deep on one tiny backbone of the families' matrix (timm, open_clip, Hugging Face variants): the fast path
    sharded against the plain path unsharded."""
    import vpt
    from vpt import VPTConfig, create_model

    torch.manual_seed(0)
    backbone = create_model(TINY[key]).double()
    torch.manual_seed(0)
    plain = vpt.wrap(backbone, VPTConfig(method="vpt_deep", num_tokens=3, num_classes=4, fast="off")).double()
    fast_backbone = create_model(TINY[key]).double()
    fast_backbone.load_state_dict(backbone.state_dict())
    fast = vpt.wrap(fast_backbone, VPTConfig(method="vpt_deep", num_tokens=3, num_classes=4, fast="auto")).double()
    fast.load_state_dict(plain.state_dict())
    for m in (plain, fast):
        m.freeze_backbone().eval()
    x = images()
    ref = plain(x)
    ref.pow(2).sum().backward()
    prompt_ids = {id(p) for p in fast.prompt_parameters()}
    total = local_bytes(p for p in fast.parameters() if id(p) not in prompt_ids)

    class Call(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, images):
            return self.model(images)

    root = Call(fast)
    units = shard_model(root, fast, FSDPConfig(), world, torch.device("cpu"))
    with Spy("vpt.fast_deep.fast_block") as spy:
        out = root(x)
        out.pow(2).sum().backward()
    grad_diff = max(
        float((a.grad - b.grad).abs().max() / b.grad.abs().max()) for a, b in zip(fast.prompt_parameters(), plain.prompt_parameters())
    )
    return {
        "ok": True, "fast": fast.fast, "fast_calls": spy.calls, "units": len(units),
        "out_diff": float((out - ref).abs().max() / ref.abs().max()), "grad_diff": grad_diff, "grads": len(prompt_ids),
        "grads_missing_mismatch": 0, "frozen_fraction": local_bytes(p for p in fast.parameters() if id(p) not in prompt_ids) / total,
    }


def main() -> None:
    out_dir = Path(sys.argv[1])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    load_plugins()
    names = sys.argv[2:] or [n for n in METHODS.names() if n in CASES and CASES.get(n).sharded] + variants(sharded=True)
    results = {}
    for name in names:
        try:
            results[name] = run_case(name, world)
        except Exception:  # reported per method by the test; the other methods still run
            results[name] = {"ok": False, "error": traceback.format_exc()[-3000:]}
        dist.barrier()
    if len(sys.argv) == 2:
        # The token embedding kept whole on every process (train.fsdp.keep_whole), the rest sharded.
        try:
            results["keep_whole"] = run_case("text:prompt_tuning", world, FSDPConfig(keep_whole=["wte"]))
        except Exception:
            results["keep_whole"] = {"ok": False, "error": traceback.format_exc()[-3000:]}
        dist.barrier()
        # A vision-language model whose language model is nf4 (model.quantization: nf4), its 4-bit weights sharded.
        try:
            results["vlm_nf4"] = run_case("text:vlm_prompt_tuning", world, case=cases_vlm.NF4)
        except Exception:
            results["vlm_nf4"] = {"ok": False, "error": traceback.format_exc()[-3000:]}
        dist.barrier()
    for name in ddp_cases(names):
        try:
            results[f"ddp:{name}"] = run_ddp(name, world)
        except Exception:
            results[f"ddp:{name}"] = {"ok": False, "error": traceback.format_exc()[-3000:]}
        dist.barrier()
    for key in sorted(TINY) if len(sys.argv) == 2 else []:
        try:
            results[f"vpt_deep:{key}"] = run_family(key, world)
        except Exception:
            results[f"vpt_deep:{key}"] = {"ok": False, "error": traceback.format_exc()[-3000:]}
        dist.barrier()
    (out_dir / f"rank{rank}.json").write_text(json.dumps(results, indent=1))
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
