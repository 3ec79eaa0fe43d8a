"""Sizes a setting asks for are checked against the memory there is before allocating."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from promptcore import DeepSoftPrompt, PromptBank, SoftPrompt, TrainConfig, memory
from promptcore.errors import UserError
from promptcore.memory import available_memory, batch_bytes, check_fits, module_bytes
from promptcore.preflight import batch_problem
from toy_prompted import toy_model


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


@pytest.mark.parametrize("build, shape", [
    (lambda: SoftPrompt(10**9, 768), "num_tokens 1000000000 × dim 768"),
    (lambda: DeepSoftPrompt(12, 10**9, 768), "num_layers 12 × num_tokens 1000000000 × dim 768"),
    (lambda: PromptBank(10**6, (10**4, 768)), "num_tasks 1000000 × prompt_shape\\[0\\] 10000 × prompt_shape\\[1\\] 768"),
])
def test_a_prompt_over_the_memory_there_is_is_refused_before_allocating(build, shape):
    with pytest.raises(UserError, match=rf"a prompt of {shape} \(prompt.num_tokens sets its length\): asks for [\d.]+ TiB"):
        build()
    SoftPrompt(50, 768)  # a normal prompt passes


def test_batch_bytes_counts_the_inputs_and_the_embeddings_of_the_tokens():
    example = {"image": torch.zeros(3, 32, 32), "labels": torch.tensor(1), "input_ids": [1, 2, 3]}
    assert batch_bytes(example, rows=4) == 4 * (3 * 32 * 32 * 4 + 8 + 3 * 8)
    assert batch_bytes(example, rows=4, hidden=64) == 4 * (3 * 32 * 32 * 4 + 8 + 3 * 8 + 3 * 64 * 4)


def test_a_batch_over_the_memory_there_is_is_named_by_batch_problem(monkeypatch):
    data = [{"image": torch.zeros(3, 32, 32), "labels": torch.tensor(0)} for _ in range(100)]  # 12 KiB each
    model = toy_model()
    monkeypatch.setattr(memory, "available_memory", lambda: 500_000)
    assert batch_problem(model, TrainConfig(batch_size=32), data) is None  # 393 kB
    # a batch_size above the data's size is the data's size: 100 examples of 3×32×32 float32 and an int64 label
    assert re.fullmatch(r"train.batch_size 1000000 \(100 examples per batch\): asks for 1.2 MiB \(1229600 bytes\) "
                        r"but 488.3 KiB of memory is available.*data.max_length, data.image_size\)",
                        batch_problem(model, TrainConfig(batch_size=10**6), data))


def test_the_cli_refuses_a_prompt_length_and_a_batch_the_memory_cannot_hold(monkeypatch, tmp_path, capsys):
    import vpt.cli

    smoke = str(Path(__file__).resolve().parents[2] / "configs" / "smoke" / "vpt_tiny.yaml")
    argv = ["train", "-c", smoke, "-o", str(tmp_path / "run")]
    assert vpt.cli.main([*argv, "--set", "prompt.num_tokens=1000000000"]) == 2
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        next(line for line in err.splitlines() if "error: a prompt of num_layers 2 × num_tokens 1000000000 × dim 64" in line)
    ], err
    # 384 synthetic 3×32×32 images (4.7 MB) against 2 MiB: the model (0.4 MB) and its prompts fit, the batch does not
    monkeypatch.setattr(memory, "available_memory", lambda: 2 << 20)
    assert vpt.cli.main([*argv, "--set", "train.batch_size=1000000"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"^error: train.batch_size 1000000 \(384 examples per batch\): asks for 4.5 MiB", err, re.M), err
    assert not (tmp_path / "run" / "last").exists()
