"""Installs packages into the project's virtual environment with uv, reading the indexes pip is configured with.

``make install`` runs ``python tools/install.py PACKAGE...`` with the virtual environment's Python. uv installs the
same releases as pip (``--index-strategy unsafe-best-match`` looks at every index, as pip does) in a fraction of the
time, mostly because it unpacks torch's CUDA wheels in parallel. uv does not read pip's configuration, so the package
indexes, local wheel folders and constraint files pip is set up with (a mirror, a local disk, a version cap) are
handed to it. When uv cannot be installed or fails, the same command runs through pip, said in one line.
"""

from __future__ import annotations

import os
import subprocess
import sys

PIP_TO_UV = {
    "index-url": "UV_DEFAULT_INDEX",
    "extra-index-url": "UV_EXTRA_INDEX_URL",
    "find-links": "UV_FIND_LINKS",
    "constraint": "UV_CONSTRAINT",
}
"""pip settings (``pip config list`` keys, without their section) and the uv environment variable for each."""


def pip_settings(listed: str) -> dict[str, str]:
    """The pip settings of :data:`PIP_TO_UV` in ``listed``, the output of ``pip config list`` (which shows the
    configuration files and the ``PIP_*`` variables); a setting given in several places keeps each value once."""
    found: dict[str, list[str]] = {}
    for line in listed.splitlines():
        key, sep, value = line.partition("=")
        name = key.rsplit(".", 1)[-1]
        if sep and name in PIP_TO_UV:
            for item in value.strip("'\"").split():
                found.setdefault(name, [])
                if item not in found[name]:
                    found[name].append(item)
    return {name: " ".join(items) for name, items in found.items()}


def uv_environment() -> dict[str, str]:
    """This process's environment with pip's settings given to uv (a ``UV_*`` variable already set wins)."""
    env = dict(os.environ)
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False).stdout
    for name, value in pip_settings(listed).items():
        env.setdefault(PIP_TO_UV[name], value)
    env.setdefault("UV_INDEX_STRATEGY", "unsafe-best-match")
    return env


def main(packages: list[str]) -> int:
    if subprocess.run([sys.executable, "-m", "pip", "install", "-q", "uv"], check=False).returncode == 0:
        uv = os.path.join(os.path.dirname(sys.executable), "uv")
        command = [uv, "pip", "install", "-q", "--python", sys.executable, *packages]
        if subprocess.run(command, env=uv_environment(), check=False).returncode == 0:
            return 0
        print("note: uv could not install the packages; installing them with pip instead", file=sys.stderr)
    else:
        print("note: uv could not be installed; installing the packages with pip instead", file=sys.stderr)
    return subprocess.run([sys.executable, "-m", "pip", "install", "-q", *packages], check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
