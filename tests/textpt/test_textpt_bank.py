"""Prompt banks: a batch mixing tasks equals per-task runs, in inference and in training (gradients)."""

import pytest
import torch

import textpt
from textpt import TextModelConfig, load_model_and_tokenizer
from textpt.padding import repad
from tiny_text import TINY_CONFIGS, method_config

ROWS = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15], [16, 17, 18, 19]]
TASKS = torch.tensor([2, 0, 2, 1])


def build(model_type, task="causal_lm", method="prompt_tuning", **prompt):
    torch.manual_seed(0)
    model, tok = load_model_and_tokenizer(
        TextModelConfig(name=f"random:{model_type}", task=task, kwargs=TINY_CONFIGS[model_type], dtype="float64", padding_side="left")
    )
    return textpt.wrap(model, method_config(method, num_tokens=3, num_tasks=3, init_std=1.0, **prompt), tokenizer=tok), tok


def trained_tokens(batch):
    """Targets of the LM loss: labelled tokens that follow a real token."""
    return ((batch["lm_labels"][:, 1:] != -100) & (batch["attention_mask"][:, :-1] == 1)).sum()


@pytest.mark.parametrize("method", ["prompt_tuning", "prefix"])
def test_mixed_batch_equals_per_task_runs(method):
    pt, tok = build("llama", method=method)
    ids, mask = repad(ROWS, tok.pad_token_id, "left", torch.device("cpu"))
    batch = {"input_ids": ids, "attention_mask": mask, "lm_labels": ids.masked_fill(mask == 0, -100), "task_ids": TASKS}
    mixed = pt.token_logits(ids, mask, TASKS)
    for t in TASKS.unique():
        rows = TASKS == t
        alone = pt.token_logits(ids[rows], mask[rows], TASKS[rows])
        torch.testing.assert_close(mixed[rows][mask[rows].bool()], alone[mask[rows].bool()], rtol=0, atol=1e-10)
    # training: the mixed batch's gradient is the sum of the per-task runs' (each weighted by its share of tokens)
    pt.zero_grad()
    pt.training_step(batch).backward()
    mixed_grad = pt.prompts.weight.grad.clone()
    total = trained_tokens(batch)
    summed = torch.zeros_like(mixed_grad)
    for t in TASKS.unique():
        rows = TASKS == t
        sub = {k: v[rows] for k, v in batch.items()}
        pt.zero_grad()
        (pt.training_step(sub) * trained_tokens(sub) / total).backward()
        summed += pt.prompts.weight.grad
        # a task's run only touches its own prompt
        others = [i for i in range(3) if i != int(t)]
        assert pt.prompts.weight.grad[others].abs().max() == 0
    torch.testing.assert_close(mixed_grad, summed, rtol=0, atol=1e-6 * float(summed.abs().max()))


def test_bank_needs_task_ids():
    pt, tok = build("gpt2")
    with pytest.raises(ValueError, match="bank of 3 task prompts; the batch must carry task_ids"):
        pt.token_logits(torch.tensor([[5, 6]]))


def test_bank_task_id_out_of_range():
    pt, tok = build("gpt2")
    with pytest.raises(ValueError, match=r"task_ids must lie in \[0, 2\]"):
        pt.token_logits(torch.tensor([[5, 6]]), task_ids=torch.tensor([3]))


def test_bank_on_encoder_classifier():
    pt, tok = build("bert", task="seq_cls", num_classes=2)
    ids, mask = repad(ROWS, tok.pad_token_id, "left", torch.device("cpu"))
    mixed = pt(ids, mask, TASKS)
    alone = torch.cat([pt(torch.tensor([r]), task_ids=TASKS[i : i + 1]) for i, r in enumerate(ROWS)])
    torch.testing.assert_close(mixed, alone, rtol=0, atol=1e-10)
