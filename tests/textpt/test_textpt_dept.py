"""DePT: its defining properties (with B = 0 it is prompt tuning with the same prompt; the update reaches the input's
token positions and nothing else, row j on token j whatever the padding), the official parameter budget, its own
learning rate through train.param_groups, generation, and its errors."""

import math

import pytest
import torch

import promptcore
import textpt
from promptcore import TrainConfig, load_config
from promptcore.trainer import build_param_groups
from textpt import DePTConfig, PromptTuningConfig, TextModelConfig, load_model_and_tokenizer
from textpt.dept import rank_for_budget
from textpt.padding import pack_prompt, repad
from textpt.run_config import TextRunConfig
from tiny_text import TINY_CONFIGS

ROWS = [[5, 6, 7, 8], [9, 10], [11, 12, 13]]


def load(model_type="gpt2", task="causal_lm", side="left"):
    torch.manual_seed(0)
    kwargs = {**TINY_CONFIGS[model_type], "initializer_range": 0.3} if model_type != "t5" else TINY_CONFIGS[model_type]
    return load_model_and_tokenizer(TextModelConfig(name=f"random:{model_type}", task=task, kwargs=kwargs, padding_side=side, dtype="float64"))


def with_random_b(model):
    with torch.no_grad():
        model.lora.B.copy_(torch.randn(model.lora.B.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64))
    return model


CASES = [("gpt2", "causal_lm", "left"), ("llama", "causal_lm", "right"), ("t5", "seq2seq", "right"), ("bert", "seq_cls", "right")]


def outputs(model, task, ids, mask):
    if task == "causal_lm":
        return model.token_logits(ids, mask)[mask.bool()]
    if task == "seq2seq":
        return model.lm_outputs({"input_ids": ids, "attention_mask": mask, "lm_labels": torch.tensor([[5, 6], [7, 8], [9, 10]])})[0]
    return model(ids, mask)


@pytest.mark.parametrize("model_type,task,side", CASES)
def test_with_b_zero_it_is_prompt_tuning_with_the_same_prompt(model_type, task, side):
    backbone, tok = load(model_type, task, side)
    common = {"num_tokens": 3, "init": "vocab", "seed": 4, "num_classes": 2 if task == "seq_cls" else None}
    dept = textpt.wrap(backbone, DePTConfig(rank=4, max_length=16, **common), tokenizer=tok)
    pt = textpt.wrap(backbone, PromptTuningConfig(fast="off", **common), tokenizer=tok)
    if task == "seq_cls":
        pt.head.load_state_dict(dept.head.state_dict())
    assert torch.equal(dept.prompts.weight, pt.prompts.weight) and not dept.lora.B.any()
    ids, mask = repad(ROWS, tok.pad_token_id, side, torch.device("cpu"))
    torch.testing.assert_close(outputs(dept, task, ids, mask), outputs(pt, task, ids, mask), rtol=0, atol=0)
    with_random_b(dept)
    assert not torch.allclose(outputs(dept, task, ids, mask), outputs(pt, task, ids, mask))


@pytest.mark.parametrize("side", ["left", "right"])
def test_the_update_reaches_exactly_the_input_tokens(side):
    backbone, tok = load("t5", "seq2seq", side)
    model = with_random_b(textpt.wrap(backbone, DePTConfig(num_tokens=3, rank=4, max_length=8), tokenizer=tok))
    ids, mask = repad(ROWS, tok.pad_token_id, side, torch.device("cpu"))
    x, packed_mask, _, index = model.encode(ids, mask, None)
    # an encoder's input is packed with the padding after it, whatever the tokenizer's side (TextPromptedModel.encode)
    plain, _, _, _ = pack_prompt(model.shallow_prompt(None, 3), model.embedding(ids), mask, "right")
    delta = x - plain
    delta_of_update = model.lora.scaling * model.lora.A.detach() @ model.lora.B.detach()
    for b, row in enumerate(ROWS):
        real = mask[b].nonzero()[:, 0]
        for j, position in enumerate(real):
            # input token j (counted from the example's first real token) got row j of scaling * A @ B
            torch.testing.assert_close(delta[b, index[b, position]], delta_of_update[j], rtol=0, atol=1e-12)
        touched = set(index[b, real].tolist())
        others = [p for p in range(x.shape[1]) if p not in touched and packed_mask[b, p]]
        assert len(others) == 3  # the prompt's positions
        assert delta[b, others].abs().max() == 0


