"""The presets under configs/textpt: each says where every value it sets comes from (its ``source:`` block), and the
paper presets hold the values their official code runs with (each pinned here with the file it was read from)."""

import re
from pathlib import Path

import pytest

from promptcore.config import load_config, read_yaml
from textpt.dept import rank_for_budget
from textpt.run_config import TextRunConfig

ROOT = Path(__file__).resolve().parents[2]
PRESETS = sorted((ROOT / "configs" / "textpt").glob("*.yaml"))
# The official repositories a source may name (a name outside this list is a typo or an unread repository).
REPOSITORIES = {"google-research/prompt-tuning", "google-research/t5x", "XiangLi1999/PrefixTuning", "THUDM/P-tuning", "ZhengxiangShi/DePT"}


def set_keys(raw: dict, section: str) -> set[str]:
    return {f"{section}.{k}" for k in raw.get(section, {}) if k != "method"}


@pytest.mark.parametrize("path", PRESETS, ids=[p.name for p in PRESETS])
def test_every_value_a_preset_sets_names_its_origin(path):
    raw = read_yaml(path)
    sources = raw.get("source") or {}
    missing = (set_keys(raw, "prompt") | set_keys(raw, "train")) - set(sources)
    assert not missing, f"{path.name}: source: gives no origin for {sorted(missing)}"
    load_config(TextRunConfig, path)  # every source key is a field of the run config (check_sources)
    for key, origin in sources.items():
        if origin.startswith(("local: ", "differs: ")):
            continue
        repo = origin.split(" ", 1)[0]
        assert repo in REPOSITORIES, f"{path.name}: source.{key} names {repo!r}, not one of the official repositories {sorted(REPOSITORIES)}"
        assert re.match(rf"{re.escape(repo)} \S+\.(py|gin|sh|md|json|log)\b", origin), f"{path.name}: source.{key} gives no file of {repo}: {origin!r}"


def preset(name: str) -> TextRunConfig:
    return load_config(TextRunConfig, ROOT / "configs" / "textpt" / name)


def test_lester_preset_is_the_official_sst2_demo():
    cfg = preset("t5_prompt_tuning_lester.yaml")
    assert cfg.model.name == "hf:google/t5-base-lm-adapt" and cfg.model.task == "seq2seq"
    p, t = cfg.prompt, cfg.train
    assert (p.method, p.num_tokens, p.init, p.init_vocab_size) == ("prompt_tuning", 100, "class_labels", 5000)
    assert (t.optimizer, t.lr, t.weight_decay, t.scheduler, t.adafactor_start_step) == ("adafactor_t5x", 0.3, 1e-5, "constant", 1_100_000)
    assert (t.batch_size, t.max_steps) == (128, 50_000)
    assert (cfg.data.template, cfg.data.max_length) == ("sentence: {sentence}", 512)


def test_prefix_preset_is_train_e2e():
    cfg = preset("gpt2_prefix_tuning.yaml")
    p, t = cfg.prompt, cfg.train
    assert (p.method, p.num_tokens) == ("prefix", 10)
    assert (t.optimizer, t.lr, t.weight_decay, t.scheduler, t.warmup_steps, t.batch_size, t.epochs, t.seed) == ("adamw", 5e-5, 0.0, "linear", 0, 10, 5, 101)
    # ' {src} <|endoftext|> {tgt} <|endoftext|>', the loss on the target (the encoder appends the final EOS)
    assert (cfg.data.template, cfg.data.target_template) == (" {meaning_representation} <|endoftext|>", " {target} ")


def test_p_tuning_preset_has_the_official_encoder_and_optimiser():
    cfg = preset("smollm2_p_tuning_lstm.yaml")
    p, t = cfg.prompt, cfg.train
    assert (p.method, p.reparam, p.num_tokens, p.init, p.init_std) == ("p_tuning", "lstm", 9, "random", 1.0)
    assert (t.optimizer, t.lr, t.weight_decay, t.batch_size, t.epochs) == ("adam", 1e-5, 5e-4, 8, 100)
    assert t.callbacks == [{"name": "early_stopping", "patience": 20}]


def test_dept_preset_is_the_released_sst2_checkpoint():
    # ZhengxiangShi/DePT checkpoints/sst2: adapter_config.json (60 tokens, r 30, max_length 256, lora_alpha 8) and
    # output.log (lr 0.3, lora_embedding_lr 5e-4, 30,000 steps, max_grad_norm 1.0); the README's example grid point
    # (40 tokens, rank 45, 5e-3, 40,000 steps) is not the released run
    cfg = preset("t5_dept_glue.yaml")
    p, t = cfg.prompt, cfg.train
    assert (p.method, p.num_tokens, p.rank, p.max_length, p.alpha) == ("dept", 60, 30, 256, 8.0)
    assert p.rank == rank_for_budget(100, p.num_tokens, 768, p.max_length)  # t5-base's width: a 100-token budget
    assert (p.init, p.init_text_special_tokens) == ("text", True)
    assert (t.optimizer, t.lr, t.param_groups, t.weight_decay) == ("adamw", 0.3, {"lora": {"lr": 5e-4}}, 0.0)
    assert (t.scheduler, t.warmup_steps, t.batch_size, t.max_steps, t.grad_clip) == ("linear", 500, 32, 30_000, 1.0)
    assert (t.metric, t.metric_mode) == ("loss", "min")
    assert cfg.data.max_length == p.max_length


@pytest.mark.download
@pytest.mark.parametrize("name", ["minilm_seq_cls.yaml", "minilm_linear_probe.yaml"])
def test_minilm_presets_pool_by_the_mean_their_headers_name(name):
    # all-MiniLM-L6-v2 is a sentence-transformers model: model.pooling auto resolves to its 1_Pooling mean
    from types import SimpleNamespace

    from textpt import assets
    from textpt.tasks import TASKS

    cfg = preset(name)
    backbone = SimpleNamespace(pooler=object(), config=SimpleNamespace(name_or_path=str(assets.model_path("minilm_l6")), model_type="bert"))
    assert cfg.model.pooling == "auto"
    assert TASKS.get(cfg.model.task).resolve_pooling(backbone, cfg.model.pooling) == "mean"
    header = (ROOT / "configs" / "textpt" / name).read_text().split("\nmodel:", 1)[0]
    assert "mean" in header and "[CLS]" not in header, f"{name}: the header should say the head reads the mean-pooled output"
