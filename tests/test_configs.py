"""Every YAML under configs/ (recursively) loads and validates as the config class of what runs it.

Which class validates a file:

0. A file under configs/serve/ is a serve config (``promptcore.serving.ServeConfig``), or, with ``applications:``,
   a Ray Serve config file (Ray's ``ServeDeploySchema``) whose applications' ``args.config`` are serve configs.
1. A demo manifest (a mapping with ``tasks:``, read by ``demo/run_demo.py``) validates as its ``DemoConfig``; each
   task's ``package`` then says which package runs the task's ``config`` file.
2. Otherwise the first part of the file's path below configs/ (folders, then the words of the file name split on
   '_' and '-') that names a package: ``vpt`` or ``clip`` -> ``vpt``, ``textpt`` -> ``textpt``, ``vlmpt`` ->
   ``vlmpt``. So
   ``configs/vpt/x.yaml``, ``configs/clip/coop.yaml`` and ``configs/smoke/vpt_tiny.yaml`` are vision configs.

A package's file validates as its CLI recipe's ``config_class`` (``vpt``: VisionRunConfig). A file that none of
these rules places, or that two packages claim, fails here.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from promptcore.config import load_config, read_yaml

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PACKAGE_OF_WORD = {"vpt": "vpt", "clip": "vpt", "textpt": "textpt", "vlmpt": "vlmpt"}
ALL_YAML = sorted(p for p in CONFIGS.rglob("*") if p.suffix in (".yaml", ".yml"))


@functools.cache
def is_manifest(path: Path) -> bool:
    data = read_yaml(path)
    return isinstance(data, dict) and isinstance(data.get("tasks"), list)


@functools.cache
def manifest_packages() -> dict[Path, str]:
    """Config path -> package, from the tasks of every demo manifest (read once: it reads every YAML file)."""
    out: dict[Path, str] = {}
    for path in ALL_YAML:
        if is_manifest(path):
            for task in read_yaml(path)["tasks"]:
                for config in [task["config"], *(extra["config"] for extra in task.get("more", []))]:
                    out[(CONFIGS.parent / config).resolve()] = task["package"]
    return out


def demo_config_class() -> type:
    spec = importlib.util.spec_from_file_location("run_demo", CONFIGS.parent / "demo" / "run_demo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses resolve the module's annotations through sys.modules
    spec.loader.exec_module(module)
    return module.DemoConfig


def package_of(path: Path) -> str:
    named = manifest_packages().get(path.resolve())
    if named is not None:
        return named
    rel = path.relative_to(CONFIGS)
    words = [*rel.parts[:-1], *re.split(r"[_\-]", rel.stem)]
    found = [PACKAGE_OF_WORD[w] for w in words if w in PACKAGE_OF_WORD]
    if not found or len(set(found)) > 1:
        raise AssertionError(
            f"configs/{rel}: cannot tell which package runs it (found {found or 'no package name'} in {words}); put it "
            f"under configs/vpt, configs/clip, configs/textpt or configs/vlmpt, or name it <package>_<name>.yaml"
        )
    return found[0]


def run_config_class(package: str) -> type:
    if package == "vpt":
        from vpt.cli import VisionRecipe

        return VisionRecipe.config_class
    if package == "vlmpt":
        from vlmpt.cli import VLMRecipe

        return VLMRecipe.config_class
    from textpt.cli import TextRecipe

    return TextRecipe.config_class


def test_configs_exist() -> None:
    assert ALL_YAML, f"no YAML files under {CONFIGS}"
    assert CONFIGS / "smoke" / "vpt_tiny.yaml" in ALL_YAML


def check_serve_config(path: Path) -> None:
    from promptcore.serving import load_serve_config

    data = read_yaml(path)
    if "applications" not in data:
        load_serve_config(path)
        return
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(data)
    for app in data["applications"]:
        args = dict(app.get("args") or {})
        config = CONFIGS.parent / args.pop("config")
        assert config.is_file(), f"{path}: application {app['name']!r} names a missing serve config {config}"
        load_serve_config(config, [f"{k}={v}" for k, v in args.items()])


@pytest.mark.parametrize("path", ALL_YAML, ids=[str(p.relative_to(CONFIGS)) for p in ALL_YAML])
def test_config_validates(path: Path) -> None:
    if path.relative_to(CONFIGS).parts[0] == "serve":
        check_serve_config(path)
        return
    if is_manifest(path):
        manifest = load_config(demo_config_class(), path)
        for task in manifest.tasks:
            assert (CONFIGS.parent / task.config).is_file(), f"{path}: task {task.name!r} names a missing config {task.config}"
        return
    cfg = load_config(run_config_class(package_of(path)), path)
    assert cfg.train is not None
    if package_of(path) == "vpt":
        from vpt.backbones import FAMILIES

        family = cfg.model.name.partition(":")[0]
        assert family in FAMILIES, f"{path}: backbone family {family!r} is not registered ({FAMILIES.names()})"


def test_package_of_paths() -> None:
    assert package_of(CONFIGS / "smoke" / "vpt_tiny.yaml") == "vpt"
    assert package_of(CONFIGS / "demo" / "efficientnet-vpt.yaml") == "vpt"
    for config, package in manifest_packages().items():
        assert package_of(config) == package
    assert package_of(CONFIGS / "clip" / "coop.yaml") == "vpt"
    assert package_of(CONFIGS / "smoke" / "textpt_tiny.yaml") == "textpt"
    with pytest.raises(AssertionError, match="cannot tell which package runs it"):
        package_of(CONFIGS / "demo" / "run.yaml")
    with pytest.raises(AssertionError, match="cannot tell which package runs it"):
        package_of(CONFIGS / "vpt" / "textpt_mix.yaml")


VPT_PRESETS = sorted(p for p in ALL_YAML if p.relative_to(CONFIGS).parts[0] == "vpt")
SOURCED_SECTIONS = ("model", "prompt", "data", "train")


def set_keys(raw: dict, cfg: object) -> set[str]:
    """The dotted paths of every value ``raw`` sets under the sourced sections (a nested mapping counts as one value
    unless its field is itself a config section, as ``data.synthetic`` is)."""
    import dataclasses

    from promptcore.config import is_field_path

    def walk(node: dict, prefix: str) -> set[str]:
        out = set()
        for key, value in node.items():
            path = f"{prefix}{key}"
            target = cfg
            for part in path.split("."):
                target = getattr(target, part)
            if isinstance(value, dict) and dataclasses.is_dataclass(target) and is_field_path(cfg, path):
                out |= walk(value, f"{path}.")
            else:
                out.add(path)
        return out

    return set().union(*(walk(raw[s], f"{s}.") for s in SOURCED_SECTIONS if s in raw))


@pytest.mark.parametrize("path", VPT_PRESETS, ids=[str(p.relative_to(CONFIGS)) for p in VPT_PRESETS])
def test_vpt_presets_say_where_every_value_comes_from(path: Path) -> None:
    from vpt.cli import VisionRecipe

    raw = read_yaml(path)
    cfg = load_config(VisionRecipe.config_class, raw)
    missing = sorted(set_keys(raw, cfg) - set(cfg.source))
    assert not missing, f"{path.name}: no source for {missing}"
    if cfg.sweep:
        assert "sweep" in cfg.source, f"{path.name}: no source for its sweep: grid"
    for key, origin in cfg.source.items():
        assert origin.startswith(("local:", "differs:")) or "/" in origin or "paper" in origin, f"{path.name}: {key}: {origin!r} names no origin"


@pytest.mark.parametrize("name", ["vpt_deep_vit_b16.yaml", "vpt_shallow_vit_b16.yaml", "vtab1k/vpt_deep.yaml", "fgvc/vpt_shallow.yaml"])
def test_vpt_paper_recipe(name: str) -> None:
    from vpt.cli import VisionRecipe

    cfg = load_config(VisionRecipe.config_class, CONFIGS / "vpt" / name)
    deep = "deep" in name
    assert cfg.model.name == "timm:vit_base_patch16_224.orig_in21k" and cfg.model.pretrained
    assert cfg.prompt.method == ("vpt_deep" if deep else "vpt_shallow")
    assert cfg.prompt.dropout == (0.1 if deep else 0.0) and cfg.prompt.init == "xavier"
    t = cfg.train
    assert (t.optimizer, t.momentum, t.scheduler, t.lr_scaling) == ("sgd", 0.9, "cosine", "linear")
    assert (t.warmup_epochs, t.epochs, t.batch_size) == (10, 100, 128)
    d = cfg.data
    assert (d.mean, d.std) == ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    if "fgvc" in name:
        assert (d.augment, d.resize, d.interpolation) == ("crop_flip", 256, "bilinear")
    else:
        assert (d.augment, d.crop_pct, d.interpolation, t.seed) == ("none", 1.0, "bilinear", 42)
    assert cfg.sweep["train.weight_decay"] == [0.01, 0.001, 0.0001, 0.0] and 50.0 in cfg.sweep["train.lr"]


@pytest.mark.parametrize(
    "task, tokens, batch, base_lr, wd",
    [("dmlab", 100, 64, 1.0, 0.001), ("sun397", 5, 128, 25.0, 0.0001), ("eurosat", 100, 64, 1.0, 0.001)],
)
def test_vtab_task_presets_hold_the_values_kmnp_vpt_documents(task: str, tokens: int, batch: int, base_lr: float, wd: float) -> None:
    from vpt.cli import VisionRecipe

    cfg = load_config(VisionRecipe.config_class, CONFIGS / "vpt" / "vtab1k" / f"vpt_deep_{task}.yaml")
    t = cfg.train
    assert (cfg.prompt.num_tokens, cfg.prompt.dropout, t.batch_size, t.lr, t.weight_decay) == (tokens, 0.1, batch, base_lr, wd)
    # demo.ipynb passes the scaled rate: SOLVER.BASE_LR = base_lr / 256 * batch (0.25, 12.5, 0.25).
    assert t.lr_scaling == "linear" and base_lr * batch / 256 in (0.25, 12.5)
    assert not cfg.sweep and cfg.data.train_split == "train800val200" and cfg.data.data_dir.endswith(task)


# The official code of every trained CLIP preset builds its train loader with Dassl, which drops each epoch's last
# incomplete batch (dassl/data/data_manager.py: drop_last=is_train and len(data_source) >= batch_size).
DASSL_REPOS = ("KaiyangZhou/CoOp", "htyao89/KgCoOp", "muzairkhattak/multimodal-prompt-learning", "muzairkhattak/PromptSRC")
CLIP_PRESETS = sorted(p for p in ALL_YAML if p.relative_to(CONFIGS).parts[0] == "clip")


@pytest.mark.parametrize("path", CLIP_PRESETS, ids=[p.name for p in CLIP_PRESETS])
def test_clip_presets_trained_with_dassl_drop_the_last_batch_as_dassl(path: Path) -> None:
    raw = read_yaml(path)
    sources = raw.get("source", {})
    dassl = any(str(origin).startswith(DASSL_REPOS) for origin in sources.values())
    trains = "train.epochs" in sources
    drop_last = raw.get("train", {}).get("drop_last", False)
    assert drop_last == (dassl and trains), f"{path.name}: train.drop_last is {drop_last}; official Dassl training: {dassl and trains}"
    if drop_last:
        assert "Dassl" in sources["train.drop_last"]
