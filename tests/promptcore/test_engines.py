"""Engines: the registry behind ``train.distributed`` (a toy engine registered here trains the smoke config through
the CLI), unknown names with their close matches, the private names of other libraries the engines rely on, and
the trainer's step without a host read of a device value between log lines."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch

from toy_prompted import ToyPrompted, toy_data  # noqa: E402

from promptcore import Trainer, TrainConfig, UserError  # noqa: E402
from promptcore.callbacks import Callback  # noqa: E402
from promptcore.engines import ENGINES, PlainEngine, resolve_engine  # noqa: E402
from promptcore.trainer import NonFiniteLossError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


class CountingEngine(PlainEngine):
    """The plain engine, counting the protocol calls the trainer makes."""

    calls: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def prepare(self, step, optimizer):
        self._count("prepare")
        super().prepare(step, optimizer)

    def backward(self, loss):
        self._count("backward")
        super().backward(loss)

    def reduce(self, loss_sum, flags, params):
        self._count("reduce")
        return super().reduce(loss_sum, flags, params)

    def step(self, optimizer, params, finite):
        self._count("step")
        super().step(optimizer, params, finite)

    def optimizer_state(self, optimizer, group_params):
        self._count("optimizer_state")
        return super().optimizer_state(optimizer, group_params)

    def eval_call(self, model, batch):
        self._count("eval_call")
        return super().eval_call(model, batch)


def test_a_toy_engine_registered_here_trains_the_smoke_config_through_the_cli(tmp_path):
    from vpt.cli import main

    CountingEngine.calls = {}
    with ENGINES.temporarily("counting", CountingEngine):
        argv = ["train", "-c", str(ROOT / "configs/smoke/vpt_tiny.yaml"), "--set", "train.distributed=counting"]
        assert main([*argv, "--set", "train.epochs=1", "-o", str(tmp_path / "run")]) == 0
    # 384 rows at batch 32: 12 steps, one backward, one collective and one optimizer step each.
    calls = CountingEngine.calls
    assert calls["prepare"] == 1 and calls["backward"] == calls["reduce"] == calls["step"] == 12, calls
    # 128 eval rows at batch 32; the checkpoints of the epoch end and of the end of training.
    assert calls["eval_call"] == 4 and calls["optimizer_state"] == 2, calls
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["split"] == "eval" and lines[-1]["accuracy"] > 0.25
    assert "counting" not in ENGINES  # the registration ended with the block


def test_unknown_engine_names_the_close_matches():
    with pytest.raises(UserError, match=r"^distributed: unknown engine 'fsdpp'. Did you mean 'fsdp' or 'ddp'\? Known: auto, ddp, deepspeed, fsdp, plain"):
        TrainConfig(distributed="fsdpp")
    with pytest.raises(UserError, match=r"unknown engine \(train.distributed\) 'dpp'. Did you mean 'ddp'"):
        resolve_engine("dpp", 2)


def test_unknown_engine_from_the_cli_is_a_config_error(tmp_path, capsys):
    from vpt.cli import main

    code = main(["train", "-c", str(ROOT / "configs/smoke/vpt_tiny.yaml"), "--set", "train.distributed=deepspeeed", "-o", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert err.startswith("error: 1 problem(s)") and "train.distributed: unknown engine 'deepspeeed'. Did you mean 'deepspeed'?" in err, err


# ----- private names of other libraries, each fenced in one engine --------------------------------------------------
def test_accelerate_private_names_are_still_there():
    from accelerate.accelerator import Accelerator
    from accelerate.state import AcceleratorState

    assert callable(getattr(AcceleratorState, "_reset_state", None)), "accelerate dropped AcceleratorState._reset_state (promptcore/engines/base.py)"
    # promptcore/engines/deepspeed.py takes back the process-wide mark a DeepSpeed Accelerator sets.
    assert "ACCELERATE_USE_DEEPSPEED" in inspect.getsource(Accelerator.__init__), "accelerate no longer marks DeepSpeed processes by ACCELERATE_USE_DEEPSPEED"


def test_ddp_private_name_is_still_there():
    method = getattr(torch.nn.parallel.DistributedDataParallel, "_set_params_and_buffers_to_ignore_for_model", None)
    assert callable(method), "torch dropped DistributedDataParallel._set_params_and_buffers_to_ignore_for_model (promptcore/engines/ddp.py)"
    model = torch.nn.Linear(2, 2)
    method(model, ["weight"])
    assert model._ddp_params_and_buffers_to_ignore == ["weight"]


def test_deepspeed_private_names_are_still_there():
    pytest.importorskip("deepspeed", reason="train.distributed: deepspeed needs the prompttune[deepspeed] extra")
    from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3

    source = inspect.getsource(DeepSpeedZeroOptimizer_Stage3)
    for name in ("fp32_partitioned_groups_flat", "sub_group_to_group_id"):
        assert f"self.{name} =" in source, f"deepspeed's ZeRO-3 optimizer no longer sets {name} (promptcore/engines/deepspeed.py)"


# ----- no host read of a device value inside a step ------------------------------------------------------------------
READS = ("item", "tolist", "__float__", "__int__", "__bool__", "__format__", "cpu", "numpy")


class Watched(torch.Tensor):
    """A tensor that records the trainer's step whenever the host reads it; every tensor computed from it is one."""

    trainer: Trainer | None = None
    read_at: list[int] = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in READS and cls.trainer is not None:
            cls.read_at.append(cls.trainer.progress.step)
        return super().__torch_function__(func, types, args, kwargs or {})


