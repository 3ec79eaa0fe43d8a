"""Loading a model by hub name when the Hugging Face Hub cannot be reached: fail at once, and point at the offline
models.

transformers, timm and open_clip fetch pretrained files through ``huggingface_hub``, which retries a hub it cannot
reach for tens of seconds before reporting what was clear at the first try. :func:`hub_access` wraps such a load:
when ``HF_HUB_OFFLINE`` is set, or a short connection to the hub fails, the load runs in the hub's offline mode, so
files in the cache still load and missing ones fail at once. The loader then turns that failure into one
:class:`promptcore.errors.UserError` ending in :func:`offline_hint`.

Read against huggingface_hub 2.4: every request it sends checks ``huggingface_hub.constants.HF_HUB_OFFLINE`` (through
``constants.is_offline_mode()``) when it is sent, which is what :func:`hub_access` sets for the duration of a load.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
from typing import Iterator
from urllib.parse import urlparse

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT_S = 3.0  # a reachable hub answers a TCP connection well within this
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def offline_hint() -> str:
    """The sentence every hub failure ends its error with: where the models that need no hub are listed."""
    return (
        "models that need no hub are listed by 'python -m promptcore.assets list' (docs/assets.md) and load as "
        "model.name: asset:NAME"
    )


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_offline_reason() -> str | None:
    """Why the hub cannot be used now: ``HF_HUB_OFFLINE is set`` (or ``TRANSFORMERS_OFFLINE``), or ``HOST cannot be
    reached`` when a TCP connection to the hub (``HF_ENDPOINT``, default huggingface.co) fails within
    :data:`PROBE_TIMEOUT_S`; ``None`` when it can (or when a proxy is set: the probe would not go through it)."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if _env_true(name):
            return f"{name} is set"
    if any(os.environ.get(name) for name in PROXY_VARIABLES):
        return None
    return _unreachable(os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT)


@functools.cache
def _unreachable(endpoint: str) -> str | None:
    """``HOST cannot be reached (error)`` when a TCP connection to ``endpoint`` fails, else None (once per process)."""
    url = urlparse(endpoint)
    host, port = url.hostname or endpoint, url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as e:
        return f"{host} cannot be reached ({type(e).__name__}: {e})"
    return None


@contextlib.contextmanager
def hub_access() -> Iterator[str | None]:
    """Within it, a hub that cannot be used (:func:`hub_offline_reason`) is in huggingface_hub's offline mode: files
    in the cache load, missing ones fail at once instead of after the retries. Yields the reason (``None``: the hub
    is used as usual), for the loader's error message."""
    reason = hub_offline_reason()
    if reason is None:
        yield None
        return
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield reason
    finally:
        constants.HF_HUB_OFFLINE = before


__all__ = ["hub_access", "hub_offline_reason", "offline_hint"]
