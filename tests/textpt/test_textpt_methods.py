"""The methods on tiny GPT-2, Llama, T5 and BERT: only prompts train, the backbone is untouched, save -> load gives
the same outputs, inits, verbalizers and the bad-input messages."""

import pytest
import torch
from torch import nn

import promptcore
import textpt
from promptcore import PromptFileError, load_config
from textpt import PrefixConfig, PromptTuningConfig, PTuningConfig, TextModelConfig, load_model_and_tokenizer
from textpt.padding import repad
from textpt.run_config import TextRunConfig
from tiny_text import TINY_CONFIGS, method_config

ROWS = [[5, 6, 7, 8], [9, 10], [11, 12, 13]]


def load(model_type="llama", task="causal_lm", side="left", dtype="float32", **kwargs):
    torch.manual_seed(0)
    return load_model_and_tokenizer(
        TextModelConfig(name=f"random:{model_type}", task=task, kwargs={**TINY_CONFIGS[model_type], **kwargs}, padding_side=side, dtype=dtype)
    )


def batch_for(task, tok, side="left"):
    ids, mask = repad(ROWS, tok.pad_token_id, side, torch.device("cpu"))
    batch = {"input_ids": ids, "attention_mask": mask}
    if task == "seq_cls":
        batch["labels"] = torch.tensor([0, 1, 1])
    else:
        batch["lm_labels"] = ids.masked_fill(mask == 0, -100) if task == "causal_lm" else torch.tensor([[5, 6, -100], [7, -100, -100], [8, 9, 10]])
    return batch


CASES = [
    ("gpt2", "causal_lm", "prompt_tuning"),
    ("llama", "causal_lm", "prompt_tuning"),
    ("llama", "causal_lm", "p_tuning"),
    ("gpt2", "causal_lm", "prefix"),
    ("llama", "causal_lm", "prefix"),
    ("t5", "seq2seq", "prompt_tuning"),
    ("t5", "seq2seq", "p_tuning"),
    ("bert", "seq_cls", "prompt_tuning"),
]


@pytest.mark.parametrize("model_type,task,method", CASES)
def test_training_touches_only_prompts_and_save_load_round_trips(tmp_path, model_type, task, method):
    backbone, tok = load(model_type, task)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    pt = textpt.wrap(backbone, method_config(method, num_tokens=3, num_classes=2 if task == "seq_cls" else None), tokenizer=tok)
    batch = batch_for(task, tok)
    opt = torch.optim.AdamW(pt.prompt_parameters(), lr=1e-2)
    pt.train()
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = pt.training_step(batch)
        loss.backward()
        with_grad = {n for n, p in pt.named_parameters() if p.grad is not None}
        assert with_grad == {n for n, _ in pt.named_prompt_parameters()}
        assert not any(n.startswith("backbone.") for n in with_grad)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, before[k]), k
    pt.eval()
    metrics = pt.eval_step(batch)
    assert metrics["count"] > 0 and torch.isfinite(metrics["loss"])
    out = pt(batch["input_ids"], batch["attention_mask"]) if task != "seq2seq" else pt.lm_outputs(batch)[0]
    pt.save_prompts(tmp_path / "p")
    fresh = textpt.wrap(load(model_type, task)[0], method_config(method, num_tokens=3, num_classes=2 if task == "seq_cls" else None), tokenizer=tok)
    fresh.load_prompts(tmp_path / "p")
    again = fresh(batch["input_ids"], batch["attention_mask"]) if task != "seq2seq" else fresh.lm_outputs(batch)[0]
    torch.testing.assert_close(again, out, rtol=0, atol=1e-5)


def test_p_tuning_folds_at_save(tmp_path):
    backbone, tok = load()
    pt = textpt.wrap(backbone, PTuningConfig(reparam="lstm", num_tokens=3), tokenizer=tok)
    assert pt.prompts.encoder is not None
    pt.save_prompts(tmp_path / "p")
    tensors, meta = promptcore.load_prompt_files(tmp_path / "p")
    assert set(tensors) == {"prompts.weight"} and meta["method"] == "p_tuning"


def test_promptcore_wrap_dispatches_to_textpt():
    backbone, _ = load("gpt2")
    pt = promptcore.wrap(backbone, PrefixConfig(num_tokens=2))
    assert isinstance(pt, textpt.PrefixModel)
    assert pt.prompts.weight.shape == (2 * 2, 2, 32)


