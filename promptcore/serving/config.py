"""The serve config: what ``vpt serve`` / ``textpt serve`` and the Ray Serve application read (YAML, typed).

Example (``configs/serve/vision.yaml``)::

    kind: vision
    prompts: prompts/          # a folder of prompt folders, each served under its folder name
    device_capacity: 1000      # prompts kept on the device at once (least recently used go back to the CPU)
    max_batch_size: 32
    batch_wait_timeout_s: 0.01

Tokens are never written in the file: ``api_key_env`` and ``admin_key_env`` name the environment variables that hold
them. Binding to anything but a loopback address without an API key is refused (:meth:`ServeConfig.check_exposure`).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import UserError
from .backend import Limits


@dataclass
class LimitsConfig:
    """What one request may ask (:class:`promptcore.serving.Limits`), plus the request body's size."""

    max_body_bytes: int = 16 * 1024 * 1024
    max_image_pixels: int = Limits.max_image_pixels
    max_input_tokens: int = Limits.max_input_tokens
    max_new_tokens: int = Limits.max_new_tokens
    max_top_k: int = Limits.max_top_k
    max_inputs: int = 64  # inputs in one classify / completions request

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_image_pixels", "max_input_tokens", "max_new_tokens", "max_top_k", "max_inputs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")

    def backend_limits(self) -> Limits:
        """The part of the limits a backend enforces in ``prepare``."""
        return Limits(self.max_image_pixels, self.max_input_tokens, self.max_new_tokens, self.max_top_k)


@dataclass
class ServeConfig:
    """One served backbone and its prompts.

    Attributes:
        kind: the backend (``vision``: ``vpt``; ``text``: ``textpt``; ``vision-language``: ``vlmpt``).
        model: the package's model section (as in its run configs); None: the one the first prompt file records.
        backend_options: further keyword arguments of the backend builder (``textpt``: ``engine: vllm``).
        prompts: a folder of prompt folders, each served under its folder name; admin loads resolve names here.
        prompt_list: a YAML file mapping names to prompt folders (relative to the file), served besides ``prompts``.
        device: where batches run (``cpu``, ``cuda``, ``cuda:1``).
        device_capacity: prompts resident on the device at once; the rest wait in CPU memory.
        host, port: where the HTTP server listens; anything but loopback needs an API key.
        api_key_env: the environment variable holding the bearer token of the API (unset: no auth, loopback only).
        admin_key_env: the environment variable holding the admin endpoints' token (unset: admin endpoints only on
            loopback without auth, and off elsewhere).
        max_batch_size, batch_wait_timeout_s: Ray Serve's dynamic batching (``@serve.batch``).
        max_queue: requests one replica holds at once (queued and running); past it, 503 with Retry-After.
        num_replicas: Ray Serve replicas of the application (each loads the backbone and the prompts).
        num_cpus: CPUs of the local Ray cluster ``serve`` starts (None: Ray's default, every core).
        graceful_shutdown_timeout_s: how long shutting down waits for in-flight requests.
        limits: what one request may ask.
    """

    kind: Literal["vision", "text", "vision-language"] = "vision"
    model: dict[str, Any] | None = None
    backend_options: dict[str, Any] = field(default_factory=dict)
    prompts: str | None = None
    prompt_list: str | None = None
    device: str = "cpu"
    device_capacity: int = 1024
    host: str = "127.0.0.1"
    port: int = 8000
    api_key_env: str = "PROMPTTUNE_API_KEY"
    admin_key_env: str = "PROMPTTUNE_ADMIN_KEY"
    max_batch_size: int = 32
    batch_wait_timeout_s: float = 0.01
    max_queue: int = 256
    num_replicas: int = 1
    num_cpus: int | None = None
    graceful_shutdown_timeout_s: float = 20.0
    limits: LimitsConfig = field(default_factory=LimitsConfig)

    def __post_init__(self) -> None:
        for name in ("device_capacity", "max_batch_size", "max_queue", "num_replicas"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.batch_wait_timeout_s < 0:
            raise ValueError(f"batch_wait_timeout_s: must be >= 0, got {self.batch_wait_timeout_s}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port: must be in 0..65535, got {self.port}")

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) or None

    def admin_key(self) -> str | None:
        return os.environ.get(self.admin_key_env) or None

    def check_exposure(self) -> None:
        """Refuses a server reachable from other machines without a token, and one token for both roles.

        Raises:
            UserError: ``host`` is not a loopback address and ``$api_key_env`` is unset, or both tokens are equal.
        """
        if not is_loopback(self.host) and not self.api_key():
            raise UserError(
                f"host {self.host!r} is reachable from other machines: set an API key in ${self.api_key_env} "
                f"(clients send 'Authorization: Bearer <key>'), or serve on 127.0.0.1"
            )
        if self.api_key() and self.api_key() == self.admin_key():
            raise UserError(f"${self.api_key_env} and ${self.admin_key_env} hold the same token; give the admin endpoints their own")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_serve_config(source: str | os.PathLike | dict | None = None, overrides: list[str] = ()) -> ServeConfig:
    """A :class:`ServeConfig` from a YAML file or a dict plus ``a.b=value`` overrides (every error at once)."""
    from ..config import load_config

    return load_config(ServeConfig, source, list(overrides))


__all__ = ["LimitsConfig", "ServeConfig", "is_loopback", "load_serve_config"]
