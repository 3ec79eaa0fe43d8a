import pytest

from promptcore import Registry


def test_registry_is_strict():
    reg = Registry("backbone family")
    reg.register("timm")(object)
    reg.add("open_clip", int)
    assert reg.get("timm") is object and "timm" in reg and reg.names() == ["open_clip", "timm"]
    with pytest.raises(KeyError, match="backbone family 'timm' is already registered"):
        reg.add("timm", str)
    with pytest.raises(KeyError, match=r"unknown backbone family 'tim'. Did you mean 'timm'\? Known: open_clip, timm"):
        reg.get("tim")


def test_a_miss_calls_on_miss_once_then_looks_again():
    asked = []
    reg = Registry("prompt method", on_miss=lambda name: (asked.append(name), name == "late" and reg.add("late", 1)))
    reg.add("early", 0)
    assert reg.get("early") == 0 and asked == []  # a registered name asks nothing
    assert reg.get("late") == 1 and asked == ["late"]
    with pytest.raises(KeyError, match="unknown prompt method 'never'"):
        reg.get("never")
    assert asked == ["late", "never"]


def test_a_declared_method_registers_on_lookup_in_a_fresh_process():
    import subprocess
    import sys

    # the package exports its names lazily: its method modules register only when loaded; a lookup loads them
    code = "from promptcore import METHODS; print(METHODS.get('text:prompt_tuning').name)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "prompt_tuning", out.stderr[-2000:]
