"""Packed batches (textpt.packing) equal the padded reference path in float64: losses, prompt gradients, eval sums,
class scores and token logits, for every causal LM method, on both padding sides."""

import json
from pathlib import Path

import pytest
import torch

import textpt
from textpt import TextModelConfig, load_model_and_tokenizer
from textpt.cli import main
from promptcore.config import load_config
from textpt.cli import TextRecipe
from textpt.packing import attention_key_cost, block_causal_mask, first_fit, length_grouped_order, mask_dtype, pack_rows, row_width
from textpt.run_config import TextRunConfig
from textpt.padding import repad
from test_arch_matrix import INSTALLED
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


def build(model_type, side, method, verbalizer=None, implementation="sdpa", **prompt):
    torch.manual_seed(0)
    model, tok = load_model_and_tokenizer(
        TextModelConfig(name=f"random:{model_type}", kwargs=TINY_CONFIGS[model_type], dtype="float64", padding_side=side)
    )
    model.set_attn_implementation(implementation)
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


CAUSAL_ARCHS = [name for name, (_, task, _) in INSTALLED.items() if task == "causal_lm"]


@pytest.mark.parametrize("arch", CAUSAL_ARCHS)
@pytest.mark.parametrize("case", ["pt_concat", "pt_fast", "prefix_bank"])
def test_every_causal_architecture_packs_exactly_or_stays_padded(arch, case):
    # auto packs an architecture only where the packed numbers are the padded ones; the others name their reason
    model_type, _, kwargs = INSTALLED[arch]
    method, prompt = METHODS[case]
    torch.manual_seed(0)
    backbone, tok = load_model_and_tokenizer(TextModelConfig(name=f"random:{model_type}", kwargs=kwargs, dtype="float64", padding_side="right"))
    model = textpt.wrap(backbone, method_config(method, num_tokens=3, init_std=1.0, **prompt), tokenizer=tok)
    problem = textpt.packing.packing_problem(model)
    assert model.packing is False and not model.packs_batches()  # opt-in
    model.set_packing("auto")
    if problem is not None:
        assert not model.packs_batches()
        with pytest.raises(ValueError, match="data.packing: true, but"):
            model.set_packing(True)
        return
    batch = batch_of(tok, "right", prompt.get("num_tasks", 1) > 1)
    loss, grads, sums = run(model, batch, True)
    ref_loss, ref_grads, ref_sums = run(model, batch, False)
    # models that compute a norm or the softmax in float32 even in a float64 model carry float32 rounding
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=0)
    check_grads(grads, ref_grads, "llama")


@pytest.mark.parametrize("case", ["pt_concat", "pt_fast", "prefix_bank"])
def test_packed_equals_padded_with_eager_attention(case):
    # eager adds the 4-D mask to the scores.
    # Right padding: the padded reference under eager attention in float64 gives NaN logits with left padding (the
    # rows of padding see no key), so that side has no reference to compare with here. GPT-2: Llama's eager attention
    # takes its softmax in float32, whose rounding differs between any two batch shapes.
    method, prompt = METHODS[case]
    model, tok = build("gpt2", "right", method, implementation="eager", **prompt)
    batch = batch_of(tok, "right", prompt.get("num_tasks", 1) > 1)
    loss, grads, _ = run(model, batch, True)
    ref_loss, ref_grads, _ = run(model, batch, False)
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-10)
    check_grads(grads, ref_grads, "gpt2")


