"""Big frozen models in one process: ``model.device_map`` / ``model.offload_folder`` (Accelerate's placement) and
``model.quantization`` (int8 through torchao, int4 through optimum-quanto), on a tiny Llama saved to a folder."""

import importlib.util
import re

import pytest
import torch
from safetensors.torch import load_file

from promptcore.config import load_config
from textpt import wrap
from textpt.cli import main
from textpt.config import TextModelConfig
from textpt.loading import load_model_and_tokenizer
from textpt.run_config import TextRunConfig

from test_textpt_cli import FAST, SMOKE
from tiny_text import method_config

SMOKE_KWARGS = load_config(TextRunConfig, SMOKE).model.kwargs
# Layer 0 and the head in memory, layer 1 on disk: every kind of placement Accelerate has without a GPU.
CPU_AND_DISK = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk", "model.norm": "cpu", "lm_head": "cpu"}
HAS_TORCHAO = importlib.util.find_spec("torchao") is not None


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The smoke config's random Llama and its tokenizer, written by ``save_pretrained``."""
    path = tmp_path_factory.mktemp("tiny_llama")
    model, tokenizer = load_model_and_tokenizer(TextModelConfig(name="random:llama", kwargs=SMOKE_KWARGS))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def _load(folder, **placement):
    backbone, tokenizer = load_model_and_tokenizer(TextModelConfig(name=folder, **placement))
    return backbone, tokenizer


def _frozen_bytes(model) -> int:
    """Bytes held by parameters and buffers, counting the inner tensors of quantized weights."""
    total = 0
    for t in [*model.parameters(), *model.buffers()]:
        inner = [getattr(t, n) for n in t.__tensor_flatten__()[0]] if hasattr(t, "__tensor_flatten__") else [t]
        total += sum(x.numel() * x.element_size() for x in inner)
    return total


def _batch(tokenizer):
    enc = tokenizer(["the movie was great", "a bad film ."], return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]


@pytest.mark.parametrize("fast", ["auto", "off"])
def test_device_map_with_disk_offload_gives_the_plain_logits_and_prompt_gradients(folder, tmp_path, fast):
    config = method_config(num_tokens=4, init="vocab", verbalizer=[" good", " bad"], fast=fast)
    plain, tok = _load(folder)
    placed, _ = _load(folder, device_map=CPU_AND_DISK, offload_folder=str(tmp_path / "offload"))
    assert placed.hf_device_map["model.layers.1"] == "disk"
    assert any(p.device.type == "meta" for p in placed.parameters())  # layer 1's weights are on disk, not in memory
    ids, mask = _batch(tok)
    ref, got = wrap(plain, config, tokenizer=tok), wrap(placed, config, tokenizer=tok)
    got.to("cpu")  # moves the prompts; the placed backbone stays as loaded
    torch.testing.assert_close(got.class_logits(ids, mask), ref.class_logits(ids, mask), atol=1e-5, rtol=0)
    torch.testing.assert_close(got.token_logits(ids, mask), ref.token_logits(ids, mask), atol=1e-5, rtol=0)
    got.freeze_backbone()
    got.class_logits(ids, mask).logsumexp(-1).sum().backward()
    grads = {n for n, p in got.named_parameters() if p.grad is not None}
    assert grads == {n for n, _ in got.named_prompt_parameters()} and got.prompts.weight.grad.abs().sum() > 0


def test_training_with_a_device_map_equals_the_plain_run_and_leaves_the_weights(folder, tmp_path, capsys):
    placement = ["--set", f"model.device_map={CPU_AND_DISK}", "--set", f"model.offload_folder={tmp_path / 'offload'}"]
    runs = {}
    for name, extra in (("plain", []), ("placed", placement)):
        runs[name] = tmp_path / name
        assert main(["train", "-c", SMOKE, "-o", str(runs[name]), *FAST, "--set", f"model.name={folder}", *extra]) == 0
    plain, placed = (load_file(runs[n] / "last" / "prompts.safetensors") for n in ("plain", "placed"))
    start = wrap(_load(folder)[0], method_config(num_tokens=8, init="vocab", verbalizer=[" excellent", " terrible"]), tokenizer=_load(folder)[1])
    assert not torch.equal(plain["prompts.weight"], start.prompts.weight.detach())  # training moved the prompts
    for key in plain:
        torch.testing.assert_close(placed[key], plain[key], atol=1e-5, rtol=0)
    weights = load_file(f"{folder}/model.safetensors")
    backbone, _ = _load(folder)
    for name, p in backbone.named_parameters():
        assert torch.equal(p, weights[name]), name
    capsys.readouterr()
    argv = ["generate", "-c", SMOKE, "--prompts", str(runs["placed"] / "last"), "the film was great", *FAST, "--set", f"model.name={folder}"]
    assert main(argv) == 0
    plain_out = capsys.readouterr().out
    assert main([*argv, *placement]) == 0
    assert capsys.readouterr().out == plain_out


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.device_map=everywhere"], r"model.device_map: 'everywhere' is not one of auto, balanced"),
        (["model.device_map=balance"], r"Did you mean 'balanced'"),
        (["model.device_map={model.layers.0: gpu}"], r"model.device_map: \{'model.layers.0': 'gpu'\} is not a device"),
        (["model.device_map={model.layers.0: disk}"], r"model.offload_folder: device_map sends modules to 'disk'"),
        (["model.offload_folder=/tmp/x"], r"model.offload_folder: only used with a device_map"),
        (["model.name=hf:HuggingFaceTB/SmolLM2-135M", "model.device_map=auto", "train.distributed=fsdp"], r"model.device_map: .*train.distributed: fsdp runs several.*keep train.distributed: fsdp"),
        (["model.quantization=int3"], r"model.quantization"),
        (["model.quantization=int8"], r"quantization: applies to weights loaded from a folder.*save_pretrained"),
    ],
)
def test_placement_settings_are_refused_in_one_line(overrides, message, capsys):
    argv = ["train", "-c", SMOKE]
    for o in overrides:
        argv += ["--set", o]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and re.search(message, err), err


def test_device_map_under_several_processes_names_fsdp(folder, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", "-c", SMOKE, "--set", f"model.name={folder}", "--set", "model.device_map=auto"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "this run has 2 processes" in err and "train.distributed: fsdp" in err, err


@pytest.mark.parametrize("kind, module", [("int8", "torchao"), ("int4", "optimum.quanto")])
def test_quantization_without_its_library_names_the_extra(folder, kind, module, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.split(".")[0] == module.split(".")[0] else real(name, *a))
    assert main(["train", "-c", SMOKE, "--set", f"model.name={folder}", "--set", f"model.quantization={kind}"]) == 2
    err = capsys.readouterr().err
    assert f"model.quantization: {kind} needs the" in err and "pip install 'prompttune[quant]'" in err, err
