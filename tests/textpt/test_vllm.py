"""The vLLM engine's input (textpt.vllm), checked without vLLM: the embeddings sent equal textpt's own input
embeddings (the concatenated reference path), and greedy decoding from them with the transformers backbone equals
textpt's generate. vLLM itself runs in bench/vllm_check.py on a GPU machine."""

import importlib.util
import sys

import pytest
import torch

import textpt
from promptcore import UserError
from promptcore.serving import Limits, backend_for
from textpt import TextModelConfig, load_model_and_tokenizer
from textpt.padding import pack_prompt
from textpt.vllm import model_path, prompt_embeds, refusal
from tiny_text import TINY_CONFIGS, method_config

ROWS = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15]]


def build(model_type, method, task="causal_lm", dtype="float32", **fields):
    torch.manual_seed(0)
    model, tok = load_model_and_tokenizer(TextModelConfig(name=f"random:{model_type}", task=task, kwargs=TINY_CONFIGS[model_type], dtype=dtype))
    m = textpt.wrap(model, method_config(method, num_tokens=4, init_std=1.0, **fields), tokenizer=tok, task=task)
    with torch.no_grad():
        for p in m.prompt_parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.5)
    return m.eval(), tok


def test_vllm_is_not_imported():
    import textpt.vllm  # noqa: F401

    assert "vllm" not in sys.modules


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
@pytest.mark.parametrize("method", ["prompt_tuning", "p_tuning", "dept", "zero_shot"])
def test_sent_embeddings_equal_textpt_input_embeddings(model_type, method):
    fields = {"verbalizer": [" good", " bad"]} if method == "zero_shot" else {}
    if method == "zero_shot":
        torch.manual_seed(0)
        model, tok = load_model_and_tokenizer(TextModelConfig(name=f"random:{model_type}", kwargs=TINY_CONFIGS[model_type], dtype="float64"))
        m = textpt.wrap(model, method_config("zero_shot", **fields), tokenizer=tok).eval()
    else:
        m, tok = build(model_type, method, dtype="float64")
    for row in ROWS:
        ids = torch.tensor([row])
        mask = torch.ones_like(ids)
        # the reference path: the prompt concatenated before the input's embeddings (textpt.model.forward_concat)
        x, _, _, _ = pack_prompt(m.shallow_prompt(None, 1), m.embed_inputs(ids, mask), mask, m.padding_side)
        sent = prompt_embeds(m, row)
        assert sent.shape == (m.num_prompt_tokens + len(row), m.dim)
        assert torch.equal(sent, x[0])
        with torch.no_grad():  # the backbone run on the sent embeddings gives textpt's logits
            logits = m.backbone(inputs_embeds=sent[None], attention_mask=torch.ones(1, sent.shape[0], dtype=torch.long)).logits[0, m.num_prompt_tokens:]
            torch.testing.assert_close(logits, m.token_logits(ids, mask)[0], atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("method", ["prompt_tuning", "p_tuning", "dept"])
def test_greedy_decoding_from_sent_embeddings_equals_textpt_generate(method):
    m, tok = build("llama", method)
    for row in ROWS:
        ids = torch.tensor([row])
        want = m.generate(ids, torch.ones_like(ids), max_new_tokens=6, do_sample=False, eos_token_id=None)[0].tolist()
        sent = prompt_embeds(m, row)[None]
        got = m.backbone.generate(inputs_embeds=sent, attention_mask=torch.ones(sent.shape[:2], dtype=torch.long), max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=tok.pad_token_id)
        assert got[0].tolist()[-6:] == want


@pytest.mark.parametrize("method,task,model_type,match", [
    ("prefix", "causal_lm", "llama", "keys and values in every attention layer"),
    ("prompt_tuning", "seq2seq", "t5", "decoder-only generation; this prompt runs a seq2seq model"),
])
def test_methods_vllm_cannot_express_are_refused_with_the_reason(method, task, model_type, match):
    fields = {"verbalizer": [" good", " bad"]} if task == "seq2seq" else {}
    m, _ = build(model_type, method, task=task, **fields)
    assert match in refusal(m)
    with pytest.raises(UserError, match=f"engine vllm cannot serve method {method}: .*serve it with engine hf"):
        prompt_embeds(m, ROWS[0])


def test_vllm_engine_needs_vllm_and_a_model_folder(tmp_path):
    with pytest.raises(UserError, match="random:llama is built at random; save it with save_pretrained"):
        model_path("random:llama")
    if importlib.util.find_spec("vllm") is not None:
        return  # the message below is for a machine without vLLM
    with pytest.raises(UserError, match=r"engine vllm needs vLLM .*prompttune\[vllm\]"):
        backend_for("text")({"name": "random:llama", "kwargs": TINY_CONFIGS["llama"]}, [], torch.device("cpu"), Limits(), engine="vllm")
