"""Prefix tuning (deep prompts) on encoders and encoder-decoders, against an attention written out by hand.

The reference replaces the forward of each self-attention module with a plain attention over the module's own
projections: the layer's slice of the prompt parameter as keys and values in front of the tokens', every token
allowed to see them, padding (and, in a decoder, the future) masked by hand from the batch's 2D mask, T5's relative
bias from the model's first layer with zeros towards the prefix. The prefixed model must give the same logits and
gradients in float64, with both attention implementations it runs on.
"""

from __future__ import annotations

import contextlib
from unittest import mock

import pytest
import torch
from torch.utils.checkpoint import checkpoint

import textpt
from promptcore import UserError
from textpt import TextModelConfig, load_model_and_tokenizer
from textpt.padding import repad
from tiny_text import method_config

_LAYERS = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
ARCHS = {
    "bert": ("bert", "seq_cls", {**_LAYERS, "max_position_embeddings": 64}),
    "roberta": ("roberta", "seq_cls", {**_LAYERS, "max_position_embeddings": 66}),
    "t5": ("t5", "seq2seq", {"d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_decoder_layers": 2, "num_heads": 4}),
    "bart": ("bart", "seq2seq", {"d_model": 32, "encoder_layers": 2, "decoder_layers": 3, "encoder_attention_heads": 4, "decoder_attention_heads": 4, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "max_position_embeddings": 64}),
}
ROWS = [[5, 6, 7, 8, 9], [11, 12], [13, 14, 15]]
TARGETS = [[20, 21, 22], [23, 24], [25]]
N = 3  # prefix tokens


def build(arch: str, implementation: str = "sdpa", seed: int = 0, **fields):
    model_type, task, kwargs = ARCHS[arch]
    torch.manual_seed(0)
    model, tok = load_model_and_tokenizer(TextModelConfig(name=f"random:{model_type}", task=task, kwargs=kwargs, dtype="float64"))
    model.set_attn_implementation(implementation)
    fields = {"num_tokens": N, "init_std": 1.0, "seed": seed, **fields}
    if task == "seq_cls":
        fields["num_classes"] = 3
    pt = textpt.wrap(model, method_config("prefix", **fields), tokenizer=tok)
    if task == "seq_cls":
        with torch.no_grad():
            pt.head.weight.mul_(50)  # logits that carry the features
    return pt


def batch_of(pt, rows, side="left"):
    ids, mask = repad(rows, pt.tokenizer.pad_token_id, side, torch.device("cpu"))
    batch = {"input_ids": ids, "attention_mask": mask}
    index = [ROWS.index(r) for r in rows]
    if pt.task == "seq_cls":
        batch["labels"] = torch.tensor([i % 3 for i in index])
    else:
        width = max(len(TARGETS[i]) for i in index)
        batch["lm_labels"] = torch.tensor([TARGETS[i] + [-100] * (width - len(TARGETS[i])) for i in index])
    return batch


def outputs(pt, batch) -> list[torch.Tensor]:
    """Each example's class logits (seq_cls) or decoder logits at its targets (seq2seq)."""
    if pt.task == "seq_cls":
        return list(pt(batch["input_ids"], batch["attention_mask"], batch.get("task_ids")))
    logits, targets = pt.lm_outputs(batch)
    return [row[t != -100] for row, t in zip(logits, targets)]


def loss_and_grads(pt, batch):
    pt.zero_grad()
    loss = pt.training_step(batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in pt.named_prompt_parameters()}


# ----- the hand-written reference -------------------------------------------------------------------------------
def self_attentions(backbone) -> list[tuple[torch.nn.Module, bool]]:
    """(module, causal) of every self-attention layer, encoder first, found by the models' own attribute paths."""
    t = backbone.config.model_type
    if t in ("bert", "roberta"):
        return [(layer.attention.self, False) for layer in backbone.encoder.layer]
    if t == "t5":
        return [(b.layer[0].SelfAttention, stack is backbone.decoder) for stack in (backbone.encoder, backbone.decoder) for b in stack.block]
    model = backbone.model
    return [(layer.self_attn, stack is model.decoder) for stack in (model.encoder, model.decoder) for layer in stack.layers]


