"""Every known path from bad user input to an error, walked through the ``vpt`` and ``textpt`` command lines: each
ends in one ``error:`` line naming the field or file and the fix, with exit status 2 and no traceback, before any
training step. One case per path; a new path found gets a new case here."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

import textpt.cli
import vpt.cli
from promptcore.cli import EXIT_ERROR

ROOT = Path(__file__).resolve().parents[1]
VPT_SMOKE = str(ROOT / "configs" / "smoke" / "vpt_tiny.yaml")
TEXT_SMOKE = str(ROOT / "configs" / "smoke" / "textpt_tiny.yaml")
SHORT = ["--set", "train.epochs=1", "--set", "train.max_steps=2", "--set", "data.synthetic.num_eval=16"]
TEXT_SHORT = ["--set", "train.max_steps=2", "--set", "data.num_samples=16", "--set", "data.num_eval_samples=8"]
PROGRAMS: dict[str, Callable[[list[str]], int]] = {"vpt": vpt.cli.main, "textpt": textpt.cli.main}


def image_folder(root: Path, bad: dict[str, bytes] | None = None) -> Path:
    """``root/{train,test}/{a,b}/*.png``, plus ``bad`` files (name -> bytes) in ``train/a``."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True, exist_ok=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / split / label / f"{i}.png")
    for name, data in (bad or {}).items():
        (root / "train" / "a" / name).write_bytes(data)
    return root


def truncated_png(root: Path) -> bytes:
    Image.fromarray(np.full((24, 24, 3), 7, dtype=np.uint8)).save(root / "whole.png")
    whole = (root / "whole.png").read_bytes()
    return whole[: len(whole) // 2]


FOLDER = ["--set", "data.source=imagefolder", "--set", "prompt.num_classes=2"]


def setup_empty(tmp: Path) -> list[str]:
    (tmp / "empty.yaml").write_text("")
    return ["train", "-c", str(tmp / "empty.yaml"), "-o", str(tmp / "run")]


def setup_bad_images(tmp: Path) -> list[str]:
    image_folder(tmp / "data", {"empty.png": b"", "truncated.png": truncated_png(tmp)})
    return ["train", "-c", VPT_SMOKE, *SHORT, *FOLDER, "--set", f"data.data_dir={tmp / 'data'}", "-o", str(tmp / "run")]


def setup_huge_image(tmp: Path) -> list[str]:
    image_folder(tmp / "data")
    Image.new("RGB", (200, 200)).save(tmp / "data" / "train" / "b" / "huge.png")
    return ["train", "-c", VPT_SMOKE, *SHORT, *FOLDER, "--set", f"data.data_dir={tmp / 'data'}", "-o", str(tmp / "run")]


def setup_file_as_output(tmp: Path) -> list[str]:
    (tmp / "file").write_text("a file, not a folder")
    return ["train", "-c", VPT_SMOKE, *SHORT, "-o", str(tmp / "file" / "run")]


def setup_resume_changed_prompts(tmp: Path) -> list[str]:
    assert vpt.cli.main(["train", "-c", VPT_SMOKE, *SHORT, "-o", str(tmp / "run")]) == 0
    return ["train", "--resume", str(tmp / "run"), "--set", "prompt.num_tokens=6", "--set", "train.max_steps=4"]


def setup_text_run_to_vpt(tmp: Path) -> list[str]:
    assert textpt.cli.main(["train", "-c", TEXT_SMOKE, *TEXT_SHORT, "-o", str(tmp / "run")]) == 0
    return ["train", "--resume", str(tmp / "run")]


def setup_latin1_csv(tmp: Path) -> list[str]:
    (tmp / "rows.csv").write_bytes("text,label\ncaf\xe9 au lait,0\ntea,1\n".encode("latin-1"))
    return text_csv_argv(tmp)


def text_csv_argv(tmp: Path) -> list[str]:
    """Training on tmp/rows.csv (columns text, label) as the text data."""
    files = f"{{train: {tmp / 'rows.csv'}, test: {tmp / 'rows.csv'}}}"
    return ["train", "-c", TEXT_SMOKE, *TEXT_SHORT, "--set", "data.source=csv", "--set", f"data.data_files={files}",
            "--set", "data.text_column=text", "--set", "data.label_column=label",
            "--set", 'prompt.verbalizer=[" excellent", " terrible"]', "-o", str(tmp / "run")]


def setup_ragged_csv(tmp: Path) -> list[str]:
    (tmp / "rows.csv").write_text("text,label\nhello there,0\nbye,1,extra,cells\n")
    files = f"{{train: {tmp / 'rows.csv'}, test: {tmp / 'rows.csv'}}}"
    return ["train", "-c", TEXT_SMOKE, *TEXT_SHORT, "--set", "data.source=csv", "--set", f"data.data_files={files}",
            "--set", "data.text_column=text", "--set", "data.label_column=label",
            "--set", 'prompt.verbalizer=[" excellent", " terrible"]', "-o", str(tmp / "run")]


def setup_ragged_vision_csv(tmp: Path) -> list[str]:
    (tmp / "rows.csv").write_text("image,label\na.png,0\nb.png,1,2\n")
    return ["train", "-c", VPT_SMOKE, *SHORT, "--set", "data.source=hf", "--set", "data.name=csv",
            "--set", f"data.data_files={{train: {tmp / 'rows.csv'}}}", "-o", str(tmp / "run")]


def setup_utf16_csv(tmp: Path, bom: bool = True) -> list[str]:
    (tmp / "rows.csv").write_bytes("text,label\ncafé au lait,0\ntea,1\n".encode("utf-16" if bom else "utf-16-le"))
    return text_csv_argv(tmp)


def setup_utf16_vision_csv(tmp: Path) -> list[str]:
    (tmp / "rows.csv").write_bytes("image,label\na.png,0\nb.png,1\n".encode("utf-16"))
    return ["train", "-c", VPT_SMOKE, *SHORT, "--set", "data.source=hf", "--set", "data.name=csv",
            "--set", f"data.data_files={{train: {tmp / 'rows.csv'}}}", "-o", str(tmp / "run")]


def setup_generation_csv(tmp: Path) -> list[str]:
    (tmp / "rows.csv").write_text("text,target\nhello there,yes\nbye now,no\n")
    files = f"{{train: {tmp / 'rows.csv'}, test: {tmp / 'rows.csv'}}}"
    return ["train", "-c", TEXT_SMOKE, *TEXT_SHORT, "--set", "data.source=csv", "--set", f"data.data_files={files}",
            "--set", "data.text_column=text", "--set", "data.target_column=target", "--set", 'data.template="{text} ->"',
            "--set", "train.metric=accuracy", "-o", str(tmp / "run")]


def setup_hf_folder_kwargs_typo(tmp: Path) -> list[str]:
    import transformers

    config = transformers.LlamaConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                      vocab_size=200, max_position_embeddings=64)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp / "model")
    return ["train", "-c", TEXT_SMOKE, *TEXT_SHORT, "--set", f"model.name={tmp / 'model'}", "--set", "model.tokenizer=random:llama",
            "--set", "model.kwargs={hidden_sizee: 5}", "-o", str(tmp / "run")]


def corrupt(tmp: Path, name: str) -> Path:
    (tmp / name).write_text("not a weights file")
    return tmp / name


def plain(*argv: str) -> Callable[[Path], list[str]]:
    """A case that needs no files: ``{tmp}`` in ``argv`` is the test's folder."""
    return lambda tmp: [a.replace("{tmp}", str(tmp)) for a in argv]


VPT = ("train", "-c", VPT_SMOKE, *SHORT, "-o", "{tmp}/run")
TEXT = ("train", "-c", TEXT_SMOKE, *TEXT_SHORT, "-o", "{tmp}/run")

# (program, setup returning argv, what the error line must say)
CASES = {
    "empty config": ("vpt", setup_empty, r"model: required field is missing .*prompt: required field is missing"),
    "unknown model asset": ("vpt", plain(*VPT, "--set", "model.name=asset:nope"), r"unknown vision model asset 'nope'. Known: "),
    "unknown data asset": ("vpt", plain(*VPT, "--set", "data.source=asset", "--set", "data.name=nope"), r"unknown vision dataset asset 'nope'"),
    "vpt on a cnn": ("vpt", plain(*VPT, "--set", "model.name=timm:resnet10t", "--set", "model.kwargs={}"),
                     r"has no token sequence that token prompts \(VPT\) can extend.*pixel prompts"),
    "model kwargs typo": ("vpt", plain(*VPT, "--set", "model.kwargs.embed_dimm=64"), r"model.kwargs.embed_dimm: not an argument.*Did you mean 'embed_dim'"),
    "hf config dict typo": ("vpt", plain(*VPT, "--set", "model.name=hf:tiny-vit", "--set", "model.kwargs={config: {model_type: vit, image_size: 32, "
                                       "patch_size: 8, hidden_sizee: 64, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 128}}"),
                            r"model.kwargs.config: 'hidden_sizee' is not a field of the vit config.*Did you mean 'hidden_size'"),
    "missing hf dataset": ("vpt", plain(*VPT, "--set", "data.source=hf", "--set", "data.name={tmp}/nothing"),
                           r"could not load dataset '.*nothing' \(FileNotFoundError.*check data.name"),
    "corrupt safetensors checkpoint": ("vpt", lambda tmp: [*plain(*VPT)(tmp), "--set", f"model.checkpoint={corrupt(tmp, 'w.safetensors')}"],
                                       r"checkpoint '.*w.safetensors' is not a readable safetensors file"),
    "corrupt torch checkpoint": ("vpt", lambda tmp: [*plain(*VPT)(tmp), "--set", f"model.checkpoint={corrupt(tmp, 'w.pth')}"],
                                 r"checkpoint '.*w.pth' cannot be read as tensors"),
    "hub name offline": ("vpt", plain(*VPT, "--set", "model.name=hf:google/vit-base-patch16-224", "--set", "model.kwargs={}", "--set", "model.pretrained=null"),
                         r"model.name: cannot load the pretrained weights of hf:google/vit-base-patch16-224 \(it could not be fetched, HF_HUB_OFFLINE is set, .*'python -m promptcore.assets list' \(docs/assets.md\).*model.pretrained: false"),
    "timm weights offline": ("vpt", plain(*VPT, "--set", "model.kwargs={}", "--set", "model.pretrained=true"),
                             r"model.name: cannot load the pretrained weights of timm:vit_tiny_patch16_224 \(it could not be fetched, HF_HUB_OFFLINE is set, .*'python -m promptcore.assets list' \(docs/assets.md\).*model.pretrained: false"),
    "open_clip weights offline": ("vpt", plain(*VPT, "--set", "model.name=open_clip:ViT-B-32:openai", "--set", "model.kwargs={}", "--set", "model.pretrained=null"),
                                  r"model.name: cannot load the pretrained weights of open_clip:ViT-B-32:openai \(it could not be fetched, HF_HUB_OFFLINE is set, .*'python -m promptcore.assets list' \(docs/assets.md\).*model.pretrained: false"),
    "timm model name typo": ("vpt", plain(*VPT, "--set", "model.name=timm:vit_tiny_patch16_2244"),
                             r"model.name: unknown timm model 'vit_tiny_patch16_2244'. Did you mean 'vit_tiny_patch16_224'"),
    "open_clip model name typo": ("vpt", plain(*VPT, "--set", "model.name=open_clip:ViT-B-166", "--set", "model.kwargs={}"),
                                  r"model.name: unknown open_clip model 'ViT-B-166'. Did you mean 'ViT-B-16'"),
    "hub name offline, random weights": ("vpt", plain(*VPT, "--set", "model.name=hf:google/vit-base-patch16-2244", "--set", "model.kwargs={}"),
                                         r"model.name: cannot load the model config of hf:google/vit-base-patch16-2244 .*check the name"),
    "random text model type typo": ("textpt", plain(*TEXT, "--set", "model.name=random:lamma"),
                                    r"random:lamma: transformers has no model type 'lamma'. Did you mean 'llama'"),
    "vision model too large for memory": ("vpt", plain(*VPT, "--set", "model.kwargs.embed_dim=65536", "--set", "model.kwargs.depth=200",
                                                 "--set", "model.kwargs.num_heads=1"),
                                          r"model.kwargs of timm:vit_tiny_patch16_224: asks for [\d.]+ TiB \(\d+ bytes\) but .* of memory is available"),
    "random text model too large for memory": ("textpt", plain(*TEXT, "--set", "model.kwargs.hidden_size=100000", "--set", "model.kwargs.intermediate_size=400000"),
                                               r"model.kwargs of random:llama \(a [\d,]+-parameter LlamaForCausalLM\): asks for [\d.]+ TiB"),
    "open_clip without a tag": ("vpt", plain(*VPT, "--set", "model.name=open_clip:ViT-B-16", "--set", "model.kwargs={}", "--set", "model.pretrained=null"),
                                r"open_clip:ViT-B-16 names no pretrained weights; add a pretrained tag"),
    "unknown metric": ("vpt", plain(*VPT, "--set", "train.metric=bogus"), r"metric: 'bogus' is not among the eval metrics .*\(loss, accuracy\)"),
    "lr not finite": ("vpt", plain(*VPT, "--set", "train.lr=.nan"), r"train.lr: must be a positive finite number, got nan"),
    "output under a file": ("vpt", setup_file_as_output, r"run directory '.*file/run' cannot be written \(lies under the file"),
    "corrupt images": ("vpt", setup_bad_images, r"2 of \d+ images cannot be read: .*empty.png: an empty file; .*truncated.png: .*data.on_bad_rows: skip"),
    "image over the decompression limit": ("vpt", setup_huge_image, r"huge.png: DecompressionBombError"),
    "resume with other prompt shapes": ("vpt", setup_resume_changed_prompts, r"cannot resume .*prompts.weight has shape \(2, 4, 64\) in the run, \(2, 6, 64\) now"),
    "a textpt run resumed by vpt": ("vpt", setup_text_run_to_vpt, r"it is a run of 'textpt train', not of 'vpt'; continue it with 'textpt train --resume"),
    "missing prompt folder": ("vpt", plain("eval", "-c", VPT_SMOKE, "--prompts", "{tmp}/nope"), r"prompt folder '.*nope' does not exist"),
    "empty text config": ("textpt", setup_empty, r"model: required field is missing"),
    "csv with a ragged row": ("textpt", setup_ragged_csv, r"could not read csv files .*rows.csv.*: ParserError: .*Expected 2 fields in line 3, saw 4"),
    "vision csv with a ragged row": ("vpt", setup_ragged_vision_csv, r"could not read the files of dataset 'csv' .*rows.csv.*ParserError: .*line 3, saw 3"),
    "csv not utf-8": ("textpt", setup_latin1_csv, r"rows.csv is not UTF-8 text: byte \d+ is b'\\xe9'.*likely Latin-1 \(ISO-8859-1\): convert it with iconv -f latin1"),
    "csv in utf-16": ("textpt", setup_utf16_csv, r"rows.csv is UTF-16 \(little-endian, with a byte order mark\) text.*iconv -f utf-16 -t utf-8 \S*rows.csv > \S*rows.utf8.csv"),
    "csv in utf-16 without a bom": ("textpt", lambda tmp: setup_utf16_csv(tmp, bom=False),
                                    r"rows.csv is UTF-16 \(little-endian, without a byte order mark\) text.*iconv -f utf-16le -t utf-8"),
    "vision csv in utf-16": ("vpt", setup_utf16_vision_csv, r"rows.csv is UTF-16 \(little-endian, with a byte order mark\) text.*iconv -f utf-16 -t utf-8"),
    "random model kwargs typo": ("textpt", plain(*TEXT, "--set", "model.kwargs.hidden_sizee=32"), r"'hidden_sizee' is not a field of the llama config.*Did you mean 'hidden_size'"),
    "hf folder kwargs typo": ("textpt", setup_hf_folder_kwargs_typo, r"model.kwargs.hidden_sizee: neither an argument of from_pretrained nor a field of the model's config.*'hidden_size'"),
    "missing text dataset": ("textpt", plain(*TEXT, "--set", "data.source=hf", "--set", "data.name={tmp}/nothing",
                                             "--set", 'prompt.verbalizer=[" excellent", " terrible"]'),
                             r"could not load dataset '.*nothing' \(FileNotFoundError.*check data.name"),
    "text hub name offline": ("textpt", plain(*TEXT, "--set", "model.name=hf:gpt2"), r"model.name: cannot load hf:gpt2 \(it could not be fetched, HF_HUB_OFFLINE is set, .*'python -m promptcore.assets list' \(docs/assets.md\).*'random:TYPE'"),
    "duplicate verbalizer words": ("textpt", plain(*TEXT, "--set", 'prompt.verbalizer=[" excellent", " excellent"]'), r"prompt.verbalizer: ' excellent' names several classes"),
    "verbalizer words tokenized alike": ("textpt", plain(*TEXT, "--set", 'prompt.verbalizer=[" zyzzyva", " qwxqwx"]'),
                                         r"verbalizer: ' zyzzyva' and ' qwxqwx' are the same tokens"),
    "generation with a classifier metric": ("textpt", setup_generation_csv, r"metric: 'accuracy' is not among the eval metrics .*\(loss, token_accuracy\)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_ends_in_one_error_line_with_status_2(case, tmp_path, capsys, monkeypatch):
    program, setup, message = CASES[case]
    if case == "image over the decompression limit":
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 200 x 200 is over twice the limit: PIL refuses it
    argv = setup(tmp_path)
    capsys.readouterr()
    assert PROGRAMS[program](argv) == EXIT_ERROR
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert re.search(message, err, re.S), err
    assert not (tmp_path / "run" / "last").exists() or case in ("resume with other prompt shapes", "a textpt run resumed by vpt")


def test_predict_names_each_unreadable_file_and_still_predicts_the_others(tmp_path, capsys):
    assert vpt.cli.main(["train", "-c", VPT_SMOKE, *SHORT, "-o", str(tmp_path / "run")]) == 0
    folder = image_folder(tmp_path / "images", {"empty.png": b"", "truncated.png": truncated_png(tmp_path)}) / "train"
    capsys.readouterr()
    assert vpt.cli.main(["predict", "-c", VPT_SMOKE, "--prompts", str(tmp_path / "run" / "last"), str(folder), "--top-k", "1"]) == EXIT_ERROR
    captured = capsys.readouterr()
    predicted = [line for line in captured.out.splitlines() if not line.startswith(" ")]
    assert len(predicted) == 6 and all(line.endswith(tuple(f"{i}.png" for i in range(3))) for line in predicted)
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and "empty.png" in errors[0] and "truncated.png" in errors[1]
    assert "predict: 2 of 8 images could not be read" in captured.err



def test_the_problems_of_data_metric_and_run_directory_are_reported_together(tmp_path, capsys):
    argv = setup_bad_images(tmp_path)[:-2]  # without its -o
    (tmp_path / "file").write_text("a file, not a folder")
    capsys.readouterr()
    assert vpt.cli.main([*argv, "--set", "train.metric=bogus", "-o", str(tmp_path / "file" / "run")]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "error: 3 problems:\n" in err and "Traceback" not in err, err
    assert re.search(r"  - 2 of \d+ images cannot be read.*\n  - metric: 'bogus' is not among.*\n  - run directory '.*file/run' cannot be written", err)


# ----- vlmpt -------------------------------------------------------------------------------------------------------
import vlmpt.cli  # noqa: E402 - the vision-language cases, appended to the vpt and textpt ones above

VLM_SMOKE = str(ROOT / "configs" / "smoke" / "vlmpt_tiny.yaml")
VLM = ("train", "-c", VLM_SMOKE, "--set", "train.max_steps=1", "--set", "data.num_samples=4", "--set", "data.num_eval_samples=2")


def setup_vlm_missing_image(tmp: Path) -> list[str]:
    (tmp / "rows.jsonl").write_text('{"image": "images/0.png", "question": "what colour is it ?", "answer": "red"}\n')
    return [*VLM, "--set", "data.source=json", "--set", f"data.data_files={{train: {tmp / 'rows.jsonl'}}}", "--set", "data.eval_split=null",
            "-o", str(tmp / "run")]


VLM_CASES = {
    "vlm config key typo": ([*VLM, "--set", "data.image_colum=picture"], r"data.image_colum: unknown key for VLMDataConfig. Did you mean 'image_column'"),
    "vlm missing image file": (setup_vlm_missing_image, r"train row 0: image file .*images/0.png does not exist; image paths are relative to data.image_dir"),
    "vlm input longer than max_length": ([*VLM, "--set", "data.max_length=6"],
                                         r"train row 0: the input is \d+ tokens \(\d+ of them the image's\) and leaves no room .*data.max_length=6"),
    "vlm generate without a prompt folder": (["generate", "red.png"], r"give the prompt folder with --prompts DIR"),
}


@pytest.mark.parametrize("case", list(VLM_CASES))
def test_vlmpt_bad_input_ends_in_one_error_line_with_status_2(case, tmp_path, capsys):
    setup, message = VLM_CASES[case]
    argv = setup(tmp_path) if callable(setup) else [*setup, "-o", str(tmp_path / "run")] if setup[0] == "train" else list(setup)
    capsys.readouterr()
    assert vlmpt.cli.main(argv) == EXIT_ERROR
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert re.search(message, err, re.S), err
    assert not (tmp_path / "run" / "last").exists()
