"""The architecture matrix: every text method on a tiny random model of every common architecture.

Each supported (architecture, method) pair: one training step moves only the prompt (the backbone stays bitwise
unchanged); each example in a left- or right-padded batch gives its outputs alone; the shared-prefix fast path
equals the concatenated path in float64 (and is shown to run); ``generate()`` equals a step-by-step reference decode
(causal LMs); save -> load gives identical outputs. A pair that cannot work is refused with a message naming the
architecture. docs/text_methods.md carries the same matrix as a table.
"""

from __future__ import annotations

import functools
from unittest import mock

import pytest
import torch
import transformers

import textpt
from promptcore import UserError
from textpt import TextModelConfig, load_model_and_tokenizer
from textpt.attention_prefix import SELF_ATTENTION
from textpt.fast_prefix import prompt_key_values
from textpt.padding import repad
from test_textpt_dept import reference_decode as dept_reference_decode
from tiny_text import method_config, reference_greedy_decode

_LAYERS = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
_GQA = {**_LAYERS, "num_key_value_heads": 2}

# name -> (model type, task, model.kwargs): two layers, width 32, the built-in word-level tokenizer's vocabulary.
ARCHS: dict[str, tuple[str, str, dict]] = {
    "llama": ("llama", "causal_lm", _GQA),
    "qwen2": ("qwen2", "causal_lm", _GQA),
    "qwen3": ("qwen3", "causal_lm", {**_GQA, "head_dim": 8}),
    "mistral": ("mistral", "causal_lm", _GQA),
    "gemma2": ("gemma2", "causal_lm", {**_GQA, "head_dim": 8, "sliding_window": 16}),
    "gemma3": ("gemma3_text", "causal_lm", {**_GQA, "head_dim": 8, "sliding_window": 16}),
    "phi3": ("phi3", "causal_lm", _GQA),
    "gpt2": ("gpt2", "causal_lm", {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 64}),
    "gpt_neox": ("gpt_neox", "causal_lm", _LAYERS),
    "opt": ("opt", "causal_lm", {"hidden_size": 32, "ffn_dim": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "word_embed_proj_dim": 32, "max_position_embeddings": 64}),
    "falcon": ("falcon", "causal_lm", {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4}),
    "t5": ("t5", "seq2seq", {"d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_decoder_layers": 2, "num_heads": 4}),
    "bart": ("bart", "seq2seq", {"d_model": 32, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4, "decoder_attention_heads": 4, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "max_position_embeddings": 64}),
    "bert": ("bert", "seq_cls", {**_LAYERS, "max_position_embeddings": 64}),
    "roberta": ("roberta", "seq_cls", {**_LAYERS, "max_position_embeddings": 66}),
    "deberta_v2": ("deberta-v2", "seq_cls", {**_LAYERS, "max_position_embeddings": 64}),
    "modernbert": ("modernbert", "seq_cls", {**_LAYERS, "layer_types": ["full_attention", "sliding_attention"], "local_attention": 8}),
}
INSTALLED = {name: spec for name, spec in ARCHS.items() if spec[0] in transformers.CONFIG_MAPPING}
# Gemma 2's eager attention (its only one) takes the softmax in float32: a float64 mask's minimum becomes -inf there,
# so a fully masked row (a left pad) gives NaN that the next layer spreads. It runs in float32 and is compared at
# float32 precision.
FLOAT32 = {"gemma2"}


def atol(arch: str, float64: float = 1e-10) -> float:
    return 1e-5 if arch in FLOAT32 else float64

METHODS_BY_TASK = {
    "causal_lm": ("prompt_tuning", "p_tuning", "prefix", "dept"),
    "seq2seq": ("prompt_tuning", "p_tuning", "prefix", "dept"),
    "seq_cls": ("prompt_tuning", "p_tuning", "prefix", "dept", "linear_probe"),
}
# Prefix tuning on an encoder or encoder-decoder needs an attention that takes plain prefix keys and values
# (textpt.attention_prefix.SELF_ATTENTION): DeBERTa-v2's disentangled attention and ModernBERT's are refused.
PREFIX_REFUSED = [a for a, (model_type, task, _) in INSTALLED.items() if task != "causal_lm" and model_type not in SELF_ATTENTION]
PAIRS = [(a, m) for a, (_, task, _) in INSTALLED.items() for m in METHODS_BY_TASK[task] if (a, m) not in [(r, "prefix") for r in PREFIX_REFUSED]]
# A linear probe needs an encoder.
REFUSED = [(a, "linear_probe") for a, (_, task, _) in INSTALLED.items() if task != "seq_cls"]

