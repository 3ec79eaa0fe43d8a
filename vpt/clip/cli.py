"""CLI verbs of the CLIP methods, registered as ``vpt`` commands when :mod:`vpt.clip` is imported::

    vpt base2new -c configs/clip/coop_vit_b16_b2n.yaml --seeds 1 2 3 -o runs/coop-b2n
    vpt interpret --prompts runs/coop-b2n/seed1/last -c configs/clip/coop_vit_b16_b2n.yaml --top-k 5

``base2new`` trains on the base classes (the first half) with K shots per class for each seed, evaluates base and
new accuracy and their harmonic mean, and prints and writes (``-o DIR/base2new.json`` and ``.md``) the mean ± std
over seeds. Each step is a Python call: :func:`run_base_to_new`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from promptcore import METHODS, UserError, wrap
from promptcore.cli import Command, add_config_args, default_run_dir, register_command

from ..config import BackboneConfig
from ..run_config import VisionRunConfig, load_run_config
from .config import CLIPMethodConfig


def clip_run_config(cfg: VisionRunConfig, verb: str) -> VisionRunConfig:
    """``cfg`` itself when its prompt is a CLIP method's config.

    Raises:
        UserError: another method (the message names the CLIP methods).
    """
    if not isinstance(cfg.prompt, CLIPMethodConfig):
        clip = [m.name for _, m in METHODS.items() if issubclass(m.config_class, CLIPMethodConfig)]
        raise UserError(
            f"prompt.method: {verb} works on CLIP methods ({', '.join(clip)}), not {cfg.prompt.method!r}; use a "
            f"config such as configs/clip/coop_vit_b16.yaml"
        )
    return cfg


def run_base_to_new(
    cfg: VisionRunConfig,
    seeds: Sequence[int],
    output: str | Path | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Base-to-new generalisation (CoCoOp's protocol) over several seeds, for a run config with a CLIP method.

    ``data.shots`` is K (per seed, the draw uses the seed); ``data.seed`` is unused, the seeds are ``seeds``. For
    each seed: K shots per base class (``cfg.data.shots``; all images when null) drawn with the seed, the prompts
    trained with :class:`promptcore.trainer.Trainer` (the zero-shot baseline trains nothing), then accuracy on the
    eval split's base classes and, after :meth:`set_class_names`, on its new classes.

    Returns:
        ``{"seeds": [{"seed", "base", "new", "hm"}...], "mean": {...}, "std": {...}, "summary": {"base": "x ± y"...}}``
        (accuracies as fractions; the summary in percent).
    """
    from promptcore.data import few_shot_indices
    from promptcore.trainer import Trainer, seed_everything

    from ..backbones import create_model
    from ..data import DataError, build_vision_data, collate_images, load_sources, resolve_image_config
    from .fewshot import ClassSubset, aggregate, base_new_metrics, base_new_split, format_aggregate

    clip_run_config(cfg, "base2new")
    if not seeds:
        raise UserError("--seeds: give at least one seed, e.g. --seeds 1 2 3")
    out_dir = Path(output) if output is not None else None
    sources = None
    rows = []
    for seed in seeds:
        seed_everything(seed)
        backbone = create_model(cfg.model)
        image_config = resolve_image_config(backbone, cfg.data.image_size)
        sources = sources or load_sources(cfg.data, image_config)
        bundle = build_vision_data(dataclasses.replace(cfg.data, shots=None), image_config, None, sources)
        if bundle.eval is None:
            raise DataError("base2new evaluates on the eval split; set data.eval_split (or data.val_fraction)")
        names = list(cfg.prompt.class_names or bundle.class_names)
        if len(names) != bundle.info["num_classes"]:
            raise UserError(f"prompt.class_names: {len(names)} names for {bundle.info['num_classes']} classes in the data")
        base, new = base_new_split(len(names))
        train_labels = bundle.train.labels
        shots = None
        if cfg.data.shots is not None:
            shots = few_shot_indices(train_labels, cfg.data.shots, seed, names, classes=base)
        train_set = ClassSubset(bundle.train, base, shots, train_labels)
        eval_labels = bundle.eval.labels
        model = wrap(backbone, dataclasses.replace(cfg.prompt, class_names=[names[i] for i in base]))
        train_cfg = dataclasses.replace(cfg.train, seed=seed)
        if list(model.prompt_parameters()):
            run_dir = str(out_dir / f"seed{seed}") if out_dir is not None else None
            Trainer(model, train_cfg, train_set, None, collate_images, run_dir=run_dir, run_config=cfg, overwrite=overwrite).fit()
        base_acc = Trainer(model, train_cfg, None, collate_fn=collate_images).evaluate(ClassSubset(bundle.eval, base, labels=eval_labels))["accuracy"]
        model.set_class_names([names[i] for i in new])
        new_acc = Trainer(model, train_cfg, None, collate_fn=collate_images).evaluate(ClassSubset(bundle.eval, new, labels=eval_labels))["accuracy"]
        row = {"seed": seed, **base_new_metrics(base_acc, new_acc)}
        rows.append(row)
        print(f"seed {seed}: base {100 * row['base']:.2f}  new {100 * row['new']:.2f}  H {100 * row['hm']:.2f}", flush=True)
    agg = aggregate([{k: r[k] for k in ("base", "new", "hm")} for r in rows])
    result = {
        "method": cfg.prompt.method,
        "backbone": cfg.model.name,
        "shots": cfg.data.shots,
        "seeds": rows,
        "mean": {k: m for k, (m, _) in agg.items()},
        "std": {k: s for k, (_, s) in agg.items()},
        "summary": format_aggregate(agg),
    }
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "base2new.json").write_text(json.dumps(result, indent=2) + "\n")
        (out_dir / "base2new.md").write_text(format_table(result))
    return result


