"""The exact shared-prefix path equals plain concatenation, logits and gradients, in float64."""

import pytest
import torch

import textpt
from textpt import PromptTuningConfig, TextModelConfig, load_model_and_tokenizer
from textpt.padding import last_token_index, repad
from tiny_text import TINY_CONFIGS, method_config

ROWS = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15]]


def build(model_type, side, method="prompt_tuning", **prompt):
    torch.manual_seed(0)
    model, tok = load_model_and_tokenizer(
        TextModelConfig(name=f"random:{model_type}", kwargs=TINY_CONFIGS[model_type], dtype="float64", padding_side=side)
    )
    return textpt.wrap(model, method_config(method, num_tokens=4, init_std=1.0, **prompt), tokenizer=tok), tok


def loss_and_grads(pt, batch, fast):
    pt.config.fast = fast
    pt.zero_grad()
    loss = pt.training_step(batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in pt.named_prompt_parameters()}


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("prompt", [{}, {"method": "p_tuning", "reparam": "lstm"}, {"num_tasks": 3}], ids=["pt", "p_tuning", "bank"])
def test_fast_equals_concatenation(model_type, side, prompt):
    pt, tok = build(model_type, side, **prompt)
    ids, mask = repad(ROWS, tok.pad_token_id, side, torch.device("cpu"))
    lm_labels = ids.masked_fill(mask == 0, -100)
    batch = {"input_ids": ids, "attention_mask": mask, "lm_labels": lm_labels}
    if prompt.get("num_tasks"):
        batch["task_ids"] = torch.tensor([2, 0, 2])
    pt.config.fast = "on"
    fast_logits = pt.token_logits(ids, mask, batch.get("task_ids"))
    pt.config.fast = "off"
    ref_logits = pt.token_logits(ids, mask, batch.get("task_ids"))
    torch.testing.assert_close(fast_logits[mask.bool()], ref_logits[mask.bool()], rtol=0, atol=1e-10)
    fast_loss, fast_grads = loss_and_grads(pt, batch, "on")
    ref_loss, ref_grads = loss_and_grads(pt, batch, "off")
    torch.testing.assert_close(fast_loss, ref_loss, rtol=0, atol=1e-10)
    assert fast_grads.keys() == ref_grads.keys() and fast_grads
    for name in ref_grads:
        assert ref_grads[name].abs().max() > 0
        # Sums in another order. GPT-2 runs wholly in float64; Llama's RMSNorm upcasts to float32 inside (transformers'
        # LlamaRMSNorm), so its gradients carry float32 rounding even in a float64 model.
        scale = float(ref_grads[name].abs().max())
        tol = 1e-9 if model_type == "gpt2" else 1e-6
        torch.testing.assert_close(fast_grads[name], ref_grads[name], rtol=0, atol=tol * scale)


@pytest.mark.parametrize("method", ["prompt_tuning", "prefix"])
def test_gradient_checkpointing_gives_the_same_gradients(method):
    pt, tok = build("llama", "left", method=method)
    ids, mask = repad(ROWS, tok.pad_token_id, "left", torch.device("cpu"))
    batch = {"input_ids": ids, "attention_mask": mask, "lm_labels": ids.masked_fill(mask == 0, -100)}
    loss, grads = loss_and_grads(pt, batch, "auto")
    pt.enable_gradient_checkpointing()
    pt.train()
    loss_ckpt, grads_ckpt = loss_and_grads(pt, batch, "auto")
    torch.testing.assert_close(loss_ckpt, loss, rtol=0, atol=1e-12)
    for name in grads:
        torch.testing.assert_close(grads_ckpt[name], grads[name], rtol=1e-9, atol=1e-12)


def test_fast_on_rejected_for_encoder_models():
    model, tok = load_model_and_tokenizer(TextModelConfig(name="random:bert", task="seq_cls", kwargs=TINY_CONFIGS["bert"]))
    with pytest.raises(ValueError, match="fast: the shared-prefix path needs a decoder-only model"):
        textpt.wrap(model, PromptTuningConfig(num_tokens=2, num_classes=2, fast="on"), tokenizer=tok)


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("fast", ["on", "off"])
def test_last_token_logits_are_the_rows_of_the_full_logits(model_type, side, fast):
    # The verbalizer runs the LM head on each example's last real token only (logits_to_keep); the rows must be the
    # full logits' rows at that token, on the fast path and the reference path, with either padding side.
    pt, tok = build(model_type, side)
    pt.config.fast = fast
    ids, mask = repad(ROWS, tok.pad_token_id, side, torch.device("cpu"))
    full = pt.token_logits(ids, mask)
    last = [full[i, j] for i, j in enumerate(last_token_index(mask).tolist())]
    torch.testing.assert_close(pt.last_token_logits(ids, mask), torch.stack(last), rtol=0, atol=1e-10)


def test_lm_loss_equals_the_loss_of_the_shifted_logits():
    # The loss skips slicing the logits (a copy): the last position gets target -100 instead. Same mean over tokens.
    pt, tok = build("llama", "right")
    ids, mask = repad(ROWS, tok.pad_token_id, "right", torch.device("cpu"))
    batch = {"input_ids": ids, "attention_mask": mask, "lm_labels": ids.masked_fill(mask == 0, -100)}
    logits, targets = pt.lm_outputs(batch)
    assert logits.shape[1] == ids.shape[1] - 1 and targets.shape == logits.shape[:2]
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
    torch.testing.assert_close(pt.training_step(batch), expected, rtol=0, atol=1e-12)
    sums = pt.eval_step(batch)
    assert int(sums["count"]) == int((targets != -100).sum())
    torch.testing.assert_close(sums["loss"] / sums["count"], expected.detach(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("fast, cpu, gpu", [("auto", True, False), ("on", True, True), ("off", False, False)])
def test_auto_takes_the_shared_prefix_on_the_cpu_only(fast, cpu, gpu):
    # On a GPU the prompt's own pass costs more than it saves (bench/RESULTS.md), so auto concatenates there. The
    # meta device stands in for a GPU: the choice reads only the embedding's device.
    from transformers import LlamaConfig, LlamaForCausalLM

    backbone = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                            num_attention_heads=2, num_key_value_heads=1))
    model = textpt.wrap(backbone, PromptTuningConfig(num_tokens=2, init="random", fast=fast), task="causal_lm", name="tiny")
    assert model.use_fast_path() is cpu
    model.to("meta")
    assert model.use_fast_path() is gpu
