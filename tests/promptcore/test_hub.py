"""A hub that cannot be used is found at once (HF_HUB_OFFLINE, or a failed connection), and loads inside
``hub_access`` then run in huggingface_hub's offline mode instead of retrying."""

from __future__ import annotations

import socket

import pytest
from huggingface_hub import constants

from promptcore import hub


@pytest.fixture
def online(monkeypatch):
    """An environment that says nothing of offline mode or proxies, and a fresh probe."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", *hub.PROXY_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    hub._unreachable.cache_clear()
    yield monkeypatch
    hub._unreachable.cache_clear()


def closed_port() -> int:
    with socket.socket() as s:  # a port nothing listens on once this socket is closed
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_offline_switches_are_the_reason(online):
    online.setenv("HF_HUB_OFFLINE", "1")
    assert hub.hub_offline_reason() == "HF_HUB_OFFLINE is set"
    online.setenv("HF_HUB_OFFLINE", "0")
    online.setenv("TRANSFORMERS_OFFLINE", "true")
    assert hub.hub_offline_reason() == "TRANSFORMERS_OFFLINE is set"


def test_a_hub_that_refuses_the_connection_is_unreachable_and_a_listening_one_is_not(online):
    online.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    assert hub.hub_offline_reason().startswith("127.0.0.1 cannot be reached (ConnectionRefusedError")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        online.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert hub.hub_offline_reason() is None


def test_behind_a_proxy_the_probe_is_left_to_the_library(online):
    online.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    online.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert hub.hub_offline_reason() is None


def test_hub_access_switches_offline_mode_on_for_the_load_only(online):
    online.setattr(constants, "HF_HUB_OFFLINE", False)
    online.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    with hub.hub_access() as reason:
        assert reason is not None and constants.is_offline_mode()
    assert not constants.is_offline_mode()
    with pytest.raises(OSError), hub.hub_access():
        raise OSError("a failed load")
    assert not constants.is_offline_mode()


def test_the_hint_names_the_asset_listing_and_its_doc():
    assert "python -m promptcore.assets list" in hub.offline_hint() and "docs/assets.md" in hub.offline_hint()
