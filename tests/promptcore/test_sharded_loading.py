"""Sharded loading under FSDP2 (``train.fsdp.sharded_loading``): rank 0 builds the frozen text model, the other
processes build it on the meta device and receive only their shards. One 2-process torchrun launch (gloo) of
scripts/sharded_loading.py trains a random Llama (rotary buffers, its vocabulary sharded), a random GPT-2 (tied embeddings) and a Llama read
from a ``save_pretrained`` folder, each with and without sharded loading; the prompts, the recorded backbone
fingerprints and what each process allocated while the model was set up are compared here. The same launch trains a
float64 Llama with nf4 weights (``model.quantization: nf4``) under FSDP2 and DDP, compared with the 1-process run,
and checks the vocabulary-parallel embedding and LM head (``train.fsdp.shard_vocabulary``) in float64 against the
unsharded model (loss, metrics, logits, gradients, prompts after steps) and a run with it against the 1-process run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from promptcore import UserError
from promptcore.distributed import FSDPConfig, check_sharded_loading
from promptcore.engines import DDPEngine, FSDPEngine

SCRIPTS = Path(__file__).parent / "scripts"
ROOT = Path(__file__).resolve().parents[2]
CASES = ("llama", "gpt2", "folder")


def tiny_llama_folder(path: Path) -> Path:
    """A Llama checkpoint on disk (tied embeddings, 4 layers: no single weight is a large share of the model)."""
    import transformers

    from textpt.loading import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    torch.manual_seed(3)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=128,
        max_position_embeddings=128, initializer_range=0.3, tie_word_embeddings=True,
    )
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sharded_loading")
    folder = tiny_llama_folder(out / "checkpoint")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(SCRIPTS / "sharded_loading.py"), str(out / "runs"), str(folder)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_sharded_loading_gives_the_prompts_of_the_plain_fsdp_run(launched, case):
    runs = launched / "runs"
    for folder in ("last", "best"):
        sharded = load_file(runs / f"{case}_true" / folder / "prompts.safetensors")
        plain = load_file(runs / f"{case}_false" / folder / "prompts.safetensors")
        assert sharded.keys() == plain.keys()
        for key in plain:
            assert torch.equal(sharded[key], plain[key]), f"{case} {folder} {key} differs"
        # The fingerprint of the frozen weights, read on rank 0 before sharding, is the plain run's.
        configs = [json.loads((runs / f"{case}_{mode}" / folder / "prompt_config.json").read_text()) for mode in ("true", "false")]
        assert len(configs[0]["backbone_fingerprint"]) == 16
        assert configs[0]["backbone_fingerprint"] == configs[1]["backbone_fingerprint"]


@pytest.mark.slow
def test_the_fingerprint_of_a_sharded_load_is_checked_when_the_prompts_are_loaded(launched):
    from promptcore import load_config
    from promptcore.trainer import seed_everything
    from textpt.cli import TextRecipe
    from textpt.run_config import TextRunConfig

    prompts = launched / "runs" / "llama_true" / "last"

    def model_with_seed(seed: int):
        cfg = load_config(TextRunConfig, str(ROOT / "configs/smoke/textpt_tiny.yaml"))
        seed_everything(seed)
        return TextRecipe().build_model(cfg)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model_with_seed(0).load_prompts(prompts)  # the training seed: the weights the prompts were trained on
    with pytest.warns(UserWarning, match="with weights fingerprint"):
        model_with_seed(1).load_prompts(prompts)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["gpt2", "folder"])
def test_rank_1_never_holds_the_whole_model(launched, case):
    runs = launched / "runs"
    plain = [json.loads((runs / f"{case}_false" / f"rank{r}.json").read_text()) for r in range(2)]
    sharded = [json.loads((runs / f"{case}_true" / f"rank{r}.json").read_text()) for r in range(2)]
    full = plain[0]["full"]
    assert all(r["full"] == full and r["local"] == full // 2 for r in plain + sharded)
    # The count sees a whole model where one is built: in every process without sharded loading, on rank 0 with it.
    assert plain[0]["setup_peak"] >= full and plain[1]["setup_peak"] >= full
    assert sharded[0]["setup_peak"] >= full
    # Rank 1 holds its half, a whole weight in flight and FSDP's own copies while it allocates the shards; in the
    # 4-layer folder model no weight is more than a sixth of the model (in GPT-2 the embedding is a third).
    assert sharded[1]["setup_peak"] < (0.8 if case == "folder" else 1.0) * full, sharded[1]


def test_a_model_built_for_sharded_loading_needs_fsdp_over_several_processes():
    from promptcore.distributed import SHARDED_LOADING_ATTR

    lazy = torch.nn.Sequential(torch.nn.Linear(2, 2))
    setattr(lazy[0], SHARDED_LOADING_ATTR, True)
    assert check_sharded_loading(lazy, FSDPEngine, FSDPConfig(), 2)
    with pytest.raises(UserError, match="built for sharded loading .* this run uses DDPEngine with 2 process"):
        check_sharded_loading(lazy, DDPEngine, FSDPConfig(), 2)
    with pytest.raises(UserError, match="this run uses FSDPEngine with 1 process"):
        check_sharded_loading(lazy, FSDPEngine, FSDPConfig(), 1)
    whole = torch.nn.Linear(2, 2)
    assert not check_sharded_loading(whole, FSDPEngine, FSDPConfig(sharded_loading="auto"), 2)
    with pytest.raises(UserError, match="sharded_loading: true, but Linear was built whole on every process"):
        check_sharded_loading(whole, FSDPEngine, FSDPConfig(sharded_loading=True), 2)


def test_sharded_loading_setting_is_checked():
    from promptcore import TrainConfig

    with pytest.raises(UserError, match="sharded_loading: expected auto, true or false, got 'sometimes'"):
        TrainConfig(distributed="fsdp", fsdp={"sharded_loading": "sometimes"})
    with pytest.raises(UserError, match="fsdp: set, but train.distributed is 'auto'"):
        TrainConfig(fsdp={"sharded_loading": False})


def test_sharded_loading_builds_on_the_meta_device_on_other_ranks_only(monkeypatch):
    import textpt
    from promptcore import load_config
    from promptcore.distributed import loads_sharded
    from textpt.cli import TextRecipe
    from textpt.run_config import TextRunConfig

    cfg = load_config(TextRunConfig, str(ROOT / "configs/smoke/textpt_tiny.yaml"), ["train.distributed=fsdp"])
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, device in (("0", "cpu"), ("1", "meta")):
        monkeypatch.setenv("RANK", rank)
        model = TextRecipe().build_model(cfg)
        assert loads_sharded(model)
        assert {p.device.type for p in model.parameters()} == {device}
    with textpt.sharded_loading(False):
        backbone, _ = textpt.load_model_and_tokenizer(cfg.model)
    assert not loads_sharded(backbone) and backbone.device.type == "cpu"
    monkeypatch.setenv("WORLD_SIZE", "1")
    with textpt.sharded_loading():  # one process: built as usual
        backbone, _ = textpt.load_model_and_tokenizer(cfg.model)
    assert not loads_sharded(backbone) and backbone.device.type == "cpu"


def script_settings(*names: str) -> list:
    """Settings of scripts/sharded_loading.py by name."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        import sharded_loading
    finally:
        sys.path.remove(str(SCRIPTS))
    return [getattr(sharded_loading, name) for name in names]


