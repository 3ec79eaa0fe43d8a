"""Mixed batches (textpt.mixed): rows with different, separately built prompts of one backbone give, each, what their
prompt gives alone through the ordinary model (class scores within 1e-5 in float32, greedy tokens identical)."""

import pytest
import torch

import textpt
from promptcore import UserError
from textpt import TextModelConfig, load_model_and_tokenizer, mixed
from tiny_text import TINY_CONFIGS, method_config

ROWS = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15], [16, 17, 18, 19], [20]]
VERBALIZERS = [[" good", " bad"], [" yes", " no", " fine"], [" positive", " negative"], [" great bad", " awful"]]


def backbone(model_type, task, dtype="float32"):
    torch.manual_seed(0)
    return load_model_and_tokenizer(TextModelConfig(name=f"random:{model_type}", task=task, kwargs=TINY_CONFIGS[model_type], padding_side="left", dtype=dtype))


def prompts(model, tok, task, methods):
    """One model per method, each with its own prompt length, seed and (for classifiers) classes."""
    out = []
    for i, method in enumerate(methods):
        fields = {"num_tokens": 2 + i, "seed": i, "init_std": 1.0}
        if method in ("prompt_tuning", "p_tuning"):
            fields["fast"] = "off"
        if task == "seq_cls":
            fields["num_classes"] = 2 + i
        else:
            fields["verbalizer"] = VERBALIZERS[i % len(VERBALIZERS)]
        m = textpt.wrap(model, method_config(method, **fields), tokenizer=tok, task=task)
        with torch.no_grad():  # trained-looking prompts and heads: every row's own numbers
            for p in m.prompt_parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(100 + i)) * 0.5)
        m.eval()
        out.append(m)
    return out


def alone_scores(m, row):
    ids = torch.tensor([row])
    return m.class_logits(ids, torch.ones_like(ids))[0]


CASES = [
    ("llama", "causal_lm", ["prompt_tuning", "p_tuning", "prefix", "dept"]),
    ("gpt2", "causal_lm", ["prefix", "prompt_tuning", "dept"]),
    ("bert", "seq_cls", ["prompt_tuning", "prefix", "dept", "p_tuning", "prefix"]),
    ("t5", "seq2seq", ["prompt_tuning", "prefix", "dept", "prefix"]),
]


@pytest.mark.parametrize("dtype,tolerance", [("float32", 1e-5), ("float64", 1e-10)])
@pytest.mark.parametrize("model_type,task,methods", CASES)
def test_mixed_class_scores_equal_each_prompt_alone(model_type, task, methods, dtype, tolerance):
    model, tok = backbone(model_type, task, dtype)
    models = prompts(model, tok, task, methods)
    rows = [ROWS[i % len(ROWS)] for i in range(2 * len(models))]
    owners = [models[i % len(models)] for i in range(len(rows))][::-1]
    with torch.no_grad():
        mixed_scores = mixed.class_scores(owners, rows)
        for m, row, got in zip(owners, rows, mixed_scores):
            want = alone_scores(m, row)
            assert got.shape == want.shape
            torch.testing.assert_close(got, want.to(got.dtype), atol=tolerance, rtol=tolerance)
    assert len({s.shape[0] for s in mixed_scores}) > 1  # class counts differ between rows


@pytest.mark.parametrize("model_type,task,methods", [c for c in CASES if c[1] != "seq_cls"])
def test_mixed_greedy_generation_equals_each_prompt_alone(model_type, task, methods):
    model, tok = backbone(model_type, task)
    models = prompts(model, tok, task, methods)
    rows = [ROWS[i % len(ROWS)] for i in range(len(models) + 2)]
    owners = [models[i % len(models)] for i in range(len(rows))]
    lengths = [3 + i for i in range(len(rows))]
    sampling = [mixed.Sampling(max_new_tokens=n, stop_ids=()) for n in lengths]
    steps = list(mixed.generate(owners, rows, sampling))
    assert len(steps) == max(lengths)
    for i, (m, row) in enumerate(zip(owners, rows)):
        got = [s[i] for s in steps if s[i] is not None]
        ids = torch.tensor([row])
        want = m.generate(ids, torch.ones_like(ids), max_new_tokens=lengths[i], do_sample=False, eos_token_id=None)[0].tolist()
        if task == "seq2seq":
            want = want[1:]  # the decoder's start token
        assert got == want[: lengths[i]]


@pytest.mark.parametrize("model_type,task,methods,forwards", [
    ("llama", "causal_lm", ["prompt_tuning", "prefix", "dept", "p_tuning"], 1),  # every row in one forward
    ("bert", "seq_cls", ["prompt_tuning", "dept", "prefix", "prefix"], 3),  # shallow prompts; prefixes of 4 and 5 tokens
])
def test_mixed_batch_runs_as_few_forwards_as_the_methods_allow(model_type, task, methods, forwards):
    model, tok = backbone(model_type, task)
    models = prompts(model, tok, task, methods)
    calls = []
    hook = model.register_forward_hook(lambda *args: calls.append(1))
    try:
        mixed.class_scores(models * 2, [ROWS[i % len(ROWS)] for i in range(2 * len(models))])
    finally:
        hook.remove()
    assert len(calls) == forwards


def test_sampling_is_reproducible_and_top_p_keeps_the_nucleus():
    logits = torch.tensor([[4.0, 3.0, -2.0, -3.0]])
    draws = {mixed.next_tokens(logits, [mixed.Sampling(temperature=1.0, top_p=0.5)], [torch.Generator().manual_seed(s)])[0] for s in range(30)}
    assert draws == {0}  # token 0 alone holds more than half the probability
    wide = {mixed.next_tokens(logits, [mixed.Sampling(temperature=1.0, top_p=0.9)], [torch.Generator().manual_seed(s)])[0] for s in range(60)}
    assert wide == {0, 1}
    assert mixed.next_tokens(logits, [mixed.Sampling(temperature=0)], [None]) == [0]


def test_mixed_batch_refuses_models_of_other_backbones():
    a, tok = backbone("llama", "causal_lm")
    b, _ = backbone("llama", "causal_lm")
    models = prompts(a, tok, "causal_lm", ["prompt_tuning"]) + prompts(b, tok, "causal_lm", ["prompt_tuning"])
    with pytest.raises(UserError, match="a mixed batch runs prompts of one backbone"):
        mixed.class_scores(models, ROWS[:2])


def test_frozen_prompts_keep_their_keys_and_values_until_they_change():
    model, tok = backbone("llama", "causal_lm", "float64")
    a, b = prompts(model, tok, "causal_lm", ["prompt_tuning", "p_tuning"])
    with torch.no_grad():
        first = mixed.class_scores([a, b, a], ROWS[:3])
        kept = a.__dict__["_mixed_prefix"][1]
        assert mixed.decoder_prefixes([a])[id(a)] is kept  # reused, not computed again
        again = mixed.class_scores([a, b, a], ROWS[:3])
        for x, y in zip(first, again):
            assert torch.equal(x, y)
        a.prompts.weight.mul_(2.0)  # an in-place change of the prompt: its kept keys and values are stale
        changed = mixed.class_scores([a, b], ROWS[:2])
        assert mixed.decoder_prefixes([a])[id(a)] is not kept
        assert (changed[0] - alone_scores(a, ROWS[0])).abs().max() < 1e-10
        assert (changed[0] - first[0]).abs().max() > 1e-6
    with torch.enable_grad():  # training needs gradients through the prompt: nothing is kept or reused
        a.train()
        mixed.decoder_prefixes([a])
        assert "_mixed_prefix" not in a.__dict__