ROWS = [[5, 6, 7, 8, 9], [11, 12], [13, 14, 15]]
TARGETS = [[20, 21], [22], [23, 24]]


@functools.cache
def backbone_of(arch: str):
    """The frozen backbone and tokenizer of ``arch``, built once: wrapping never changes a backbone (test_pair checks
    it bit for bit), so every method and seed of the prompt shares it."""
    model_type, task, kwargs = INSTALLED[arch]
    torch.manual_seed(0)
    return load_model_and_tokenizer(TextModelConfig(name=f"random:{model_type}", task=task, kwargs=kwargs, dtype="float32" if arch in FLOAT32 else "float64"))


def build(arch: str, method: str, seed: int = 0):
    task = INSTALLED[arch][1]
    model, tok = backbone_of(arch)
    fields = {"seed": seed}
    if method != "linear_probe":
        fields.update(num_tokens=2, init_std=1.0)  # a large init: a misplaced prompt shows in the outputs
    if task == "seq_cls":
        fields["num_classes"] = 3
    if method == "dept":
        fields.update(rank=2, max_length=8)
    pt = textpt.wrap(model, method_config(method, **fields), tokenizer=tok)
    if method == "dept":  # B starts at zero; a nonzero B makes the update show in outputs, gradients and files
        with torch.no_grad():
            pt.lora.B.copy_(torch.randn(pt.lora.B.shape, generator=torch.Generator().manual_seed(seed), dtype=pt.lora.B.dtype))
    if task == "seq_cls":  # the head starts at N(0, 0.02²): scale it so that the logits carry the features
        with torch.no_grad():
            pt.head.weight.mul_(50)
    return pt, tok


def batch_of(pt, rows: list[list[int]], side: str) -> dict[str, torch.Tensor]:
    ids, mask = repad(rows, pt.tokenizer.pad_token_id, side, torch.device("cpu"))
    batch = {"input_ids": ids, "attention_mask": mask}
    index = [ROWS.index(r) for r in rows]
    if pt.task == "seq_cls":
        batch["labels"] = torch.tensor([i % 3 for i in index])
    elif pt.task == "seq2seq":
        width = max(len(TARGETS[i]) for i in index)
        batch["lm_labels"] = torch.tensor([TARGETS[i] + [-100] * (width - len(TARGETS[i])) for i in index])
    else:
        batch["lm_labels"] = ids.masked_fill(mask == 0, -100)
    return batch