def test_packing_refusals_and_auto_fallback():
    model, _ = build("llama", "left", "prompt_tuning", verbalizer=[" good", " bad"])
    with pytest.raises(ValueError, match=r"data.packing: 'yes' is not one of auto, true, false"):
        model.set_packing("yes")
    torch.manual_seed(0)
    backbone, tok = load_model_and_tokenizer(TextModelConfig(name="random:mistral", kwargs={**TINY_CONFIGS["llama"], "sliding_window": 4}))
    local = textpt.wrap(backbone, method_config("prompt_tuning", num_tokens=2, verbalizer=[" good", " bad"]), tokenizer=tok)
    local.set_packing("auto")
    assert not local.packs_batches()  # auto keeps the padded path
    with pytest.raises(ValueError, match=r"data.packing: true, but MistralForCausalLM has sliding-window, chunked or other local attention"):
        local.set_packing(True)
    t5, tok = load_model_and_tokenizer(TextModelConfig(name="random:t5", task="seq2seq", kwargs=TINY_CONFIGS["t5"]))
    encoder_decoder = textpt.wrap(t5, method_config("prompt_tuning", num_tokens=2, verbalizer=[" good", " bad"]), tokenizer=tok)
    assert not encoder_decoder.packs_batches()
    with pytest.raises(ValueError, match=r"packing runs decoder-only models \(causal_lm\) and this one is seq2seq"):
        encoder_decoder.set_packing(True)
    model.backbone.config._attn_implementation = "flex_attention"  # as if loaded so: the check runs at every call
    assert not model.packs_batches()
    with pytest.raises(ValueError, match=r"attention implementation is 'flex_attention'; packed masks are built for sdpa and eager"):
        model.set_packing(True)


SMOKE = str(Path(__file__).resolve().parents[2] / "configs" / "smoke" / "textpt_tiny.yaml")
FAST = ["--set", "train.max_steps=2", "--set", "data.num_samples=16", "--set", "data.num_eval_samples=16", "--set", "train.batch_size=8"]


def _metrics(capsys) -> dict:
    out = capsys.readouterr().out
    return json.loads(out[out.index("{"):])


def test_cli_packed_and_padded_runs_agree(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "-c", SMOKE, "-o", str(run), *FAST, "--set", "data.packing=false"]) == 0
    capsys.readouterr()
    metrics = {}
    for packing in ("true", "false"):
        assert main(["eval", "-c", SMOKE, "--prompts", str(run / "best"), *FAST, "--set", f"data.packing={packing}"]) == 0
        metrics[packing] = _metrics(capsys)
    assert metrics["true"]["count"] == metrics["false"]["count"] > 0
    for key in ("loss", "accuracy"):
        assert metrics["true"][key] == pytest.approx(metrics["false"][key], rel=1e-5, abs=1e-6)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--set", "data.packing=true", "--set", "model.task=seq_cls", "--set", "model.name=random:bert"],
         "data.packing: true packs the batches of decoder-only models"),
        (["--set", "data.packing=true", "--set", "model.name=random:mistral", "--set", "model.kwargs.sliding_window=8"],
         "data.packing: true, but MistralForCausalLM has sliding-window"),
        (["--set", "data.packing=sometimes"], "data.packing"),
    ],
)
def test_cli_refuses_packing_where_it_is_not_exact(argv, message, capsys):
    assert main(["train", "-c", SMOKE, *FAST, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err


@pytest.mark.parametrize("case", ["pt_concat", "prefix"])
def test_the_lm_head_runs_on_the_slots_read_only(case):
    method, prompt = METHODS[case]
    model, tok = build("llama", "left", method, verbalizer=[" good", " bad"], **prompt)
    batch = batch_of(tok, "left", False)
    seen = []
    model.backbone.get_output_embeddings().register_forward_hook(lambda module, args, out: seen.append(tuple(args[0].shape[:-1])))
    model.set_packing(True)
    scores = model.class_logits(batch["input_ids"], batch["attention_mask"])
    tokens = model.packed_logits(batch["input_ids"], batch["attention_mask"], None, "tokens")
    assert scores.shape == (4, 2) and seen == [(1, 4), (1, int(batch["attention_mask"].sum()))]
    assert tokens.shape[0] == int(batch["attention_mask"].sum())


@pytest.mark.parametrize("case", ["pt_concat", "pt_fast", "prefix_bank"])
def test_the_lm_loss_runs_the_lm_head_on_the_targeted_tokens_only(case):
    # targets on the last tokens only (as data.target_column writes them): the packed loss, its gradients and eval
    # sums are the padded ones, and the LM head sees one row per target
    method, prompt = METHODS[case]
    model, tok = build("gpt2", "left", method, **prompt)
    batch = batch_of(tok, "left", prompt.get("num_tasks", 1) > 1)
    positions = torch.arange(batch["input_ids"].shape[1])
    batch["lm_labels"] = batch["lm_labels"].masked_fill(positions < batch["input_ids"].shape[1] - 2, -100)
    seen = []
    model.backbone.get_output_embeddings().register_forward_hook(lambda module, args, out: seen.append(args[0].shape[:-1].numel()))
    loss, grads, sums = run(model, batch, True)
    # a target needs a real token before it: 2 + 1 + 2 + 0 in ROWS' examples
    targets = int(((batch["lm_labels"][:, 1:] != -100) & (batch["attention_mask"][:, :-1] == 1)).sum())
    assert seen == [targets, targets] and sums["count"] == targets == 5  # the training step, then the eval step
    ref_loss, ref_grads, ref_sums = run(model, batch, False)
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-10)
    check_grads(grads, ref_grads, "gpt2")
    for key in ref_sums:
        torch.testing.assert_close(sums[key], ref_sums[key], rtol=0, atol=1e-9)


def test_pack_rows_layout():
    # left-padded [pad, a, b], [c, d, e], [pad, pad, f]; one prompt slot each; rows as long as the longest (4 slots):
    # the 4-slot example fills row 0, the 3- and 2-slot ones go first-fit longest first: row 1, then row 2
    rows = pack_rows(torch.tensor([[0, 1, 1], [1, 1, 1], [0, 0, 1]]), 1)
    assert rows.shape == (3, 4)
    assert rows.positions.tolist() == [[0, 1, 2, 3], [0, 1, 2, 0], [0, 1, 0, 0]]
    assert rows.sequence.tolist() == [[1, 1, 1, 1], [0, 0, 0, 10], [2, 2, 13, 14]]  # unused slots: numbers of their own
    assert rows.tokens.tolist() == [5, 6, 1, 2, 3, 9] and rows.last.tolist() == [6, 3, 9]
    assert rows.dest.tolist() == [4, 0, 8, 5, 6, 1, 2, 3, 9]  # the prompt rows, then the tokens


def test_pack_rows_shares_a_row_between_short_examples():
    rows = pack_rows(torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]]), 0)
    assert rows.shape == (2, 4) and rows.sequence.tolist() == [[0, 0, 0, 0], [1, 1, 2, 2]]
    assert rows.positions.tolist() == [[0, 1, 2, 3], [0, 1, 0, 1]]


