from dataclasses import dataclass, field
from typing import Literal

import pytest

from promptcore.config import ConfigError, check_sources, load_config, parse_override, to_dict, to_yaml
from promptcore.train_config import TrainConfig
from promptcore.errors import UserError


@dataclass
class Shallow:
    method: Literal["shallow"] = "shallow"
    num_tokens: int = 10

    def __post_init__(self):
        if self.num_tokens <= 0:
            raise ValueError(f"num_tokens: must be positive, got {self.num_tokens}")


@dataclass
class Deep:
    method: Literal["deep"] = "deep"
    num_tokens: int = 10
    layers: list[int] | None = None


@dataclass
class Model:
    name: str = "timm:vit"
    kwargs: dict = field(default_factory=dict)


@dataclass
class Run:
    model: Model = field(default_factory=Model)
    prompt: Shallow | Deep = field(default_factory=Shallow)
    train: TrainConfig = field(default_factory=TrainConfig)


def test_yaml_file_with_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: timm:vit_tiny\n  kwargs: {depth: 2}\nprompt:\n  method: deep\n  layers: [0, 1]\ntrain:\n  lr: 1e-2\n")
    cfg = load_config(Run, path, ["train.epochs=3", "prompt.num_tokens=5", "model.kwargs.img_size=32"])
    assert cfg.model == Model("timm:vit_tiny", {"depth": 2, "img_size": 32})
    assert cfg.prompt == Deep(num_tokens=5, layers=[0, 1])
    assert cfg.train.lr == 0.01 and cfg.train.epochs == 3  # '1e-2' is a string to YAML 1.1; read as a number
    assert load_config(Run, to_dict(cfg)) == cfg
    assert "method: deep" in to_yaml(cfg)


def test_all_errors_reported_at_once_with_field_and_suggestion():
    with pytest.raises(ConfigError) as info:
        load_config(Run, {"modle": {}, "prompt": {"method": "shallow", "num_tokens": "ten"},
                          "train": {"optimizer": "sgdd", "batch_size": 2.5, "grad_clip": "x"}})
    errors = info.value.errors
    assert "modle: unknown key for Run. Did you mean 'model'?" in errors
    assert "prompt.num_tokens: expected an integer, found str 'ten'" in errors
    assert any(e.startswith("train.optimizer: 'sgdd' is not one of") and "Did you mean 'sgd'?" in e for e in errors)
    assert "train.batch_size: expected an integer, found float 2.5" in errors
    assert any(e.startswith("train.grad_clip:") for e in errors)
    assert len(errors) == 5
    assert str(info.value).startswith("5 problem(s):")


def test_value_checks_from_post_init_name_the_field():
    with pytest.raises(ConfigError, match=r"prompt.num_tokens: must be positive, got 0"):
        load_config(Run, {"prompt": {"method": "shallow", "num_tokens": 0}})
    with pytest.raises(ConfigError, match=r"train.epochs: must be positive, got 0"):
        load_config(Run, {}, ["train.epochs=0"])


def test_every_invalid_train_value_is_listed_at_once():
    with pytest.raises(ConfigError) as info:
        load_config(Run, {"prompt": {"method": "shallow", "num_tokens": 0},
                          "train": {"epochs": 0, "lr": -1.0, "min_lr_ratio": 2.0, "warmup_lr": 1.0e-5,
                                    "distributed": "fsdpp", "callbacks": ["nope"]}})
    errors = info.value.errors
    assert errors[0] == "prompt.num_tokens: must be positive, got 0"
    assert errors[1:4] == [
        "train.epochs: must be positive, got 0",
        "train.lr: must be a positive finite number, got -1.0",
        "train.min_lr_ratio: must lie in [0, 1] (a fraction of lr), got 2.0",
    ]
    assert errors[4].startswith("train.warmup_lr: set, but there is no warmup")
    assert errors[5].startswith("train.distributed: unknown engine 'fsdpp'. Did you mean 'fsdp'")
    assert errors[6].startswith("train.callbacks[0]: unknown callback 'nope'")
    assert len(errors) == 7
    # From Python: several problems are one ConfigError listing them; a single one stays a one-line UserError.
    with pytest.raises(ConfigError, match=r"^2 problem\(s\) in TrainConfig:\n  - epochs: must be positive, got 0\n  - batch_size: "):
        TrainConfig(epochs=0, batch_size=0)
    with pytest.raises(UserError, match=r"^epochs: must be positive, got 0$"):
        TrainConfig(epochs=0)


def test_method_union_errors():
    with pytest.raises(ConfigError, match=r"prompt.method: unknown method 'dep'. Did you mean 'deep'\?"):
        load_config(Run, {"prompt": {"method": "dep"}})
    with pytest.raises(ConfigError, match=r"prompt.method: required to choose the method"):
        load_config(Run, {"prompt": {"num_tokens": 3}})
    with pytest.raises(ConfigError, match=r"prompt.layers: unknown key for Shallow"):
        load_config(Run, {"prompt": {"method": "shallow", "layers": [1]}})


def test_bad_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"expected KEY=VALUE, e.g. --set train.lr=0.01"):
        parse_override("train.lr")
    with pytest.raises(FileNotFoundError, match="config file .*nope.yaml' does not exist"):
        load_config(Run, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Run, bad)
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("a=null") == (["a"], None)


def test_override_value_that_is_not_yaml_is_a_config_error():
    with pytest.raises(ConfigError, match=r"the value is not valid YAML; quote it"):
        parse_override("data.template={title}: {text}")


def test_a_provenance_block_names_fields_and_origins():
    cfg = load_config(Run, {"prompt": {"method": "deep", "layers": [0]}, "train": {"lr": 0.1}})
    check_sources(cfg, {"train.lr": "KMnP/vpt configs/base-prompt.yaml", "prompt.layers": "local: two layers suffice here"})
    with pytest.raises(ValueError, match=r"source.train.lrr: not a field of the run config.*source.prompt.layers: give the value's origin"):
        check_sources(cfg, {"train.lrr": "x", "prompt.layers": " "})