def test_prefix_reads_grouped_query_width():
    backbone, tok = load("llama")  # 4 heads, 2 key/value heads of 8: width 16, not the model's 32
    pt = textpt.wrap(backbone, PrefixConfig(num_tokens=2), tokenizer=tok)
    assert pt.prompts.weight.shape == (4, 2, 16)


@pytest.mark.parametrize("init", ["vocab", "text", "labels"])
def test_token_inits_start_from_embeddings(init):
    backbone, tok = load("gpt2")
    cfg = PromptTuningConfig(num_tokens=4, init=init, init_text="classify the sentiment of this review :", verbalizer=["bad", "great"])
    pt = textpt.wrap(backbone, cfg, tokenizer=tok)
    emb = backbone.get_input_embeddings().weight
    rows = pt.prompts.weight.detach()
    # every prompt vector is one of the vocabulary's embeddings
    assert all((emb - r).abs().sum(-1).min() == 0 for r in rows)
    if init == "labels":
        assert torch.equal(rows[0], emb[tok.convert_tokens_to_ids("bad")])


def test_prefix_text_init_is_the_texts_keys_and_values():
    backbone, tok = load("gpt2", dtype="float64")
    text = "great movie"
    pt = textpt.wrap(backbone, PrefixConfig(num_tokens=2, init="text", init_text=text), tokenizer=tok)
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"] + [9]])
    with torch.no_grad():
        expected = backbone(ids).logits[0, -1]
        got = pt.token_logits(torch.tensor([[9]]))[0, -1]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def test_text_init_needs_tokenizer():
    backbone, _ = load("gpt2")
    with pytest.raises(ValueError, match=r"tokenizer is needed; call textpt.wrap\(model, config, tokenizer=tokenizer\)"):
        promptcore.wrap(backbone, PromptTuningConfig(num_tokens=2, init="text", init_text="hello"))


