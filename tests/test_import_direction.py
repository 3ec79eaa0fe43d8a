"""The package direction: promptcore is the base; vpt and textpt build on it and never on each other."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = {"timm", "transformers", "open_clip", "vpt", "textpt", "peft"}
FORBIDDEN = {"promptcore": HEAVY | {"vlmpt"}, "vpt": {"textpt", "vlmpt"}, "textpt": {"vpt", "vlmpt"}}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_forbidden_imports_anywhere_in_the_source(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no sources found for {package}"
    bad = {str(f.relative_to(ROOT)): sorted(imported_roots(f) & FORBIDDEN[package]) for f in files}
    assert {f: b for f, b in bad.items() if b} == {}


@pytest.mark.slow
def test_import_promptcore_loads_no_heavy_library():
    code = "import sys, promptcore; print(sorted({m.split('.')[0] for m in sys.modules} & %r))" % HEAVY
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ----- textpt: one method, one file ---------------------------------------------------------------------------------
# The package's front (its namespace, CLI, run config default and PEFT's prompt-tuning format) names methods; the
# framework modules (model, tasks, padding, data, loading, ...) never do, so a method is added or removed as one file.
TEXTPT_FRONT = {"__init__", "__main__", "cli", "run_config", "peft_interop"}


def local_imports(path: Path) -> set[str]:
    """The sibling modules a package module imports (``from .x import ...``, ``from . import x``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names.update([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
    return names


def registers_a_method(path: Path) -> bool:
    calls = (n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call))
    return any(getattr(c.func, "id", None) == "register_method" for c in calls)


def test_textpt_framework_modules_import_no_method():
    modules = {p.stem: p for p in (ROOT / "textpt").glob("*.py")}
    methods = {name for name, path in modules.items() if registers_a_method(path)}
    assert {"prompt_tuning", "p_tuning", "prefix", "linear_probe", "zero_shot"} <= methods
    framework = set(modules) - methods - TEXTPT_FRONT
    assert {"model", "tasks", "config", "padding", "data", "loading"} <= framework
    assert {name: sorted(local_imports(modules[name]) & methods) for name in framework if local_imports(modules[name]) & methods} == {}


def imports_of(path: Path, package: str) -> set[str]:
    """Every module ``path`` imports, absolute names (relative imports resolved against ``package``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.update([module] + [f"{module}.{a.name}" for a in node.names])
    return names


def test_vpt_clip_is_a_leaf_no_other_vpt_module_imports_it():
    """vpt.clip registers itself through the plugin mechanism; the rest of vpt never names it."""
    bad = {}
    for path in sorted((ROOT / "vpt").rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[:2] == ("vpt", "clip"):
            continue
        found = sorted(n for n in imports_of(path, ".".join(rel.parent.parts)) if n == "vpt.clip" or n.startswith("vpt.clip."))
        if found:
            bad[str(rel)] = found
    assert bad == {}


@pytest.mark.slow
def test_import_vpt_leaves_vpt_clip_unloaded():
    code = "import vpt, sys; assert 'vpt.clip' not in sys.modules, 'import vpt loaded vpt.clip'"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
