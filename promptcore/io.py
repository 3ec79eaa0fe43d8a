"""Atomic file writes: a kill at any moment leaves either the old file or the new one, never a torn one."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path next to ``path``; on success it is fsynced and renamed over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Moves the finished folder ``src`` to ``dst``, replacing what was there.

    The old folder is renamed aside first and removed only after the new one is in place, so at every moment
    either the old or the new folder exists under ``dst`` (or, for an instant, under ``dst`` + '.old').
    """
    src, dst = Path(src), Path(dst)
    old = dst.with_name(dst.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if dst.exists():
        os.replace(dst, old)
    os.replace(src, dst)
    if old.exists():
        shutil.rmtree(old)


@contextmanager
def atomic_dir(dst: str | os.PathLike) -> Iterator[Path]:
    """Yields a fresh temporary folder; when the block succeeds it replaces ``dst`` (see :func:`replace_dir`)."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    try:
        yield tmp
        mask = _umask()
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb+") as fh:
                    os.fsync(fh.fileno())
                os.chmod(f, 0o666 & ~mask)  # some writers (safetensors) make 0600 files
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes 0700; prompt folders are meant to be shared
        replace_dir(tmp, dst)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def recover_dir(dst: str | os.PathLike) -> None:
    """Puts back ``dst`` + '.old' if a kill struck between the two renames of :func:`replace_dir`."""
    dst = Path(dst)
    old = dst.with_name(dst.name + ".old")
    if old.exists() and not dst.exists():
        os.replace(old, dst)
