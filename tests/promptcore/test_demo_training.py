"""The three packaged tasks of ``make demo`` (EfficientNet-Lite0 pixel prompt on Fashion-MNIST, MiniLM-L6 and
SmolLM2-135M on Rotten Tomatoes), trained on the real packaged models and data with the settings users reach for
first: a learning rate per trainable module (prompt and head), the ``step_timer`` callback, and ImageNet statistics
instead of the backbone's own on EfficientNet. Each from Python (objects) and from YAML (the ``train`` command on
the demo's run config), a few steps on a few rows each, with every deprecation warning an error (those that
third-party code raises about its own internals are let through by name, each with its reason).

The assets are fetched into the asset cache the first time (``download``: about 230 MB from the package index and
Debian's archive); SmolLM2's 4-bit GGUF is converted once into a float32 folder (about 20 s). When an archive can
be neither found in the cache nor fetched, the test skips with the fetch error as its reason.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]

from demo.run_demo import DemoConfig, _eval_subset, _recipe, load_task_config  # noqa: E402
from promptcore import ConfigError, Trainer, load_config  # noqa: E402
from promptcore.assets import AssetFetchError  # noqa: E402
from promptcore.callbacks import Callback, StepTimer  # noqa: E402
from vpt.backbones._base import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402

pytestmark = [pytest.mark.download, pytest.mark.slow]

TASKS = {t.name: t for t in load_config(DemoConfig, ROOT / "configs/demo/demo.yaml").tasks}
PROMPT_LR, HEAD_LR = 1e-2, 1e-3
# The demo's causal LM scores verbalizer words: it trains a prompt and has no head, so it has one group.
GROUPS = {
    "vision": {"prompts": PROMPT_LR, "head": HEAD_LR},
    "text_encoder": {"prompts": PROMPT_LR, "head": HEAD_LR},
    "causal_lm": {"prompts": PROMPT_LR},
}
STEPS = 3
# The demo's run configs, cut to a few steps on a few rows: the settings under test are what matters here.
SMALL = {
    "vision": {"data": {"image_size": 64, "shots": 1}, "train": {"batch_size": 5}},
    "text_encoder": {"data": {"max_length": 32, "max_train_samples": 15, "max_eval_samples": 6}, "train": {"batch_size": 5}},
    "causal_lm": {"data": {"max_length": 32, "max_train_samples": 9, "max_eval_samples": 4}, "train": {"batch_size": 3}},
}
TRAIN = {"max_steps": STEPS, "scheduler": "constant", "warmup_steps": 0, "progress_bar": False, "eval_batch_size": 8}

# (message regex, category, module regex, why it is not ours): the only warnings let through.
THIRD_PARTY: list[tuple[str, type[Warning], str, str]] = []


@pytest.fixture
def strict_warnings():
    with warnings.catch_warnings():
        for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
            warnings.simplefilter("error", category)
        for message, category, module, _reason in THIRD_PARTY:
            warnings.filterwarnings("ignore", message=message, category=category, module=module)
        yield


def _or_skip(fn, *args):
    """``fn(*args)``, skipping the test when a packaged asset can be neither found in the cache nor fetched."""
    try:
        return fn(*args)
    except AssetFetchError as e:
        pytest.skip(f"packaged asset not available offline: {e}")


def _fetch(task: str) -> None:
    """Fetches the task's model and dataset (a no-op once cached), skipping when they cannot be had."""
    from demo.run_demo import fetch_assets

    cfg = load_task_config(TASKS[task], [], hub=False)
    _or_skip(fetch_assets, {task: (TASKS[task].package, [cfg])})


class FirstStepDelta(Callback):
    """The largest change of each trainable module's parameters in the first optimizer step."""

    def __init__(self) -> None:
        self.before: dict[str, list[torch.Tensor]] = {}
        self.delta: dict[str, float] = {}

    def on_train_begin(self, trainer) -> None:
        self.before = {n: [p.detach().clone() for p in m.parameters()] for n, m in trainer.model.prompt_modules().items()}

    def on_step_end(self, trainer, info) -> None:
        if info.step == 1:
            for name, module in trainer.model.prompt_modules().items():
                self.delta[name] = max(float((p.detach() - b).abs().max()) for p, b in zip(module.parameters(), self.before[name]))