def test_row_width_trades_unused_slots_against_attention():
    # examples of 9, 5, 6 and 4 slots: rows of 13 take them in 2 rows (26 slots) where rows of 9 need 3 (27 slots)
    assert first_fit([9, 5, 6, 4], 13) == ([0, 19, 13, 9], 2) and first_fit([9, 5, 6, 4], 9)[1] == 3
    assert row_width([9, 5, 6, 4], 0.0) == 13  # attention for free: the fewest slots
    assert row_width([9, 5, 6, 4], 1.0) == 9  # attention dear: the shortest rows
    model, _ = build("llama", "left", "prompt_tuning")
    layer = model.backbone.model.layers[0]
    assert attention_key_cost(model.backbone) == 2 * 32 / sum(p.numel() for p in layer.parameters())
    rows = pack_rows(torch.tensor([[1] * 9, [1] * 5 + [0] * 4, [1] * 6 + [0] * 3, [1] * 4 + [0] * 5]), 0, key_cost=0.0)
    assert rows.shape == (2, 13) and rows.sequence.tolist()[0] == [0] * 9 + [3] * 4


@pytest.mark.parametrize("case", ["pt_concat", "pt_bank_fast", "prefix"])
def test_packed_rows_longer_than_the_longest_example_equal_padded(case, monkeypatch):
    # rows of twice the longest example and one more slot hold several examples each: still the padded numbers
    widths = []
    monkeypatch.setattr(textpt.packing, "row_width", lambda sizes, key_cost: widths.append(2 * max(sizes) + 1) or widths[-1])
    method, prompt = METHODS[case]
    model, tok = build("gpt2", "right", method, **prompt)
    batch = batch_of(tok, "right", prompt.get("num_tasks", 1) > 1)
    loss, grads, sums = run(model, batch, True)
    ref_loss, ref_grads, ref_sums = run(model, batch, False)
    assert len(widths) == 2  # the training step and the eval step ran in the long rows
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-10)
    check_grads(grads, ref_grads, "gpt2")
    for key in ref_sums:
        torch.testing.assert_close(sums[key], ref_sums[key], rtol=0, atol=1e-9)


