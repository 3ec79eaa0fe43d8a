"""The demo's configs and baselines (demo/): every YAML validates, and each baseline is exactly the library's model
with the prompt taken out (checked against the plain backbone in float64, on tiny offline models)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]

from demo.baselines import evaluate  # noqa: E402
from demo.run_demo import HUB_NAMES, DemoConfig, _eval_subset, load_task_config, load_task_configs  # noqa: E402
from promptcore import load_config  # noqa: E402


def test_every_demo_config_validates():
    demo = load_config(DemoConfig, ROOT / "configs/demo/demo.yaml")
    assert [t.name for t in demo.tasks] == ["vision", "text_encoder", "causal_lm"]
    listed = set()
    for task in demo.tasks:
        cfg = load_task_config(task, [], hub=False)
        assert cfg.model.name.startswith("asset:") and cfg.data.source == "asset"
        hub = load_task_config(task, [], hub=True)
        assert hub.model.name == HUB_NAMES[cfg.model.name]["model.name"]
        listed.add(task.config)
        methods = load_task_configs(task, [], hub=False)  # the further methods: same model and data, another method
        assert len(methods) == 1 + len(task.more)
        for extra, other in zip(task.more, methods[1:]):
            assert other.model == cfg.model and other.data == cfg.data and other.prompt.method != cfg.prompt.method
            listed.add(extra.config)
    assert listed == {f"configs/demo/{p.name}" for p in (ROOT / "configs/demo").glob("*.yaml") if p.name != "demo.yaml"}


def test_eval_subset_is_fixed_and_seeded():
    data = list(range(100))
    a, b = _eval_subset(data, 10, 0), _eval_subset(data, 10, 0)
    assert list(a) == list(b) and len(a) == 10 and list(a) == sorted(a)
    assert _eval_subset(data, None, 0) is data and _eval_subset(data, 500, 0) is data


def _tiny_vit():
    import timm

    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
                             embed_dim=64, num_heads=2, num_classes=0).double()  # fmt: skip


# The demo's baselines are the library's head-only methods (demo/run_demo.py builds them as below).


def test_vision_linear_probe_is_the_head_on_unprompted_features():
    import vpt
    from vpt.backbones import family_of

    backbone = _tiny_vit()
    probe = vpt.wrap(backbone, vpt.LinearProbeConfig(num_classes=3)).double()
    x = torch.randn(5, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        expected = family_of(backbone).pooled_features(backbone, x) @ probe.head.weight[0].T + probe.head.bias[0]
        assert torch.allclose(probe(x), expected, atol=1e-12, rtol=0)
    assert [n for n, _ in probe.named_prompt_parameters()] == ["head.weight", "head.bias"]
    assert probe.prompt_config()["method"] == "linear_probe"
    probe.training_step({"pixel_values": x, "labels": torch.tensor([0, 1, 2, 0, 1])}).backward()
    assert {n for n, p in probe.named_parameters() if p.grad is not None} == {"head.weight", "head.bias"}


def _tiny_text(model_type: str, task: str):
    import textpt
    from textpt import LinearProbeConfig, TextModelConfig, ZeroShotConfig, load_model_and_tokenizer

    kwargs = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
              "max_position_embeddings": 64}  # fmt: skip
    torch.manual_seed(0)
    backbone, tok = load_model_and_tokenizer(TextModelConfig(f"random:{model_type}", task=task, dtype="float64", kwargs=kwargs,
                                                             padding_side="left" if task == "causal_lm" else "right"))  # fmt: skip
    if task == "causal_lm":
        config = ZeroShotConfig(num_classes=2, verbalizer=[" excellent", " terrible"])
    else:
        config = LinearProbeConfig(num_classes=2)
    return backbone, tok, textpt.wrap(backbone, config, tokenizer=tok, task=task)


def test_text_linear_probe_is_the_head_on_the_plain_encoder():
    backbone, tok, probe = _tiny_text("bert", "seq_cls")
    batch = tok(["a good movie", "a terrible boring film indeed"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        expected = probe.head(out.pooler_output)
        assert torch.allclose(probe.class_logits(batch["input_ids"], batch["attention_mask"]), expected, atol=1e-12, rtol=0)
    assert [n for n, _ in probe.named_prompt_parameters()] == ["head.weight", "head.bias"]
    assert probe.prompt_config()["method"] == "linear_probe"


def test_zero_shot_scores_the_verbalizer_on_the_plain_causal_lm():
    backbone, tok, zero = _tiny_text("llama", "causal_lm")
    batch = tok(["review : a good movie sentiment :", "review : bad sentiment :"], padding=True, return_tensors="pt")
    ids = [tok(w, add_special_tokens=False)["input_ids"][0] for w in (" excellent", " terrible")]
    with torch.no_grad():
        logits = backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          position_ids=(batch["attention_mask"].cumsum(1) - 1).clamp(min=0)).logits  # fmt: skip
        expected = logits[:, -1].log_softmax(-1)[:, ids]  # left padding: the last position is each row's last token
        assert torch.allclose(zero.class_logits(batch["input_ids"], batch["attention_mask"]), expected, atol=1e-10, rtol=0)
    assert list(zero.prompt_parameters()) == [] and zero.prompt_config()["method"] == "zero_shot"
    rows = [{"input_ids": batch["input_ids"][i], "attention_mask": batch["attention_mask"][i], "labels": torch.tensor(i)} for i in range(2)]

    def collate(items):
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}

    metrics = evaluate(zero, rows, collate, batch_size=2, desc="test")
    assert metrics["count"] == 2
    assert metrics["accuracy"] == pytest.approx(float((expected.argmax(-1) == torch.tensor([0, 1])).float().mean()))