def test_each_example_gives_its_own_numbers_whatever_the_padding():
    outs = {}
    for side in ("left", "right"):
        backbone, tok = load("gpt2", "causal_lm", side)
        model = with_random_b(textpt.wrap(backbone, DePTConfig(num_tokens=3, rank=4, max_length=8), tokenizer=tok))
        ids, mask = repad(ROWS, tok.pad_token_id, side, torch.device("cpu"))
        outs[side] = model.token_logits(ids, mask)[mask.bool()]
        alone = torch.cat([model.token_logits(torch.tensor([r]))[0] for r in ROWS])
        torch.testing.assert_close(outs[side], alone, rtol=0, atol=1e-10)
    torch.testing.assert_close(outs["left"], outs["right"], rtol=0, atol=1e-10)


def test_a_and_b_start_as_the_official_code_does():
    backbone, tok = load()
    model = textpt.wrap(backbone, DePTConfig(num_tokens=2, rank=9, max_length=64, alpha=8.0), tokenizer=tok)
    assert model.lora.A.shape == (64, 9) and model.lora.B.shape == (9, 32)
    assert not model.lora.B.any()  # B = 0: training starts from prompt tuning
    bound = 1 / math.sqrt(9)  # kaiming_uniform_(a=sqrt(5)) over fan_in = rank
    assert model.lora.A.abs().max() <= bound and model.lora.A.abs().max() > 0.9 * bound
    assert model.lora.scaling == pytest.approx(8.0 / 3.0)  # lora_alpha / sqrt(r), not / r


def test_the_budget_of_a_prompt_tuning_prompt():
    assert rank_for_budget(100, 40, 768, 256) == 45  # the official README: PREFIX_LENGTH=40, R=45 on t5-base
    assert rank_for_budget(100, 60, 768, 256) == 30
    backbone, tok = load()
    rank = rank_for_budget(20, 8, 32, 16)
    dept = textpt.wrap(backbone, DePTConfig(num_tokens=8, rank=rank, max_length=16), tokenizer=tok)
    pt = textpt.wrap(backbone, PromptTuningConfig(num_tokens=20), tokenizer=tok)
    assert dept.count_parameters()[0] == pt.count_parameters()[0] == 20 * 32
    with pytest.raises(ValueError, match="leaves no rank within the budget of 20 prompt tokens"):
        rank_for_budget(20, 20, 32, 16)


def test_the_low_rank_pair_has_its_own_learning_rate():
    backbone, tok = load()
    model = textpt.wrap(backbone, DePTConfig(num_tokens=2, rank=2, max_length=8), tokenizer=tok)
    assert set(model.prompt_modules()) == {"prompts", "lora"}
    groups = build_param_groups(model, TrainConfig(lr=0.3, param_groups={"lora": {"lr": 5e-3}}))
    by_name = {g["name"]: g for g in groups}
    assert by_name["lora"]["lr"] == 5e-3 and by_name["prompts"]["lr"] == 0.3
    assert {id(p) for p in by_name["lora"]["params"]} == {id(model.lora.A), id(model.lora.B)}


def test_only_the_prompt_and_the_pair_get_gradients():
    backbone, tok = load()
    model = with_random_b(textpt.wrap(backbone, DePTConfig(num_tokens=2, rank=2, max_length=8), tokenizer=tok))
    ids, mask = repad(ROWS, tok.pad_token_id, "left", torch.device("cpu"))
    model.training_step({"input_ids": ids, "attention_mask": mask, "lm_labels": ids.masked_fill(mask == 0, -100)}).backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {"prompts.weight", "lora.A", "lora.B"}


def reference_decode(model, rows, steps):
    """Greedy decoding of each example alone, without a cache: [prompt, input embeddings + update, new tokens' plain
    embeddings], as the official generate embeds them."""
    out = []
    for row in rows:
        ids, new = torch.tensor([row]), []
        for _ in range(steps):
            parts = [model.prompts(1), model.embedding(ids) + model.lora(torch.arange(len(row)).unsqueeze(0))]
            if new:
                parts.append(model.embedding(torch.tensor([new])))
            new.append(int(model.backbone(inputs_embeds=torch.cat(parts, 1)).logits[0, -1].argmax()))
        out.append(new)
    return out


