"""PEFT interop beyond causal-LM prompt tuning: seq2seq prompt tuning, prefix tuning, P-tuning, and the formats that
are refused. Every round trip is checked against PEFT's own forward on the same tiny random model."""

import json

import pytest
import torch

peft = pytest.importorskip("peft")

from tiny_text import TINY_CONFIGS, method_config  # noqa: E402

import textpt  # noqa: E402
from promptcore import PromptFileError  # noqa: E402
from promptcore.errors import UserError  # noqa: E402
from textpt import PromptTuningConfig, TextModelConfig, load_model_and_tokenizer  # noqa: E402
from textpt.peft_interop import load_peft_adapter, save_peft_adapter  # noqa: E402
from textpt.prefix import PrefixModel  # noqa: E402

IDS = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 13, 14]])
LABELS = torch.tensor([[4, 7, 9], [8, 5, 6]])
SUPPORTED_LIST = r"PROMPT_TUNING \(CAUSAL_LM, SEQ_2_SEQ_LM\); P_TUNING \(CAUSAL_LM, SEQ_2_SEQ_LM\); PREFIX_TUNING \(CAUSAL_LM\)"


TASK = {"llama": "causal_lm", "gpt2": "causal_lm", "t5": "seq2seq", "bert": "seq_cls"}


def load(model_type="llama"):
    torch.manual_seed(0)
    return load_model_and_tokenizer(TextModelConfig(name=f"random:{model_type}", task=TASK[model_type], kwargs=TINY_CONFIGS[model_type]))


def ones(ids):
    return torch.ones_like(ids)


def causal_peft_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=ones(ids)).logits[:, -ids.shape[1]:]


def seq2seq_ours(pt):
    with torch.no_grad():
        return pt.lm_outputs({"input_ids": IDS, "attention_mask": ones(IDS), "lm_labels": LABELS})[0]


def seq2seq_peft(model):
    with torch.no_grad():
        return model(input_ids=IDS, attention_mask=ones(IDS), labels=LABELS).logits


# ----- PROMPT_TUNING / P_TUNING, SEQ_2_SEQ_LM ------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["prompt_tuning", "p_tuning"])
def test_seq2seq_export_loads_in_peft_with_same_logits_and_back(tmp_path, method):
    backbone, tok = load("t5")
    pt = textpt.wrap(backbone, method_config(method, num_tokens=4, init_std=1.0), tokenizer=tok)
    ours = seq2seq_ours(pt)
    save_peft_adapter(pt, tmp_path / "adapter")
    adapter = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert (adapter["peft_type"], adapter["task_type"], adapter["num_transformer_submodules"]) == ("PROMPT_TUNING", "SEQ_2_SEQ_LM", 1)
    loaded = peft.PeftModel.from_pretrained(load("t5")[0], str(tmp_path / "adapter"))
    torch.testing.assert_close(seq2seq_peft(loaded), ours, rtol=0, atol=1e-5)
    back = load_peft_adapter(load("t5")[0], tmp_path / "adapter", tokenizer=tok)
    torch.testing.assert_close(seq2seq_ours(back), ours, rtol=0, atol=1e-5)


def test_seq2seq_import_encoder_prompt_same_logits(tmp_path):
    config = peft.PromptTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=3, num_transformer_submodules=1)
    pm = peft.get_peft_model(load("t5")[0], config)
    with torch.no_grad():
        pm.prompt_encoder["default"].embedding.weight.normal_(0, 1)
    expected = seq2seq_peft(pm)
    pm.save_pretrained(str(tmp_path / "peft"))
    pt = load_peft_adapter(load("t5")[0], tmp_path / "peft", tokenizer=load("t5")[1])
    assert pt.task == "seq2seq" and pt.config.num_tokens == 3
    torch.testing.assert_close(seq2seq_ours(pt), expected, rtol=0, atol=1e-5)


def test_seq2seq_import_refuses_decoder_prompts(tmp_path):
    pm = peft.get_peft_model(load("t5")[0], peft.PromptTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=3))
    pm.save_pretrained(str(tmp_path / "peft"))  # PEFT's default: a second prompt before the decoder input
    with pytest.raises(PromptFileError, match="2 transformer submodules: PEFT prompts the decoder too.*num_transformer_submodules=1"):
        load_peft_adapter(load("t5")[0], tmp_path / "peft")


