"""``make test`` runs pytest-xdist with ``--dist loadgroup``: the tests of one xdist group, and the tests of a module
that share a module-scoped fixture, run on one worker (tests/conftest.py), so an expensive fixture is built once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("xdist")
pytest_plugins = ["pytester"]

CASES = '''
import os
from pathlib import Path

import pytest

OUT = Path(os.environ["GROUPS_OUT"])


@pytest.fixture(scope="module")
def built():
    with (OUT / "built").open("a") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")


@pytest.mark.parametrize("i", range(6))
def test_shares_the_module_fixture(built, i):
    pass


@pytest.mark.xdist_group("named")
@pytest.mark.parametrize("i", range(6))
def test_in_a_named_group(i):
    with (OUT / "named").open("a") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")


@pytest.mark.parametrize("i", range(6))
def test_alone(i):
    pass
'''


def test_a_group_and_a_module_fixture_stay_on_one_worker(pytester: pytest.Pytester, tmp_path: Path, monkeypatch) -> None:
    shutil.copy(Path(__file__).with_name("conftest.py"), pytester.path / "conftest.py")
    pytester.makepyfile(test_cases=CASES)
    monkeypatch.setenv("GROUPS_OUT", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup", "--no-loadscope-reorder")
    result.assert_outcomes(passed=18)
    assert len((tmp_path / "built").read_text().split()) == 1  # built once, on one worker
    assert len(set((tmp_path / "named").read_text().split())) == 1
