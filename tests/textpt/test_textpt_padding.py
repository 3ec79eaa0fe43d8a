"""Padding done right: each example's outputs in a padded batch equal its outputs alone, unpadded."""

import pytest
import torch

import textpt
from textpt import TextModelConfig, load_model_and_tokenizer
from textpt.padding import repad
from tiny_text import TINY_CONFIGS, method_config

ROWS = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15]]


def build(model_type, task, side, method="prompt_tuning", **prompt):
    torch.manual_seed(0)
    model, tok = load_model_and_tokenizer(
        TextModelConfig(name=f"random:{model_type}", task=task, kwargs=TINY_CONFIGS[model_type], dtype="float64", padding_side=side)
    )
    # a large init so that a misplaced prompt shows in the logits
    return textpt.wrap(model, method_config(method, num_tokens=3, init_std=1.0, **prompt), tokenizer=tok), tok


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("method,fast", [("prompt_tuning", "on"), ("prompt_tuning", "off"), ("p_tuning", "on"), ("prefix", None)])
def test_causal_lm_batch_equals_each_example_alone(model_type, side, method, fast):
    pt, tok = build(model_type, "causal_lm", side, method=method, **({} if fast is None else {"fast": fast}))
    ids, mask = repad(ROWS, tok.pad_token_id, side, torch.device("cpu"))
    batch = pt.token_logits(ids, mask)
    for i, row in enumerate(ROWS):
        alone = pt.token_logits(torch.tensor([row]))[0]
        real = batch[i][mask[i].bool()]
        torch.testing.assert_close(real, alone, rtol=0, atol=1e-10)


def test_padding_side_does_not_change_logits():
    left, tok = build("llama", "causal_lm", "left")
    ids_l, mask_l = repad(ROWS, tok.pad_token_id, "left", torch.device("cpu"))
    ids_r, mask_r = repad(ROWS, tok.pad_token_id, "right", torch.device("cpu"))
    out_l = left.token_logits(ids_l, mask_l)[mask_l.bool()]
    left.padding_side = "right"
    out_r = left.token_logits(ids_r, mask_r)[mask_r.bool()]
    torch.testing.assert_close(out_l, out_r, rtol=0, atol=1e-10)


def test_prompt_is_not_ignored():
    pt, tok = build("gpt2", "causal_lm", "left")
    ids = torch.tensor([ROWS[0]])
    before = pt.token_logits(ids)
    with torch.no_grad():
        pt.prompts.weight.add_(torch.randn_like(pt.prompts.weight))
    assert not torch.allclose(before, pt.token_logits(ids))


@pytest.mark.parametrize("side", ["left", "right"])
def test_seq_cls_bert_batch_equals_alone(side):
    pt, tok = build("bert", "seq_cls", side, num_classes=3)
    ids, mask = repad(ROWS, tok.pad_token_id, side, torch.device("cpu"))
    batch = pt(ids, mask)
    alone = torch.cat([pt(torch.tensor([r])) for r in ROWS])
    torch.testing.assert_close(batch, alone, rtol=0, atol=1e-10)


@pytest.mark.parametrize("side", ["left", "right"])
def test_seq2seq_t5_batch_equals_alone(side):
    pt, tok = build("t5", "seq2seq", side)
    ids, mask = repad(ROWS, tok.pad_token_id, side, torch.device("cpu"))
    targets = torch.tensor([[5, 6, -100], [7, 8, 9], [10, -100, -100]])
    logits, _ = pt.lm_outputs({"input_ids": ids, "attention_mask": mask, "lm_labels": targets})
    for i, row in enumerate(ROWS):
        alone, _ = pt.lm_outputs({"input_ids": torch.tensor([row]), "lm_labels": targets[i : i + 1]})
        keep = targets[i] != -100
        torch.testing.assert_close(logits[i][keep], alone[0][keep], rtol=0, atol=1e-10)