# ----- PREFIX_TUNING, CAUSAL_LM -----------------------------------------------------------------------------------
@pytest.mark.parametrize("model_type", ["llama", "gpt2"])  # llama: grouped-query (2 key/value heads of 4)
def test_prefix_export_loads_in_peft_with_same_logits_and_back(tmp_path, model_type):
    backbone, tok = load(model_type)
    pt = textpt.wrap(backbone, method_config("prefix", num_tokens=3, init_std=1.0), tokenizer=tok)
    with torch.no_grad():
        ours = pt.token_logits(IDS)
    save_peft_adapter(pt, tmp_path / "adapter")
    adapter = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "PREFIX_TUNING" and adapter["num_attention_heads"] == pt.kv_heads
    loaded = peft.PeftModel.from_pretrained(load(model_type)[0], str(tmp_path / "adapter"))
    torch.testing.assert_close(causal_peft_logits(loaded, IDS), ours, rtol=0, atol=1e-5)
    back = load_peft_adapter(load(model_type)[0], tmp_path / "adapter", tokenizer=tok)
    assert isinstance(back, PrefixModel)
    torch.testing.assert_close(back.prompts.weight, pt.prompts.weight, rtol=0, atol=0)


@pytest.mark.parametrize("projection", [False, True])
def test_prefix_import_same_logits(tmp_path, projection):
    config = peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3, prefix_projection=projection, encoder_hidden_size=24)
    pm = peft.get_peft_model(load()[0], config)
    with torch.no_grad():
        for p in pm.prompt_encoder["default"].parameters():
            p.normal_(0, 1)
    pm.eval()
    expected = causal_peft_logits(pm, IDS)
    pm.save_pretrained(str(tmp_path / "peft"))  # PEFT saves the projection's output: the folded prefix
    pt = load_peft_adapter(load()[0], tmp_path / "peft")
    assert isinstance(pt, PrefixModel) and pt.config.num_tokens == 3
    with torch.no_grad():
        torch.testing.assert_close(pt.token_logits(IDS), expected, rtol=0, atol=1e-5)


def test_prefix_import_rejects_other_layers(tmp_path):
    pt = textpt.wrap(load()[0], method_config("prefix", num_tokens=2))
    save_peft_adapter(pt, tmp_path / "adapter")
    torch.manual_seed(0)
    deeper, _ = load_model_and_tokenizer(TextModelConfig(name="random:llama", kwargs={**TINY_CONFIGS["llama"], "num_hidden_layers": 3}))
    with pytest.raises(PromptFileError, match="prefix width 64 does not match the backbone's 3 layers x 2 x key/value width 16"):
        load_peft_adapter(deeper, tmp_path / "adapter")


# ----- P_TUNING, CAUSAL_LM: PEFT saves its encoder's output ------------------------------------------------------
@pytest.mark.parametrize("encoder", ["MLP", "LSTM"])
def test_p_tuning_import_folds_the_encoder(tmp_path, encoder):
    config = peft.PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=4, encoder_hidden_size=16, encoder_reparameterization_type=encoder)
    pm = peft.get_peft_model(load()[0], config)
    with torch.no_grad():
        pm.prompt_encoder["default"].embedding.weight.normal_(0, 1)
    pm.eval()
    expected = causal_peft_logits(pm, IDS)  # the encoder runs on every forward
    pm.save_pretrained(str(tmp_path / "peft"))
    assert json.loads((tmp_path / "peft" / "adapter_config.json").read_text())["peft_type"] == "P_TUNING"
    pt = load_peft_adapter(load()[0], tmp_path / "peft")
    assert pt.method == "prompt_tuning" and pt.config.num_tokens == 4
    with torch.no_grad():
        torch.testing.assert_close(pt.token_logits(IDS), expected, rtol=0, atol=1e-5)


def test_p_tuning_seq2seq_import_folds_the_encoder(tmp_path):
    config = peft.PromptEncoderConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=3, encoder_hidden_size=16, num_transformer_submodules=1)
    pm = peft.get_peft_model(load("t5")[0], config)
    with torch.no_grad():
        pm.prompt_encoder["default"].embedding.weight.normal_(0, 1)
    pm.eval()
    expected = seq2seq_peft(pm)
    pm.save_pretrained(str(tmp_path / "peft"))
    pt = load_peft_adapter(load("t5")[0], tmp_path / "peft")
    assert pt.task == "seq2seq" and pt.method == "prompt_tuning"
    torch.testing.assert_close(seq2seq_ours(pt), expected, rtol=0, atol=1e-5)


