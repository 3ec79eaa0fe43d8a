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


@pytest.fixture(scope="module")
def quant_folder(tmp_path_factory):
    """A random Llama of width 64 with a real model's initial scale (0.02), whose logits quantization barely moves."""
    path = tmp_path_factory.mktemp("tiny_llama_quant")
    kwargs = {**SMOKE_KWARGS, "hidden_size": 64, "intermediate_size": 128, "initializer_range": 0.02}
    model, tokenizer = load_model_and_tokenizer(TextModelConfig(name="random:llama", kwargs=kwargs))
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
        (["model.name=hf:HuggingFaceTB/SmolLM2-135M", "model.device_map=auto", "train.distributed=deepspeed"], r"train.distributed: deepspeed runs several.*keep train.distributed: deepspeed"),
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


def _quant_case(kind: str):
    module = {"int8": "torchao", "int4": "optimum.quanto"}[kind]
    present = importlib.util.find_spec(module.split(".")[0]) is not None
    return pytest.param(kind, marks=pytest.mark.skipif(not present, reason=f"{module} is not installed (pip install 'prompttune[quant]')"))


@pytest.mark.parametrize("kind, tolerance, ratio", [(*_quant_case("int8").values, 0.1, 0.4), (*_quant_case("int4").values, 0.6, 0.3)])
@pytest.mark.slow
def test_quantized_backbone_trains_its_prompts_in_less_memory(quant_folder, kind, tolerance, ratio):
    from promptcore import Trainer
    from promptcore.train_config import TrainConfig
    from textpt.data import TextCollator

    config = method_config(num_tokens=4, init="vocab", verbalizer=[" good", " bad"])
    plain, tok = _load(quant_folder)
    quantized, _ = _load(quant_folder, quantization=kind)
    linear = quantized.model.layers[0].mlp.up_proj.weight
    assert type(linear) is not torch.nn.Parameter or type(linear.data) is not torch.Tensor  # a quantized tensor
    linears = {n: p for n, p in plain.named_parameters() if ".layers." in n}
    lin_bytes = sum(p.numel() * p.element_size() for p in linears.values())
    quant_linear_bytes = _frozen_bytes(quantized.model.layers)
    assert quant_linear_bytes <= ratio * lin_bytes, (quant_linear_bytes, lin_bytes)
    assert _frozen_bytes(quantized) < _frozen_bytes(plain)
    ids, mask = _batch(tok)
    ref, got = wrap(plain, config, tokenizer=tok), wrap(quantized, config, tokenizer=tok)
    expected = ref.token_logits(ids, mask)
    error = (got.token_logits(ids, mask) - expected).abs().max()
    assert error <= tolerance * expected.std(), (error, expected.std())  # int8: about 0.03 std, int4: about 0.36
    before = {n: t.detach().clone() for n, t in quantized.state_dict().items() if isinstance(t, torch.Tensor)}
    start = got.prompts.weight.detach().clone()
    rows = [{"input_ids": i[m.bool()].tolist(), "labels": c} for i, m, c in zip(ids, mask, (0, 1))] * 4
    Trainer(got, TrainConfig(max_steps=3, batch_size=4, lr=0.1, progress_bar=False, tensorboard=False), rows, None, TextCollator(tok.pad_token_id, "left")).fit()
    assert not torch.equal(got.prompts.weight.detach(), start)
    after = quantized.state_dict()
    assert all(torch.equal(_plain(after[n]), _plain(t)) for n, t in before.items())


def _plain(t: torch.Tensor) -> torch.Tensor:
    """The stored bits of ``t`` (the inner tensors of a quantized weight, flattened and joined)."""
    if hasattr(t, "__tensor_flatten__"):
        return torch.cat([getattr(t, n).detach().flatten().float() for n in t.__tensor_flatten__()[0]])
    return t.detach()


@pytest.mark.skipif(not HAS_TORCHAO, reason="torchao is not installed (pip install 'prompttune[quant]')")
def test_the_fast_prefix_runs_on_quantized_weights_and_equals_the_concatenated_path(quant_folder):
    quantized, tok = _load(quant_folder, quantization="int8")
    ids, mask = _batch(tok)
    on = wrap(quantized, method_config(num_tokens=4, init="vocab", verbalizer=[" good", " bad"], fast="on"), tokenizer=tok)
    off = wrap(quantized, method_config(num_tokens=4, init="vocab", verbalizer=[" good", " bad"], fast="off"), tokenizer=tok)
    assert on.use_fast_path() and not off.use_fast_path()
    torch.testing.assert_close(on.token_logits(ids, mask), off.token_logits(ids, mask), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "task, method, fields",
    [
        ("causal_lm", "prompt_tuning", {"fast": "auto"}),
        ("causal_lm", "prompt_tuning", {"fast": "off"}),
        ("causal_lm", "p_tuning", {}),
        ("causal_lm", "prefix", {}),
        ("causal_lm", "dept", {"rank": 2, "max_length": 16}),
        ("seq_cls", "prompt_tuning", {}),
        ("seq_cls", "prefix", {}),
    ],
)
def test_prompts_and_heads_stay_float32_on_a_bfloat16_model(task, method, fields):
    name, kwargs = ("random:bert", {}) if task == "seq_cls" else ("random:llama", SMOKE_KWARGS)
    backbone, tok = load_model_and_tokenizer(TextModelConfig(name=name, task=task, dtype="bfloat16", kwargs=kwargs))
    model = wrap(backbone, method_config(method, num_tokens=4, num_classes=2, verbalizer=None if task == "seq_cls" else [" good", " bad"], **fields), tokenizer=tok, task=task)
    assert {p.dtype for p in model.prompt_parameters()} == {torch.float32}
    assert {p.dtype for p in model.backbone.parameters()} == {torch.bfloat16}
    ids, mask = _batch(tok)
    logits = model.class_logits(ids, mask)
    assert torch.isfinite(logits).all()
    logits.float().logsumexp(-1).sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.prompt_parameters())
    assert any(p.grad.abs().sum() > 0 for p in model.prompt_parameters())
