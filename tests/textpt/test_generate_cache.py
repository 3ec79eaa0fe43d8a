"""Generation with the prompt cache (textpt.prompt_cache) equals generation without it, and never serves a stale prompt."""

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

import textpt
from promptcore.errors import UserError
from textpt import TextModelConfig, load_model_and_tokenizer
from textpt.padding import repad
from tiny_text import TINY_CONFIGS, method_config, reference_greedy_decode

ROWS = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15]]
NEW = 5


def build(model_type="llama", side="left", method="prompt_tuning", task="causal_lm", **prompt):
    torch.manual_seed(0)
    model, tok = load_model_and_tokenizer(
        TextModelConfig(name=f"random:{model_type}", task=task, kwargs=TINY_CONFIGS[model_type], dtype="float64", padding_side=side)
    )
    return textpt.wrap(model, method_config(method, num_tokens=3, init_std=1.0, **prompt), tokenizer=tok).eval(), tok


class Recorder(LogitsProcessor):
    """Keeps every step's scores as generate hands them to the processors."""

    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.steps.append(scores.clone())
        return scores


def greedy(pt, ids, mask, task_ids=None):
    """The new tokens and each step's logits ``[steps, B, vocab]``."""
    recorder = Recorder()
    out = pt.generate(ids, mask, task_ids, max_new_tokens=NEW, do_sample=False, eos_token_id=None, logits_processor=LogitsProcessorList([recorder]))
    return out, torch.stack(recorder.steps)


def uncached(pt, ids, mask, task_ids=None):
    mode = pt.prompt_cache
    pt.set_prompt_cache(False)
    try:
        return greedy(pt, ids, mask, task_ids)
    finally:
        pt.set_prompt_cache(mode)


def refuse_recompute(pt, monkeypatch):
    """From now on computing the prompt's keys and values fails: what generate uses must be the kept ones."""

    def fail(*args, **kwargs):
        raise AssertionError("the prompt's keys and values were computed again")

    monkeypatch.setattr(pt, "prefix_key_values", fail)


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("method", ["prompt_tuning", "p_tuning", "prefix"])
def test_cached_generation_equals_uncached_tokens_and_logits(model_type, side, method, monkeypatch):
    pt, tok = build(model_type, side, method)
    assert pt.uses_prompt_cache()
    ids, mask = repad(ROWS, tok.pad_token_id, side, torch.device("cpu"))
    plain_tokens, plain_logits = uncached(pt, ids, mask)
    assert len(pt.kept_prompt) == 0  # off: nothing kept
    first_tokens, first_logits = greedy(pt, ids, mask)
    assert len(pt.kept_prompt) == 1
    refuse_recompute(pt, monkeypatch)
    for tokens, logits in (greedy(pt, ids, mask), (first_tokens, first_logits)):
        assert torch.equal(tokens, plain_tokens)
        assert (logits - plain_logits).abs().max() < 1e-12
    alone_tokens, _ = greedy(pt, ids[1:2], mask[1:2])  # another request of the task, another batch size
    assert torch.equal(alone_tokens, plain_tokens[1:2])


@pytest.mark.parametrize("side", ["left", "right"])
def test_cached_generation_equals_the_concatenated_reference_decode(side):
    pt, tok = build("llama", side, fast="off")
    ids, mask = repad(ROWS, tok.pad_token_id, side, torch.device("cpu"))
    greedy(pt, ids, mask)
    tokens, _ = greedy(pt, ids, mask)  # from the kept keys and values
    assert torch.equal(tokens, reference_greedy_decode(pt, ids, mask, NEW))


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
@pytest.mark.parametrize("method", ["prompt_tuning", "prefix"])
def test_bank_mixes_tasks_in_one_batch_from_the_kept_prompts(model_type, method, monkeypatch):
    pt, tok = build(model_type, "left", method, num_tasks=3)
    ids, mask = repad(ROWS, tok.pad_token_id, "left", torch.device("cpu"))
    tasks, other = torch.tensor([2, 0, 2]), torch.tensor([1, 0, 2])
    plain_tokens, plain_logits = uncached(pt, ids, mask, tasks)
    other_tokens, _ = uncached(pt, ids, mask, other)
    tokens, logits = greedy(pt, ids, mask, tasks)
    assert sorted(pt.kept_prompt.tasks) == [0, 2]  # each task computed once, task 1 not asked for
    assert torch.equal(tokens, plain_tokens)
    assert (logits - plain_logits).abs().max() < 1e-12
    greedy(pt, ids[:1], mask[:1], torch.tensor([1]))
    assert sorted(pt.kept_prompt.tasks) == [0, 1, 2]
    refuse_recompute(pt, monkeypatch)
    for i, t in enumerate(tasks.tolist()):  # per-task requests reuse the kept prompts and give the mixed batch's rows
        alone, _ = greedy(pt, ids[i:i + 1], mask[i:i + 1], torch.tensor([t]))
        assert torch.equal(alone, plain_tokens[i:i + 1])
    assert torch.equal(greedy(pt, ids, mask, other)[0], other_tokens)


