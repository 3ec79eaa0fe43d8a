"""The exact shared-prefix path equals plain concatenation, logits and gradients, in float64."""

import pytest
import torch

import textpt
from textpt import TextModelConfig, TextPromptConfig, load_model_and_tokenizer
from textpt.loading import TINY_CONFIGS
from textpt.model import repad

ROWS = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15]]


def build(model_type, side, **prompt):
    torch.manual_seed(0)
    model, tok = load_model_and_tokenizer(
        TextModelConfig(name=f"random:{model_type}", kwargs=TINY_CONFIGS[model_type], dtype="float64", padding_side=side)
    )
    return textpt.wrap(model, TextPromptConfig(num_tokens=4, init_std=1.0, **prompt), tokenizer=tok), tok


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
        textpt.wrap(model, TextPromptConfig(num_tokens=2, num_classes=2, fast="on"), tokenizer=tok)
