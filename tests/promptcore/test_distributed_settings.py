"""The distributed settings checked in one process: engine choice, shard units, refusals, the out-of-memory line."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn


from toy_prompted import toy_data, toy_model  # noqa: E402

from promptcore import Trainer, TrainConfig, UserError  # noqa: E402
from promptcore.distributed import call_through, shard_units  # noqa: E402
from promptcore.engines import DDPEngine, DeepSpeedEngine, FSDPEngine, PlainEngine, resolve_engine  # noqa: E402

CPU = torch.device("cpu")


def test_auto_is_ddp_with_several_processes_and_plain_with_one():
    assert resolve_engine("auto", 1) is PlainEngine
    assert resolve_engine("auto", 4) is DDPEngine
    assert resolve_engine("fsdp", 2) is FSDPEngine
    with pytest.raises(UserError, match=r"train.distributed: ddp needs several processes, this run has 1; launch it with `torchrun"):
        resolve_engine("ddp", 1)


def test_an_fsdp_section_without_fsdp_is_refused():
    with pytest.raises(UserError, match="fsdp: set, but train.distributed is 'auto'"):
        TrainConfig(fsdp={"cpu_offload": True})  # type: ignore[arg-type]
    assert TrainConfig(distributed="fsdp", fsdp={"reshard_after_forward": False}).fsdp.reshard_after_forward is False  # type: ignore[arg-type]
    with pytest.raises(UserError, match="fsdp.reshard: unknown setting"):
        TrainConfig(distributed="fsdp", fsdp={"reshard": False})  # type: ignore[arg-type]
    from promptcore.config import load_config

    config = load_config(TrainConfig, {"distributed": "fsdp", "fsdp": {"block_classes": ["Block"], "reshard_after_forward": False}})
    assert config.fsdp.block_classes == ["Block"] and config.fsdp.reshard_after_forward is False


def test_a_deepspeed_section_is_checked_like_the_fsdp_section():
    with pytest.raises(UserError, match="deepspeed: set, but train.distributed is 'fsdp'; set train.distributed: deepspeed or remove the deepspeed section"):
        TrainConfig(distributed="fsdp", deepspeed={"block_classes": ["Block"]})  # type: ignore[arg-type]
    with pytest.raises(UserError, match="deepspeed.block_class: unknown setting. Did you mean 'block_classes'"):
        TrainConfig(distributed="deepspeed", deepspeed={"block_class": ["Block"]})  # type: ignore[arg-type]
    from promptcore.config import ConfigError, load_config

    config = load_config(TrainConfig, {"distributed": "deepspeed", "deepspeed": {"block_classes": ["Block"]}})
    assert config.deepspeed.block_classes == ["Block"]
    with pytest.raises(ConfigError, match="deepspeed.block_class: unknown key for DeepSpeedConfig. Did you mean 'block_classes'"):
        load_config(TrainConfig, {"distributed": "deepspeed", "deepspeed": {"block_class": ["Block"]}})


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"optimizer": "adafactor"}, "optimizer: adafactor factors each prompt's second moment by the prompt's shape, and DeepSpeed ZeRO-3 steps"),
        ({"optimizer": "adafactor_t5x"}, "optimizer: adafactor_t5x factors"),
        ({"mixed_precision": "bf16"}, "mixed_precision: bf16 under train.distributed: deepspeed would make DeepSpeed cast the prompts"),
    ],
)
def test_deepspeed_refuses_what_its_optimizer_would_change(setting, message):
    with pytest.raises(UserError, match=message):
        TrainConfig(distributed="deepspeed", **setting)
    TrainConfig(distributed="fsdp", **setting)  # the same settings under fsdp are fine


def test_deepspeed_not_installed_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # import deepspeed now raises ImportError
    with pytest.raises(UserError, match=r"^train.distributed: deepspeed needs the deepspeed package, which cannot be imported .*pip install 'prompttune\[deepspeed\]'"):
        DeepSpeedEngine.make_accelerator(TrainConfig(distributed="deepspeed"))


class Blocks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8)) for _ in range(3))
        self.prompts = nn.ModuleList(nn.Linear(8, 8) for _ in range(2))  # prompt modules are never units

    def prompt_modules(self):
        return {"prompts": self.prompts}


def test_shard_units_are_the_outermost_lists_of_identical_blocks_outside_the_prompts():
    model = Blocks()
    assert shard_units(model) == list(model.layers)
    assert shard_units(model, ["Linear"]) == [model.embed, *(lin for block in model.layers for lin in block)]
    with pytest.raises(UserError, match=r"train.fsdp: no module of class DecoderLayer found in Blocks to shard; set train.fsdp.block_classes"):
        shard_units(model, ["DecoderLayer"])
    with pytest.raises(UserError, match=r"train.deepspeed: no module of class DecoderLayer found in Blocks to shard; set train.deepspeed.block_classes"):
        shard_units(model, ["DecoderLayer"], "deepspeed")
    with pytest.raises(UserError, match="no list of identical blocks found in ToyPrompted"):
        shard_units(toy_model())


def test_call_through_runs_the_function_as_the_modules_forward_with_its_hooks():
    block = nn.Linear(2, 2)
    seen = []
    block.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape))
    out = call_through(block, lambda x: x * 3, torch.ones(1, 5))
    assert torch.equal(out, torch.full((1, 5), 3.0)) and seen == [torch.Size([1, 5])]
    assert "forward" not in block.__dict__  # the module's own forward is back
    assert block(torch.ones(1, 2)).shape == (1, 2)


def test_running_out_of_memory_in_a_step_names_the_settings_that_lower_it(monkeypatch):
    model = toy_model()

    def out_of_memory(batch):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(model, "training_step", out_of_memory)
    config = TrainConfig(epochs=1, batch_size=8, progress_bar=False, tensorboard=False, eval_every_epochs=0)
    trainer = Trainer(model, config, toy_data())
    with pytest.raises(UserError) as e:
        trainer.fit()
    message = str(e.value)
    assert message.startswith("out of memory in training step 1 (8 rows in this process): CUDA out of memory.")
    for lever in ("train.batch_size (now 8", "train.gradient_checkpointing: true", "train.distributed: fsdp", "model.quantization: int8"):
        assert lever in message


def test_other_runtime_errors_in_a_step_are_not_taken_for_memory(monkeypatch):
    model = toy_model()
    monkeypatch.setattr(model, "training_step", lambda batch: (_ for _ in ()).throw(RuntimeError("shape mismatch")))
    config = TrainConfig(epochs=1, batch_size=8, progress_bar=False, tensorboard=False, eval_every_epochs=0)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        Trainer(model, config, toy_data()).fit()


def test_fsdp_refuses_quantized_frozen_weights_before_any_collective():
    pytest.importorskip("torchao", reason="torchao is not installed (pip install 'prompttune[quant]')")
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    from promptcore.distributed import FSDPConfig, StepModule, shard_model

    model = toy_model()
    quantize_(model.backbone, Int8WeightOnlyConfig())
    with pytest.raises(UserError, match=r"train.distributed: fsdp shards plain float weights.*model.quantization / model.device_map"):
        shard_model(StepModule(model), model, FSDPConfig(), 2, CPU)  # refused before a device mesh is needed


def test_keep_whole_names_modules_by_path_or_last_parts():
    from promptcore.distributed import whole_modules

    model = Blocks()
    assert whole_modules(model, ["embed"]) == [model.embed]
    assert whole_modules(model, ["layers.1.0"]) == [model.layers[1][0]]
    with pytest.raises(UserError, match="train.fsdp.keep_whole: no module named 'embd' in Blocks. Did you mean 'embed'"):
        whole_modules(model, ["embd"])