def test_verbalizer_single_and_multi_token_scores():
    backbone, tok = load("llama", dtype="float64")
    pt = textpt.wrap(backbone, PromptTuningConfig(num_tokens=2, verbalizer=["bad", "very good"]), tokenizer=tok)
    ids, mask = repad(ROWS, tok.pad_token_id, "left", torch.device("cpu"))
    scores = pt(ids, mask)
    assert scores.shape == (3, 2)
    # multi-token word: sum of log p(token | prefix) computed by hand for example 0
    row = ROWS[0]
    very, good = tok("very good", add_special_tokens=False)["input_ids"]
    logp = pt.token_logits(torch.tensor([row + [very]]))[0].log_softmax(-1)
    expected = logp[len(row) - 1, very] + logp[len(row), good]
    torch.testing.assert_close(scores[0, 1], expected, rtol=0, atol=1e-10)
    bad = tok.convert_tokens_to_ids("bad")
    torch.testing.assert_close(scores[0, 0], logp[len(row) - 1, bad], rtol=0, atol=1e-10)
    loss = pt.training_step({"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 0])})
    loss.backward()
    assert pt.prompts.weight.grad.abs().sum() > 0


def test_label_missing_from_verbalizer():
    backbone, tok = load("gpt2")
    pt = textpt.wrap(backbone, PromptTuningConfig(num_tokens=2, verbalizer=["bad", "great"]), tokenizer=tok)
    with pytest.raises(ValueError, match=r"labels range 0..2 but the verbalizer has 2 words \['bad', 'great'\]"):
        pt.training_step({"input_ids": torch.tensor([[5, 6], [7, 8]]), "labels": torch.tensor([0, 2])})
    # Labels on another device are not read (a host sync per step on a GPU): meta tensors have no values to read.
    assert pt.forward_batch({"input_ids": torch.tensor([[5, 6], [7, 8]]), "labels": torch.empty(2, dtype=torch.long, device="meta")}).shape == (2, 2)


def test_prompt_file_for_another_width(tmp_path):
    backbone, tok = load("gpt2")
    textpt.wrap(backbone, PromptTuningConfig(num_tokens=2), tokenizer=tok, name="small").save_prompts(tmp_path / "p")
    wide, _ = load("gpt2", n_embd=48)
    pt = textpt.wrap(wide, PromptTuningConfig(num_tokens=2), tokenizer=tok, name="wide")
    with pytest.raises(PromptFileError, match=r"prompt dim 32 does not match backbone width 48 \(wide\)"):
        pt.load_prompts(tmp_path / "p")


def test_too_long_input_is_a_clear_error():
    backbone, tok = load("gpt2", n_positions=16)
    pt = textpt.wrap(backbone, PromptTuningConfig(num_tokens=4), tokenizer=tok)
    with pytest.raises(ValueError, match=r"input of 14 tokens plus 4 prompt tokens exceeds the 16 positions .* at most 12 tokens"):
        pt.token_logits(torch.full((1, 14), 5))


def test_empty_text_row_gives_finite_scores():
    backbone, tok = load("llama")
    pt = textpt.wrap(backbone, PromptTuningConfig(num_tokens=2, verbalizer=["bad", "great"]), tokenizer=tok)
    ids = torch.tensor([[2, 2, 2], [5, 6, 7]])
    mask = torch.tensor([[0, 0, 0], [1, 1, 1]])
    assert torch.isfinite(pt(ids, mask)).all()


def test_prefix_refused_for_an_encoder_whose_attention_takes_no_plain_keys():
    """BERT takes a prefix (tests/textpt/test_textpt_deep_prompts.py); DeBERTa-v2's disentangled attention does not."""
    torch.manual_seed(0)
    kwargs = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 64}
    backbone, tok = load_model_and_tokenizer(TextModelConfig(name="random:deberta-v2", task="seq_cls", kwargs=kwargs))
    with pytest.raises(ValueError, match=r"prefix on DebertaV2Model \(model_type deberta-v2\) is not supported.*bart, bert, roberta, t5"):
        textpt.wrap(backbone, PrefixConfig(num_tokens=2, num_classes=2), tokenizer=tok)


def test_seq_cls_needs_num_classes():
    backbone, tok = load("bert", "seq_cls")
    with pytest.raises(ValueError, match="num_classes: task seq_cls trains a classification head"):
        textpt.wrap(backbone, PromptTuningConfig(num_tokens=2), tokenizer=tok)


@pytest.mark.parametrize(
    "data,message",
    [
        ({"num_tokens": 0}, "num_tokens: must be a positive prompt length"),
        ({"init": "text"}, "init_text: init 'text' needs a non-empty init_text"),
        ({"init": "labels"}, "verbalizer: init 'labels' starts from the verbalizer's words"),
        ({"reparam": "mlp"}, "prompt.reparam: unknown key for PromptTuningConfig"),
        ({"method": "prefix", "fast": "on"}, "prompt.fast: unknown key for PrefixConfig"),
        ({"verbalizer": ["a", "b"], "num_classes": 3}, "verbalizer: has 2 words but num_classes is 3"),
        ({"method": "p_tuning", "num_tasks": 2}, "num_tasks: a prompt bank"),
        ({"methd": "prefix"}, "Did you mean 'method'"),
        ({"verbalizer": ["bad", " "]}, "verbalizer: give one non-empty word per class"),
        ({"method": "p_tuning", "reparam_hidden": 0}, "reparam_hidden: must be a positive width or null, got 0"),
    ],
)
def test_config_errors_name_the_field(data, message):
    with pytest.raises(promptcore.ConfigError, match=message):
        load_config(TextRunConfig, {"model": {"name": "random:gpt2"}, "prompt": data})


def test_p_tuning_defaults_to_mlp():
    assert PTuningConfig().reparam == "mlp"


class NoEmbeddings(nn.Module):
    def get_input_embeddings(self):
        return None


def test_model_without_input_embeddings():
    with pytest.raises(textpt.ModelLoadError, match=r"has no input embeddings .* use a transformers text model"):
        textpt.wrap(NoEmbeddings(), PromptTuningConfig(num_tokens=2), task="causal_lm")


def test_token_logits_need_a_decoder_only_model():
    backbone, tok = load("t5", "seq2seq", side="right")
    pt = textpt.wrap(backbone, PromptTuningConfig(num_tokens=2), tokenizer=tok)
    with pytest.raises(ValueError, match="token_logits is for decoder-only models \\(causal_lm\\); this one is seq2seq"):
        pt.token_logits(torch.tensor([[5, 6]]))
    with pytest.raises(ValueError, match=r"seq2seq: a forward needs decoder targets; call lm_outputs\(batch\)"):
        pt(torch.tensor([[5, 6]]))
