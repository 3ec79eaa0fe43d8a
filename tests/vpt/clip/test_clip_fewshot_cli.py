"""Few-shot sampling, the base-to-new split, seed aggregation, interpretation, the CLI verbs and the configs."""

import json
from pathlib import Path

import pytest
import torch

import promptcore
import vpt.clip as vc
from promptcore.cli import build_parser
from promptcore.data import few_shot_indices
from vpt.cli import VisionRecipe
from vpt.clip.fewshot import ClassSubset, aggregate, base_new_split, dataset_labels, format_aggregate, harmonic_mean
from vpt.clip.interpret import interpret_prompts, nearest_words
from vpt.clip.tokens import get_tokenizer
from vpt.run_config import load_run_config

ROOT = Path(__file__).resolve().parents[3]
LABELS = [0, 1, 2, 0, 1, 2, 0, 1, 0, 2, 0]  # class 0: 5 items, class 1: 3, class 2: 3


def test_few_shot_is_seeded_and_takes_k_per_class():
    a = few_shot_indices(LABELS, 2, seed=1)
    assert a == few_shot_indices(LABELS, 2, seed=1)
    assert sorted(LABELS[i] for i in a) == [0, 0, 1, 1, 2, 2]
    draws = {tuple(few_shot_indices(LABELS, 2, seed=s)) for s in range(10)}
    assert len(draws) > 1
    assert {LABELS[i] for i in few_shot_indices(LABELS, 1, seed=0, classes=[0, 2])} == {0, 2}


def test_k_larger_than_a_class_names_it_or_takes_all():
    with pytest.raises(ValueError, match=r"class 1 \('dog'\) has 3 image\(s\), fewer than shots=4"):
        few_shot_indices(LABELS, 4, seed=0, class_names=["cat", "dog", "car"])
    got = few_shot_indices(LABELS, 4, seed=0, on_short="all")
    assert sorted(LABELS[i] for i in got).count(1) == 3 and sorted(LABELS[i] for i in got).count(0) == 4


def test_base_new_split_and_class_subset_relabel():
    assert base_new_split(5) == ([0, 1, 2], [3, 4])
    assert base_new_split(4) == ([0, 1], [2, 3])
    items = [{"pixel_values": torch.zeros(1), "labels": y} for y in LABELS]
    subset = ClassSubset(items, [2, 1])
    assert len(subset) == 6 and sorted(subset.labels) == [0, 0, 0, 1, 1, 1]
    assert all(subset[i]["labels"] == (0 if LABELS[subset.indices[i]] == 2 else 1) for i in range(len(subset)))
    assert dataset_labels(items) == LABELS


def test_harmonic_mean_and_mean_std_over_seeds():
    assert harmonic_mean(0.8, 0.6) == pytest.approx(2 * 0.8 * 0.6 / 1.4)
    agg = aggregate([{"base": 0.8, "new": 0.6}, {"base": 0.6, "new": 0.6}])
    assert agg["base"][0] == pytest.approx(0.7) and agg["base"][1] == pytest.approx(0.1414213, rel=1e-5)
    assert agg["new"] == (pytest.approx(0.6), 0.0)
    assert format_aggregate(agg)["base"] == "70.00 ± 14.14"


def tiny_clip():
    import open_clip

    torch.manual_seed(0)
    return open_clip.CLIP(
        embed_dim=32,
        vision_cfg=dict(layers=1, width=64, head_width=32, patch_size=8, image_size=32),
        text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=1),
    )


def test_interpret_finds_the_words_the_context_was_initialised_with(tmp_path):
    clip = tiny_clip()
    model = promptcore.wrap(clip, vc.CoOpConfig(class_names=["cat", "dog"], n_ctx=4, ctx_init="a photo of a"))
    model.save_prompts(tmp_path / "p")
    rows = interpret_prompts(tmp_path / "p", clip, get_tokenizer(None, 77), top_k=3)
    assert [r["words"][0][0] for r in rows] == ["a", "photo", "of", "a"]
    assert all(r["words"][0][1] == pytest.approx(0.0, abs=1e-5) for r in rows)
    with pytest.raises(ValueError, match="context vectors have width 64 but the text tower's token embedding has width 8"):
        nearest_words(torch.zeros(2, 64), torch.zeros(10, 8), get_tokenizer(None, 77))


def parse(argv):
    return build_parser(VisionRecipe()).parse_args(argv)


