"""Packed batches (textpt.packing) equal the padded reference path in float64: losses, prompt gradients, eval sums,
class scores and token logits, for every causal LM method, on both padding sides."""

import pytest
import torch

import textpt
from textpt import TextModelConfig, load_model_and_tokenizer
from textpt.packing import block_causal_mask, pack_rows
from textpt.padding import repad
from tiny_text import TINY_CONFIGS, method_config

ROWS = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15], [16]]

METHODS = {
    "pt_concat": ("prompt_tuning", {"fast": "off"}),
    "pt_fast": ("prompt_tuning", {"fast": "on"}),
    "pt_bank_concat": ("prompt_tuning", {"fast": "off", "num_tasks": 3}),
    "pt_bank_fast": ("prompt_tuning", {"fast": "on", "num_tasks": 3}),
    "p_tuning_lstm": ("p_tuning", {"reparam": "lstm", "fast": "off"}),
    "p_tuning_fast": ("p_tuning", {"fast": "on"}),
    "prefix": ("prefix", {}),
    "prefix_bank": ("prefix", {"num_tasks": 3}),
    "dept": ("dept", {"rank": 2, "max_length": 16}),
}


def build(model_type, side, method, verbalizer=None, **prompt):
    torch.manual_seed(0)
    model, tok = load_model_and_tokenizer(
        TextModelConfig(name=f"random:{model_type}", kwargs=TINY_CONFIGS[model_type], dtype="float64", padding_side=side)
    )
    fields = {"num_tokens": 3, "init_std": 1.0, **prompt}
    if verbalizer:
        fields["verbalizer"] = verbalizer
    return textpt.wrap(model, method_config(method, **fields), tokenizer=tok), tok


def batch_of(tok, side, bank):
    ids, mask = repad(ROWS, tok.pad_token_id, side, torch.device("cpu"))
    batch = {"input_ids": ids, "attention_mask": mask, "lm_labels": ids.masked_fill(mask == 0, -100)}
    if bank:
        batch["task_ids"] = torch.tensor([2, 0, 2, 1])
    return batch


def run(model, batch, packing):
    model.set_packing(packing)
    assert model.packs_batches() is packing
    model.zero_grad()
    loss = model.training_step(batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_prompt_parameters()}
    return loss.detach(), grads, model.eval_step(batch)


def check_grads(packed, padded, model_type):
    assert packed.keys() == padded.keys()
    assert any(g.abs().max() > 0 for g in padded.values())  # DePT's A gets none while its B is still zero
    for name in padded:
        # Llama's RMSNorm upcasts to float32 inside (transformers' LlamaRMSNorm), so its gradients carry float32
        # rounding even in a float64 model; GPT-2 runs wholly in float64
        tol = 1e-10 if model_type == "gpt2" else 1e-6
        torch.testing.assert_close(packed[name], padded[name], rtol=0, atol=tol * float(padded[name].abs().max()))


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("case", list(METHODS))
def test_packed_lm_loss_equals_padded(model_type, side, case):
    method, prompt = METHODS[case]
    model, tok = build(model_type, side, method, **prompt)
    batch = batch_of(tok, side, prompt.get("num_tasks", 1) > 1)
    loss, grads, sums = run(model, batch, True)
    ref_loss, ref_grads, ref_sums = run(model, batch, False)
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-10)
    check_grads(grads, ref_grads, model_type)
    assert sums.keys() == ref_sums.keys()
    for key in ref_sums:
        torch.testing.assert_close(sums[key], ref_sums[key], rtol=0, atol=1e-9)
    mask = batch["attention_mask"].bool()
    model.set_packing(True)
    packed_logits = model.token_logits(batch["input_ids"], batch["attention_mask"], batch.get("task_ids"))
    model.set_packing(False)
    padded_logits = model.token_logits(batch["input_ids"], batch["attention_mask"], batch.get("task_ids"))
    torch.testing.assert_close(packed_logits[mask], padded_logits[mask], rtol=0, atol=1e-10)


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("case", ["pt_concat", "pt_fast", "pt_bank_fast", "prefix", "prefix_bank"])
@pytest.mark.parametrize("verbalizer", [[" good", " bad"], [" good movie", " bad"]], ids=["one_token", "several_tokens"])
def test_packed_class_scores_equal_padded(model_type, side, case, verbalizer):
    method, prompt = METHODS[case]
    model, tok = build(model_type, side, method, verbalizer=verbalizer, **prompt)
    batch = batch_of(tok, side, prompt.get("num_tasks", 1) > 1)
    batch = {k: v for k, v in batch.items() if k != "lm_labels"} | {"labels": torch.tensor([0, 1, 1, 0])}
    loss, grads, sums = run(model, batch, True)
    ref_loss, ref_grads, ref_sums = run(model, batch, False)
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-10)
    check_grads(grads, ref_grads, model_type)
    for key in ref_sums:
        torch.testing.assert_close(sums[key], ref_sums[key], rtol=0, atol=1e-9)


def test_pack_rows_layout():
    # two examples, left-padded: [pad, a, b] and [c, d, e]; two prompt slots each
    rows = pack_rows(torch.tensor([[0, 1, 1], [1, 1, 1]]), 2)
    assert rows.positions.tolist() == [[0, 1, 2, 3, 0, 1, 2, 3, 4]]
    assert rows.sequence.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1]
    assert rows.tokens.tolist() == [2, 3, 6, 7, 8] and rows.last.tolist() == [3, 8]
    assert rows.order.tolist() == [0, 1, 4, 5, 2, 3, 6, 7, 8]  # prompt rows 0..3, then the tokens 4..8


def test_block_causal_mask_keeps_each_example_to_its_own_prefix_and_tokens():
    mask = block_causal_mask(torch.tensor([0, 0, 1]), torch.tensor([1, 0]), 1, torch.float64)[0, 0] == 0
    # columns: prefix of group 0, prefix of group 1, then the three slots
    assert mask.tolist() == [
        [False, True, True, False, False],
        [False, True, True, True, False],
        [True, False, False, False, True],
    ]
