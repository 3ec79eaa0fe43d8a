"""Prompt inits as the papers' code builds them (Lester et al.'s class labels, draws from the first vocabulary rows,
PEFT's text init with special tokens), and the verbalizer checks made when a model is wrapped."""

import pytest
import torch

import promptcore
import textpt
from promptcore import UserError, load_config
from textpt import PromptTuningConfig, PTuningConfig, TextModelConfig, load_model_and_tokenizer
from textpt.run_config import TextRunConfig
from tiny_text import TINY_CONFIGS


def load(model_type="t5", task="seq2seq", side="right", dtype="float32"):
    torch.manual_seed(0)
    return load_model_and_tokenizer(TextModelConfig(name=f"random:{model_type}", task=task, kwargs=TINY_CONFIGS[model_type], padding_side=side, dtype=dtype))


def row_of(emb: torch.Tensor, vector: torch.Tensor) -> int:
    return int((emb == vector).all(-1).nonzero()[0])


@pytest.mark.parametrize("method", ["prompt_tuning", "p_tuning"])
def test_class_labels_init_is_lesters(method):
    # google-research/prompt-tuning prompts.py from_embedded_list over from_sample_of_embeddings(population_size=5000):
    # label i at position i (a label of several tokens: their mean), the other positions drawn from the first rows.
    backbone, tok = load()
    config = PromptTuningConfig if method == "prompt_tuning" else PTuningConfig
    cfg = config(num_tokens=6, init="class_labels", init_vocab_size=20, verbalizer=["bad", "very good"], seed=3)
    pt = textpt.wrap(backbone, cfg, tokenizer=tok)
    emb = backbone.get_input_embeddings().weight.detach()
    rows = pt.prompts.weight.detach()
    very, good = tok("very good", add_special_tokens=False)["input_ids"]
    assert torch.equal(rows[0], emb[tok.convert_tokens_to_ids("bad")])
    torch.testing.assert_close(rows[1], (emb[very] + emb[good]) / 2, rtol=0, atol=1e-7)
    drawn = [row_of(emb, r) for r in rows[2:]]
    assert max(drawn) < 20 and len(set(drawn)) == 4  # without replacement, from the first 20 rows
    again = textpt.wrap(load()[0], cfg, tokenizer=tok).prompts.weight.detach()
    assert torch.equal(again, rows)  # seeded


def test_labels_init_still_repeats_the_label_tokens():
    backbone, tok = load()
    pt = textpt.wrap(backbone, PromptTuningConfig(num_tokens=5, init="labels", verbalizer=["bad", "very good"]), tokenizer=tok)
    emb = backbone.get_input_embeddings().weight.detach()
    ids = tok("bad", add_special_tokens=False)["input_ids"] + tok("very good", add_special_tokens=False)["input_ids"]
    assert torch.equal(pt.prompts.weight.detach(), emb[(ids * 2)[:5]])


def test_vocab_init_draws_from_the_first_rows():
    backbone, tok = load("gpt2", "causal_lm", "left")
    pt = textpt.wrap(backbone, PromptTuningConfig(num_tokens=8, init="vocab", init_vocab_size=10), tokenizer=tok)
    emb = backbone.get_input_embeddings().weight.detach()
    assert all(row_of(emb, r) < 10 for r in pt.prompts.weight.detach())


def bert_with_special_tokens():
    """A tiny random BERT with a real BERT tokenizer (it adds [CLS] and [SEP]) over a small vocabulary."""
    from transformers import BertTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "classify", "the", "review", "good", "bad"]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)})
    backbone, _ = load("bert", "seq_cls")
    return backbone, tok


def test_text_init_with_or_without_special_tokens():
    backbone, tok = bert_with_special_tokens()
    emb = backbone.get_input_embeddings().weight.detach()
    ids = [5, 6, 7]  # classify the review
    assert tok("classify the review")["input_ids"] == [2, *ids, 3]
    cls, sep = tok.cls_token_id, tok.sep_token_id
    plain = textpt.wrap(backbone, PromptTuningConfig(num_tokens=4, init="text", init_text="classify the review", num_classes=2), tokenizer=tok)
    assert torch.equal(plain.prompts.weight.detach(), emb[ids + ids[:1]])  # the text's own tokens (the default)
    peft_like = PromptTuningConfig(num_tokens=6, init="text", init_text="classify the review", init_text_special_tokens=True, num_classes=2)
    pt = textpt.wrap(backbone, peft_like, tokenizer=tok)
    assert torch.equal(pt.prompts.weight.detach(), emb[[cls, *ids, sep, cls]])  # PEFT: tokenizer(text) repeated


def test_text_init_with_special_tokens_needs_the_tokenizer():
    backbone, _ = load("gpt2", "causal_lm", "left")
    cfg = PromptTuningConfig(num_tokens=2, init="text", init_text="hello", init_text_special_tokens=True)
    with pytest.raises(ValueError, match=r"init 'text': the tokenizer is needed"):
        promptcore.wrap(backbone, cfg)


@pytest.mark.parametrize(
    "prompt,message",
    [
        ({"init": "class_labels"}, "verbalizer: init 'class_labels' starts from the verbalizer's words"),
        ({"method": "prefix", "init": "class_labels", "verbalizer": ["a", "b"]}, "init: 'class_labels' is not offered by method prefix; choose one of random, normal, vocab, text, labels"),
        ({"init": "text", "init_text": "x", "init_vocab_size": 10}, "init_vocab_size: only the vocab and class_labels inits draw from the vocabulary, init is 'text'"),
        ({"init": "vocab", "init_vocab_size": 0}, "init_vocab_size: must be a positive number of vocabulary rows or null, got 0"),
        ({"init": "vocab", "init_text_special_tokens": True}, "init_text_special_tokens: applies to init 'text', init is 'vocab'"),
        ({"verbalizer": [" good", " bad", " good"]}, "verbalizer: ' good' names several classes"),
    ],
)
def test_init_and_verbalizer_config_errors(prompt, message):
    with pytest.raises(promptcore.ConfigError, match=message):
        load_config(TextRunConfig, {"model": {"name": "random:gpt2"}, "prompt": prompt})


def test_class_labels_more_labels_than_positions():
    backbone, tok = load()
    cfg = PromptTuningConfig(num_tokens=2, init="class_labels", verbalizer=["bad", "good", "fine"])
    with pytest.raises(ValueError, match="3 labels do not fit 2 prompt positions"):
        textpt.wrap(backbone, cfg, tokenizer=tok)


def test_label_words_with_the_same_tokens_are_refused():
    # Both words are outside the tiny vocabulary: both are <unk>, so the two classes would always score the same.
    backbone, tok = load("llama", "causal_lm", "left")
    with pytest.raises(UserError, match=r"verbalizer: 'xyzzy' and 'plugh' are the same tokens \[0\] for this tokenizer"):
        textpt.wrap(backbone, PromptTuningConfig(num_tokens=2, verbalizer=["xyzzy", "plugh"]), tokenizer=tok)
    # seq2seq writes a word's stripped form: ' bad' and 'bad' are the same target
    t5, t5_tok = load()
    with pytest.raises(UserError, match=r"' bad' and 'bad' are the same tokens"):
        textpt.wrap(t5, PromptTuningConfig(num_tokens=2, verbalizer=[" bad", "bad"]), tokenizer=t5_tok)
    # an encoder classifies with its head: the words are not scored, nothing to refuse
    bert, bert_tok = load("bert", "seq_cls")
    textpt.wrap(bert, PromptTuningConfig(num_tokens=2, verbalizer=["xyzzy", "plugh"]), tokenizer=bert_tok)
