"""``train.compile``: the compiled step trains the same prompts as the plain step in float64 (VPT-deep on its fast
path on a tiny timm ViT, prompt tuning on a tiny GPT-2 with texts of varying lengths, the toy model under DDP and
FSDP2 over two processes, with gradient accumulation), one run goes through the real inductor backend, a storm of recompilations gets one
warning line, and what cannot work is refused in one line.

Compilation is slow on CPU: the tests use the ``aot_eager`` backend (torch.compile's capture and autograd graphs,
without inductor's C++ code generation, which takes minutes per model on 2 cores) through
``promptcore.engines.base.COMPILE_BACKEND``, except the inductor test on the toy model. With ``aot_eager`` the
compiled step runs the same kernels, so the prompts agree to 1e-12; inductor fuses them and may reorder sums (1e-10).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import promptcore.engines.base as engines_base
from promptcore import Trainer, TrainConfig, UserError
from promptcore.callbacks import Callback
from promptcore.engines.base import compile_counts
from test_cli import run_cli
from train_toy_compiled import COMPILED_TRAIN, compiled_run_args, static_toy_model

from promptcore.cli import EXIT_ERROR

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).parent / "scripts" / "train_toy_compiled.py"
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
QUIET = {"progress_bar": False, "tensorboard": False}


@pytest.fixture(autouse=True)
def fresh_compiler():
    """Each test starts without the code an earlier one compiled, nor its skips (a function that reached the
    recompile limit runs uncompiled for the rest of the process)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture
def aot_eager(monkeypatch):
    monkeypatch.setattr(engines_base, "COMPILE_BACKEND", "aot_eager")


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def train_both(build, config: dict, tol: float, callbacks=(), eval_tol: float | None = None) -> Trainer:
    """Trains a fresh model from ``build()`` (model, train, eval, collate_fn) plain and compiled (with
    ``callbacks``); asserts their prompts agree to ``tol`` and their eval metrics to ``eval_tol`` (default ``tol``)
    and returns the compiled trainer."""
    trained = {}
    for compiled in (False, True):
        model, train, evaluation, collate_fn = build()
        before = compile_counts()[0]
        trainer = Trainer(
            model, TrainConfig(**{**QUIET, **config}, compile=compiled), train, evaluation, collate_fn=collate_fn, callbacks=callbacks if compiled else ()
        )
        result = trainer.fit()
        frames = compile_counts()[0] - before
        # The compiled step ran: the engine calls the compiled module, and torch.compile compiled frames for it.
        assert (type(trainer.engine.module).__name__ == "OptimizedModule") == compiled
        assert (frames > 0) == compiled, frames
        trained[compiled] = ({n: p.detach().clone() for n, p in model.named_prompt_parameters()}, result["eval"], trainer)
    (plain, plain_eval, _), (fast, fast_eval, trainer) = trained[False], trained[True]
    assert plain.keys() == fast.keys()
    for name in plain:
        assert plain[name].dtype == torch.float64
        torch.testing.assert_close(fast[name], plain[name], rtol=tol, atol=tol, msg=lambda m, n=name: f"{n}: {m}")
    assert fast_eval.keys() == plain_eval.keys()
    for key in plain_eval:
        assert fast_eval[key] == pytest.approx(plain_eval[key], rel=eval_tol or tol, abs=eval_tol or tol), key
    return trainer


def test_compile_is_a_setting_of_the_train_section():
    assert TrainConfig().compile is False
    assert TrainConfig(compile=True, compile_mode="max-autotune").compile_mode == "max-autotune"
    assert engines_base.COMPILE_BACKEND == "inductor"  # what users get; only the tests swap it
    with pytest.raises(UserError, match=r"^compile_mode: reduce-overhead is a mode of train.compile, which is false; set train.compile: true"):
        TrainConfig(compile_mode="reduce-overhead")
    with pytest.raises(UserError, match=r"^compile: under DeepSpeed ZeRO-3 torch.compile breaks the step .* set train.compile: false, or use train.distributed: fsdp"):
        TrainConfig(compile=True, distributed="deepspeed")


def test_compile_is_refused_on_windows(monkeypatch):
    monkeypatch.setattr(sys, "platform", "win32")
    with pytest.raises(UserError, match=r"^compile: torch.compile's inductor backend .* set train.compile: false"):
        TrainConfig(compile=True)
    TrainConfig(compile=False)


def test_the_command_line_refuses_compile_under_deepspeed_in_one_line(tmp_path, capsys):
    config = tmp_path / "toy.yaml"
    config.write_text("train: {epochs: 1, progress_bar: false, tensorboard: false}\n")
    code, out, err = run_cli(["train", "-c", config, "-o", tmp_path / "run", "--set", "train.compile=true", "--set", "train.distributed=deepspeed"], capsys)
    assert code == EXIT_ERROR and out == ""
    assert err.startswith("error: ") and "train.compile: under DeepSpeed ZeRO-3" in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_the_command_line_compiles_and_says_so_in_one_line_when_the_step_keeps_recompiling(tmp_path, capsys, aot_eager):
    # The CLI's toy model counts its steps in a Python attribute, which torch.compile specialises on: every step
    # compiles again, until torch's recompile limit (3 here, 8 by default) makes the step run uncompiled.
    config = tmp_path / "toy.yaml"
    config.write_text("train: {epochs: 1, batch_size: 8, lr: 0.05, progress_bar: false, tensorboard: false}\n")
    with torch._dynamo.config.patch(recompile_limit=3):
        code, out, err = run_cli(["train", "-c", config, "-o", tmp_path / "run", "--set", "train.compile=true"], capsys)
    assert code == 0, err
    assert json.loads(out)["step"] == 5
    warnings = [line for line in err.splitlines() if line.startswith("warning: train.compile:")]
    assert len(warnings) == 1, err
    assert "reached torch._dynamo.config.recompile_limit (3) and now run uncompiled" in warnings[0]
    assert "TORCH_LOGS=recompiles" in warnings[0] and "set train.compile: false" in warnings[0]


