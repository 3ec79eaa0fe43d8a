"""The method registry: register_method, wrap by config, and run-config prompt sections chosen by ``method``."""

from dataclasses import dataclass, field
from typing import Literal

import pytest
from torch import nn

from promptcore import METHODS, ConfigError, PromptedModel, SoftPrompt, load_config, method_config, register_method, wrap
from promptcore.methods import method_names
from promptcore.plugins import load_plugins
from promptcore.registry import Registry


@dataclass
class EchoConfig:
    method: Literal["echo_a", "echo_b"] = "echo_a"
    num_tokens: int = 2

    def __post_init__(self):
        if self.num_tokens <= 0:
            raise ValueError(f"num_tokens: must be positive, got {self.num_tokens}")


class Echo(PromptedModel):
    def __init__(self, backbone, config, name=None):
        super().__init__()
        self.backbone, self.config, self.name = backbone, config, name
        self.prompts = SoftPrompt(config.num_tokens, 4)

    def prompt_config(self):
        return {"method": self.config.method, "backbone": self.name}


@dataclass
class Run:
    prompt: method_config("vision")
    other: int = field(default=0)


@pytest.fixture
def echo():
    record = register_method("echo_a", EchoConfig, Echo, kind="vision", summary="test method")
    yield record
    METHODS.remove("vision:echo_a")


def test_wrap_builds_the_registered_method_with_context(echo):
    model = wrap(nn.Linear(2, 2), EchoConfig(num_tokens=3), name="toy")
    assert isinstance(model, Echo) and model.name == "toy" and model.prompts.weight.shape == (3, 4)
    assert "echo_a" in method_names("vision") and "echo_a" not in method_names("text")


def test_register_method_is_strict(echo):
    with pytest.raises(KeyError, match="prompt method 'vision:echo_a' is already registered"):
        register_method("echo_a", EchoConfig, Echo, kind="vision")
    with pytest.raises(ValueError, match=r"EchoConfig.method admits \['echo_a', 'echo_b'\], not 'echo_c'"):
        register_method("echo_c", EchoConfig, Echo, kind="vision")
    with pytest.raises(ValueError, match="kind: 'audio' is not one of vision, text"):
        register_method("echo_b", EchoConfig, Echo, kind="audio")
    with pytest.raises(TypeError, match="has no 'method' field"):
        register_method("x", Run, Echo, kind="vision")


def test_wrap_refuses_a_config_of_another_method(echo):
    with pytest.raises(TypeError, match=r"EchoConfig is not the config of a registered prompt method \(method='echo_b'\)"):
        wrap(nn.Linear(2, 2), EchoConfig(method="echo_b"))


def test_run_config_prompt_section_is_chosen_by_method(echo):
    cfg = load_config(Run, {"prompt": {"method": "echo_a", "num_tokens": 5}})
    assert isinstance(cfg.prompt, EchoConfig) and cfg.prompt.num_tokens == 5
    with pytest.raises(ConfigError) as e:
        load_config(Run, {"prompt": {"method": "echo_aa", "num_tokns": 1}, "othr": 1})
    text = str(e.value)
    assert "prompt.method: unknown vision method 'echo_aa'. Did you mean 'echo_a'?" in text
    assert "othr: unknown key for Run. Did you mean 'other'?" in text
    with pytest.raises(ConfigError, match=r"prompt.num_tokens: must be positive, got 0"):
        load_config(Run, {"prompt": {"method": "echo_a", "num_tokens": 0}})
    with pytest.raises(ConfigError, match=r"prompt.method: required to choose the method; one of .*'echo_a'"):
        load_config(Run, {"prompt": {"num_tokens": 2}})


def test_registry_helpers():
    reg: Registry[int] = Registry("thing")
    with reg.temporarily("a", 1):
        assert reg.get("a") == 1 and reg.items() == [("a", 1)]
    assert "a" not in reg
    reg.add("b", 2)
    assert reg.remove("b") == 2 and len(reg) == 0
    with pytest.raises(KeyError, match="unknown thing 'b'. Known: none."):
        reg.get("b")


def test_the_packages_are_plugins():
    modules = load_plugins()
    assert {"vpt", "vpt.clip", "textpt"} <= set(modules)
    assert {"vision:vpt_deep", "vision:coop", "text:prompt_tuning", "vision:linear_probe", "text:linear_probe"} <= set(METHODS.names())


def test_wrap_puts_the_prompts_on_the_backbones_device():
    # Prompts are built on the CPU; a backbone already on another device takes them along. The meta device stands
    # in for a GPU here (both methods below build their prompts without running the backbone).
    import timm
    from transformers import LlamaConfig, LlamaForCausalLM

    import textpt
    import vpt

    llama = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=1)).to("meta")
    text = textpt.wrap(llama, textpt.PromptTuningConfig(num_tokens=3, init="random"), task="causal_lm", name="tiny")
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=8).to("meta")
    image = vpt.wrap(vit, vpt.VPTConfig(method="vpt_deep", num_tokens=4, num_classes=3))
    for model in (text, image):
        assert {p.device.type for p in model.prompt_parameters()} == {"meta"}
    cpu = textpt.wrap(LlamaForCausalLM(llama.config), textpt.PromptTuningConfig(num_tokens=3, init="random"), task="causal_lm", name="tiny")
    assert {p.device.type for p in cpu.parameters()} == {"cpu"}