def test_base2new_cli_aggregates_seeds_and_interpret_reads_its_prompts(tmp_path, capsys):
    config = str(ROOT / "configs/clip/smoke_coop_tiny.yaml")
    out = tmp_path / "b2n"
    args = parse(["base2new", "-c", config, "--seeds", "1", "2", "-o", str(out), "--set", "train.max_steps=2"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "seed 1: base" in printed and "| mean ± std |" in printed
    result = json.loads((out / "base2new.json").read_text())
    assert [r["seed"] for r in result["seeds"]] == [1, 2]
    bases = [r["base"] for r in result["seeds"]]
    assert result["mean"]["base"] == pytest.approx(sum(bases) / 2)
    assert result["summary"]["hm"].count("±") == 1
    prompts = out / "seed1" / "last"
    args = parse(["interpret", "--prompts", str(prompts), "-c", config, "--top-k", "2"])
    assert args.func(args) == 0
    assert printed != (text := capsys.readouterr().out) and "ctx 4:" in text


@pytest.mark.parametrize("method, prompt, callbacks", [
    ("promptsrc", "{method: promptsrc, n_ctx: 2, depth: 2, templates: ['a photo of a {}.', 'a drawing of a {}.']}",
     "[{name: gpa, mean: 2, std: 1}]"),
    ("kgcoop", "{method: kgcoop, weight: 8.0, templates: coop:imagenet}", "[]"),
])
def test_base2new_cli_runs_promptsrc_and_kgcoop_on_a_tiny_clip(tmp_path, capsys, method, prompt, callbacks):
    out = tmp_path / method
    config = str(ROOT / "configs/clip/smoke_coop_tiny.yaml")
    sets = ["--set", f"prompt={prompt}", "--set", f"train.callbacks={callbacks}", "--set", "train.epochs=2"]
    args = parse(["base2new", "-c", config, "--seeds", "1", "-o", str(out), *sets])
    assert args.func(args) == 0
    captured = capsys.readouterr()
    assert "seed 1: base" in captured.out and "gpa: the run ended" not in captured.err
    result = json.loads((out / "base2new.json").read_text())
    assert result["method"] == method and 0.0 <= result["mean"]["hm"] <= 1.0
    meta = json.loads((out / "seed1" / "last" / "prompt_config.json").read_text())
    assert meta["method"] == method and meta["epoch"] == 1  # the last epoch of 2, numbered from 0
    state = json.loads((out / "seed1" / "state" / "trainer_state.json").read_text())
    if method == "promptsrc":
        assert state["callbacks"]["GaussianPromptAggregation"]["added"] == [0, 1]


@pytest.mark.parametrize("path", sorted((ROOT / "configs/clip").glob("*.yaml")), ids=lambda p: p.name)
def test_every_clip_config_validates(path):
    cfg = load_run_config(path)
    assert isinstance(cfg.prompt, vc.CLIPMethodConfig)


PAPER_PRESETS = sorted(p for p in (ROOT / "configs/clip").glob("*.yaml") if not p.name.startswith("smoke_"))
DATA_FROM_THE_PAPERS = ("shots", "augment", "augment_scale", "interpolation", "mean", "std", "resize", "crop_pct")


@pytest.mark.parametrize("path", PAPER_PRESETS, ids=lambda p: p.name)
def test_every_value_a_paper_preset_sets_names_its_source(path):
    """Each key set under prompt: and train:, and the data keys that come from the papers, has an origin in
    source: (an official file, a paper table, or 'differs:' / 'local:' with the reason)."""
    from promptcore.config import read_yaml

    raw = read_yaml(path)
    keys = [f"{section}.{k}" for section in ("prompt", "train") for k in raw.get(section, {}) if k not in ("method", "class_names")]
    keys += [f"data.{k}" for k in DATA_FROM_THE_PAPERS if k in raw.get("data", {})]
    assert keys and sorted(set(keys) - set(raw.get("source", {}))) == []


def test_vpt_eval_runs_zero_shot_clip_without_prompts(tmp_path, capsys):
    from vpt.cli import main

    argv = ["-c", str(ROOT / "configs/clip/smoke_coop_tiny.yaml"), "--set", "prompt={method: clip_zeroshot}"]
    assert main(["eval", *argv]) == 0
    out = capsys.readouterr().out
    metrics = json.loads(out[out.index("{") :])
    assert metrics["count"] == 64 and 0.0 <= metrics["accuracy"] <= 1.0
    assert main(["eval", *argv, "--set", "prompt={method: coop, n_ctx: 2}"]) == 2
    assert "--prompts: required" in capsys.readouterr().err


@pytest.mark.slow
def test_a_config_naming_a_clip_method_loads_the_plugin_from_python():
    import subprocess
    import sys

    code = (
        "import sys, vpt; assert 'vpt.clip' not in sys.modules; "
        f"cfg = vpt.load_run_config({str(ROOT / 'configs/clip/smoke_coop_tiny.yaml')!r}); "
        "assert type(cfg.prompt).__name__ == 'CoOpConfig' and 'vpt.clip' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
