"""PEFT interop: a textpt prompt exports as a PEFT adapter PEFT loads with the same logits, and back."""

import json

import pytest
import torch

peft = pytest.importorskip("peft")

import textpt  # noqa: E402
from promptcore import PromptFileError  # noqa: E402
from textpt import PromptTuningConfig, TextModelConfig, load_model_and_tokenizer  # noqa: E402
from tiny_text import TINY_CONFIGS, method_config  # noqa: E402
from textpt.peft_interop import load_peft_adapter, save_peft_adapter  # noqa: E402

IDS = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 13, 14]])


def load(model_type="llama", **kwargs):
    torch.manual_seed(0)
    return load_model_and_tokenizer(TextModelConfig(name=f"random:{model_type}", kwargs={**TINY_CONFIGS[model_type], **kwargs}))


def peft_logits(model, ids):
    return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, -ids.shape[1]:]


@pytest.mark.parametrize("method", ["prompt_tuning", "p_tuning"])
def test_export_loads_in_peft_with_same_logits(tmp_path, method):
    backbone, tok = load()
    pt = textpt.wrap(backbone, method_config(method, num_tokens=4, init_std=1.0), tokenizer=tok)
    ours = pt.token_logits(IDS).detach()
    save_peft_adapter(pt, tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["peft_type"] == "PROMPT_TUNING"
    fresh, _ = load()
    loaded = peft.PeftModel.from_pretrained(fresh, str(tmp_path / "adapter"))
    with torch.no_grad():
        theirs = peft_logits(loaded, IDS)
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)


def test_import_peft_adapter_same_logits(tmp_path):
    backbone, tok = load()
    config = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5)
    pm = peft.get_peft_model(backbone, config)
    with torch.no_grad():
        pm.prompt_encoder["default"].embedding.weight.normal_(0, 1)
        expected = peft_logits(pm, IDS)
    pm.save_pretrained(str(tmp_path / "peft"))
    fresh, tok = load()
    pt = load_peft_adapter(fresh, tmp_path / "peft", tokenizer=tok)
    assert pt.config.num_tokens == 5
    torch.testing.assert_close(pt.token_logits(IDS).detach(), expected, rtol=0, atol=1e-5)


def test_import_rejects_other_width(tmp_path):
    backbone, tok = load()
    pt = textpt.wrap(backbone, PromptTuningConfig(num_tokens=2), tokenizer=tok)
    save_peft_adapter(pt, tmp_path / "adapter")
    wide, _ = load(hidden_size=48, num_attention_heads=4)
    with pytest.raises(PromptFileError, match="prompt dim 32 does not match backbone width 48"):
        load_peft_adapter(wide, tmp_path / "adapter")


def test_import_rejects_other_peft_type(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(PromptFileError, match="peft_type 'LORA'; only PROMPT_TUNING"):
        load_peft_adapter(load()[0], tmp_path)


def test_export_rejects_banks_and_prefixes(tmp_path):
    backbone, tok = load()
    bank = textpt.wrap(backbone, PromptTuningConfig(num_tokens=2, num_tasks=2), tokenizer=tok)
    with pytest.raises(ValueError, match="hold one shallow prompt"):
        save_peft_adapter(bank, tmp_path / "a")
