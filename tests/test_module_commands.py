"""``python -m`` forms of the commands run the command (not an empty module), with the registries the packages fill."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # every test starts processes


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("module, prog", [("vpt", "vpt"), ("vpt.cli", "vpt"), ("textpt", "textpt"), ("textpt.cli", "textpt")])
def test_python_m_runs_the_command(module, prog):
    proc = run(module, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: {prog} ")


def test_python_m_promptcore_assets_lists_the_packages_assets(tmp_path):
    proc = run("promptcore.assets", "list", env={"PROMPTTUNE_ASSETS": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    names = [line.split()[0] for line in proc.stdout.splitlines()[1:]]
    assert {"efficientnet_lite0", "fashion_mnist", "minilm_l6"} <= set(names)
    assert "not cached" in proc.stdout  # an empty cache folder
