"""tools/install.py hands pip's configured indexes, wheel folders and constraints to uv."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def install():
    spec = importlib.util.spec_from_file_location("install_tool", ROOT / "tools" / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LISTED = """:env:.find-links='/opt/wheels'
:env:.default-timeout='180'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'
global.find-links='/opt/wheels'
user.index-url='https://mirror.example/simple'
"""


def test_pip_settings_keep_each_value_once_and_leave_out_the_rest(install):
    assert install.pip_settings(LISTED) == {
        "find-links": "/opt/wheels",
        "constraint": "/etc/xdg/pip/constraints.txt",
        "extra-index-url": "file:///opt/pypi/simple file:///opt/pypi-more/simple",
        "index-url": "https://mirror.example/simple",
    }


def test_no_pip_configuration_gives_uv_nothing(install):
    assert install.pip_settings("") == {}


def test_uv_environment_keeps_a_uv_variable_already_set(install, monkeypatch):
    monkeypatch.setenv("UV_EXTRA_INDEX_URL", "file:///mine")
    monkeypatch.setattr(install.subprocess, "run", lambda *a, **k: type("Done", (), {"stdout": LISTED})())
    env = install.uv_environment()
    assert env["UV_EXTRA_INDEX_URL"] == "file:///mine"
    assert env["UV_CONSTRAINT"] == "/etc/xdg/pip/constraints.txt"
    assert env["UV_INDEX_STRATEGY"] == "unsafe-best-match"
