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
