"""vlmpt data: rows through the processor and chat template, labels on the answer only, padded batches, local files,
K-shot sampling, and the answer scores."""

import json
import math

import pytest
import torch

import vlmpt
from promptcore import wrap
from promptcore.errors import UserError
from promptcore.stats import binomial_interval, mean_interval
from vlmpt.data import IGNORE, VLMDataConfig, VLMEncoder, build_vlm_data, collate_examples, load_splits
from vlmpt.synthetic import IMAGE, synthetic_rows, tiny_backbone, tiny_processor

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "llava")


def encoder(model_type: str, **data) -> VLMEncoder:
    return VLMEncoder(tiny_processor(model_type), VLMDataConfig(**data))


def rows(n: int = 4, seed: int = 0) -> list[dict]:
    table = synthetic_rows(n, seed)
    return [{k: table[k][i] for k in table} for i in range(n)]


@pytest.mark.parametrize("model_type", FAMILIES)
def test_labels_hold_exactly_the_answer_as_the_tokenizer_tokenizes_it(model_type):
    enc = encoder(model_type)
    processor = enc.processor
    for i, row in enumerate(rows(3)):
        example = enc.encode(row, f"row {i}")
        answer = processor.tokenizer(row["answer"], add_special_tokens=False)["input_ids"] + [processor.tokenizer.eos_token_id]
        kept = example["labels"] != IGNORE
        assert example["labels"][kept].tolist() == answer
        assert kept[-len(answer):].all() and not kept[: -len(answer)].any()  # the answer is the end of the sequence
        # what comes before is the processor's own output for the chat template's text and the image
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": row["question"]}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompt = processor(text=[text], images=[row["image"]], return_tensors="pt")["input_ids"][0]
        assert example["input_ids"][: -len(answer)].tolist() == prompt.tolist()
        assert int((prompt == IMAGE).sum()) > 0
    # the model's targets (labels shifted by one) are the answer tokens too
    batch = collate_examples([enc.encode(r, "row") for r in rows(2)], "left", processor.tokenizer.pad_token_id)
    model = wrap(tiny_backbone(model_type), vlmpt.VLMPromptTuningConfig(num_tokens=2))
    targets = model.targets(batch)
    assert (targets != IGNORE).sum().item() == (batch["labels"] != IGNORE).sum().item()


def test_a_processor_without_chat_template_puts_the_image_token_before_the_text():
    enc = encoder("llava")
    enc.processor.chat_template = None
    assert enc.prompt_text("what colour is it ?") == "<image> what colour is it ?"


def test_qwen_batches_mix_image_sizes_and_a_padded_batch_equals_each_example_alone():
    enc = encoder("qwen2_vl")
    examples = [enc.encode(r, "row", with_references=True) for r in rows(4, seed=3)]
    assert len({tuple(e["image_grid_thw"][0].tolist()) for e in examples}) > 1  # dynamic resolution
    model = wrap(tiny_backbone("qwen2_vl").double(), vlmpt.VLMPromptTuningConfig(num_tokens=3, init_std=1.0)).double()

    def as64(batch):
        return {k: v.double() if k == "pixel_values" else v for k, v in batch.items()}

    pad = enc.tokenizer.pad_token_id
    for side in ("left", "right"):
        batch = as64(collate_examples(examples, side, pad))
        logits = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "labels", "pixel_values", "image_grid_thw")})
        for row, e in enumerate(examples):
            alone = as64(collate_examples([e], side, pad))
            own = model(input_ids=alone["input_ids"], pixel_values=alone["pixel_values"], image_grid_thw=alone["image_grid_thw"])[0]
            torch.testing.assert_close(logits[row][batch["attention_mask"][row].bool()], own, rtol=0, atol=1e-10)
            generated = model.generate(4, input_ids=alone["prompt_ids"], pixel_values=alone["pixel_values"], image_grid_thw=alone["image_grid_thw"])
            together = model.generate(4, input_ids=batch["prompt_ids"], attention_mask=batch["prompt_mask"], pixel_values=batch["pixel_values"], image_grid_thw=batch["image_grid_thw"])
            assert torch.equal(together[row], generated[0])