def one_process_run(run: Path, overrides: list[str]):
    """A launched case's run in one process with the global batch of two (twice the per-process batch), the
    sharding settings left out: the model's frozen parameters (per name, before training) and the run folder."""
    from promptcore import Trainer, load_config
    from promptcore.recipe import resolve_config
    from promptcore.trainer import seed_everything
    from textpt.cli import TextRecipe
    from textpt.run_config import TextRunConfig

    common, config = script_settings("COMMON", "CONFIG")
    recipe = TextRecipe()
    overrides = [o for o in [*common, *overrides] if not o.startswith(("train.distributed=", "train.fsdp."))] + ["train.batch_size=32"]
    cfg = resolve_config(recipe, load_config(TextRunConfig, config, overrides))
    seed_everything(cfg.train.seed)
    model = recipe.build_model(cfg)
    data = recipe.build_data(cfg, model)
    frozen = {n: p for n, p in model.named_parameters() if not p.requires_grad}
    Trainer(model, cfg.train, data.train, data.eval, data.collate_fn, run_dir=run).fit()
    return frozen, run


@pytest.fixture(scope="module")
def nf4_one_process(tmp_path_factory):
    """The nf4 cases' run in one process (:func:`one_process_run`)."""
    return one_process_run(tmp_path_factory.mktemp("nf4_one") / "run", *script_settings("NF4"))


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["fsdp", "ddp"])
def test_nf4_weights_train_the_prompts_of_one_process_under_fsdp_and_ddp(launched, nf4_one_process, engine):
    _, one = nf4_one_process
    for folder in ("last", "best"):
        got = load_file(launched / "runs" / f"nf4_{engine}" / folder / "prompts.safetensors")
        expected = load_file(one / folder / "prompts.safetensors")
        assert got.keys() == expected.keys()
        for key in expected:
            assert got[key].dtype == torch.float64
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6, msg=lambda m: f"{engine} {folder} {key}: {m}")


