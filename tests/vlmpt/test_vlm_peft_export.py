"""PEFT export of ``vlm_prompt_tuning``: the adapter PEFT loads gives the prompt's logits on LLaVA, LLaVA-OneVision
and Idefics3; Qwen2-VL, Qwen2.5-VL and PaliGemma, where PEFT's result is wrong, are refused (and PEFT's result is
shown to be wrong there, so the refusal is lifted when PEFT is fixed)."""

import json
import warnings

import pytest
import torch

peft = pytest.importorskip("peft")

import promptcore  # noqa: E402
import vlmpt  # noqa: E402
from promptcore.errors import UserError  # noqa: E402
from textpt.peft_interop import prompt_tuning_fields, write_peft_adapter  # noqa: E402
from vlmpt.peft_export import PEFT_GENERATE_WARNING, PEFT_WRONG, peft_generate_is_wrong, save_peft_adapter  # noqa: E402
from vlmpt.synthetic import collate_examples, tiny_backbone, tiny_examples  # noqa: E402

N = 3


def prompted(model_type):
    return promptcore.wrap(tiny_backbone(model_type, seed=3), vlmpt.VLMPromptTuningConfig(num_tokens=N, init_std=1.0)).eval()


def exported(model, folder):
    """save_peft_adapter, checking that it warns exactly where the installed PEFT's cached generate may be wrong."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        save_peft_adapter(model, folder)
    expected = [PEFT_GENERATE_WARNING] if peft_generate_is_wrong(model.backbone.config.model_type) else []
    assert [str(w.message) for w in caught if issubclass(w.category, UserWarning)] == expected


def one_example(model):
    """One example without padding: PEFT puts its prompt before left padding and drops position ids."""
    return collate_examples(tiny_examples(model.backbone, 1, seed=1))


def peft_logits(folder, model_type, batch):
    loaded = peft.PeftModel.from_pretrained(tiny_backbone(model_type, seed=3), str(folder))
    with torch.no_grad():
        return loaded(**batch).logits[:, N:][batch["attention_mask"].bool()]


@pytest.mark.parametrize("model_type", ["llava", "llava_onevision", "idefics3"])
def test_peft_loads_the_adapter_with_the_same_logits(model_type, tmp_path):
    model = prompted(model_type)
    batch = one_example(model)
    with torch.no_grad():
        ours = model(**batch)[batch["attention_mask"].bool()]
        plain = model.backbone(**batch).logits[batch["attention_mask"].bool()]
    assert not torch.allclose(ours[-4:], plain[-4:], atol=1e-3)  # the prompt changes the outputs
    exported(model, tmp_path / "adapter")
    adapter = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert (adapter["peft_type"], adapter["task_type"], adapter["num_virtual_tokens"]) == ("PROMPT_TUNING", "CAUSAL_LM", N)
    torch.testing.assert_close(peft_logits(tmp_path / "adapter", model_type, batch), ours, rtol=0, atol=1e-5)


@pytest.mark.parametrize("model_type", ["qwen2_vl", "paligemma"])
def test_families_where_peft_is_wrong_are_refused(model_type, tmp_path):
    model = prompted(model_type)
    with pytest.raises(UserError, match=f"PEFT export of a {model_type} prompt is refused: PEFT (calls|drops)"):
        save_peft_adapter(model, tmp_path / "adapter")
    # the reason holds: the same tensor written as an adapter gives PEFT other logits than the prompt's
    write_peft_adapter(tmp_path / "forced", model.prompts.weight, prompt_tuning_fields(model.backbone, model.prompts.weight), "CAUSAL_LM", "tiny")
    batch = one_example(model)
    with torch.no_grad():
        ours = model(**batch)[batch["attention_mask"].bool()]
    assert (peft_logits(tmp_path / "forced", model_type, batch) - ours).abs().max() > 1e-4


def test_other_methods_are_refused(tmp_path):
    assert set(PEFT_WRONG) == {"qwen2_vl", "qwen2_5_vl", "paligemma"}
    model = promptcore.wrap(tiny_backbone("llava", seed=3), vlmpt.VLMPrefixConfig(num_tokens=2))
    with pytest.raises(UserError, match=r"PEFT export takes a vlm_prompt_tuning prompt .*\(method 'vlm_prefix'\)"):
        save_peft_adapter(model, tmp_path / "adapter")


@pytest.mark.parametrize("model_type", ["llava", "idefics3"])
def test_peft_cached_generate_departs_from_the_prompts_before_peft_0_22_only(model_type, tmp_path):
    """The reason of the export's warning: before PEFT 0.22 its cached generate drifts, its generate without cache does
    not; from 0.22 both give vlmpt's tokens, and the export does not warn."""
    model = prompted(model_type)
    right = not peft_generate_is_wrong(model_type)
    exported(model, tmp_path / "adapter")
    loaded = peft.PeftModel.from_pretrained(tiny_backbone(model_type, seed=3), str(tmp_path / "adapter")).eval()
    batch = collate_examples(tiny_examples(model.backbone, 1, seed=3 if model_type == "idefics3" else 2))
    with torch.no_grad():
        ours = model.generate(10, None, **batch)
        cached, plain = (loaded.generate(**batch, max_new_tokens=10, do_sample=False, eos_token_id=None, use_cache=c) for c in (True, False))
    length = batch["input_ids"].shape[1]
    assert torch.equal(plain[:, length:], ours) and torch.equal(cached[:, length:], ours) is right