def test_eval_step_scores_generated_answers_per_row():
    enc = encoder("qwen2_vl")
    batch = collate_examples([enc.encode(r, "row", with_references=True) for r in rows(3)], "left", enc.tokenizer.pad_token_id)
    model = wrap(tiny_backbone("qwen2_vl"), vlmpt.VLMPromptTuningConfig(num_tokens=2))
    assert "exact_match" not in model.eval_step(batch)  # no scorer: token metrics over target tokens
    model.answer_scorer = vlmpt.AnswerScorer(enc.tokenizer, max_new_tokens=3)
    out = model.eval_step(batch)
    assert out["count"].item() == 3 and {"exact_match", "token_f1", "token_f1_sq", "loss", "token_accuracy"} <= set(out)
    new = model.generate(3, enc.tokenizer.eos_token_id, input_ids=batch["prompt_ids"], attention_mask=batch["prompt_mask"],
                         pixel_values=batch["pixel_values"], image_grid_thw=batch["image_grid_thw"])
    answers = model.answer_scorer.decode(new)
    assert out["exact_match"].item() == sum(vlmpt.exact_match(a, r) for a, r in zip(answers, batch["answers"]))
    assert out["token_f1"].item() == pytest.approx(sum(vlmpt.token_f1(a, r) for a, r in zip(answers, batch["answers"])))


def test_answer_scores():
    assert vlmpt.normalize_answer("The  Red, picture!") == "red picture"
    assert vlmpt.exact_match("a red picture", ["Red picture."]) == 1.0
    assert vlmpt.exact_match("red", ["blue", "green"]) == 0.0
    assert vlmpt.token_f1("red picture", ["a red square"]) == pytest.approx(0.5)  # p = 1/2, r = 1/2
    assert vlmpt.token_f1("red", ["blue", "red"]) == 1.0
    out = vlmpt.with_intervals({"exact_match": 0.5, "token_f1": 0.6, "token_f1_sq": 0.5, "count": 20, "loss": 1.0})
    assert "token_f1_sq" not in out and out["loss"] == 1.0
    assert (out["exact_match_low"], out["exact_match_high"]) == binomial_interval(10, 20)
    assert out["token_f1_low"] < 0.6 < out["token_f1_high"]
    sd = math.sqrt((0.5 * 20 - 20 * 0.36) / 19)
    assert out["token_f1_high"] - 0.6 == pytest.approx(1.959964 * sd / math.sqrt(20), rel=1e-5)
    assert mean_interval(7.0, 7.0, 10) == binomial_interval(7, 10)  # scores all 0 or 1: Wilson's