def test_block_causal_mask_keeps_each_example_to_its_own_prefix_and_tokens():
    # one row: example 0 (group 1) in slots 0-1, example 1 (group 0) in slot 2, an unused slot 3 (number 5)
    mask = block_causal_mask(torch.tensor([[0, 0, 1, 5]]), torch.tensor([1, 0]), 1, dtype=torch.float64)
    assert mask.shape == (1, 1, 4, 6)
    # columns: prefix of group 0, prefix of group 1, then the four slots
    assert (mask[0, 0] == 0).tolist() == [
        [False, True, True, False, False, False],
        [False, True, True, True, False, False],
        [True, False, False, False, True, False],
        [False, False, False, False, False, True],
    ]


def test_block_causal_mask_boolean_for_sdpa_float_for_eager():
    sequence, group = torch.tensor([[0, 0, 1, 5], [2, 2, 2, 6]]), torch.tensor([1, 0, 1])
    allowed = block_causal_mask(sequence, group, 2, dtype=torch.bool)
    additive = block_causal_mask(sequence, group, 2, dtype=torch.float32)
    assert allowed.dtype == torch.bool and allowed.shape == additive.shape == (2, 1, 4, 8)
    assert torch.equal(allowed, additive == 0) and (additive[~allowed] == torch.finfo(torch.float32).min).all()
    sdpa, _ = build("llama", "left", "prompt_tuning")
    eager, _ = build("gpt2", "left", "prompt_tuning", implementation="eager")
    assert mask_dtype(sdpa.backbone, torch.float64) == torch.bool and mask_dtype(eager.backbone, torch.float64) == torch.float64


def test_length_grouped_order_is_a_seeded_permutation_sorted_within_buckets():
    lengths = [(7 * i) % 23 + 1 for i in range(50)]
    order = length_grouped_order(lengths, batch_size=4, seed=3, group=2)
    first = order(0)
    assert sorted(first) == list(range(50)) and order(0) == first and order(1) != first
    for start in range(0, 50, 8):  # buckets of 4 x 2 rows, longest first
        bucket = [lengths[i] for i in first[start:start + 8]]
        assert bucket == sorted(bucket, reverse=True)
    padded = sum(max(lengths[i] for i in first[j:j + 4]) * len(first[j:j + 4]) for j in range(0, 50, 4))
    random_order = torch.randperm(50, generator=torch.Generator().manual_seed(0)).tolist()
    assert padded < sum(max(lengths[i] for i in random_order[j:j + 4]) * len(random_order[j:j + 4]) for j in range(0, 50, 4))


def test_cli_group_by_length_orders_the_padded_runs(tmp_path, capsys):
    argv = ["--set", "model.task=seq_cls", "--set", "model.name=random:bert", "--set", "data.group_by_length=true"]
    assert main(["train", "-c", SMOKE, "-o", str(tmp_path / "run"), *FAST, *argv]) == 0
    assert _metrics(capsys)["step"] == 2
    cfg = TextRecipe().resolve_config(load_config(TextRunConfig, SMOKE, overrides=[a for a in argv + FAST if a != "--set"]))
    recipe = TextRecipe()
    bundle = recipe.build_data(cfg, recipe.build_model(cfg))
    lengths = [len(ids) for ids in bundle.train["input_ids"]]
    expected = length_grouped_order(lengths, cfg.train.batch_size, cfg.train.seed)
    assert bundle.batch_order is not None and bundle.batch_order(0) == expected(0)
