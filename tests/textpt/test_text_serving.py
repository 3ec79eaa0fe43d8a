"""Prompt folders that carry what inference needs (textpt.load_prompted) and the ``text`` serving backend."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

import textpt
from promptcore import PromptFileError, UserError, read_prompt_config
from promptcore.config import load_config
from promptcore.serving import BACKENDS, LimitError, Limits, LoadedPrompt, backend_for
from textpt.cli import TextRecipe, main
from textpt.run_config import TextRunConfig

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "smoke" / "textpt_tiny.yaml")
FAST = ["--set", "train.max_steps=2", "--set", "data.num_samples=16", "--set", "data.num_eval_samples=8", "--set", "train.batch_size=8"]
BERT = ["--set", "model.task=seq_cls", "--set", "model.name=random:bert"]
T5 = ["--set", "model.task=seq2seq", "--set", "model.name=random:t5", "--set", "model.kwargs={d_model: 32, d_ff: 64, d_kv: 16, num_layers: 2, num_heads: 2}"]
GENERATION = ["--set", "data.source=csv", "--set", "data.target_column=answer", "--set", "data.template='question : {question} answer :'",
              "--set", "data.text_column=question", "--set", "data.label_column=null"]


def train(tmp_path, name, *argv):
    run = tmp_path / name
    assert main(["train", "-c", SMOKE, "-o", str(run), *FAST, *argv]) == 0
    return run / "best"


def qa_csv(tmp_path):
    rows = [{"question": f"one plus {w}", "answer": w} for w in ("one", "two", "three", "four")] * 4
    pd.DataFrame(rows).to_csv(tmp_path / "qa.csv", index=False)
    return ["--set", f"data.data_files={{train: {tmp_path / 'qa.csv'}, test: {tmp_path / 'qa.csv'}}}"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three folders trained on one random llama (same seed: same weights) and one on a random bert."""
    tmp = tmp_path_factory.mktemp("runs")
    return {
        "verbalizer": train(tmp, "verbalizer"),
        "prefix": train(tmp, "prefix", "--set", "prompt.method=prefix", "--set", "prompt.verbalizer=[' good', ' bad', ' fine']", "--set", "data.num_classes=3"),
        "generate": train(tmp, "generate", *GENERATION, *qa_csv(tmp)),
        "seq_cls": train(tmp, "seq_cls", *BERT, "--set", "data.label_names=[negative, positive]"),
    }


def test_prompt_folders_record_what_inference_needs(runs):
    meta = read_prompt_config(runs["seq_cls"])
    assert meta["model"]["name"] == "random:bert" and meta["seed"] == 0
    assert meta["method_config"]["method"] == "prompt_tuning" and meta["method_config"]["num_classes"] == 2
    assert meta["inference"] == {
        "template": "review : {text} sentiment :", "text_column": "text", "max_length": 64, "truncation_side": "right",
        "class_names": ["negative", "positive"], "operation": "classify",
    }
    assert read_prompt_config(runs["generate"])["inference"]["operation"] == "generate"


@pytest.mark.parametrize("run", ["verbalizer", "seq_cls"])
def test_load_prompted_rebuilds_the_trained_model_without_config_or_data(runs, run):
    loaded = textpt.load_prompted(runs[run])
    argv = [] if run == "verbalizer" else BERT
    recipe = TextRecipe()
    cfg = recipe.resolve_config(load_config(TextRunConfig, SMOKE, [a for a in argv if a != "--set"]))
    from promptcore.trainer import seed_everything

    seed_everything(0)
    reference = recipe.build_model(cfg)
    reference.load_prompts(runs[run])
    reference.eval()
    ids = torch.tensor([loaded.input_format.encode(loaded.tokenizer, "a good movie")])
    with torch.no_grad():
        torch.testing.assert_close(loaded.class_logits(ids, torch.ones_like(ids)), reference.class_logits(ids, torch.ones_like(ids)), atol=1e-6, rtol=1e-6)
    assert loaded.backbone_fingerprint() == read_prompt_config(runs[run])["backbone_fingerprint"]


def test_load_prompted_refuses_a_folder_without_method_config(runs, tmp_path):
    model = textpt.load_prompted(runs["verbalizer"])
    model.__dict__["_prompt_file_records"] = {}
    model.save_prompts(tmp_path / "old")
    with pytest.raises(PromptFileError, match="records no method_config.*textpt.wrap"):
        textpt.load_prompted(tmp_path / "old", model.backbone, model.tokenizer)


def test_generate_uses_recorded_label_names_without_the_data(tmp_path, capsys):
    rows = [{"text": f"{w} movie", "label": lab} for w, lab in (("good", "fresh"), ("bad", "rotten"))] * 8
    pd.DataFrame(rows).to_csv(tmp_path / "reviews.csv", index=False)
    data = ["--set", "data.source=csv", "--set", f"data.data_files={{train: {tmp_path / 'reviews.csv'}}}", "--set", "data.eval_split=null",
            "--set", "prompt.num_classes=2"]
    folder = train(tmp_path, "csv", *BERT, *data, "--set", "data.label_names=[rotten, fresh]").parent / "last"  # no eval split: no best/
    (tmp_path / "reviews.csv").unlink()  # generate no longer needs the training data for the label names
    capsys.readouterr()
    assert main(["generate", "-c", SMOKE, "--prompts", str(folder), "a good movie", *BERT, *data]) == 0
    out = capsys.readouterr().out
    assert "rotten" in out and "fresh" in out