def test_local_image_folder_and_jsonl_and_csv_rows(tmp_path):
    (tmp_path / "images").mkdir()
    table = synthetic_rows(6)
    lines = []
    for i in range(6):
        table["image"][i].save(tmp_path / "images" / f"{i}.png")
        lines.append({"image": f"images/{i}.png", "q": table["question"][i], "a": table["answer"][i]})
    # VQAv2's layout: the annotators' answers as records, scored instead of the answer learned
    votes = [{**r, "votes": [{"answer": r["a"]}, {"answer": "Maybe"}]} for r in lines]
    (tmp_path / "votes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in votes))
    cfg = VLMDataConfig(source="json", data_files={"train": str(tmp_path / "votes.jsonl"), "test": str(tmp_path / "votes.jsonl")},
                        question_column="q", answer_column="a", references_column="votes", template="{q}")
    assert build_vlm_data(cfg, tiny_processor("llava")).eval[1]["answers"] == [table["answer"][1], "Maybe"]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (tmp_path / "rows.csv").write_text("image,q,a\n" + "".join(f"{r['image']},{r['q']},{r['a']}\n" for r in lines))
    processor = tiny_processor("qwen2_vl")
    for source, name in (("json", "rows.jsonl"), ("csv", "rows.csv")):
        cfg = VLMDataConfig(source=source, data_files={"train": str(tmp_path / name), "test": str(tmp_path / name)},
                            question_column="q", answer_column="a", template="{q}")
        bundle = build_vlm_data(cfg, processor)
        assert len(bundle.train) == 6 and bundle.eval[2]["answers"] == [table["answer"][2]]
        expected = VLMEncoder(processor, VLMDataConfig()).encode({k: table[k][2] for k in table}, "row")
        assert torch.equal(bundle.train[2]["input_ids"], expected["input_ids"])
        assert torch.equal(bundle.train[2]["pixel_values"], expected["pixel_values"])
    missing = VLMDataConfig(source="json", data_files={"train": str(tmp_path / "rows.jsonl")}, eval_split=None, image_dir=str(tmp_path / "nowhere"),
                            question_column="q", answer_column="a", template="{q}")
    with pytest.raises(UserError, match=r"train row 0: image file .*nowhere/images/0.png does not exist"):
        build_vlm_data(missing, processor)


def test_k_shot_draws_k_rows_per_class():
    cfg = VLMDataConfig(num_samples=48, shots=2, label_column="label")
    bundle = build_vlm_data(cfg, tiny_processor("qwen2_vl"))
    labels = [bundle.train.rows[i]["label"] for i in range(len(bundle.train))]
    assert sorted(labels) == sorted([c for c in set(labels) for _ in range(2)]) and len(set(labels)) == 6
    by_answer = build_vlm_data(VLMDataConfig(num_samples=48, shots=1), tiny_processor("qwen2_vl"))  # the answer is the class
    assert len(by_answer.train) == 6
    with pytest.raises(UserError, match="fewer than shots=40"):
        build_vlm_data(VLMDataConfig(num_samples=48, shots=40), tiny_processor("qwen2_vl"))


def test_max_length_cuts_the_answer_keeping_its_eos_and_refuses_an_input_without_room():
    processor = tiny_processor("qwen2_vl")
    row = rows(1)[0]
    whole = encoder("qwen2_vl", answer_column="caption").encode(row, "row")
    answer = whole["labels"][whole["labels"] != IGNORE].tolist()
    assert len(answer) == 4  # "a <colour> picture" and EOS
    width = len(whole["input_ids"])
    assert torch.equal(encoder("qwen2_vl", answer_column="caption", max_length=width).encode(row, "row")["input_ids"], whole["input_ids"])
    cut, was_cut = encoder("qwen2_vl", answer_column="caption", max_length=width - 2).encode_counted(row, "row")
    assert was_cut and len(cut["input_ids"]) == width - 2
    assert cut["labels"][cut["labels"] != IGNORE].tolist() == [*answer[:1], answer[-1]]  # its first token, then EOS
    assert torch.equal(cut["input_ids"][: width - 4], whole["input_ids"][: width - 4]) and torch.equal(cut["pixel_values"], whole["pixel_values"])
    with pytest.raises(UserError, match=r"row: the input is \d+ tokens \(\d+ of them the image's\) and leaves no room for an answer token and EOS within data.max_length=\d+; raise data.max_length"):
        encoder("qwen2_vl", answer_column="caption", max_length=width - 3).encode(row, "row")
    # a run counts the cut rows in one warning, and the examples are the cut ones
    table = synthetic_rows(8, 0, "train")
    train = [VLMEncoder(processor, VLMDataConfig(answer_column="caption")).encode({k: table[k][i] for k in table}, "row") for i in range(8)]
    limit = max(int((e["labels"] == IGNORE).sum()) for e in train) + 2  # the longest input and two answer tokens
    cfg = VLMDataConfig(answer_column="caption", max_length=limit, num_samples=8, num_eval_samples=4)
    with pytest.warns(UserWarning, match=r"cut the answers of \d+ of 8 train(, \d+ of 4 eval)? examples longer than data.max_length=") as caught:
        bundle = build_vlm_data(cfg, processor)
    assert len(caught) == 1
    assert bundle.info["train"]["truncated"] == sum(len(e["input_ids"]) > limit for e in train) > 0
    assert [len(bundle.train[i]["input_ids"]) for i in range(8)] == [min(len(e["input_ids"]), limit) for e in train]
    with pytest.raises(UserError, match=r"train row \d+: the input is"):
        build_vlm_data(VLMDataConfig(answer_column="caption", max_length=8, num_samples=8, num_eval_samples=4), processor)


@pytest.mark.parametrize("data, message", [
    ({"max_length": 1}, "max_length: must be a number of tokens, at least 2"),
    ({"source": "hff"}, r"source: 'hff' is not one of synthetic, hf, csv, json, parquet. Did you mean 'hf'"),
    ({"source": "json"}, r"data_files: source 'json' needs a file for split\(s\) \['train', 'test'\]"),
    ({"template": "{question"}, "template: '{question' is not a format string"),
    ({"shots": 0}, "shots: must be a positive number of rows"),
])
def test_bad_data_config_is_refused(data, message):
    with pytest.raises(UserError, match=message):
        VLMDataConfig(**data)


def test_a_missing_column_is_named():
    with pytest.raises(UserError, match=r"split 'train' has no column 'reply'"):
        load_splits(VLMDataConfig(answer_column="reply"))


def test_class_scores_are_the_answer_log_likelihood_of_each_class_word_and_padding_changes_none():
    processor = tiny_processor("qwen2_vl")
    names = ["red", "green", "blue", "yellow", "black", "white"]
    cfg = VLMDataConfig(label_column="label")
    enc = VLMEncoder(processor, cfg, class_names=names)
    scorer = vlmpt.ClassScorer(processor.tokenizer, names)
    model = wrap(tiny_backbone("qwen2_vl").double(), vlmpt.VLMPromptTuningConfig(num_tokens=3, init_std=1.0)).double()
    examples = [enc.encode(r, "row", with_references=True) for r in rows(3, seed=5)]
    batch = collate_examples(examples, "left", processor.tokenizer.pad_token_id)
    batch["pixel_values"] = batch["pixel_values"].double()
    scores = model.class_scores(batch["prompt_ids"], batch["prompt_mask"], scorer.class_ids, pixel_values=batch["pixel_values"], image_grid_thw=batch["image_grid_thw"])
    for row, r in enumerate(rows(3, seed=5)):
        for c in range(len(names)):  # the training loss of the row with class c's word as its answer, summed
            alone = collate_examples([enc.encode({**r, "label": c}, "row")], "left", 0)
            logits = model(input_ids=alone["input_ids"], pixel_values=alone["pixel_values"].double(), image_grid_thw=alone["image_grid_thw"])[:, :-1]
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), model.targets(alone), ignore_index=IGNORE, reduction="sum")
            torch.testing.assert_close(scores[row, c], -nll, rtol=0, atol=1e-10)
    model.answer_scorer = scorer
    out = model.eval_step(batch)
    assert out["accuracy"].item() == sum(names[int(s)] == e["answers"][0] for s, e in zip(scores.argmax(-1), examples))
    with pytest.raises(UserError, match="left-padded"):
        right = collate_examples(examples, "right", 0)
        model.class_scores(right["prompt_ids"], right["prompt_mask"], scorer.class_ids, pixel_values=right["pixel_values"].double(), image_grid_thw=right["image_grid_thw"])
    with pytest.raises(UserError, match=r"task.class_names: 'zebra' and 'giraffe' are the same tokens"):
        vlmpt.ClassScorer(processor.tokenizer, ["zebra", "giraffe"])  # both the unknown word


def test_class_words_come_from_the_label_column():
    assert vlmpt.class_names_of(VLMDataConfig(label_column="label")) == ["red", "green", "blue", "yellow", "black", "white"]
    bundle = build_vlm_data(VLMDataConfig(label_column="label", answer_column="missing"), tiny_processor("llava"), ["a", "b", "c", "d", "e", "f"])
    row = bundle.train.rows[0]
    assert bundle.eval[0]["answers"] == [["a", "b", "c", "d", "e", "f"][bundle.eval.rows[0]["label"]]] and row["label"] in range(6)
    with pytest.raises(UserError, match=r"train row 0: label 3 in column 'label' is not a class index 0..1 of task.class_names"):
        build_vlm_data(VLMDataConfig(label_column="label"), tiny_processor("llava"), ["a", "b"])


def test_a_split_without_a_data_file_is_named_with_the_splits_found():
    with pytest.raises(UserError, match=r"data_files: source 'json' needs a file for split\(s\) \['validation'\], found splits \['test', 'train'\]"):
        VLMDataConfig(source="json", data_files={"train": "rows.jsonl", "test": "rows.jsonl"}, eval_split="validation")
