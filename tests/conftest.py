"""Settings every test shares: offline hubs, and under pytest-xdist (``make test``: ``-n 2``) one core's share of
threads per worker, also for the processes a test starts (two workers of two threads each would oversubscribe two
cores)."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
if _workers > 1 and "OMP_NUM_THREADS" not in os.environ:
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ["OMP_NUM_THREADS"] = str(max(1, _cores // _workers))
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]):
    """The tests of a module that share a module-scoped fixture (a torchrun launch, a Ray cluster, trained folders)
    run on one worker, so the fixture is built once; and the slow groups start first, then the other slow tests,
    so that the run ends on short tests that keep both workers busy (``make test`` keeps this order:
    ``--no-loadscope-reorder``)."""
    for item in items:
        if not _group(item) and _uses_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    units: dict[str, list[pytest.Item]] = {}
    for item in items:
        units.setdefault(_group(item) or item.nodeid, []).append(item)

    def rank(unit: list[pytest.Item]) -> int:
        slow = any(item.get_closest_marker("slow") for item in unit)
        return 0 if slow and len(unit) > 1 else 1 if slow else 2

    items[:] = [item for unit in sorted(units.values(), key=rank) for item in unit]
    yield
    # --dist loadgroup sends the tests whose node id ends in "@GROUP" to one worker. pytest-xdist 3.8 adds the suffix
    # to Node._nodeid, which pytest 9 no longer reads (it keeps the id in Node._id), so every xdist_group mark was
    # ignored; set it where pytest reads it, unless pytest-xdist did (the public way: pytest-xdist doing it itself).
    if getattr(config.option, "loadgroup", False):
        from _pytest.nodeid import NodeId

        for item in items:
            group = _group(item)
            if group and not item.nodeid.endswith(f"@{group}"):
                item._id = NodeId.parse(f"{item.nodeid}@{group}")


def _uses_module_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    return info is not None and any(d.scope in ("module", "class", "package") for defs in info.name2fixturedefs.values() for d in defs)


def _group(item: pytest.Item) -> str:
    """The item's xdist group as pytest-xdist names it ("" for none)."""
    names = {str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in item.iter_markers("xdist_group")}
    return "_".join(sorted(names))