# ----- the backend ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def llama(runs):
    return backend_for("text")(None, [runs["verbalizer"]], torch.device("cpu"), Limits(max_input_tokens=40, max_new_tokens=8))


def test_text_backend_is_registered():
    assert BACKENDS.get("text") is textpt.serving.build_text_backend


def test_open_prompt_lists_the_prompt(llama, runs):
    p = llama.open_prompt(runs["prefix"], "sentiment3")
    assert isinstance(p, LoadedPrompt) and all(t.device.type == "cpu" for t in p.model.prompt_state_dict().values())
    assert p.info.name == "sentiment3" and p.info.method == "prefix" and p.info.operations == ("classify",)
    assert len(p.info.classes) == 3
    assert p.info.num_parameters == sum(t.numel() for t in p.model.prompt_state_dict().values())
    g = llama.open_prompt(runs["generate"], "qa")
    assert g.info.operations == ("generate",) and g.info.classes is None and g.info.task == "generation"


def test_open_prompt_refuses_other_weights_and_other_tasks(llama, runs, tmp_path):
    with pytest.raises(PromptFileError, match="weights fingerprint .* the served backbone 'random:llama' has"):
        other = train(tmp_path, "other", "--set", "train.seed=3")
        llama.open_prompt(other, "x")
    with pytest.raises(PromptFileError, match="records weights fingerprint .*backbone 'random:bert'"):
        llama.open_prompt(runs["seq_cls"], "x")
    shutil.copytree(runs["verbalizer"], tmp_path / "edited")
    config = json.loads((tmp_path / "edited" / "prompt_config.json").read_text())
    (tmp_path / "edited" / "prompt_config.json").write_text(json.dumps({**config, "task": "seq2seq"}))
    with pytest.raises(PromptFileError, match="has task 'seq2seq' .*the served backbone 'random:llama' has task 'causal_lm'"):
        llama.open_prompt(tmp_path / "edited", "x")
    with pytest.raises(PromptFileError, match="does not exist"):
        llama.open_prompt(tmp_path / "nothing", "x")


def test_mixed_classify_and_generate_through_the_backend(llama, runs):
    a, b, g = llama.open_prompt(runs["verbalizer"], "a"), llama.open_prompt(runs["prefix"], "b"), llama.open_prompt(runs["generate"], "g")
    requests = [llama.prepare(p, "classify", text, {"top_k": 2}) for p, text in ((a, "a good movie"), (b, "a boring film"), (a, "bad"))]
    answers = llama.classify(requests)
    for request, answer in zip(requests, answers):
        ids = torch.tensor([request.input])
        with torch.no_grad():
            probs = request.prompt.model.class_logits(ids, torch.ones_like(ids))[0].float().softmax(-1)
        assert answer.indices == probs.topk(2).indices.tolist()
        assert answer.scores == pytest.approx(probs.topk(2).values.tolist(), abs=1e-5)
        assert answer.labels == [request.prompt.info.classes[i] for i in answer.indices]

    gen = [llama.prepare(g, "generate", "one plus two", {"max_tokens": n, "temperature": 0}) for n in (3, 5)]
    steps = list(llama.generate(gen))
    assert len(steps) == 5 and steps[-1][0] is None and steps[2][0].finish_reason == "length" and steps[4][1].finish_reason == "length"
    ids = torch.tensor([gen[1].input])
    want = g.model.generate(ids, torch.ones_like(ids), max_new_tokens=5, do_sample=False, eos_token_id=None)[0].tolist()
    assert [s[1].token_ids[0] for s in steps] == want
    text = "".join(s[1].text for s in steps)
    assert text == g.model.tokenizer.decode(want, skip_special_tokens=True)


def test_sampling_is_seeded_per_request(llama, runs):
    g = llama.open_prompt(runs["generate"], "g")
    request = lambda seed: llama.prepare(g, "generate", "one plus one", {"max_tokens": 6, "temperature": 5.0, "seed": seed})
    alone = [s[0].token_ids for s in llama.generate([request(1)]) if s[0] is not None]
    together = [s[1].token_ids for s in llama.generate([request(2), request(1)]) if s[1] is not None]
    assert alone == together
    other = [s[0].token_ids for s in llama.generate([request(2)]) if s[0] is not None]
    assert other != alone


def test_stop_strings_end_the_text_before_them(llama, runs):
    g = llama.open_prompt(runs["generate"], "g")
    free = llama.prepare(g, "generate", "one plus one", {"max_tokens": 8, "temperature": 0})
    text = "".join(s[0].text for s in llama.generate([free]) if s[0] is not None)
    words = text.split()
    assert len(words) >= 3
    stop = " " + words[2]
    stopped = llama.prepare(g, "generate", "one plus one", {"max_tokens": 8, "temperature": 0, "stop": [stop]})
    steps = [s[0] for s in llama.generate([stopped]) if s[0] is not None]
    assert "".join(s.text for s in steps) == text[: text.index(stop)]
    assert steps[-1].finish_reason == "stop"