# ----- refused --------------------------------------------------------------------------------------------------------
def test_seq_cls_is_refused_both_ways(tmp_path):
    bert, tok = load("bert")
    pt = textpt.wrap(bert, PromptTuningConfig(num_tokens=2, num_classes=2), tokenizer=tok)
    with pytest.raises(UserError, match=f"export of a seq_cls model is not supported: PEFT's SEQ_CLS models pool position 0.*{SUPPORTED_LIST}"):
        save_peft_adapter(pt, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    from transformers import BertConfig, BertForSequenceClassification

    classifier = BertForSequenceClassification(BertConfig(vocab_size=bert.config.vocab_size, num_labels=2, **TINY_CONFIGS["bert"]))
    peft.get_peft_model(classifier, peft.PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=2)).save_pretrained(str(tmp_path / "peft"))
    with pytest.raises(PromptFileError, match=f"PROMPT_TUNING adapter for task_type 'SEQ_CLS', which does not map.*pool position 0.*{SUPPORTED_LIST}"):
        load_peft_adapter(bert, tmp_path / "peft")


def test_seq_cls_refusal_reason_peft_pools_the_first_virtual_token():
    """The fact behind the refusal: with textpt's prompt and head copied into PEFT's SEQ_CLS model, PEFT's logits are
    the pooler run on position 0 (the first virtual token), not textpt's, which read the input's [CLS]."""
    from transformers import BertConfig, BertForSequenceClassification

    bert, tok = load("bert")
    pt = textpt.wrap(bert, PromptTuningConfig(num_tokens=2, num_classes=2, init_std=1.0), tokenizer=tok)
    assert pt.pooling == "pooler"
    classifier = BertForSequenceClassification(BertConfig(vocab_size=bert.config.vocab_size, num_labels=2, **TINY_CONFIGS["bert"])).eval()
    classifier.bert.load_state_dict(bert.state_dict())
    classifier.classifier.load_state_dict(pt.head.state_dict())
    pm = peft.get_peft_model(classifier, peft.PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=2)).eval()
    with torch.no_grad():
        pm.prompt_encoder["default"].embedding.weight.copy_(pt.prompt_table()[0])
        theirs = pm(input_ids=IDS, attention_mask=ones(IDS)).logits
        ours = pt.class_logits(IDS)
        x = torch.cat([pt.prompt_table().expand(2, -1, -1), bert.get_input_embeddings()(IDS)], dim=1)
        first_virtual = pt.head(bert.pooler(bert(inputs_embeds=x).last_hidden_state))  # BertPooler reads position 0
    torch.testing.assert_close(theirs, first_virtual, rtol=0, atol=1e-5)
    assert (theirs - ours).abs().max() > 1e-3


def test_unsupported_type_is_named_with_the_supported_list(tmp_path):
    lora = peft.get_peft_model(load()[0], peft.LoraConfig(task_type="CAUSAL_LM", r=2, target_modules=["q_proj"]))
    lora.save_pretrained(str(tmp_path / "lora"))
    with pytest.raises(UserError, match=f"peft_type 'LORA'; only PROMPT_TUNING, P_TUNING and PREFIX_TUNING adapters are imported \\(supported: {SUPPORTED_LIST}\\)"):
        load_peft_adapter(load()[0], tmp_path / "lora")


def test_unsupported_task_is_named(tmp_path):
    pm = peft.get_peft_model(load("t5")[0], peft.PrefixTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=2))
    pm.save_pretrained(str(tmp_path / "peft"))
    with pytest.raises(UserError, match=f"PREFIX_TUNING adapter for task_type 'SEQ_2_SEQ_LM', which does not map to textpt; supported: {SUPPORTED_LIST}"):
        load_peft_adapter(load("t5")[0], tmp_path / "peft")


def test_adapter_of_another_task_is_refused(tmp_path):
    save_peft_adapter(textpt.wrap(load("t5")[0], PromptTuningConfig(num_tokens=2)), tmp_path / "adapter")
    with pytest.raises(PromptFileError, match="task_type SEQ_2_SEQ_LM \\(seq2seq\\); LlamaForCausalLM is a causal_lm model"):
        load_peft_adapter(load()[0], tmp_path / "adapter")
