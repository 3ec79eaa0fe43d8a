"""vpt's calls into timm, open_clip, transformers and torch raise no deprecation warning: training, evaluation and
saving through the ``vpt`` command on each backbone family and each method family (VPT-deep plain and fast, VFPT,
pixel prompts, the linear probe, and the CLIP methods CoOp, CoCoOp, MaPLe, PromptSRC and KgCoOp) run with every
DeprecationWarning, PendingDeprecationWarning and FutureWarning an error.

A deprecated call warns once and breaks in a later release; these tests catch it the day it appears (textpt's
paths: ``tests/textpt/test_textpt_warnings.py``; the packaged demo models: ``tests/promptcore/test_demo_training.py``).
Warnings that third-party code raises about its own internals would be let through by name below, each with its
reason; there are none today.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from test_vpt_cli import FAMILIES, ROOT, SHORT, SMOKE  # the smoke config and each backbone family's --set
from vpt.cli import main

CLIP_SMOKE = str(ROOT / "configs" / "clip" / "smoke_coop_tiny.yaml")
DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)

# (message regex, category, module regex, why it is not ours): the only deprecations let through.
THIRD_PARTY: list[tuple[str, type[Warning], str, str]] = []

VISION_PROMPTS = {
    "vpt_deep_fast": "{method: vpt_deep, num_tokens: 4, num_classes: 4, fast: 'on'}",
    "vpt_deep_plain": "{method: vpt_deep, num_tokens: 4, num_classes: 4, fast: 'off', dropout: 0.1}",
    "vpt_shallow": "{method: vpt_shallow, num_tokens: 4, num_classes: 4}",
    "vfpt": "{method: vfpt, num_tokens: 4, num_classes: 4, fourier_share: 0.5}",
    "pixel_pad": "{method: pixel_pad, prompt_size: 4, num_classes: 4}",
    "linear_probe": "{method: linear_probe, num_classes: 4}",
}
CLIP_PROMPTS = {
    "coop": "{method: coop, n_ctx: 2}",
    "cocoop": "{method: cocoop, n_ctx: 2}",
    "maple": "{method: maple, n_ctx: 2, depth: 2}",
    "promptsrc": "{method: promptsrc, n_ctx: 2, depth: 2, templates: ['a photo of a {}.', 'a drawing of a {}.']}",
    "kgcoop": "{method: kgcoop, weight: 8.0, templates: ['a photo of a {}.']}",
}


@pytest.fixture
def no_deprecations():
    with warnings.catch_warnings():
        for category in DEPRECATIONS:
            warnings.simplefilter("error", category)
        for message, category, module, _reason in THIRD_PARTY:
            warnings.filterwarnings("ignore", message=message, category=category, module=module)
        yield


def train_then_eval(config: str, sets: list[str], run: Path) -> None:
    assert main(["train", "-c", config, *sets, "-o", str(run)]) == 0
    assert main(["eval", "-c", config, *sets, "--prompts", str(run / "last")]) == 0


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_backbone_family_raises_no_deprecation(family, tmp_path, capsys, no_deprecations):
    train_then_eval(SMOKE, [*SHORT, *FAMILIES[family]], tmp_path / "run")


@pytest.mark.parametrize("method", sorted(VISION_PROMPTS))
def test_each_vision_method_raises_no_deprecation(method, tmp_path, capsys, no_deprecations):
    train_then_eval(SMOKE, [*SHORT, "--set", f"prompt={VISION_PROMPTS[method]}"], tmp_path / "run")


@pytest.mark.parametrize("method", sorted(CLIP_PROMPTS))
def test_each_clip_method_raises_no_deprecation(method, tmp_path, capsys, no_deprecations):
    sets = ["--set", f"prompt={CLIP_PROMPTS[method]}", "--set", "train.max_steps=2", "--set", "train.epochs=1"]
    train_then_eval(CLIP_SMOKE, sets, tmp_path / "run")


def test_the_filter_turns_a_deprecated_call_into_an_error(no_deprecations):
    import torch

    # A deprecated torch call of the kind these tests exist to catch (torch.amp.GradScaler("cuda") replaces it).
    with pytest.raises(FutureWarning, match="is deprecated"):
        torch.cuda.amp.GradScaler(enabled=False)
