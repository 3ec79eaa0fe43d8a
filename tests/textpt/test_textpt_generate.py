"""generate() with prompts: greedy output equals a step-by-step decode of the concatenated reference path."""

import pytest
import torch

import textpt
from textpt import TextModelConfig, load_model_and_tokenizer
from textpt.padding import repad
from tiny_text import TINY_CONFIGS, method_config, reference_greedy_decode

ROWS = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15]]
NEW = 5


def build(model_type, side, task="causal_lm", method="prompt_tuning", **prompt):
    torch.manual_seed(0)
    model, tok = load_model_and_tokenizer(
        TextModelConfig(name=f"random:{model_type}", task=task, kwargs=TINY_CONFIGS[model_type], dtype="float64", padding_side=side)
    )
    return textpt.wrap(model, method_config(method, num_tokens=3, init_std=1.0, **prompt), tokenizer=tok), tok


def until_eos(tokens, eos):
    """transformers stops a row at EOS and pads the rest; the reference decodes on, so compare up to EOS."""
    out = []
    for t in tokens:
        out.append(t)
        if t == eos:
            break
    return out


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("method", ["prompt_tuning", "p_tuning", "prefix"])
def test_greedy_generate_equals_reference_decode(model_type, side, method):
    pt, tok = build(model_type, side, method=method, **({} if method == "prefix" else {"fast": "off"}))
    ids, mask = repad(ROWS, tok.pad_token_id, side, torch.device("cpu"))
    generated = pt.generate(ids, mask, max_new_tokens=NEW, do_sample=False)
    reference = reference_greedy_decode(pt, ids, mask, NEW)  # fast: off -> the concatenated path, no cache
    assert generated.shape[0] == len(ROWS)
    for g, r in zip(generated.tolist(), reference.tolist()):
        assert until_eos(g, tok.eos_token_id) == until_eos(r, tok.eos_token_id)


def test_generate_depends_on_the_prompt():
    pt, tok = build("llama", "left")
    ids, mask = repad(ROWS, tok.pad_token_id, "left", torch.device("cpu"))
    first = pt.generate(ids, mask, max_new_tokens=NEW, do_sample=False, eos_token_id=None)
    with torch.no_grad():
        pt.prompts.weight.copy_(torch.randn_like(pt.prompts.weight) * 3)
    assert not torch.equal(first, pt.generate(ids, mask, max_new_tokens=NEW, do_sample=False, eos_token_id=None))


def test_bank_generate_mixed_tasks_equals_per_task():
    pt, tok = build("llama", "left", num_tasks=2)
    ids, mask = repad(ROWS, tok.pad_token_id, "left", torch.device("cpu"))
    tasks = torch.tensor([1, 0, 1])
    mixed = pt.generate(ids, mask, task_ids=tasks, max_new_tokens=NEW, do_sample=False, eos_token_id=None)
    for i, row in enumerate(ROWS):
        alone = pt.generate(torch.tensor([row]), task_ids=tasks[i : i + 1], max_new_tokens=NEW, do_sample=False, eos_token_id=None)
        assert mixed[i].tolist() == alone[0].tolist()


@pytest.mark.parametrize("side", ["left", "right"])
def test_seq2seq_greedy_generate_equals_manual_decode(side):
    pt, tok = build("t5", side, task="seq2seq")
    ids, mask = repad(ROWS, tok.pad_token_id, side, torch.device("cpu"))
    generated = pt.generate(ids, mask, max_new_tokens=NEW, do_sample=False, eos_token_id=None)
    x, xmask, _, _ = pt.encode(ids, mask, None)
    decoder = torch.full((len(ROWS), 1), pt.backbone.config.decoder_start_token_id)
    with torch.no_grad():
        for _ in range(NEW):
            logits = pt.backbone(inputs_embeds=x, attention_mask=xmask, decoder_input_ids=decoder, use_cache=False).logits
            decoder = torch.cat([decoder, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generated, decoder)


def test_seq_cls_cannot_generate():
    pt, tok = build("bert", "right", task="seq_cls", num_classes=2)
    with pytest.raises(ValueError, match="seq_cls models classify"):
        pt.generate(torch.tensor([[5, 6]]))