def _check_run_files(run: Path, task: str, steps: int) -> None:
    """What the run directory holds: each group's lr on every train line, one step time per step."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_lines = [r for r in records if r["split"] == "train"]
    assert train_lines
    for record in train_lines:
        if len(GROUPS[task]) == 1:
            assert record["lr"] == pytest.approx(PROMPT_LR)
        else:
            assert {k: v for k, v in record.items() if k.startswith("lr/")} == pytest.approx({f"lr/{n}": lr for n, lr in GROUPS[task].items()})
    times = [json.loads(line) for line in (run / "step_times.jsonl").read_text().splitlines()]
    assert [t["step"] for t in times] == list(range(1, steps + 1))
    assert all(t["seconds"] > 0 for t in times)


@pytest.mark.parametrize("task", list(TASKS))
def test_demo_task_from_python(task, tmp_path, strict_warnings):
    _fetch(task)
    demo_task = TASKS[task]
    cfg = load_task_config(demo_task, [], hub=False)
    data_cfg = dataclasses.replace(cfg.data, **SMALL[task]["data"])
    if demo_task.package == "vpt":
        data_cfg = dataclasses.replace(data_cfg, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))
    train = dataclasses.replace(cfg.train, **TRAIN, **SMALL[task]["train"], param_groups={n: {"lr": lr} for n, lr in GROUPS[task].items()})
    cfg = dataclasses.replace(cfg, data=data_cfg, train=train)
    recipe = _recipe(demo_task.package)
    model = recipe.build_model(cfg)
    data = recipe.build_data(cfg, model)

    timer, delta = StepTimer(), FirstStepDelta()
    trainer = Trainer(model, cfg.train, data.train, _eval_subset(data.eval, 6, 0), data.collate_fn,
                      run_dir=str(tmp_path / "run"), callbacks=[timer, delta])  # fmt: skip
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    assert {n: g["lr"] for n, g in groups.items()} == GROUPS[task]
    for name, module in model.prompt_modules().items():  # each group holds exactly its module's parameters
        assert [id(p) for p in groups[name]["params"]] == [id(p) for p in module.parameters()]
    result = trainer.fit()

    assert result["step"] == STEPS and sorted(timer.times) == list(range(1, STEPS + 1))
    assert all(s > 0 for s in timer.times.values())
    # Adam's first step moves the parameters with the largest gradients by the learning rate: each module moved
    # by its own group's rate (a ten-fold gap between prompt and head).
    assert delta.delta == pytest.approx(GROUPS[task], rel=0.02)
    _check_run_files(tmp_path / "run", task, STEPS)


def test_imagenet_statistics_replace_efficientnets_own_in_the_images_and_the_prompt_files(tmp_path, strict_warnings):
    _fetch("vision")
    recipe = _recipe("vpt")
    base = load_task_config(TASKS["vision"], [], hub=False)
    base = dataclasses.replace(base, data=dataclasses.replace(base.data, **SMALL["vision"]["data"]))
    imagenet = dataclasses.replace(base, data=dataclasses.replace(base.data, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)))
    own_model, model = recipe.build_model(base), recipe.build_model(imagenet)
    own, ours = recipe.build_data(base, own_model), recipe.build_data(imagenet, model)

    from vpt.data import resolve_image_config

    backbone = resolve_image_config(model.backbone)
    assert backbone.mean == pytest.approx((0.5, 0.5, 0.5)) and backbone.std == pytest.approx((0.5, 0.5, 0.5))  # tf_efficientnet_lite0's
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    for i in (0, 7):  # the same image, normalised with the other statistics
        a, b = own.eval[i]["pixel_values"], ours.eval[i]["pixel_values"]
        assert not torch.allclose(a, b)
        torch.testing.assert_close(b * std + mean, a * 0.5 + 0.5, rtol=0, atol=1e-6)
    model.save_prompts(tmp_path / "prompts")
    recorded = json.loads((tmp_path / "prompts" / "prompt_config.json").read_text())["preprocessing"]
    assert recorded["mean"] == pytest.approx(IMAGENET_MEAN) and recorded["std"] == pytest.approx(IMAGENET_STD)


def _yaml_config(task: str, tmp_path: Path) -> Path:
    """The demo's run config with the three settings written into it, as a user would."""
    raw = yaml.safe_load((ROOT / TASKS[task].config).read_text())
    raw["data"].update(SMALL[task]["data"])
    raw["train"].update(TRAIN, **SMALL[task]["train"], callbacks=["step_timer"],
                        param_groups={n: {"lr": lr} for n, lr in GROUPS[task].items()})  # fmt: skip
    if TASKS[task].package == "vpt":
        # ImageNet statistics; the evaluation rows are a small hold-out of the training split (18 images).
        raw["data"].update(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD), eval_split=None, val_fraction=0.0003)
    path = tmp_path / f"{task}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize("task", list(TASKS))