@pytest.mark.parametrize("model_type,side", [("gpt2", "left"), ("llama", "right")])
def test_generation_updates_the_input_only(model_type, side):
    backbone, tok = load(model_type, "causal_lm", side)
    model = with_random_b(textpt.wrap(backbone, DePTConfig(num_tokens=3, rank=4, max_length=16), tokenizer=tok))
    ids, mask = repad(ROWS, tok.pad_token_id, side, torch.device("cpu"))
    new = model.generate(ids, mask, max_new_tokens=5, do_sample=False)
    expected = []
    for tokens in reference_decode(model, ROWS, 5):  # generate stops a row at EOS and pads the rest
        end = tokens.index(tok.eos_token_id) + 1 if tok.eos_token_id in tokens else len(tokens)
        expected.append(tokens[:end] + [tok.pad_token_id] * (len(tokens) - end))
    assert new.tolist() == expected


def test_inputs_longer_than_the_update_are_refused():
    backbone, tok = load()
    model = textpt.wrap(backbone, DePTConfig(num_tokens=2, rank=2, max_length=3), tokenizer=tok)
    with pytest.raises(ValueError, match=r"an input has 4 tokens, but DePT's update covers 3 positions \(prompt.max_length\)"):
        model.token_logits(torch.tensor([[5, 6, 7, 8]]))


@pytest.mark.parametrize(
    "data,message",
    [
        ({"prompt": {"method": "dept", "fast": "on"}}, "prompt.fast: 'on' is not one of 'off'"),
        ({"prompt": {"method": "dept", "rank": 0}}, "prompt.rank: must be positive, got 0"),
        ({"prompt": {"method": "dept", "alpha": -1.0}}, "prompt.alpha: must be a positive number, got -1.0"),
        ({"prompt": {"method": "dept", "num_tasks": 2}}, "prompt.num_tasks: a prompt bank"),
        ({"prompt": {"method": "dept", "max_length": 64}, "data": {"max_length": 128}},
         r"data.max_length: 128 tokens, but method dept takes at most 64 input tokens \(prompt.max_length\)"),
    ],
)
def test_config_errors(data, message):
    with pytest.raises(promptcore.ConfigError, match=message):
        load_config(TextRunConfig, {"model": {"name": "random:gpt2"}, **data})


def test_inputs_are_cut_to_the_update(tmp_path):
    from textpt.data import model_input_budget

    backbone, tok = load()  # GPT-2 of 128 positions
    model = textpt.wrap(backbone, DePTConfig(num_tokens=2, rank=2, max_length=16), tokenizer=tok)
    assert model_input_budget(model) == 16
    assert model_input_budget(model, max_length=8) == 8


def test_train_eval_generate_through_the_cli(tmp_path, capsys):
    from pathlib import Path

    from textpt.cli import main

    smoke = str(Path(__file__).resolve().parents[2] / "configs" / "smoke" / "textpt_tiny.yaml")
    args = [
        "-c", smoke, "--set", "prompt={method: dept, num_tokens: 4, rank: 2, max_length: 64}",
        "--set", "train.param_groups={lora: {lr: 0.01}}", "--set", "train.max_steps=2", "--set", "data.num_samples=16",
        "--set", "data.num_eval_samples=8", "--set", "train.batch_size=8",
    ]
    run = tmp_path / "run"
    assert main(["train", "-o", str(run), *args]) == 0
    tensors, meta = promptcore.load_prompt_files(run / "best")
    assert set(tensors) == {"prompts.weight", "lora.A", "lora.B"} and meta["method"] == "dept" and meta["rank"] == 2
    assert tensors["lora.B"].abs().sum() > 0  # the pair trained
    assert main(["eval", "--prompts", str(run / "best"), *args]) == 0
    assert main(["generate", "--prompts", str(run / "best"), "a good movie", *args]) == 0
    assert "[1] a good movie" in capsys.readouterr().out