def attend(q, k, v, allowed, scaling, bias=None):
    scores = q @ k.transpose(-1, -2) * scaling
    if bias is not None:
        scores = scores + bias
    return scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v


def hand_written_forward(backbone, module, causal: bool, layer: int, weight: torch.Tensor, state: dict):
    """A replacement for ``module.forward``: attention over the module's projections, prefix keys/values of
    ``layer`` (rows ``2 * layer`` and ``2 * layer + 1`` of ``weight``, width ordered head by head) in front."""
    model_type = backbone.config.model_type
    if model_type in ("bert", "roberta"):
        projections, heads = (module.query, module.key, module.value), module.num_attention_heads
    elif model_type == "t5":
        projections, heads = (module.q, module.k, module.v), module.n_heads
    else:
        projections, heads = (module.q_proj, module.k_proj, module.v_proj), module.num_heads

    def forward(hidden_states, *args, **kwargs):
        b, length, _ = hidden_states.shape
        q, k, v = (p(hidden_states).view(b, length, heads, -1).transpose(1, 2) for p in projections)
        d = q.shape[-1]
        prefix_k, prefix_v = (weight[2 * layer + j].view(N, heads, d).transpose(0, 1).expand(b, -1, -1, -1) for j in (0, 1))
        k, v = torch.cat([prefix_k, k], dim=2), torch.cat([prefix_v, v], dim=2)
        if causal:
            real = torch.ones(length, length, dtype=torch.bool).tril()[None, None]
        else:
            real = state["attention_mask"].bool()[:, None, None, :]
        allowed = torch.cat([torch.ones(*real.shape[:-1], N, dtype=torch.bool), real], dim=-1)
        bias = None
        if model_type == "t5":  # the stack's first layer holds the relative bias; the prefix has no position
            stack = backbone.decoder if causal else backbone.encoder
            real_bias = stack.block[0].layer[0].SelfAttention.compute_bias(length, length)
            bias = torch.cat([real_bias.new_zeros(1, heads, length, N), real_bias], dim=-1)
        out = attend(q, k, v, allowed, 1.0 if model_type == "t5" else d**-0.5, bias)
        out = out.transpose(1, 2).reshape(b, length, heads * d)
        if model_type in ("bert", "roberta"):
            return out, None
        if model_type == "t5":
            return module.o(out), real_bias, None
        return module.out_proj(out), None

    return forward


@contextlib.contextmanager
def hand_written_attention(pt):
    """Within the block the prefixed model adds no prefix of its own; the hand-written attention adds it."""
    state: dict = {}

    def keep_mask(_module, _args, kwargs):
        state["attention_mask"] = kwargs["attention_mask"]

    hook = pt.backbone.register_forward_pre_hook(keep_mask, with_kwargs=True)
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(pt, "backbone_kwargs", return_value={}))
        for layer, (module, causal) in enumerate(self_attentions(pt.backbone)):
            stack.enter_context(mock.patch.object(module, "forward", hand_written_forward(pt.backbone, module, causal, layer, pt.prompts.weight, state)))
        yield
    hook.remove()


def assert_rows_close(got, want, atol):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=atol)


def assert_grads_close(got, want, atol):
    assert got.keys() == want.keys() and want
    for name, ref in want.items():
        assert ref.abs().max() > 0, name
        torch.testing.assert_close(got[name], ref, rtol=0, atol=atol)


# ----- the tests --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_equals_hand_written_attention(arch, implementation):
    pt = build(arch, implementation)
    assert pt.num_layers == len(self_attentions(pt.backbone))
    batch = batch_of(pt, ROWS, "left")
    got = outputs(pt, batch)
    loss, grads = loss_and_grads(pt, batch)
    with hand_written_attention(pt):
        want = outputs(pt, batch)
        ref_loss, ref_grads = loss_and_grads(pt, batch)
    assert_rows_close(got, want, atol=1e-10)
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-10)
    assert_grads_close(grads, ref_grads, atol=1e-10)
    with mock.patch.object(pt, "backbone_kwargs", return_value={}):  # the prefix does change the outputs
        assert (outputs(pt, batch)[0] - got[0]).abs().max() > 1e-3