class WatchedLoss(ToyPrompted):
    def __init__(self, nan_at: int = 0) -> None:
        super().__init__()
        self.nan_at = nan_at

    def training_step(self, batch):
        loss = super().training_step(batch)
        if self.steps_run == self.nan_at:
            loss = loss * float("nan")
        return loss.as_subclass(Watched)


def watched_fit(model: WatchedLoss, **config) -> list[int]:
    torch.manual_seed(0)
    # 56 rows at batch 8: 7 steps per epoch, 14 steps; a train line every 3 steps.
    cfg = TrainConfig(**{"epochs": 2, "batch_size": 8, "lr": 0.05, "log_every_steps": 3, "progress_bar": False, "tensorboard": False, **config})
    trainer = Trainer(model, cfg, toy_data(56))
    Watched.trainer, Watched.read_at = trainer, []
    try:
        trainer.fit()
    finally:
        Watched.trainer = None
    return Watched.read_at


def test_losses_are_read_at_log_lines_and_epoch_ends_only():
    read_at = watched_fit(WatchedLoss())
    # A read inside step k would happen at progress.step k - 1: 1, 2, 4, 5, 7, 8, 10, 11, 13 never appear.
    assert read_at and set(read_at) <= {3, 6, 7, 9, 12, 14}, read_at
    assert {3, 6, 7, 9, 12, 14} <= set(read_at)


def test_a_nan_is_reported_at_the_next_read_with_the_step_it_happened_in():
    model = WatchedLoss(nan_at=4)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 4 \(epoch 0\); training stopped, and no gradient of that step"):
        watched_fit(model)
    assert model.steps_run == 6  # found at the train line of step 6, not in step 4
    assert all(torch.isfinite(p).all() for p in model.prompt_parameters())


class ReadEveryStep(Callback):
    """The plain reference: every step's loss read on the host, as the trainer did before it kept the sums on the device."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_step_end(self, trainer, info):
        self.losses.append(float(info.loss))


def test_device_side_loss_sums_equal_the_host_sums_of_each_step(tmp_path):
    reader = ReadEveryStep()
    config = TrainConfig(epochs=2, batch_size=8, lr=0.05, log_every_steps=3, progress_bar=False, tensorboard=False, eval_every_epochs=0)
    Trainer(ToyPrompted(), config, toy_data(56), run_dir=tmp_path / "run", callbacks=[reader]).fit()
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(reader.losses) == 14
    # 7 steps per epoch, a train line every 3 steps and at each epoch end: windows of steps 1-3, 4-6, 7, 8-9, 10-12, 13-14.
    bounds = [(0, 3), (3, 6), (6, 7), (7, 9), (9, 12), (12, 14)]
    expected = []
    for lo, hi in bounds:
        total = 0.0
        for loss in reader.losses[lo:hi]:
            total += loss
        expected.append(total / (hi - lo))
    assert [r["loss"] for r in lines if r["split"] == "train"] == expected  # float64 sums, bitwise
    epochs = [r["loss"] for r in lines if r["split"] == "epoch"]
    assert epochs == [sum(reader.losses[:7], 0.0) / 7, sum(reader.losses[7:], 0.0) / 7]
