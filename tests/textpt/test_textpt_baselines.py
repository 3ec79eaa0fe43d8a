"""The baselines as methods: ``linear_probe`` is the trained head on the frozen encoder's pooled features,
``zero_shot`` the frozen model scoring the label words (nothing trains); both from Python and through the CLI,
each checked against the plain backbone in float64."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import textpt
from promptcore import PromptFileError, TrainConfig, Trainer, load_prompt_files
from textpt import LinearProbeConfig, TextModelConfig, ZeroShotConfig, load_model_and_tokenizer
from textpt.cli import main
from textpt.data import TextCollator
from tiny_text import TINY_CONFIGS

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "smoke" / "textpt_tiny.yaml")
FAST = ["--set", "train.max_steps=3", "--set", "data.num_samples=24", "--set", "data.num_eval_samples=8", "--set", "train.batch_size=8"]
TEXTS = ["review : a good movie sentiment :", "review : bad sentiment :", "review : a terrible boring film indeed sentiment :"]
WORDS = ["excellent", "terrible"]


def load(model_type: str, task: str, side: str):
    torch.manual_seed(0)
    return load_model_and_tokenizer(
        TextModelConfig(f"random:{model_type}", task=task, dtype="float64", kwargs=TINY_CONFIGS[model_type], padding_side=side)
    )


def test_linear_probe_is_the_head_on_the_plain_encoders_pooled_features(tmp_path):
    backbone, tok = load("bert", "seq_cls", "right")
    probe = textpt.wrap(backbone, LinearProbeConfig(num_classes=3), tokenizer=tok)
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        pooled = backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).pooler_output
        torch.testing.assert_close(probe(batch["input_ids"], batch["attention_mask"]), probe.head(pooled), rtol=0, atol=1e-12)
    assert [n for n, _ in probe.named_prompt_parameters()] == ["head.weight", "head.bias"]
    assert probe.num_prompt_tokens == 0 and probe.metric_names() == ("loss", "accuracy")
    probe.training_step({**batch, "labels": torch.tensor([0, 1, 2])}).backward()
    assert {n for n, p in probe.named_parameters() if p.grad is not None} == {"head.weight", "head.bias"}
    probe.save_prompts(tmp_path / "p")
    tensors, meta = load_prompt_files(tmp_path / "p")
    assert set(tensors) == {"head.weight", "head.bias"} and meta["method"] == "linear_probe" and meta["num_tokens"] == 0


def test_linear_probe_needs_an_encoder_classifier():
    backbone, tok = load("gpt2", "causal_lm", "left")
    with pytest.raises(ValueError, match=r"method: linear_probe is implemented for seq_cls models, not causal_lm; a causal_lm model runs .*prompt_tuning"):
        textpt.wrap(backbone, LinearProbeConfig(num_classes=2), tokenizer=tok)


def test_zero_shot_scores_the_verbalizer_on_the_plain_causal_lm():
    backbone, tok = load("llama", "causal_lm", "left")
    zero = textpt.wrap(backbone, ZeroShotConfig(verbalizer=[" " + w for w in WORDS]), tokenizer=tok)
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    ids = [tok(" " + w, add_special_tokens=False)["input_ids"][0] for w in WORDS]
    with torch.no_grad():
        positions = (batch["attention_mask"].cumsum(1) - 1).clamp(min=0)
        logits = backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=positions).logits
        expected = logits[:, -1].log_softmax(-1)[:, ids]  # left padding: the last position is each row's last token
        torch.testing.assert_close(zero(batch["input_ids"], batch["attention_mask"]), expected, rtol=0, atol=1e-10)
        sums = zero.eval_step({**batch, "labels": torch.tensor([0, 1, 1])})
    assert list(zero.prompt_parameters()) == [] and zero.metric_names() == ("loss", "accuracy")
    assert float(sums["accuracy"]) == float((expected.argmax(-1) == torch.tensor([0, 1, 1])).sum()) and float(sums["count"]) == 3
    # Without a prompt, generation is the backbone's own.
    generated = zero.generate(batch["input_ids"], batch["attention_mask"], max_new_tokens=3, do_sample=False, eos_token_id=None)
    plain = backbone.generate(**batch, max_new_tokens=3, do_sample=False, eos_token_id=None, pad_token_id=tok.pad_token_id)
    assert torch.equal(generated, plain[:, batch["input_ids"].shape[1]:])


def test_zero_shot_scores_the_words_as_targets_of_the_plain_seq2seq_model():
    backbone, tok = load("t5", "seq2seq", "right")
    zero = textpt.wrap(backbone, ZeroShotConfig(verbalizer=WORDS), tokenizer=tok)
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    expected = []
    with torch.no_grad():
        for word in WORDS:
            target = torch.tensor([tok(word, add_special_tokens=True)["input_ids"]] * len(TEXTS))
            logp = backbone(**batch, labels=target).logits.log_softmax(-1)
            expected.append(logp.gather(-1, target.unsqueeze(-1))[..., 0].sum(-1))
        scores = zero(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(scores, torch.stack(expected, -1), rtol=0, atol=1e-10)
    assert zero.metric_names() == ("loss", "accuracy")
    # A seq2seq batch carries the targets and the labels: the zero-shot model is scored on the labels.
    lm_labels = torch.tensor([tok(WORDS[0], add_special_tokens=True)["input_ids"]] * len(TEXTS))
    sums = zero.eval_step({**batch, "lm_labels": lm_labels, "labels": torch.tensor([0, 1, 1])})
    assert set(sums) == {"loss", "accuracy", "count"} and float(sums["count"]) == 3


@pytest.mark.parametrize(
    "model_type, task, config, message",
    [
        ("gpt2", "causal_lm", ZeroShotConfig(), "verbalizer: zero_shot scores one label word per class"),
        ("bert", "seq_cls", ZeroShotConfig(verbalizer=WORDS), r"zero_shot is implemented for causal_lm and seq2seq models, not seq_cls; a seq_cls model runs dept, linear_probe"),
    ],
)
def test_zero_shot_errors(model_type, task, config, message):
    backbone, tok = load(model_type, task, "right")
    with pytest.raises(ValueError, match=message):
        textpt.wrap(backbone, config, tokenizer=tok)


def test_the_trainer_refuses_zero_shot_and_its_prompt_files_hold_nothing(tmp_path):
    backbone, tok = load("gpt2", "causal_lm", "left")
    zero = textpt.wrap(backbone, ZeroShotConfig(verbalizer=WORDS), tokenizer=tok)
    rows = [{"input_ids": [5, 6, 7], "labels": 0}, {"input_ids": [8, 9], "labels": 1}]
    with pytest.raises(ValueError, match="has no prompt parameters to train"):
        Trainer(zero, TrainConfig(epochs=1, progress_bar=False, tensorboard=False), rows, None, TextCollator(tok.pad_token_id, "left"))
    zero.save_prompts(tmp_path / "z")
    assert load_prompt_files(tmp_path / "z")[1]["method"] == "zero_shot"
    other = textpt.wrap(load("gpt2", "causal_lm", "left")[0], ZeroShotConfig(verbalizer=[*WORDS, "fine"]), tokenizer=tok)
    with pytest.raises(PromptFileError, match="number of classes 2 does not match"):
        other.load_prompts(tmp_path / "z")


# ----- through the CLI ------------------------------------------------------------------------------------------------
def _json_out(capsys) -> dict:
    out = capsys.readouterr().out
    return json.loads(out[out.index("{"):])


BERT = ["--set", "model.task=seq_cls", "--set", "model.name=random:bert"]
T5 = ["--set", "model.task=seq2seq", "--set", "model.name=random:t5", "--set", "model.kwargs={d_model: 32, d_ff: 64, d_kv: 16, num_layers: 2, num_heads: 2}"]


def test_linear_probe_through_the_cli(tmp_path, capsys):
    run = tmp_path / "run"
    probe = ["--set", "prompt={method: linear_probe}", *BERT, *FAST]
    assert main(["train", "-c", SMOKE, "-o", str(run), *probe]) == 0
    assert _json_out(capsys)["step"] == 3
    tensors, meta = load_prompt_files(run / "best")
    assert set(tensors) == {"head.weight", "head.bias"} and meta["method"] == "linear_probe" and meta["num_classes"] == 2
    assert main(["eval", "-c", SMOKE, "--prompts", str(run / "best"), *probe]) == 0
    assert 0 <= _json_out(capsys)["accuracy"] <= 1
    assert main(["eval", "-c", SMOKE, *probe]) == 2
    assert "--prompts: required, the prompt folder to evaluate" in (err := capsys.readouterr().err) and "LinearProbeModel has trained parameters" in err


@pytest.mark.parametrize("task", [[], T5], ids=["causal_lm", "seq2seq"])
def test_zero_shot_through_the_cli(task, tmp_path, capsys):
    zero = ["--set", "prompt={method: zero_shot}", *task, *FAST]
    assert main(["train", "-c", SMOKE, "-o", str(tmp_path / "run"), *zero]) == 2
    assert "ZeroShotModel has no prompt parameters to train" in capsys.readouterr().err
    assert main(["eval", "-c", SMOKE, *zero]) == 0
    metrics = _json_out(capsys)
    assert metrics["count"] == 8 and 0 <= metrics["accuracy"] <= 1 and metrics["loss"] > 0
    assert main(["generate", "-c", SMOKE, "a good movie", *zero]) == 0
    out = capsys.readouterr().out
    assert "[1] a good movie" in out and "excellent" in out and "terrible" in out