@pytest.mark.parametrize("arch", list(ARCHS))
def test_each_example_as_alone(arch):
    pt = build(arch)
    alone = [outputs(pt, batch_of(pt, [r]))[0] for r in ROWS]
    for side in ("left", "right"):
        assert_rows_close(outputs(pt, batch_of(pt, ROWS, side)), alone, atol=1e-10)


@pytest.mark.parametrize("arch", ["roberta", "t5"])
def test_prompt_bank_rows_are_each_examples_prompt(arch):
    pt = build(arch, num_tasks=2)
    batch = {**batch_of(pt, ROWS), "task_ids": torch.tensor([1, 0, 1])}
    together = outputs(pt, batch)
    for i, row in enumerate(ROWS):
        alone = outputs(pt, {**batch_of(pt, [row]), "task_ids": batch["task_ids"][i : i + 1]})
        torch.testing.assert_close(together[i], alone[0], rtol=0, atol=1e-10)
    other = outputs(pt, {**batch, "task_ids": torch.tensor([0, 0, 0])})
    assert (other[0] - together[0]).abs().max() > 1e-3


@pytest.mark.parametrize("arch", list(ARCHS))
def test_gradient_checkpointing_gives_the_same_logits_and_gradients(arch):
    pt = build(arch)
    batch = batch_of(pt, ROWS)
    plain, (loss, grads) = outputs(pt, batch), loss_and_grads(pt, batch)
    pt.enable_gradient_checkpointing()
    with mock.patch("textpt.model.checkpoint", wraps=checkpoint) as spy:
        checkpointed, (ck_loss, ck_grads) = outputs(pt, batch), loss_and_grads(pt, batch)
    assert spy.called
    assert_rows_close(checkpointed, plain, atol=1e-12)
    torch.testing.assert_close(ck_loss, loss, rtol=0, atol=1e-12)
    assert_grads_close(ck_grads, grads, atol=1e-12)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_only_prompts_learn_and_the_prompt_file_round_trips(arch, tmp_path):
    pt = build(arch)
    backbone = {k: v.clone() for k, v in pt.backbone.state_dict().items()}
    batch = batch_of(pt, ROWS)
    pt.training_step(batch).backward()
    names = {n for n, _ in pt.named_prompt_parameters()}
    assert names == ({"prompts.weight", "head.weight", "head.bias"} if pt.task == "seq_cls" else {"prompts.weight"})
    assert all(p.grad is not None and p.grad.abs().max() > 0 for _, p in pt.named_prompt_parameters())
    assert all(p.grad is None and not p.requires_grad for p in pt.backbone.parameters())
    torch.optim.SGD(pt.prompt_parameters(), lr=0.1).step()
    assert all(torch.equal(backbone[k], v) for k, v in pt.backbone.state_dict().items())

    pt.zero_grad()
    pt.save_prompts(tmp_path / "p")
    other = build(arch, seed=1)
    mine = outputs(pt, batch)
    assert not torch.equal(outputs(other, batch)[0], mine[0])
    other.load_prompts(tmp_path / "p")
    assert_rows_close(outputs(other, batch), mine, atol=0)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_backbone_called_without_a_prefix_is_unchanged(arch):
    model_type, task, kwargs = ARCHS[arch]
    torch.manual_seed(0)
    model, tok = load_model_and_tokenizer(TextModelConfig(name=f"random:{model_type}", task=task, kwargs=kwargs, dtype="float64"))
    ids, mask = repad(ROWS, tok.pad_token_id, "right", torch.device("cpu"))
    extra = {"decoder_input_ids": ids} if task == "seq2seq" else {}

    def run():
        out = model(input_ids=ids, attention_mask=mask, **extra)
        return out.logits if task == "seq2seq" else out.last_hidden_state

    before = run()
    fields = {"num_classes": 3} if task == "seq_cls" else {}
    pt = textpt.wrap(model, method_config("prefix", num_tokens=N, init_std=1.0, **fields), tokenizer=tok)
    assert model.config._attn_implementation == "textpt_prefix_sdpa"
    assert torch.equal(run(), before)
    if task == "seq2seq":  # generation sets the prefix for its own duration only
        pt.generate(ids, mask, max_new_tokens=2, do_sample=False)
        assert torch.equal(run(), before)


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_the_prefix_takes_no_positions(arch):
    """The whole position table stays the input's (RoBERTa's starts after its padding index)."""
    pt = build(arch)
    longest = pt.max_positions
    assert pt.prompt_positions == 0 and longest is not None
    ids = torch.full((1, longest), 5)
    assert pt(ids).shape == (1, 3)
    with pytest.raises(UserError, match=rf"input of {longest + 1} tokens plus 0 prompt tokens exceeds"):
        pt(torch.full((1, longest + 1), 5))


