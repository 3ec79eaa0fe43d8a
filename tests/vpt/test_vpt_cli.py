"""The ``vpt`` CLI: train / eval / predict on the smoke config, each backbone family by --set, clean errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from vpt.cli import main

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "smoke" / "vpt_tiny.yaml")
SHORT = ["--set", "train.epochs=1", "--set", "train.max_steps=2", "--set", "data.synthetic.num_eval=16"]

FAMILIES = {
    "timm": [],
    "open_clip": [
        "--set", "model.name=open_clip:tiny",
        "--set", "model.kwargs={model_cfg: {embed_dim: 32, vision_cfg: {image_size: 32, patch_size: 8, width: 64, layers: 2, head_width: 32}, "
        "text_cfg: {context_length: 16, vocab_size: 100, width: 32, heads: 2, layers: 1}}}",
    ],
    "hf": [
        "--set", "model.name=hf:tiny-vit",
        "--set", "model.kwargs={config: {model_type: vit, image_size: 32, patch_size: 8, hidden_size: 64, num_hidden_layers: 2, "
        "num_attention_heads: 2, intermediate_size: 128}}",
    ],
}


def run_json(capsys: pytest.CaptureFixture, argv: list[str]) -> dict:
    assert main(argv) == 0
    out = capsys.readouterr().out
    return json.loads(out[out.index("{") :])


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_train_smoke_config_with_each_backbone_family(family: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    result = run_json(capsys, ["train", "-c", SMOKE, *SHORT, *FAMILIES[family], "-o", str(tmp_path / "run")])
    assert result["step"] == 2
    meta = json.loads((tmp_path / "run" / "last" / "prompt_config.json").read_text())
    assert meta["backbone"].startswith(f"{family}:") and meta["method"] == "vpt_deep"


@pytest.mark.slow
def test_smoke_config_learns_then_eval_and_predict(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    result = run_json(capsys, ["train", "-c", SMOKE, "-o", str(tmp_path / "run")])
    assert result["best"]["value"] > 0.6  # 4 classes: chance is 0.25
    metrics = run_json(capsys, ["eval", "-c", SMOKE, "--prompts", str(tmp_path / "run" / "best")])
    assert metrics["accuracy"] == pytest.approx(result["best"]["value"])
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("L", (50, 40), 200).save(folder / "gray.png")
    Image.new("RGBA", (20, 20), (0, 0, 255, 128)).save(folder / "rgba.png")
    (folder / "notes.txt").write_text("not an image")  # skipped: folders are searched for image suffixes
    assert main(["predict", "-c", SMOKE, "--prompts", str(tmp_path / "run" / "best"), str(folder), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("gray.png") and lines[3].endswith("rgba.png") and len(lines) == 6
    probs = [float(line.split()[-1]) for line in lines[1:3]]
    assert lines[1].startswith("  1. class ") and probs[0] >= probs[1] and 0 < sum(probs) <= 1.0 + 1e-6


def test_pixel_prompts_on_an_image_folder_predict_the_right_class(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    colors = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}
    for split, n in (("train", 8), ("test", 2)):
        for name, rgb in colors.items():
            (tmp_path / "data" / split / name).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (24 + i, 24), tuple(max(0, c - 10 * i) for c in rgb)).save(tmp_path / "data" / split / name / f"{i}.png")
    argv = [
        "-c", SMOKE,
        "--set", "prompt={method: pixel_pad, prompt_size: 2}",
        "--set", f"data={{source: imagefolder, data_dir: {tmp_path / 'data'}}}",
    ]
    result = run_json(capsys, ["train", *argv, "--set", "train.epochs=6", "--set", "train.batch_size=8", "-o", str(tmp_path / "run")])
    assert result["best"]["value"] == 1.0
    meta = json.loads((tmp_path / "run" / "best" / "prompt_config.json").read_text())
    assert meta["method"] == "pixel_pad" and meta["num_classes"] == 3  # filled from the data
    Image.new("RGB", (64, 64), (250, 5, 5)).save(tmp_path / "red.png")
    assert main(["predict", *argv, "--prompts", str(tmp_path / "run" / "best"), str(tmp_path / "red.png"), "--top-k", "9"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and lines[1].startswith("  1. red ")  # top-k capped at the 3 classes


def test_errors_are_one_line_with_exit_status_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "-c", SMOKE, "--set", "data.shots=0", "--set", "prompt.num_tokenz=3", "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "data.shots: must be a positive number of images per class" in err and "Did you mean 'num_tokens'" in err
    assert main(["predict", "-c", SMOKE, "--prompts", str(tmp_path / "none"), str(tmp_path / "missing.png")]) == 2
    assert "image '" in capsys.readouterr().err
    (tmp_path / "fake.png").write_text("not a png")
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    assert main(["predict", "-c", SMOKE, "--prompts", str(tmp_path / "none"), str(tmp_path / "ok.png")]) == 2
    assert "prompt folder" in capsys.readouterr().err


@pytest.mark.slow
def test_python_dash_m_vpt_reports_bad_input_cleanly(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    proc = subprocess.run(
        [sys.executable, "-m", "vpt", "predict", "-c", str(tmp_path / "nope.yaml"), "--prompts", str(tmp_path), str(tmp_path / "ok.png")],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "nope.yaml' does not exist" in proc.stderr


def test_clip_method_gets_class_names_from_the_data(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    clip = FAMILIES["open_clip"][:3] + [FAMILIES["open_clip"][3].replace("vocab_size: 100", "vocab_size: 49408")]
    run_json(capsys, ["train", "-c", SMOKE, *SHORT, *clip, "--set", "prompt={method: coop, n_ctx: 2}", "-o", str(tmp_path / "run")])
    meta = json.loads((tmp_path / "run" / "last" / "prompt_config.json").read_text())
    assert meta["method"] == "coop" and meta["class_names"] == ["class 0", "class 1", "class 2", "class 3"]


def test_vpt_verbs_include_predict_and_the_clip_verbs() -> None:
    import argparse

    from promptcore.cli import build_parser
    from promptcore.plugins import load_plugins
    from vpt.cli import VisionRecipe

    load_plugins()  # as the vpt command does first: the CLIP verbs come with the vpt.clip plugin
    parser = build_parser(VisionRecipe())
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"train", "eval", "predict", "sweep", "base2new", "interpret"} <= set(sub.choices)