def test_bank_rows_of_a_task_share_one_kept_prompt():
    pt, tok = build("llama", "left", num_tasks=2)
    tasks = torch.tensor([1, 1, 1])
    pt.kept_prompt.key_values(pt, tasks, 3)
    assert len(pt.kept_prompt) == 0  # gradients wanted: nothing kept
    with torch.no_grad():
        kv = pt.kept_prompt.key_values(pt, tasks, 3)
        assert len(pt.kept_prompt) == 1
        for (k, v), (pk, pv) in zip(kv, pt.prefix_key_values(tasks, 3)):
            assert k.shape[0] == 3 and k.stride(0) == 0 and v.stride(0) == 0  # a view broadcast over the batch
            assert torch.equal(k, pk) and torch.equal(v, pv)


def test_beams_and_sampling_equal_uncached():
    pt, tok = build("gpt2", "right", num_tasks=2)
    ids, mask = repad(ROWS, tok.pad_token_id, "right", torch.device("cpu"))
    tasks = torch.tensor([1, 0, 1])
    settings = [{"num_beams": 3, "num_return_sequences": 2}, {"do_sample": True, "top_k": 5}]
    for kwargs in settings:

        def run():
            torch.manual_seed(0)
            return pt.generate(ids, mask, tasks, max_new_tokens=NEW, eos_token_id=None, **kwargs)

        pt.set_prompt_cache(False)
        plain = run()
        pt.set_prompt_cache("auto")
        first, again = run(), run()  # the second starts from the kept prompts
        assert len(pt.kept_prompt) == 2
        assert plain.shape[0] == len(ROWS) * kwargs.get("num_return_sequences", 1)
        assert torch.equal(first, plain) and torch.equal(again, plain)


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_beam_search_equals_transformers_on_the_concatenated_embeddings(model_type):
    pt, tok = build(model_type, "left")
    ids = torch.tensor([[5, 6, 7, 8], [11, 12, 13, 14]])  # unpadded: the reference concatenates without moving pads
    beams = {"max_new_tokens": NEW, "num_beams": 3, "num_return_sequences": 2, "eos_token_id": None, "pad_token_id": tok.pad_token_id}
    with torch.no_grad():
        x = torch.cat([pt.shallow_prompt(None, 2), pt.embedding(ids)], dim=1)
        reference = pt.backbone.generate(inputs_embeds=x, attention_mask=torch.ones(x.shape[:2], dtype=torch.long), **beams)
    pt.generate(ids, **beams)
    assert torch.equal(pt.generate(ids, **beams), reference[:, -NEW:])  # the second call from the kept prompt