@pytest.mark.parametrize("params,error,match", [
    ({"max_tokens": 0}, UserError, "max_tokens: must be at least 1"),
    ({"max_tokens": 9}, LimitError, "max_tokens: 9 is over the limit of 8"),
    ({"temperature": -1}, UserError, "temperature: must be 0"),
    ({"top_p": 0}, UserError, r"top_p: must be in \(0, 1\]"),
    ({"top_p": 1.5}, UserError, r"top_p"),
    ({"seed": "x"}, UserError, "seed: must be an integer"),
    ({"stop": [""]}, UserError, "stop:"),
    ({"max_token": 3}, UserError, "max_token: not a parameter of generate.*max_tokens"),
])
def test_bad_parameters_name_the_field(llama, runs, params, error, match):
    g = llama.open_prompt(runs["generate"], "g")
    with pytest.raises(error, match=match):
        llama.prepare(g, "generate", "one plus one", params)


def test_bad_inputs_and_limits(llama, runs):
    g, a = llama.open_prompt(runs["generate"], "g"), llama.open_prompt(runs["verbalizer"], "a")
    with pytest.raises(LimitError, match="input: .* tokens after the prompt's template, over the limit of 40"):
        llama.prepare(a, "classify", "good " * 60, {})
    with pytest.raises(UserError, match="messages: the tokenizer of random:llama has no chat template"):
        llama.prepare(g, "generate", [{"role": "user", "content": "hi"}], {})
    with pytest.raises(UserError, match=r"messages\[0\]: each message needs"):
        llama.prepare(g, "generate", [{"role": "user"}], {})
    with pytest.raises(UserError, match="input: expected a string"):
        llama.prepare(g, "generate", 3, {})
    with pytest.raises(UserError, match="operation: prompt 'a' classifies; it cannot generate"):
        llama.prepare(a, "generate", "text", {})


def test_chat_messages_go_through_the_chat_template(llama, runs):
    g = llama.open_prompt(runs["generate"], "g")
    llama.tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}answer :"
    try:
        request = llama.prepare(g, "generate", [{"role": "user", "content": "one plus two"}], {"max_tokens": 2})
    finally:
        llama.tokenizer.chat_template = None
    assert request.input == llama.tokenizer("user : one plus two answer :", add_special_tokens=False)["input_ids"]


def test_seq_cls_backend_and_seq2seq_scoring(runs, tmp_path):
    bert = backend_for("text")(None, [runs["seq_cls"]], torch.device("cpu"), Limits())
    p = bert.open_prompt(runs["seq_cls"], "sst")
    [answer] = bert.classify([bert.prepare(p, "classify", "a good movie", {"top_k": 1})])
    assert answer.labels[0] in ("negative", "positive") and len(answer.scores) == 1
    folder = train(tmp_path, "t5", *T5)
    t5 = backend_for("text")(None, [folder], torch.device("cpu"), Limits())
    q = t5.open_prompt(folder, "t5")
    [answer] = t5.classify([t5.prepare(q, "classify", "a good movie", {})])
    assert sorted(answer.labels) == ["excellent", "terrible"] and sum(answer.scores) == pytest.approx(1, abs=1e-5)


# ----- transformers pipelines -------------------------------------------------------------------------------------
def test_text_generation_pipeline_runs_the_prompted_model(runs):
    import transformers

    model = textpt.load_prompted(runs["generate"])
    assert model.device == torch.device("cpu") and model.can_generate() and model.generation_config is model.backbone.generation_config
    pipe = transformers.pipeline("text-generation", model=model.for_transformers(), tokenizer=model.tokenizer)
    text = "question : one plus two answer :"
    [out] = pipe(text, max_new_tokens=4, do_sample=False, eos_token_id=None, return_full_text=False)
    ids = torch.tensor([model.tokenizer(text)["input_ids"]])
    want = model.generate(ids, torch.ones_like(ids), max_new_tokens=4, do_sample=False, eos_token_id=None)[0]
    assert out["generated_text"] == model.tokenizer.decode(want, skip_special_tokens=True)


def test_text_classification_pipeline_gives_the_prompt_classes(runs):
    import transformers

    model = textpt.load_prompted(runs["seq_cls"])
    pipe = transformers.pipeline("text-classification", model=model.for_transformers(), tokenizer=model.tokenizer, top_k=None)
    text = "review : a good movie sentiment :"
    [out] = pipe([text])
    ids = torch.tensor([model.tokenizer(text)["input_ids"]])
    with torch.no_grad():
        probs = model.class_logits(ids, torch.ones_like(ids))[0].softmax(-1)
    assert {o["label"]: o["score"] for o in out} == pytest.approx({"negative": float(probs[0]), "positive": float(probs[1])}, abs=1e-6)
