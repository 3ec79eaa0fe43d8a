"""Checks run before any work, so that a run is refused at once, in one line, rather than failing or going wrong
after an epoch: what a run needs of its model and folder (:func:`run_problems`, which ``train`` reports together
with the data's problems), and what a resumed run's saved state needs of the model built now (:func:`check_resume`,
called by the trainer before it loads the state).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .config import check_distinct_ids, unknown_fields  # noqa: F401 - defined there, free of torch, for config checks
from .errors import UserError
from .files import CONFIG_FILE, read_prompt_config
from .memory import batch_bytes, check_fits
from .fingerprint import FINGERPRINT_KEY
from .runs import RunDirError

if TYPE_CHECKING:
    from .model import PromptedModel
    from .train_config import TrainConfig


def metric_problem(model: "PromptedModel", config: "TrainConfig") -> str | None:
    """Why ``train.metric`` cannot select ``best/`` for ``model`` (not among its eval metrics), or None."""
    if config.metric in model.metric_names():
        return None
    return (
        f"metric: {config.metric!r} is not among the eval metrics of {type(model).__name__} "
        f"({', '.join(model.metric_names())}); set train.metric to one of them"
    )


def run_problems(
    model: "PromptedModel", config: "TrainConfig", evaluates: bool, run_dir: str | Path, train_dataset: Any = None
) -> list[str]:
    """What would stop a training run that the config and the data do not already report, each a message: the
    metric that selects ``best/`` against the model's eval metrics (when the run evaluates), a training batch the
    memory cannot hold (:func:`batch_problem`) and a run directory that cannot be written. The trainer checks the
    metric again (a run started from Python meets it there; the batch check reads an example, which the trainer
    leaves to the data loader's order, so from Python it is :func:`batch_problem`); found here, they are reported
    with the data's problems in one go."""
    problems = []
    problem = metric_problem(model, config) if evaluates else None
    if problem:
        problems.append(problem)
    problem = batch_problem(model, config, train_dataset)
    if problem:
        problems.append(problem)
    problem = _unwritable(Path(run_dir))
    if problem:
        problems.append(problem)
    return problems


def batch_problem(model: "PromptedModel", config: "TrainConfig", train_dataset: Any) -> str | None:
    """Why a batch of ``train.batch_size`` examples (or of all of them, when fewer) cannot fit in memory, judged
    from the first example before any batch is made (:func:`promptcore.memory.batch_bytes`: its inputs, images
    C×H×W or token ids, and for a text model the embeddings of its tokens at the model's width ``dim``); None when
    it may fit. A lower bound: only a batch that clearly cannot fit is refused."""
    if train_dataset is None or len(train_dataset) == 0:
        return None
    example = train_dataset[0]
    if not isinstance(example, dict):  # the toolkit's datasets give dicts; another dataset is left to the collate
        return None
    rows = min(config.batch_size, len(train_dataset))
    hidden = getattr(model, "dim", None)
    try:
        check_fits(batch_bytes(example, rows, hidden if isinstance(hidden, int) else None),
                   f"train.batch_size {config.batch_size} ({rows} examples per batch)")
    except UserError as e:
        return f"{e} (or shorter inputs: data.max_length, data.image_size)"
    return None


def _unwritable(path: Path) -> str | None:
    """Why the run directory ``path`` could not be made or written, judged without creating anything (the
    trainer's probe file is the final word): its nearest existing ancestor must be a writable folder."""
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None:
        return None
    if not existing.is_dir():
        what = "is a file" if existing == path else f"lies under the file {str(existing)!r}"
        return f"run directory {str(path)!r} cannot be written ({what}); give a folder path for the run (-o/--output)"
    if not os.access(existing, os.W_OK | os.X_OK):
        return (
            f"run directory {str(path)!r} cannot be written ({str(existing)!r} is not writable); choose a writable "
            f"folder (-o/--output) or make that folder writable"
        )
    return None


def check_resume(model: "PromptedModel", saved_prompts: dict[str, dict[str, torch.Tensor]], last: Path, run_path: Path) -> None:
    """Refuses to resume when the model built now cannot continue the run's prompts.

    Args:
        model: the model built from the (possibly changed) config.
        saved_prompts: the training state's prompt modules, ``{module name: state dict}``.
        last: the run's ``last/`` prompt folder (its config holds the backbone's weights fingerprint).
        run_path: the run directory, for the message.

    Raises:
        RunDirError: a prompt module or tensor the run does not have, or of another shape (a changed
            ``prompt.num_tokens``, method or head size), or a backbone whose frozen weights changed (another checkpoint,
            pretrained tag, or a random backbone built with another seed); each named.
    """
    problems = []
    modules = model.prompt_modules()
    for name in sorted(set(modules) | set(saved_prompts)):
        if name not in saved_prompts or name not in modules:
            problems.append(f"prompt module {name!r} is {'new' if name in modules else 'gone'}")
            continue
        own, saved = modules[name].state_dict(), saved_prompts[name]
        for key in sorted(set(own) | set(saved)):
            if key not in own or key not in saved:
                problems.append(f"{name}.{key} is {'new' if key in own else 'gone'}")
            elif tuple(own[key].shape) != tuple(saved[key].shape):
                problems.append(f"{name}.{key} has shape {tuple(saved[key].shape)} in the run, {tuple(own[key].shape)} now")
    if problems:
        raise RunDirError(
            f"cannot resume {run_path}: the prompts the config builds now do not fit the run's ({'; '.join(problems)}); "
            f"resume with the run's prompt settings (drop the --set that changed them), or start a new run"
        )
    recorded = read_prompt_config(last).get(FINGERPRINT_KEY) if (last / CONFIG_FILE).is_file() else None
    current = model.backbone_fingerprint()
    if recorded is not None and current is not None and recorded != current:
        raise RunDirError(
            f"cannot resume {run_path}: its prompts were trained on a backbone with weights fingerprint {recorded}, the "
            f"model built now ({model._backbone_label()}) has {current}: the frozen weights changed (another checkpoint "
            f"or pretrained tag, or a random backbone built with another seed). Resume with the run's own backbone, or "
            f"start a new run"
        )


__all__ = ["check_resume"]