@pytest.mark.parametrize("change", ["in_place", "replace_data", "load_prompts", "train_step"])
def test_a_changed_prompt_is_never_served_stale(change, tmp_path):
    pt, tok = build("llama", "left")
    ids, mask = repad(ROWS, tok.pad_token_id, "left", torch.device("cpu"))
    before, _ = greedy(pt, ids, mask)
    assert len(pt.kept_prompt) == 1
    if change == "in_place":
        with torch.no_grad():
            pt.prompts.weight.mul_(-3.0)
    elif change == "replace_data":
        pt.prompts.weight.data = torch.randn_like(pt.prompts.weight) * 3
    elif change == "load_prompts":
        other, _ = build("llama", "left", seed=7)
        other.save_prompts(tmp_path / "other")
        pt.load_prompts(tmp_path / "other")
    else:
        pt.train()
        assert len(pt.kept_prompt) == 0  # training mode drops what was kept
        optimizer = torch.optim.SGD(list(pt.prompt_parameters()), lr=50.0)
        pt.training_step({"input_ids": ids, "attention_mask": mask, "lm_labels": ids}).backward()
        optimizer.step()
        pt.eval()
    after, after_logits = greedy(pt, ids, mask)
    plain, plain_logits = uncached(pt, ids, mask)
    assert torch.equal(after, plain)
    assert (after_logits - plain_logits).abs().max() < 1e-12
    assert not torch.equal(after, before)


def test_nothing_is_kept_in_training_mode():
    pt, tok = build("llama", "left")
    ids, mask = repad(ROWS, tok.pad_token_id, "left", torch.device("cpu"))
    pt.train()
    training, _ = greedy(pt, ids, mask)
    assert len(pt.kept_prompt) == 0
    pt.eval()
    assert torch.equal(greedy(pt, ids, mask)[0], training)


def test_modes_and_where_the_cache_does_not_apply():
    pt, _ = build("llama", "left")
    pt.set_prompt_cache(True)
    assert pt.uses_prompt_cache()
    pt.set_prompt_cache(False)
    assert not pt.uses_prompt_cache()
    with pytest.raises(UserError, match="prompt cache: 'yes' is not one of auto, true"):
        pt.set_prompt_cache("yes")
    seq2seq, _ = build("t5", "right", task="seq2seq")
    assert not seq2seq.uses_prompt_cache()  # auto: off where it does not apply
    with pytest.raises(UserError, match="prompt cache: on, but a seq2seq model's encoder runs the prompt together with the input"):
        seq2seq.set_prompt_cache(True)
    dept, _ = build("llama", "left", "dept")
    assert not dept.uses_prompt_cache()
    with pytest.raises(UserError, match="method dept generates from its prompt and input embeddings concatenated"):
        dept.set_prompt_cache(True)
    zero = textpt.wrap(pt.backbone, method_config("zero_shot", verbalizer=[" a", " b"]), tokenizer=pt.tokenizer)
    with pytest.raises(UserError, match="method zero_shot places no prompt"):
        zero.set_prompt_cache(True)


@pytest.mark.slow
def test_command_line_generates_alike_with_and_without_the_cache(tmp_path, capsys):
    import pandas as pd

    from test_textpt_cli import SMOKE
    from textpt.cli import main

    rows = {"question": ["one plus one", "two plus two", "one plus two"] * 4, "answer": ["two", "four", "three"] * 4}
    pd.DataFrame(rows).to_csv(tmp_path / "qa.csv", index=False)
    data = [
        "--set", "data.source=csv", "--set", f"data.data_files={{train: {tmp_path / 'qa.csv'}, test: {tmp_path / 'qa.csv'}}}",
        "--set", "data.text_column=question", "--set", "data.target_column=answer", "--set", "data.label_column=null",
        "--set", "data.template='question : {question} answer :'", "--set", "train.max_steps=1", "--set", "train.batch_size=4",
    ]
    assert main(["train", "-c", SMOKE, "-o", str(tmp_path / "run"), *data]) == 0
    capsys.readouterr()
    printed = []
    for mode in ("auto", "on", "off"):
        argv = ["generate", "-c", SMOKE, "--prompts", str(tmp_path / "run" / "best"), "one plus one", "two plus two"]
        assert main([*argv, "--max-new-tokens", "4", "--prompt-cache", mode, *data]) == 0
        printed.append(capsys.readouterr().out)
    assert printed[0] == printed[1] == printed[2] and printed[0].startswith("[1] one plus one\n")
    assert main(["generate", "-c", SMOKE, "text", "--set", "prompt={method: zero_shot}", "--prompt-cache", "on"]) == 2
    assert capsys.readouterr().err.startswith("error: prompt cache: on, but method zero_shot places no prompt")
