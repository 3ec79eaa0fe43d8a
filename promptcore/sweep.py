"""Grid sweeps: one training run per point of a grid of config values and per seed, and a table of the results.

Papers that tune per dataset (VPT searches the base learning rate and the weight decay for each task) publish the
grid; a preset records it in its ``sweep:`` mapping (dotted field path -> the values to try, checked by
:func:`promptcore.config.check_grid`), and :func:`run_sweep` runs it::

    from promptcore.sweep import run_sweep
    from vpt.cli import VisionRecipe
    result = run_sweep(VisionRecipe(), "configs/vpt/vtab1k/vpt_deep.yaml", output="runs/sweep")
    result["best"]["overrides"]          # ['train.lr=0.25', 'train.weight_decay=0.001']

Each point is ranked by the mean over its seeds of the final evaluation's ``train.metric`` (what VPT's
``tune_vtab.py`` ranks by: the last epoch's validation accuracy); ties keep the point that comes first in the
grid. Every run is an ordinary training run with its own directory, config and prompt files.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any, Sequence

from .config import ConfigError, grid_points, load_config, parse_override
from .errors import UserError
from .recipe import Recipe

RESULT_JSON = "sweep.json"
RESULT_TABLE = "sweep.md"


def run_sweep(
    recipe: Recipe,
    config: str | os.PathLike | dict[str, Any],
    overrides: Sequence[str] = (),
    grid: dict[str, list[Any]] | None = None,
    seeds: Sequence[int] | None = None,
    output: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Trains one run per point of ``grid`` and per seed, and ranks the points.

    Args:
        recipe: the package's recipe (``vpt.cli.VisionRecipe()``): how to build the model and data.
        config: the run config (a YAML file or a dict).
        overrides: ``a.b=value`` overrides applied to every run.
        grid: dotted field path -> the values to try; default: the config's own ``sweep`` mapping. Without one,
            the config's own values are the only point (named ``config``): the seeds alone are swept.
        seeds: ``train.seed`` of each point's runs; default: the config's ``train.seed``.
        output: the folder of the runs (``OUTPUT/<point>/seed<seed>``) and of ``sweep.json`` / ``sweep.md``;
            ``None`` trains without saving anything.
        overwrite: replace runs already in ``output``.

    Returns:
        ``{"metric", "mode", "points": [{"name", "overrides", "runs": [{"seed", "final", "best", "run_dir"}],
        "mean", "std"}], "best": <the best point>}``; ``final`` is the last evaluation's metric.

    Raises:
        UserError: ``train.seed`` in the grid, or a configuration without an evaluation split.
    """
    from .cli import build_model_and_data
    from .trainer import Trainer

    base = _load(recipe, config, list(overrides))
    grid = dict(base.sweep if grid is None and hasattr(base, "sweep") else grid or {})
    if "train.seed" in grid:
        raise UserError("sweep: train.seed is in the grid; give the seeds with --seeds (seeds=...) instead")
    seeds = list(seeds) if seeds else [base.train.seed]
    metric, mode = base.train.metric, base.train.metric_mode
    points = []
    for point in grid_points(grid):
        name = "_".join(point) or "config"
        runs = []
        for seed in seeds:
            cfg = _load(recipe, config, [*overrides, *point, f"train.seed={seed}"])
            cfg, model, data = build_model_and_data(recipe, cfg)
            if data.eval is None:
                raise UserError("sweep: ranks points by their evaluation; the config gives no eval split (set data.eval_split or data.val_fraction)")
            run_dir = str(Path(output) / name / f"seed{seed}") if output is not None else None
            trainer = Trainer(model, cfg.train, data.train, data.eval, data.collate_fn, run_dir=run_dir, run_config=cfg, overwrite=overwrite)
            result = trainer.fit()
            best = result["best"]["value"] if result["best"] else None
            runs.append({"seed": seed, "final": result["eval"].get(metric), "best": best, "run_dir": result["run_dir"]})
            print(f"sweep {name} seed {seed}: {metric} {runs[-1]['final']:.4f}", flush=True)
        finals = [r["final"] for r in runs]
        points.append({
            "name": name,
            "overrides": point,
            "runs": runs,
            "mean": statistics.fmean(finals),
            "std": statistics.stdev(finals) if len(finals) > 1 else 0.0,
        })
    pick = max if mode == "max" else min
    best = pick(points, key=lambda p: p["mean"])  # the first of equal points, in grid order
    result = {"metric": metric, "mode": mode, "seeds": seeds, "points": points, "best": best}
    if output is not None:
        Path(output).mkdir(parents=True, exist_ok=True)
        (Path(output) / RESULT_JSON).write_text(json.dumps(result, indent=2) + "\n")
        (Path(output) / RESULT_TABLE).write_text(format_sweep(result))
    return result


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """``--grid`` arguments, ``key=[v1, v2]`` (values read as YAML, as ``--set`` reads them), as a grid.

    Raises:
        ConfigError: an argument that is not ``key=`` a non-empty list.
    """
    grid: dict[str, list[Any]] = {}
    for text in items:
        keys, values = parse_override(text)
        if not isinstance(values, list) or not values:
            raise ConfigError([f"--grid {text!r}: give the values to try as a list, e.g. --grid '{'.'.join(keys)}=[0.1, 0.5]'"])
        grid[".".join(keys)] = values
    return grid


def format_sweep(result: dict[str, Any]) -> str:
    """A Markdown table of each point's final metric per seed and its mean ± std; the best point is marked."""
    seeds = result["seeds"]
    lines = [
        f"| point | {' | '.join(f'seed {s}' for s in seeds)} | mean ± std |",
        f"|---|{'---|' * len(seeds)}---|",
    ]
    for p in result["points"]:
        mark = " (best)" if p["name"] == result["best"]["name"] else ""
        cells = " | ".join(f"{r['final']:.4f}" for r in p["runs"])
        lines.append(f"| {p['name']}{mark} | {cells} | {p['mean']:.4f} ± {p['std']:.4f} |")
    return f"{result['metric']} ({result['mode']}) of the final evaluation\n\n" + "\n".join(lines) + "\n"


def _load(recipe: Recipe, config: str | os.PathLike | dict[str, Any], overrides: list[str]) -> Any:
    return load_config(recipe.config_class, config, overrides)