def greedy_reference(pt, ids, mask, steps: int) -> torch.Tensor:
    """Greedy decoding without a cache: every step runs the whole decoder input through the prefixed model."""
    x, m, _, _ = pt.encode(ids, mask, None)
    out = torch.full((ids.shape[0], 1), pt.backbone.generation_config.decoder_start_token_id)
    with torch.no_grad():
        for _ in range(steps):
            logits = pt.backbone(inputs_embeds=x, attention_mask=m, decoder_input_ids=out, use_cache=False, **pt.backbone_kwargs(None, ids.shape[0])).logits
            out = torch.cat([out, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return out


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("arch", ["t5", "bart"])
def test_generate_equals_step_by_step_greedy_decode(arch, side):
    pt = build(arch, init_std=5.0)
    ids, mask = repad(ROWS, pt.tokenizer.pad_token_id, side, torch.device("cpu"))
    generated = pt.generate(ids, mask, max_new_tokens=5, do_sample=False, eos_token_id=None, forced_eos_token_id=None, forced_bos_token_id=None)
    reference = greedy_reference(pt, ids, mask, 5)
    assert torch.equal(generated, reference)
    with mock.patch.object(pt, "backbone_kwargs", return_value={}):  # the prefix decides what is written
        assert not torch.equal(greedy_reference(pt, ids, mask, 5), reference)


@pytest.mark.parametrize("arch", ["t5", "bart"])
def test_a_few_steps_lower_the_loss_on_a_toy_task(arch):
    pt = build(arch)
    batch = batch_of(pt, ROWS)
    optimizer = torch.optim.Adam(pt.prompt_parameters(), lr=1.0)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = pt.training_step(batch)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.95 * losses[0], losses


REFUSED = {
    "deberta-v2": ("DebertaV2Model", {**_LAYERS, "max_position_embeddings": 64}),
    "modernbert": ("ModernBertModel", {**_LAYERS, "layer_types": ["full_attention", "sliding_attention"], "local_attention": 8}),
}


@pytest.mark.parametrize("model_type", list(REFUSED))
def test_an_attention_without_plain_keys_is_refused(model_type):
    name, kwargs = REFUSED[model_type]
    model, tok = load_model_and_tokenizer(TextModelConfig(name=f"random:{model_type}", task="seq_cls", kwargs=kwargs))
    with pytest.raises(UserError, match=rf"^method: prefix on {name} \(model_type {model_type}\) is not supported: .*model types bart, bert, roberta, t5 "):
        textpt.wrap(model, method_config("prefix", num_tokens=2, num_classes=2), tokenizer=tok)


def test_an_attention_implementation_without_tensor_masks_is_refused():
    model_type, task, kwargs = ARCHS["bert"]
    model, tok = load_model_and_tokenizer(TextModelConfig(name=f"random:{model_type}", task=task, kwargs=kwargs))
    model.set_attn_implementation("flex_attention")
    with pytest.raises(UserError, match=r"runs with attn_implementation eager or sdpa, this model was loaded with 'flex_attention'"):
        textpt.wrap(model, method_config("prefix", num_tokens=2, num_classes=2), tokenizer=tok)


@pytest.mark.parametrize(
    "arch,message",
    [("bert", "PEFT export of a seq_cls model is not supported"), ("t5", "PEFT export of a prefix is for causal_lm models; this model's task is seq2seq")],
)
def test_peft_export_is_refused(arch, message, tmp_path):
    from textpt.peft_interop import save_peft_adapter

    with pytest.raises(UserError, match=message):
        save_peft_adapter(build(arch), tmp_path / "adapter")
