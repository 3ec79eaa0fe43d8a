"""Fuzzing what users hand the toolkit (hypothesis, a bounded number of examples so it runs in seconds): config YAML,
``--set`` overrides, prompt folders and data files. Any input ends in a result or one
:class:`promptcore.errors.UserError`, never another exception."""

from __future__ import annotations

import json
import shutil
import string
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from promptcore.config import load_config
from promptcore.errors import UserError
from promptcore.files import CONFIG_FILE, TENSORS_FILE, TOOLKIT, load_prompt_files
from textpt.data import TextDataConfig, load_raw
from textpt.run_config import TextRunConfig
from vpt.data import check_image_file
from vpt.run_config import VisionRunConfig

ROOT = Path(__file__).resolve().parents[1]
VPT_SMOKE = ROOT / "configs" / "smoke" / "vpt_tiny.yaml"
FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# YAML-ish text: the characters that make YAML structure, plus a few words the configs use
YAMLISH = st.lists(
    st.one_of(st.sampled_from([":", "-", " ", "\n", "  ", "{", "}", "[", "]", ",", "'", '"', "&a", "*a", "!!python/object", "? ",
                               "|", ">", "#", "model", "name", "train", "lr", "prompt", "data", "null", "1e-3", ".nan", "~"]),
              st.text(max_size=5)),
    max_size=30,
).map("".join)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10,
)


def ends_well(call) -> None:
    """Runs ``call``; a :class:`UserError` is an answer, any other exception fails the test."""
    try:
        call()
    except UserError:
        pass


@FUZZ
@given(text=YAMLISH)
@pytest.mark.parametrize("config_class", [VisionRunConfig, TextRunConfig])
def test_any_config_file_loads_or_is_one_user_error(config_class, text, tmp_path):
    (tmp_path / "config.yaml").write_text(text)
    ends_well(lambda: load_config(config_class, tmp_path / "config.yaml"))


@FUZZ
@given(key=st.sampled_from(["train.lr", "model", "prompt.num_tokens", "data.synthetic", "train", "a.b.c", "", "model.kwargs.x"]),
       value=YAMLISH, raw=st.text(max_size=20))
def test_any_set_override_applies_or_is_one_user_error(key, value, raw):
    ends_well(lambda: load_config(VisionRunConfig, VPT_SMOKE, [f"{key}={value}"]))
    ends_well(lambda: load_config(VisionRunConfig, VPT_SMOKE, [raw]))


@FUZZ
@given(meta=JSON_VALUES, toolkit=st.booleans(), tensors=st.binary(max_size=64), as_text=st.text(max_size=30))
def test_any_prompt_folder_loads_or_is_one_user_error(meta, toolkit, tensors, as_text, tmp_path):
    folder = tmp_path / "prompts"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    if toolkit and isinstance(meta, dict):
        meta = {**meta, "toolkit": TOOLKIT}
    (folder / CONFIG_FILE).write_text(json.dumps(meta) if toolkit else as_text)
    (folder / TENSORS_FILE).write_bytes(tensors)
    ends_well(lambda: load_prompt_files(folder))


PNG = b"\x89PNG\r\n\x1a\n"


@FUZZ
@given(data=st.binary(max_size=64), png=st.booleans())
def test_any_image_file_is_read_or_named_unreadable(data, png, tmp_path):
    (tmp_path / "image.png").write_bytes((PNG if png else b"") + data)
    why = check_image_file(tmp_path / "image.png")
    assert why is None or why.startswith(str(tmp_path / "image.png"))


CSV_CELLS = st.text(alphabet=string.ascii_letters + string.digits + ',"\n\r\t ;\\\x00é', max_size=40)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=CSV_CELLS, source=st.sampled_from(["csv", "json"]), encoding=st.sampled_from(["utf-8", "latin-1", "utf-16"]))
def test_any_text_data_file_loads_or_is_one_user_error(body, source, encoding, tmp_path):
    path = tmp_path / f"rows.{source}"
    path.write_bytes(("text,label\n" if source == "csv" else "").encode(encoding) + body.encode(encoding, errors="replace"))
    cfg = TextDataConfig(source=source, data_files={"train": str(path), "test": str(path)}, text_column="text", label_column="label")
    ends_well(lambda: load_raw(cfg))