def test_demo_task_from_yaml(task, tmp_path, strict_warnings, capsys):
    _fetch(task)
    if TASKS[task].package == "vpt":
        from vpt.cli import main
    else:
        from textpt.cli import main
    config, run = _yaml_config(task, tmp_path), tmp_path / "run"
    assert main(["train", "-c", str(config), "-o", str(run)]) == 0

    _check_run_files(run, task, STEPS)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["param_groups"] == {n: {"lr": lr} for n, lr in GROUPS[task].items()}
    assert saved["train"]["callbacks"] == ["step_timer"]
    if TASKS[task].package == "vpt":
        recorded = json.loads((run / "last" / "prompt_config.json").read_text())["preprocessing"]
        assert recorded["mean"] == pytest.approx(IMAGENET_MEAN) and recorded["std"] == pytest.approx(IMAGENET_STD)


def test_the_causal_lm_task_has_no_head_to_give_a_rate(tmp_path):
    _fetch("causal_lm")
    config = _yaml_config("causal_lm", tmp_path)
    from textpt.cli import TextRecipe
    from textpt.run_config import TextRunConfig

    cfg = load_config(TextRunConfig, config, ["train.param_groups={head: {lr: 0.001}}"])
    recipe = TextRecipe()
    model = recipe.build_model(cfg)
    assert list(model.prompt_modules()) == ["prompts"]
    with pytest.raises(ConfigError, match=r"train.param_groups.head: \w+ has no trainable module 'head'"):
        Trainer(model, cfg.train, recipe.build_data(cfg, model).train, collate_fn=None)


def test_make_demo_passes_the_settings_to_each_task_and_its_baseline(tmp_path, strict_warnings, capsys):
    """``demo/run_demo.py --set`` (what ``make demo`` runs): the prompt run takes both groups, the linear-probe
    baseline (head only) the head's rate; both record their step times."""
    _fetch("text_encoder")
    from demo.run_demo import main

    sets = [f"train.{k}={json.dumps(v)}" for k, v in {**TRAIN, **SMALL["text_encoder"]["train"]}.items()]
    sets += [f"data.{k}={json.dumps(v)}" for k, v in SMALL["text_encoder"]["data"].items()]
    sets += ["train.callbacks=[step_timer]", f"train.param_groups={json.dumps({n: {'lr': lr} for n, lr in GROUPS['text_encoder'].items()})}"]
    assert main(["--only", "text_encoder", "--out", str(tmp_path), *[a for s in sets for a in ("--set", f"text_encoder:{s}")]]) == 0
    runs = tmp_path / "runs" / "text_encoder"
    _check_run_files(runs / "prompt", "text_encoder", STEPS)
    _check_run_files(runs / "prompt-2", "text_encoder", STEPS)  # the task's further method (deep prompts)
    assert json.loads((runs / "prompt-2" / "last" / "prompt_config.json").read_text())["method"] == "prefix"
    records = [json.loads(line) for line in (runs / "baseline" / "metrics.jsonl").read_text().splitlines()]
    assert {r["lr"] for r in records if r["split"] == "train"} == {HEAD_LR}
    assert len((runs / "baseline" / "step_times.jsonl").read_text().splitlines()) == STEPS
    report = (tmp_path / "report.md").read_text()
    deep = next(e.method_label for e in TASKS["text_encoder"].more)
    assert f"| {deep} |" in report and f": {deep} " in report  # its row, and its comparison with the probe
