"""The one way a benchmark script hands back its markdown: printed, and appended to ``--write FILE`` when given."""

from __future__ import annotations

import os
import platform
from typing import Any


def emit(lines: list[str], write: str | None) -> str:
    """Prints ``lines`` as one markdown block and appends it (after a blank line) to ``write``; returns the text."""
    text = "\n".join(lines) + "\n"
    print(text)
    if write:
        with open(write, "a") as f:
            f.write("\n" + text)
    return text


def machine_line(device: Any, load_before: tuple[float, float, float]) -> str:
    """The machine a figure came from: processor, visible CPUs, torch threads, the GPU (``device``, a torch device)
    or none, and the load average at the start (``load_before``, :func:`os.getloadavg`) and now."""
    import torch

    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "no GPU"
    load = " / ".join(f"{x:.1f}" for x in load_before), " / ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, torch threads "
        f"{torch.get_num_threads()}, {gpu}; load average (1/5/15 min) {load[0]} at the start, {load[1]} at the end"
    )
