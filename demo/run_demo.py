"""``make demo``: prompt tuning on real pretrained models and real labelled data, against the usual baselines.

Every model and dataset comes from an ordinary package (:mod:`promptcore.assets`), so this runs on a machine that
reaches the package index and no model hub. For each task of ``configs/demo/demo.yaml`` it trains the run config's
prompt method and evaluates its baseline (:mod:`demo.baselines`) on the same frozen model, data and trainer, then
writes ``demo/report.md`` with accuracy (and its 95% interval), trainable parameters and wall time per method, whether
each prompt method's difference from its baseline is significant, an accuracy bar chart and the training curves. Usage::

    python demo/run_demo.py                       # everything (about 12 minutes on a 2-core CPU)
    python demo/run_demo.py --only text_encoder   # one task
    python demo/run_demo.py --hub                 # hub model names instead of packaged assets (connected machine)
    python demo/run_demo.py --set causal_lm:train.epochs=2   # override a task's run config
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout: make `demo.*` importable
    sys.path.insert(0, str(ROOT))

from promptcore import load_config  # noqa: E402
from promptcore.trainer import Trainer  # noqa: E402

from demo.report import MethodResult, write_report  # noqa: E402

# Packaged asset -> the same model on its hub, for `--hub` (README, "On a connected machine").
HUB_NAMES: dict[str, dict[str, Any]] = {
    "asset:efficientnet_lite0": {"model.name": "timm:tf_efficientnet_lite0.in1k", "model.pretrained": True},
    "asset:minilm_l6": {"model.name": "hf:sentence-transformers/all-MiniLM-L6-v2"},
    "asset:smollm2_135m": {"model.name": "hf:HuggingFaceTB/SmolLM2-135M-Instruct"},
}


@dataclass
class ExtraMethod:
    """A further prompt method of a task: its run config (the task's model and data) and its name in the report."""

    config: str
    method_label: str


@dataclass
class DemoTask:
    """One comparison: a run config's prompt method against a baseline on the same model and data.

    Attributes:
        name: short name (run folders, ``--only``, ``--set NAME:key=value``).
        title: the report's heading for the task.
        package: ``vpt`` or ``textpt``: whose run config and recipe.
        config: the run config YAML, relative to the repository root.
        method_label: how the prompt method is named in the report.
        baseline: ``linear_probe`` (head only, trained) or ``zero_shot`` (nothing trained; causal LM verbalizer).
        eval_samples: evaluate a fixed seeded subset of this many test rows (for data configs without such a cap).
        more: further prompt methods on the same model and data, each compared with the same baseline.
    """

    name: str
    title: str
    package: Literal["vpt", "textpt"]
    config: str
    method_label: str
    baseline: Literal["linear_probe", "zero_shot"]
    eval_samples: int | None = None
    more: list[ExtraMethod] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.eval_samples is not None and self.eval_samples <= 0:
            raise ValueError(f"eval_samples: must be positive or null, got {self.eval_samples}")


@dataclass
class DemoConfig:
    """``configs/demo/demo.yaml``: the tasks, and the wall-time budget the sizes were chosen for."""

    tasks: list[DemoTask] = field(default_factory=list)
    budget_minutes: float = 15.0


def _recipe(package: str) -> Any:
    if package == "vpt":
        from vpt.cli import VisionRecipe

        return VisionRecipe()
    from textpt.cli import TextRecipe

    return TextRecipe()


def load_task_config(task: DemoTask, overrides: list[str], hub: bool, path: str | None = None) -> Any:
    """The run config at ``path`` (default: the task's own) with ``overrides`` (and hub model names when ``hub``)."""
    recipe = _recipe(task.package)
    path = path or task.config
    raw = load_config(recipe.config_class, ROOT / path)
    extra = []
    if hub and raw.model.name in HUB_NAMES:
        extra = [f"{k}={json.dumps(v)}" for k, v in HUB_NAMES[raw.model.name].items()]
    return load_config(recipe.config_class, ROOT / path, [*extra, *overrides])


def load_task_configs(task: DemoTask, overrides: list[str], hub: bool) -> list[Any]:
    """The run configs of the task's prompt methods (its own first, then ``more``); each further one must use the
    same model and data as the first, or the comparison with the shared baseline would mean nothing."""
    configs = [load_task_config(task, overrides, hub)]
    for extra in task.more:
        cfg = load_task_config(task, overrides, hub, extra.config)
        for section in ("model", "data"):
            if getattr(cfg, section) != getattr(configs[0], section):
                raise SystemExit(f"demo task {task.name}: {extra.config} has another {section} section than {task.config}; "
                                 f"every method of a task must use the same model and data")  # fmt: skip
        configs.append(cfg)
    return configs


def _eval_subset(dataset: Any, n: int | None, seed: int) -> Any:
    """A fixed seeded subset of ``n`` rows (all rows when ``n`` is None or not smaller)."""
    if n is None or n >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
    return torch.utils.data.Subset(dataset, sorted(order.tolist()))


def _count(params: Any) -> int:
    return sum(p.numel() for p in params)


@contextmanager
def recording_rows(model: Any) -> Iterator[list[bool]]:
    """Records whether the model gets each evaluation row right, for the paired significance test of the report.

    Every ``forward_batch`` call made without gradients (an evaluation: the trainer's and
    :func:`demo.baselines.evaluate` run under ``no_grad``, training steps do not) appends, per row, whether the
    highest logit is the label. The trainer's evaluations thus cost nothing more; the last evaluation is the last
    ``len(eval_set)`` entries.
    """
    rows: list[bool] = []
    plain = model.forward_batch

    def forward_batch(batch: dict[str, Any]) -> torch.Tensor:
        logits = plain(batch)
        if not torch.is_grad_enabled():
            rows.extend((logits.argmax(-1) == batch["labels"].to(logits.device)).tolist())
        return logits

    model.forward_batch = forward_batch
    try:
        yield rows
    finally:
        del model.forward_batch


def last_evaluation(rows: list[bool], metrics: dict[str, Any]) -> list[bool] | None:
    """The per-row outcomes of the last evaluation, checked against it (every evaluation covers all its rows, and the
    last one's correct rows add up to its accuracy); None (the report then uses the unpaired test, and says so) when
    they disagree."""
    n = int(metrics["count"])
    last = rows[-n:] if n and rows and len(rows) % n == 0 else []
    if len(last) != n or sum(last) != round(metrics["accuracy"] * n):
        print(f"per-row outcomes ({sum(last)} of {len(last)} recorded) disagree with the evaluation "
              f"({metrics['accuracy']:.4f} of {n}); the report falls back to the unpaired test", flush=True)  # fmt: skip
        return None
    return last


def _train(model: Any, cfg: Any, data: Any, eval_set: Any, run_dir: Path) -> tuple[dict[str, Any], list[dict]]:
    train = cfg.train
    # train.param_groups names the prompt method's modules (prompts, head); a baseline trains only its head.
    groups = {name: g for name, g in train.param_groups.items() if name in model.prompt_modules()}
    if groups != train.param_groups:
        train = dataclasses.replace(train, param_groups=groups)
    trainer = Trainer(model, train, data.train, eval_set, data.collate_fn, run_dir=str(run_dir), run_config=cfg, overwrite=True)
    result = trainer.fit()
    return result["eval"], trainer.run.read_metrics()


def run_task(task: DemoTask, cfgs: list[Any], runs: Path) -> list[MethodResult]:
    """Trains the prompt methods (the task's own, then ``more``), then the baseline, of one task; returns their
    measured results."""
    from demo.baselines import evaluate
    from promptcore import wrap

    recipe = _recipe(task.package)
    results = []
    labels = [task.method_label, *(extra.method_label for extra in task.more)]
    folders = ["prompt", *(f"prompt-{i + 2}" for i in range(len(task.more)))]
    for label, folder, method_cfg in reversed(list(zip(labels, folders, cfgs))):  # the task's own last: its model stays
        print(f"\n== {task.title}: {label}", flush=True)
        start = time.perf_counter()
        model = recipe.build_model(method_cfg)
        data = recipe.build_data(method_cfg, model)
        eval_set = _eval_subset(data.eval, task.eval_samples, method_cfg.train.seed)
        with recording_rows(model) as rows:
            metrics, records = _train(model, method_cfg, data, eval_set, runs / task.name / folder)
        results.insert(0, MethodResult(task.name, task.title, label, metrics["accuracy"], metrics["count"],
                                       _count(model.prompt_parameters()), _count(model.parameters()), len(data.train),
                                       time.perf_counter() - start, records, last_evaluation(rows, metrics)))  # fmt: skip
    cfg = cfgs[0]

    label = "linear probe (head only)" if task.baseline == "linear_probe" else "zero-shot (no prompt)"
    print(f"\n== {task.title}: {label}", flush=True)
    start = time.perf_counter()
    # The library's own head-only methods, on the same frozen backbone: vpt's and textpt's linear probe (the
    # backbone's pooled features), textpt's zero-shot (the verbalizer's words after the same template).
    if task.package == "vpt":
        from vpt import LinearProbeConfig

        baseline = wrap(model.backbone, LinearProbeConfig(num_classes=model.config.num_classes), name=model.name)
    else:
        import textpt
        from textpt import LinearProbeConfig as TextProbe
        from textpt import ZeroShotConfig

        if task.baseline == "linear_probe":
            base_config = TextProbe(num_classes=model.config.num_classes, seed=model.config.seed)
        else:
            base_config = ZeroShotConfig(num_classes=model.config.num_classes, verbalizer=model.config.verbalizer)
        baseline = textpt.wrap(model.backbone, base_config, tokenizer=model.tokenizer, task=model.task, name=model.backbone_name, pooling=model.pooling or "auto")
    with recording_rows(baseline) as rows:
        if task.baseline == "zero_shot":
            size = cfg.train.eval_batch_size or cfg.train.batch_size
            metrics, records, trained_rows = evaluate(baseline, eval_set, data.collate_fn, size, "zero-shot eval"), [], 0
        else:
            metrics, records = _train(baseline, cfg, data, eval_set, runs / task.name / "baseline")
            trained_rows = len(data.train)
    results.append(MethodResult(task.name, task.title, label, metrics["accuracy"], metrics["count"],
                                _count(baseline.prompt_parameters()), _count(baseline.parameters()), trained_rows,
                                time.perf_counter() - start, records, last_evaluation(rows, metrics), baseline=True))  # fmt: skip
    return results


def fetch_assets(configs: dict[str, Any]) -> float:
    """Fetches (first run) or finds (later runs) every packaged asset the configs name; returns the seconds taken."""
    from tqdm.auto import tqdm

    needed: list[tuple[str, str, str]] = []
    for package, cfgs in configs.values():
        cfg = cfgs[0]  # every method of a task uses the same model and data
        if cfg.model.name.startswith("asset:"):
            needed.append((package, "model", cfg.model.name.removeprefix("asset:")))
        if cfg.data.source == "asset":
            needed.append((package, "dataset", cfg.data.name))
    start = time.perf_counter()
    for package, kind, name in tqdm(list(dict.fromkeys(needed)), desc="assets", unit="asset", dynamic_ncols=True):
        if package == "vpt":
            from vpt import assets as vision_assets

            vision_assets.create_asset_model(name) if kind == "model" else vision_assets.load_dataset(name)
        else:
            from textpt import assets as text_assets

            text_assets.model_path(name) if kind == "model" else text_assets.load_dataset(name)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python demo/run_demo.py`` (``make demo``)."""
    parser = argparse.ArgumentParser(prog="demo/run_demo.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs/demo/demo.yaml"), help="the demo's task list")
    parser.add_argument("--out", default=str(ROOT / "demo"), help="where report.md, the plots and runs/ go")
    parser.add_argument("--only", action="append", default=[], metavar="TASK", help="run only this task (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="TASK:KEY=VALUE", help="override a task's run config")
    parser.add_argument("--hub", action="store_true", help="load the models by their hub names (needs a model hub)")
    args = parser.parse_args(argv)

    total_start = time.perf_counter()
    load_before = os.getloadavg()[0]
    demo = load_config(DemoConfig, args.config)
    names = [t.name for t in demo.tasks]
    unknown = [n for n in args.only + [s.partition(":")[0] for s in args.set] if n not in names]
    if unknown:
        parser.error(f"unknown task(s) {unknown}; the tasks of {args.config} are {names}")
    tasks = [t for t in demo.tasks if not args.only or t.name in args.only]
    overrides = {t.name: [s.partition(":")[2] for s in args.set if s.partition(":")[0] == t.name] for t in tasks}
    configs = {t.name: (t.package, load_task_configs(t, overrides[t.name], args.hub)) for t in tasks}

    print(f"prompttune demo: {len(tasks)} task(s), budget {demo.budget_minutes:g} min, torch threads {torch.get_num_threads()}")
    fetch_s = fetch_assets(configs)
    out = Path(args.out)
    results: list[MethodResult] = []
    for task in tasks:
        results.extend(run_task(task, configs[task.name][1], out / "runs"))
    total_s = time.perf_counter() - total_start
    machine = f"{platform.machine()} CPU, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    machine += ", CUDA" if torch.cuda.is_available() else ""
    # Wall times depend on what else runs: the load average tells a reader whether the machine was shared.
    machine += f" (1-minute load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end)"
    summary = write_report(results, out, fetch_s, total_s, demo.budget_minutes, machine,
                         {f"{t.name} ({label})": path for t in tasks
                          for path, label in [(t.config, t.method_label), *((e.config, e.method_label) for e in t.more)]},
                         hub=args.hub)  # fmt: skip
    print("\n" + summary)
    print(f"\nwrote {out / 'report.md'} in {total_s / 60:.1f} min (budget {demo.budget_minutes:g} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
