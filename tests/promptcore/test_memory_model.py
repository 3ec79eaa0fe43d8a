"""The memory model (promptcore.memory_model) against what tiny models built on the CPU hold.

Measured exactly: the frozen weights' bytes by dtype (:func:`promptcore.memory.module_bytes`: bf16, and torchao int8
through promptcore.quantization and through transformers' TorchAoConfig as textpt loads it), and the prompt / optimizer-state bytes after an AdamW step.
Measured approximately: the bytes autograd saves for the backward of one prompt-tuning step, counted with
``torch.autograd.graph.saved_tensors_hooks`` (each storage once, the frozen parameters left out), against the
model's activation and saved-logits terms. nf4 is not measured: bitsandbytes needs CUDA.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import torch

from promptcore.errors import UserError
from promptcore.memory import module_bytes, tensor_bytes
from promptcore.memory_model import (
    FLOAT_BYTES,
    OPTIMIZER_BYTES,
    TextShape,
    VitShape,
    Workload,
    activation_bytes,
    estimate,
    main,
    read_config,
    weight_bytes,
)

ROOT = Path(__file__).resolve().parents[2]
LLAMA = {"hidden_size": 32, "intermediate_size": 88, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 101}
VIT = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 4}
VIT_SHAPE = VitShape("tiny", depth=2, width=64, mlp_ratio=4.0, patch=8, image=32, heads=4)
TORCH_DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16}


def llama(tied: bool, dtype: torch.dtype = torch.float32):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**LLAMA, tie_word_embeddings=tied)).to(dtype)


def llama_shape(tied: bool) -> TextShape:
    return TextShape("tiny", hidden=32, intermediate=88, layers=2, heads=4, kv_heads=2, vocab=101, tied=tied)


def vit(dtype: torch.dtype = torch.float32):
    import timm

    torch.manual_seed(0)
    return timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, **VIT).to(dtype)


def saved_bytes(module: torch.nn.Module, step) -> int:
    """Bytes autograd saves for the backward of ``step()`` (its loss), each storage once, parameters and buffers left out."""
    frozen = {t.untyped_storage().data_ptr() for t in [*module.parameters(), *module.buffers()]}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in frozen:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = step()
    loss.backward()
    return sum(saved.values())


@pytest.mark.parametrize("tied", [False, True])
def test_llama_bf16_weights_exact(tied):
    model = llama(tied, torch.bfloat16)
    rotary = tensor_bytes(model.buffers())  # inv_freq: fp32, head_dim / 2, left out
    assert module_bytes(model) - rotary == weight_bytes(llama_shape(tied), "bf16")[0]


def test_vit_weights_exact_bf16_and_int8():
    from promptcore.quantization import quantize_linear_weights

    model = vit(torch.bfloat16)
    assert module_bytes(model) == weight_bytes(VIT_SHAPE, "bf16")[0]
    quantize_linear_weights(model, "int8")  # what vpt applies for model.quantization: int8
    assert module_bytes(model) == weight_bytes(VIT_SHAPE, "int8")[0]


def test_llama_int8_through_transformers_exact(tmp_path):
    pytest.importorskip("torchao")
    from transformers import LlamaForCausalLM
    from textpt.loading import quantization_config

    llama(tied=False, dtype=torch.bfloat16).save_pretrained(tmp_path)
    model = LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16, quantization_config=quantization_config("int8"))
    rotary = tensor_bytes(model.buffers())
    # transformers' torchao path leaves the LM head (the output embedding) in bf16, as the model counts it
    assert module_bytes(model) - rotary == weight_bytes(llama_shape(False), "int8")[0]


def test_prompt_and_optimizer_bytes_after_a_step():
    import vpt

    backbone = vpt.create_model(vpt.BackboneConfig("timm:vit_base_patch16_224", pretrained=False, kwargs=VIT))
    model = vpt.wrap(backbone, vpt.VPTConfig(method="vpt_deep", num_tokens=4, num_classes=10))
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trained)
    torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([1, 7])).backward()
    opt.step()
    state = [t for s in opt.state.values() for k, t in s.items() if k != "step"]  # AdamW's step counters: 4 B each
    held = sum(t.numel() * t.element_size() for t in [*trained, *(p.grad for p in trained), *state])
    assert held == OPTIMIZER_BYTES * VIT_SHAPE.trained_params(4, 10)
    assert held == estimate(VIT_SHAPE, Workload(prompt_tokens=4, classes=10), "bf16", 1, False).prompts


# Measured / modelled bytes saved for backward (tensors of the blocks, final norm and loss), recorded when written:
# Llama 1.050 (fp32) and 1.045 (bf16); ViT VPT-deep 0.963 (fp32) and 0.983 (bf16). The model counts the big
# per-token tensors; what it leaves out (RMSNorm's float32 product, the VPT-deep fast path computing the prompts'
# keys and values once, small statistics) stays within 10%.
TOLERANCE = 0.10


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_llama_saved_activations(dtype):
    import textpt
    from textpt import PromptTuningConfig

    model = textpt.wrap(llama(tied=False, dtype=TORCH_DTYPE[dtype]), PromptTuningConfig(num_tokens=4, fast="off"))
    batch, seq = 3, 10
    ids = torch.randint(0, 101, (batch, seq))
    data = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "lm_labels": ids}
    measured = saved_bytes(model, lambda: model.training_step(data))
    shape, a = llama_shape(False), FLOAT_BYTES[dtype]
    tokens = shape.tokens(seq, 4)
    modelled = activation_bytes(shape, batch, tokens, a) + shape.logits_saved_bytes(batch, seq, tokens, a)
    assert measured / modelled == pytest.approx(1, abs=TOLERANCE), (measured, modelled)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_vit_saved_activations(dtype):
    import vpt

    backbone = vpt.create_model(vpt.BackboneConfig("timm:vit_base_patch16_224", pretrained=False, kwargs=VIT))
    model = vpt.wrap(backbone.to(TORCH_DTYPE[dtype]), vpt.VPTConfig(method="vpt_deep", num_tokens=4, num_classes=10))
    x = torch.randn(2, 3, 32, 32, dtype=TORCH_DTYPE[dtype])
    measured = saved_bytes(model, lambda: torch.nn.functional.cross_entropy(model(x).float(), torch.tensor([1, 7])))
    modelled = activation_bytes(VIT_SHAPE, 2, VIT_SHAPE.tokens(0, 4), FLOAT_BYTES[dtype])
    assert measured / modelled == pytest.approx(1, abs=TOLERANCE), (measured, modelled)


def test_fsdp_shards_weights_and_adds_the_gathered_units():
    shape, work = llama_shape(False), Workload()
    whole, block, root = weight_bytes(shape, "nf4")
    one = estimate(shape, work, "nf4", 1, fsdp=False)
    eight = estimate(shape, work, "nf4", 8, fsdp=True)
    assert one.weights == whole and one.gathered == 0
    assert eight.weights == whole / 8 and eight.gathered == 2 * block + root
    assert eight.activations == one.activations and eight.logits == one.logits


def test_checkpointing_and_sharded_embeddings():
    # Arithmetic only: what non-reentrant checkpointing keeps (the blocks' inputs) is held by its recomputation
    # closures, which saved_tensors_hooks do not see, so this term is not measured here.
    shape, work = llama_shape(False), Workload(batch=2, seq=6, prompt_tokens=2)
    plain = estimate(shape, work, "bf16", 2, fsdp=True)
    ckpt = estimate(shape, work, "bf16", 2, fsdp=True, checkpointing=True)
    tokens = 2 * 8
    assert ckpt.activations == tokens * (2 * 2 * 32 + shape.block_saved(2) + shape.final_saved(2))
    assert plain.activations == tokens * (2 * shape.block_saved(2) + shape.final_saved(2))
    _, block, _ = weight_bytes(shape, "bf16")
    assert estimate(shape, work, "bf16", 2, fsdp=True, sharded_embeddings=True).gathered == 2 * block


def test_nf4_block_scales():
    from promptcore.memory_model import linear_weight_bytes

    assert linear_weight_bytes(64, 64, "nf4", double_quant=False) == 64 * 64 / 2 + 64 * 4  # fp32 absmax per 64
    assert linear_weight_bytes(64 * 256, 64, "nf4") == 64 * 64 * 256 / 2 + 256 * 64 + 64 * 4


def test_read_config(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(**LLAMA).save_pretrained(tmp_path)
    assert read_config(tmp_path / "config.json") == TextShape(tmp_path.name, hidden=32, intermediate=88, layers=2, heads=4, kv_heads=2, vocab=101, tied=False, head_dim=8)
    (tmp_path / "bad.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(UserError, match="has no 'intermediate_size'"):
        read_config(tmp_path / "bad.json")
    with pytest.raises(UserError, match="cannot read"):
        read_config(tmp_path / "missing.json")


def test_cli_errors_and_json(capsys):
    assert main(["--model", "llama-3-9b"]) == 2
    assert "error: --model: unknown llama-3-9b" in capsys.readouterr().err
    assert main(["--model", "vit-h-14", "--dtype", "int3"]) == 2
    assert "unknown dtype 'int3'" in capsys.readouterr().err
    assert main(["--vit", "2.5", "64", "4", "8", "32", "4"]) == 2
    assert "DEPTH, WIDTH, PATCH, IMAGE and HEADS are positive whole numbers" in capsys.readouterr().err
    assert main(["--model", "llama-3-8b", "--batch", "0"]) == 2
    assert "batch=0" in capsys.readouterr().err
    assert main(["--model", "llama-3-8b", "--gpus", "0"]) == 2
    assert "--gpus must be at least 1" in capsys.readouterr().err
    assert main(["--vit", "2", "64", "4", "8", "32", "4", "--gpus", "1", "--dtype", "bf16", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["weights"] == weight_bytes(VIT_SHAPE, "bf16")[0]


def doc_tables() -> list[tuple[list[str], str]]:
    """The ``python -m promptcore.memory_model`` commands of docs/big_models.md with the ```text block after each."""
    text = (ROOT / "docs" / "big_models.md").read_text()
    found = re.findall(r"```bash\n(python -m promptcore\.memory_model [^\n]*)\n```\n\n```text\n(.*?)```", text, re.S)
    return [(shlex.split(command)[3:], table) for command, table in found]


def test_doc_tables_are_the_scripts_output(capsys):
    tables = doc_tables()
    assert len(tables) >= 2  # the text models and the ViTs
    for argv, shown in tables:
        assert main(argv) == 0
        assert capsys.readouterr().out == shown, f"docs/big_models.md shows another table for {argv}: paste the output again"