def _shard_bytes(weight: torch.Tensor, rank: int, world: int) -> int:
    """The bytes FSDP2 gives ``rank`` of the whole ``weight``: its piece of each of an nf4 weight's sharded inner
    tensors (torchao shards the 4-bit data and both levels of scales; the absmax mean and the 16-value table stay
    whole), or its ``torch.chunk`` piece of a plain one."""
    from promptcore.memory import tensor_bytes
    from promptcore.quantization import is_nf4

    if is_nf4(weight):
        sharded = ("quantized_data", "quantized_scalers", "quantization_factor")
        inner = weight.__tensor_flatten__()[0]
        return sum(tensor_bytes([getattr(weight, n)]) // world for n in sharded) + tensor_bytes(getattr(weight, n) for n in inner if n not in sharded)
    return tensor_bytes([torch.chunk(weight, world)[rank]])


@pytest.mark.slow
def test_fsdp_holds_its_share_of_the_nf4_weights_on_each_process(launched, nf4_one_process):
    from promptcore.memory import tensor_bytes

    whole, _ = nf4_one_process
    nf4_whole = tensor_bytes(whole.values())
    for rank in range(2):
        fsdp = json.loads((launched / "runs" / "nf4_fsdp" / f"rank{rank}.json").read_text())
        ddp = json.loads((launched / "runs" / "nf4_ddp" / f"rank{rank}.json").read_text())
        assert fsdp["local_by_name"] == {n: _shard_bytes(w, rank, 2) for n, w in whole.items()}
        assert ddp["local"] == nf4_whole  # DDP: the whole nf4 model on every process
        # The count every process makes of the float64 model it stands for, and what it holds of it under FSDP.
        assert fsdp["full"] == sum(w.numel() * 8 for w in whole.values())
        assert fsdp["local"] == sum(fsdp["local_by_name"].values()) < 0.51 * nf4_whole


@pytest.mark.slow
@pytest.mark.parametrize("rank", [0, 1])
def test_the_vocabulary_parallel_model_gives_the_numbers_of_the_unsharded_one(launched, rank):
    found = json.loads((launched / "runs" / "vocabulary" / f"rank{rank}.json").read_text())
    assert set(found) == {"tied_lm_fast", "untied_lm_concat_packed", "tied_classify", "untied_classify_two_token_words"}
    for case, differences in found.items():
        assert differences.pop("prompt_gradient_norm") > 0.1, case
        assert set(differences) == {"loss", "eval_metrics", "prompt_gradients", "whole_logits", "whole_logits_gradients", "prompts_after_steps"}
        for what, value in differences.items():
            assert value <= 1e-10, f"{case} on rank {rank}: {what} differs by {value}"


@pytest.mark.slow
def test_a_run_with_the_vocabulary_sharded_trains_the_prompts_of_the_unsharded_run(launched, tmp_path):
    from textpt.loading import tiny_tokenizer

    (vocab_run,) = script_settings("VOCAB_RUN")
    _, one = one_process_run(tmp_path / "run", vocab_run)
    runs = launched / "runs"
    for folder in ("last", "best"):
        got = load_file(runs / "vocab_tied_true" / folder / "prompts.safetensors")
        unsharded = load_file(runs / "vocab_tied_false" / folder / "prompts.safetensors")
        expected = load_file(one / folder / "prompts.safetensors")
        assert got.keys() == expected.keys() == unsharded.keys()
        for key in expected:
            assert got[key].dtype == torch.float64
            # The same run with the vocabulary gathered by FSDP: the same prompts to rounding.
            torch.testing.assert_close(got[key], unsharded[key], rtol=0, atol=1e-10, msg=lambda m: f"{folder} {key}: {m}")
            # One process: 7.6e-8 apart (the engine sums float64 gradients in float64; the cause is not found yet).
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6, msg=lambda m: f"{folder} {key}: {m}")
    # Each process holds its rows of the tied embedding / head (loaded from rank 0) and half of every other weight.
    vocab = len(tiny_tokenizer())
    bounds = [0, vocab // 2, vocab]
    for rank in range(2):
        report = json.loads((runs / "vocab_tied_true" / f"rank{rank}.json").read_text())
        embedding = report["local_by_name"].pop("backbone.model.embed_tokens.weight")
        assert embedding == (bounds[rank + 1] - bounds[rank]) * 32 * 8
        assert "backbone.lm_head.weight" not in report["local_by_name"]  # tied: one tensor
        assert report["local"] < 0.51 * report["full"]


def _vocabulary_model():
    """A tiny prompted causal LM (built whole: one process), its shard units and a default ``train.fsdp`` section."""
    from promptcore import load_config
    from promptcore.distributed import shard_units
    from textpt.cli import TextRecipe
    from textpt.run_config import TextRunConfig

    cfg = load_config(TextRunConfig, str(ROOT / "configs/smoke/textpt_tiny.yaml"), ["train.fsdp.sharded_loading=false", "train.distributed=fsdp"])
    model = TextRecipe().build_model(cfg)
    return model, shard_units(model), FSDPConfig()


def test_shard_vocabulary_auto_follows_the_size_of_the_vocabulary_against_a_block():
    from promptcore.distributed import vocabulary_layers_to_shard

    model, units, auto = _vocabulary_model()
    embedding = model.backbone.get_input_embeddings()
    # The tiny model's vocabulary matrices (168 x 32, untied) are about one of its blocks: auto leaves them to FSDP.
    assert vocabulary_layers_to_shard(model, auto, 2, units) is None
    assert vocabulary_layers_to_shard(model, FSDPConfig(shard_vocabulary=True), 2, units) == (embedding, model.backbone.get_output_embeddings())
    assert vocabulary_layers_to_shard(model, FSDPConfig(shard_vocabulary=True), 1, units) is None  # one process: nothing to shard
    assert vocabulary_layers_to_shard(model, FSDPConfig(shard_vocabulary=False), 2, units) is None
    small = [torch.nn.Linear(2, 2)]  # blocks smaller than the vocabulary: auto shards it
    assert vocabulary_layers_to_shard(model, auto, 2, small) is not None
    assert vocabulary_layers_to_shard(model, FSDPConfig(keep_whole=["embed_tokens"]), 2, small) is None


def test_shard_vocabulary_true_is_refused_with_the_reason():
    from promptcore.distributed import vocabulary_layers_to_shard

    model, units, _ = _vocabulary_model()
    with pytest.raises(UserError, match="keep_whole names the token embedding or the LM head"):
        vocabulary_layers_to_shard(model, FSDPConfig(shard_vocabulary=True, keep_whole=["lm_head"]), 2, units)
    model.backbone.config.final_logit_softcapping = 30.0
    with pytest.raises(UserError, match=r"changes its logits after the LM head \(final_logit_softcapping\)"):
        vocabulary_layers_to_shard(model, FSDPConfig(shard_vocabulary=True), 2, units)
    model.backbone.config.final_logit_softcapping = None
    model.backbone.lm_head = torch.nn.Linear(32, model.backbone.lm_head.out_features, bias=True)
    with pytest.raises(UserError, match="the LM head is a Linear with a bias, not a bias-free nn.Linear"):
        vocabulary_layers_to_shard(model, FSDPConfig(shard_vocabulary=True), 2, units)
    with pytest.raises(UserError, match="Sequential has no token embedding and LM head to shard"):
        vocabulary_layers_to_shard(torch.nn.Sequential(torch.nn.Linear(2, 2)), FSDPConfig(shard_vocabulary=True), 2, units)


def test_shard_vocabulary_is_refused_for_a_task_whose_loss_does_not_use_the_head():
    from textpt.tasks import TASKS

    with pytest.raises(UserError, match="a seq2seq model's losses do not go through a vocabulary-parallel LM head"):
        TASKS.get("seq2seq").vocabulary_layers(None)


def test_shard_vocabulary_setting_is_checked():
    from promptcore import TrainConfig

    with pytest.raises(UserError, match="shard_vocabulary: expected auto, true or false, got 'yes please'"):
        TrainConfig(distributed="fsdp", fsdp={"shard_vocabulary": "yes please"})
    assert TrainConfig(distributed="fsdp", fsdp={"shard_vocabulary": True}).fsdp.shard_vocabulary is True


def test_vocabulary_bounds_cover_the_vocabulary_once():
    from promptcore.vocab_parallel import vocabulary_bounds

    assert vocabulary_bounds(151936, 4) == [0, 37984, 75968, 113952, 151936]
    assert vocabulary_bounds(7, 2) == [0, 3, 7]
