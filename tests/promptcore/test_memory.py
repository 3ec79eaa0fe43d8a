"""Sizes a setting asks for are checked against the memory there is before allocating."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from promptcore.errors import UserError
from promptcore.memory import available_memory, check_fits, module_bytes


def test_module_bytes_counts_meta_parameters_and_buffers():
    with torch.device("meta"):
        layer = nn.BatchNorm1d(10)  # weight, bias, running mean and var (float32) + num_batches_tracked (int64)
    assert module_bytes(layer) == 4 * 10 * 4 + 8


def test_a_size_over_the_memory_there_is_names_the_setting_and_the_bytes():
    check_fits(1000, "model.kwargs", available=1000)
    with pytest.raises(UserError, match=r"model.kwargs: asks for 1.0 KiB \(1025 bytes\) but 1000.0 B of memory is available"):
        check_fits(1025, "model.kwargs", available=1000)


@pytest.mark.skipif(not Path("/proc/meminfo").is_file(), reason="reads Linux's /proc/meminfo")
def test_available_memory_is_read_on_linux():
    assert 0 < available_memory() <= int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0]) * 1024