def outputs(pt, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Each example's outputs at its real positions: token logits (causal LM), decoder logits at its targets
    (seq2seq), class logits (seq_cls)."""
    mask = batch["attention_mask"]
    if pt.task == "causal_lm":
        return [row[m.bool()] for row, m in zip(pt.token_logits(batch["input_ids"], mask), mask)]
    if pt.task == "seq2seq":
        logits, targets = pt.lm_outputs(batch)
        return [row[t != -100] for row, t in zip(logits, targets)]
    return list(pt(batch["input_ids"], mask))


def assert_rows_close(got: list[torch.Tensor], want: list[torch.Tensor], atol: float) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=atol)


@pytest.mark.parametrize("arch,method", PAIRS)
def test_pair(arch, method, tmp_path):
    pt, _ = build(arch, method)
    alone = [outputs(pt, batch_of(pt, [r], "left"))[0] for r in ROWS]

    # padding: either side, each example as alone
    for side in ("left", "right"):
        pt.padding_side = side
        assert_rows_close(outputs(pt, batch_of(pt, ROWS, side)), alone, atol=atol(arch))
    pt.padding_side = "left"

    # one training step: gradients on every prompt parameter and nowhere else; the backbone does not move
    backbone = {k: v.clone() for k, v in pt.backbone.state_dict().items()}
    batch = batch_of(pt, ROWS, "left")
    loss = pt.training_step(batch)
    loss.backward()
    grads = {n: p.grad for n, p in pt.named_prompt_parameters()}
    assert grads and all(g is not None and g.abs().max() > 0 for g in grads.values()), [n for n, g in grads.items() if g is None or not g.abs().max() > 0]
    assert all(p.grad is None and not p.requires_grad for p in pt.backbone.parameters())
    before = {n: p.detach().clone() for n, p in pt.named_prompt_parameters()}
    torch.optim.SGD(pt.prompt_parameters(), lr=0.1).step()
    assert all(not torch.equal(before[n], p) for n, p in pt.named_prompt_parameters())
    assert all(torch.equal(backbone[k], v) for k, v in pt.backbone.state_dict().items())

    # save -> load into a model of another seed: the same outputs, bit for bit
    pt.zero_grad()
    pt.save_prompts(tmp_path / "p")
    other, _ = build(arch, method, seed=1)
    mine = outputs(pt, batch)
    assert not torch.equal(outputs(other, batch)[0], mine[0])
    other.load_prompts(tmp_path / "p")
    assert_rows_close(outputs(other, batch), mine, atol=0)


FAST_PAIRS = [(a, m) for a, m in PAIRS if INSTALLED[a][1] == "causal_lm" and m in ("prompt_tuning", "p_tuning")]


@pytest.mark.parametrize("arch,method", FAST_PAIRS)
def test_fast_path_equals_concatenation(arch, method):
    pt, _ = build(arch, method)
    batch = batch_of(pt, ROWS, "left")

    def run(fast):
        pt.config.fast = fast
        pt.zero_grad()
        with mock.patch("textpt.prompt_tuning.prompt_key_values", wraps=prompt_key_values) as spy:
            out = outputs(pt, batch)
            pt.training_step(batch).backward()
        assert spy.called == (fast == "on")
        return out, {n: p.grad.clone() for n, p in pt.named_prompt_parameters()}

    fast_out, fast_grads = run("on")
    ref_out, ref_grads = run("off")
    assert_rows_close(fast_out, ref_out, atol=atol(arch))
    for name, ref in ref_grads.items():
        # sums in another order; RMS norms upcast to float32 inside (transformers' Llama-family norms), so their
        # gradients carry float32 rounding even in a float64 model
        scale = float(ref.abs().max())
        assert scale > 0
        torch.testing.assert_close(fast_grads[name], ref, rtol=0, atol=atol(arch, 1e-6) * scale)


# Each architecture generates from both padding sides over its methods (one side per method keeps the matrix fast;
# tests/textpt/test_textpt_generate.py runs both sides of every method on GPT-2 and Llama).
GENERATE_CASES = [
    (a, m, ("left", "right")[i % 2]) for a, (_, task, _) in INSTALLED.items() if task == "causal_lm" for i, m in enumerate(METHODS_BY_TASK[task])
]


@pytest.mark.parametrize("arch,method,side", GENERATE_CASES)
def test_generate_equals_reference_decode(arch, method, side):
    pt, tok = build(arch, method)
    pt.padding_side = side
    ids, mask = repad(ROWS, tok.pad_token_id, side, torch.device("cpu"))
    generated = pt.generate(ids, mask, max_new_tokens=3, do_sample=False, eos_token_id=None)
    if method == "dept":  # DePT updates the input's embeddings only, not the generated tokens'
        reference = torch.tensor(dept_reference_decode(pt, ROWS, 3))
    else:
        if method != "prefix":
            pt.config.fast = "off"  # the reference: the concatenated path, no cache
        reference = reference_greedy_decode(pt, ids, mask, 3)
    assert torch.equal(generated, reference), side


@pytest.mark.parametrize("arch,method", REFUSED)
def test_refused_pair_names_the_architecture(arch, method):
    model_type, task, _ = INSTALLED[arch]
    with pytest.raises(UserError, match=rf"method: {method} .*not {task}.*the model is {type(backbone_of(arch)[0]).__name__} \(model_type {model_type}\)"):
        build(arch, method)


def test_prefix_covers_the_encoders_it_should():
    assert {"bert", "roberta", "t5", "bart"} <= {a for a, m in PAIRS if m == "prefix"}
    assert {"deberta_v2", "modernbert"} & set(INSTALLED) <= set(PREFIX_REFUSED)


@pytest.mark.parametrize("arch", PREFIX_REFUSED)
def test_refused_prefix_names_the_architecture_and_the_supported_ones(arch):
    model_type, _, _ = INSTALLED[arch]
    name = type(backbone_of(arch)[0]).__name__
    with pytest.raises(UserError, match=rf"^method: prefix on {name} \(model_type {model_type}\) is not supported: .*model types bart, bert, roberta, t5 "):
        build(arch, "prefix")


@pytest.mark.parametrize("arch", [a for a, (_, task, _) in INSTALLED.items() if task == "seq_cls"])
def test_encoder_without_prompt_equals_the_backbone_alone(arch):
    """The linear probe's features are the backbone's own on the unpadded input (its own position ids)."""
    pt, _ = build(arch, "linear_probe")
    for row in ROWS:
        ids = torch.tensor([row])
        hidden = pt.backbone(input_ids=ids).last_hidden_state
        pooler = getattr(pt.backbone, "pooler", None)
        features = pooler(hidden) if pooler is not None else hidden[:, 0]
        torch.testing.assert_close(pt(ids), pt.head(features), rtol=0, atol=atol(arch))