@pytest.mark.slow
def test_compiled_toy_step_equals_the_plain_one_in_float64(float64, aot_eager):
    def build():
        train, evaluation = compiled_run_args()
        return static_toy_model(), train, evaluation, None

    trainer = train_both(build, COMPILED_TRAIN, 1e-12)
    # Evaluation calls the same compiled step.
    assert trainer.engine.eval_module is trainer.engine.module


@pytest.mark.slow
def test_the_inductor_backend_trains_the_tiniest_model_like_the_plain_step(float64):
    def build():
        train, evaluation = compiled_run_args()
        return static_toy_model(), train, evaluation, None

    # The eval loss is taken in float32 (PromptedModel.eval_step), where inductor's fused log-softmax may differ in
    # the last digits.
    train_both(build, {**COMPILED_TRAIN, "epochs": 1}, 1e-10, eval_tol=1e-6)


@pytest.mark.slow
def test_compiled_vpt_deep_on_its_fast_path_equals_the_plain_step_in_float64(float64, aot_eager):
    import vpt
    from vpt.synthetic import SyntheticImages

    def build():
        torch.manual_seed(0)
        backbone = vpt.create_model(vpt.BackboneConfig("timm:vit_tiny_patch16_224", pretrained=False, kwargs={
            "img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 2}))
        model = vpt.wrap(backbone, vpt.VPTConfig(method="vpt_deep", num_tokens=4, num_classes=4))
        assert model.fast  # the fast path, whose blocks run through call_through
        # 18 rows in batches of 4 (the last has 2) and 10 eval rows: no batch of one row, which compiles once more.
        images = dict(num_classes=4, image_size=32, channels=3, seed=0)
        return model, SyntheticImages(num_samples=18, **images), SyntheticImages(num_samples=10, split="validation", **images), None

    train_both(build, {"epochs": 2, "batch_size": 4, "lr": 0.05}, 1e-12)


@pytest.mark.slow
def test_compiled_prompt_tuning_on_texts_of_varying_lengths_equals_the_plain_step_without_recompiling(float64, aot_eager):
    import textpt
    from textpt import TextModelConfig, load_model_and_tokenizer
    from textpt.tasks import TextCollator
    from tiny_text import TINY_CONFIGS, method_config

    lengths = [3, 7, 5, 2, 9, 4, 6, 8, 3, 5, 7, 2]  # batches of 4 padded to 9, 8 and 7 tokens
    rows = [{"input_ids": list(range(5 + i, 5 + i + n)), "labels": i % 2} for i, n in enumerate(lengths)]

    def build():
        torch.manual_seed(0)
        config = TextModelConfig(name="random:gpt2", task="seq_cls", kwargs=TINY_CONFIGS["gpt2"], padding_side="left", dtype="float64")
        backbone, tok = load_model_and_tokenizer(config)
        model = textpt.wrap(backbone, method_config("prompt_tuning", num_tokens=3, num_classes=2), tokenizer=tok)
        return model, rows, None, TextCollator(tok.pad_token_id, "left")

    frames_per_step = []

    class Frames(Callback):
        def on_step_end(self, trainer, info):
            frames_per_step.append(compile_counts()[0])

    trainer = train_both(build, {"epochs": 2, "batch_size": 4, "lr": 0.05, "seed": 1}, 1e-12, callbacks=[Frames()])
    assert trainer.progress.step == 6
    # The sequence length is a symbol: the first step's compilation serves every later length.
    assert len(frames_per_step) == 6 and len(set(frames_per_step)) == 1, frames_per_step


@pytest.mark.slow
def test_compiled_ddp_and_fsdp_over_two_processes_equal_their_plain_runs(tmp_path, float64):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node", "2", str(SCRIPT), str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "warning: train.compile" not in proc.stderr
    train, evaluation = compiled_run_args()
    model = static_toy_model()
    one_process = Trainer(model, TrainConfig(**COMPILED_TRAIN), train, evaluation).fit()["eval"]
    for engine in ("ddp", "fsdp"):
        for rank in (0, 1):
            plain = json.loads((tmp_path / f"{engine}_rank{rank}.json").read_text())
            record = json.loads((tmp_path / f"{engine}_compiled_rank{rank}.json").read_text())
            assert record["module"] == "OptimizedModule" and record["frames"] > 0 and plain["frames"] == 0, (plain, record)
            assert record["eval"] == pytest.approx(plain["eval"], rel=1e-12), (engine, record["eval"], plain["eval"])
            expected = load_file(tmp_path / f"{engine}_rank{rank}.safetensors")
            got = load_file(tmp_path / f"{engine}_compiled_rank{rank}.safetensors")
            assert got.keys() == expected.keys()
            for key in expected:
                assert got[key].dtype == torch.float64
                torch.testing.assert_close(got[key], expected[key], rtol=1e-12, atol=1e-12, msg=lambda m, k=key: f"{engine} rank {rank} {k}: {m}")
    # DDP reduces in float64 as one process sums: its compiled run is also the 1-process run.
    for key, value in model.prompt_state_dict().items():
        torch.testing.assert_close(load_file(tmp_path / "ddp_compiled_rank0.safetensors")[key], value, rtol=1e-10, atol=1e-10)
    # The eval loss is taken in float32 (PromptedModel.eval_step) and summed over two shards of the eval rows.
    assert json.loads((tmp_path / "ddp_compiled_rank0.json").read_text())["eval"] == pytest.approx(one_process, rel=1e-6)