def format_table(result: dict[str, Any]) -> str:
    """A Markdown table of base / new / H per seed and the mean ± std (percent)."""
    lines = [
        f"{result['method']} on {result['backbone']}, {result['shots'] or 'all'} shots, seeds {[r['seed'] for r in result['seeds']]}",
        "",
        "| seed | base | new | H |",
        "|---|---|---|---|",
    ]
    for r in result["seeds"]:
        lines.append(f"| {r['seed']} | {100 * r['base']:.2f} | {100 * r['new']:.2f} | {100 * r['hm']:.2f} |")
    s = result["summary"]
    lines.append(f"| mean ± std | {s['base']} | {s['new']} | {s['hm']} |")
    return "\n".join(lines) + "\n"


def cmd_base2new(args: argparse.Namespace) -> int:
    from ..cli import VisionRecipe  # the vpt CLI registers this verb; import it only when the verb runs

    cfg = load_run_config(args.config, args.overrides)
    output = Path(args.output) if args.output else default_run_dir(VisionRecipe(), args.config, "base2new")
    result = run_base_to_new(cfg, args.seeds, output, args.overwrite)
    print(format_table(result), end="")
    print(f"base2new: results written to {output / 'base2new.json'} and {output / 'base2new.md'}", file=sys.stderr)
    return 0


def cmd_interpret(args: argparse.Namespace) -> int:
    from promptcore.files import read_prompt_config

    from ..backbones import create_model
    from .interpret import interpret_prompts
    from .tokens import get_tokenizer

    meta = read_prompt_config(args.prompts)
    if args.config:
        cfg = clip_run_config(load_run_config(args.config, args.overrides), "interpret")
        backbone_cfg, tokenizer_name = cfg.model, cfg.prompt.tokenizer
    else:
        name = str(meta.get("backbone", ""))
        if not name.startswith("open_clip:"):
            raise UserError(
                f"the prompt folder records backbone {name!r}, not an 'open_clip:ARCH:TAG' name to rebuild; pass the "
                f"run config with -c CONFIG"
            )
        backbone_cfg, tokenizer_name = BackboneConfig(name=name, pretrained=True), None
    model = create_model(backbone_cfg)
    tokenizer = get_tokenizer(tokenizer_name, model.context_length)
    rows = interpret_prompts(args.prompts, model, tokenizer, args.top_k)
    print(f"nearest words to each learned context vector ({meta.get('method')}, {meta.get('backbone')}):")
    for row in rows:
        owner = f"[{row['class']}] " if row["class"] is not None else ""
        words = ", ".join(f"{w} ({d:.3f})" for w, d in row["words"])
        print(f"  {owner}ctx {row['position'] + 1}: {words}")
    return 0


def _base2new_arguments(p: argparse.ArgumentParser) -> None:
    add_config_args(p)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="seeds (default 1 2 3)")
    p.add_argument(
        "-o", "--output", metavar="DIR",
        help="writes DIR/seed<N>/ runs, base2new.json and base2new.md (default: runs/vpt-base2new-<config>-<time>)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace runs already in DIR")


def _interpret_arguments(q: argparse.ArgumentParser) -> None:
    add_config_args(q, required=False)
    q.add_argument("--prompts", required=True, metavar="DIR", help="prompt folder of a CLIP method")
    q.add_argument("--top-k", type=int, default=5, help="words per context vector (default 5)")


register_command(Command(
    prog="vpt", name="base2new", help="CLIP prompts: train on base classes per seed, report base / new / H (mean ± std)",
    configure=_base2new_arguments, run=cmd_base2new,
))
register_command(Command(
    prog="vpt", name="interpret", help="CLIP prompts: nearest vocabulary words to each learned context vector",
    configure=_interpret_arguments, run=cmd_interpret,
))


__all__ = ["clip_run_config", "format_table", "run_base_to_new"]
