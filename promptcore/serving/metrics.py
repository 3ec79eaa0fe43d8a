"""Prometheus metrics of one server (``GET /metrics``), in their own registry so several servers can share a process.

===========================================  =========  ==========================================================
name                                         type       what
===========================================  =========  ==========================================================
``prompttune_requests_total``                counter    requests by ``prompt``, ``operation`` and HTTP ``status``
``prompttune_request_latency_seconds``       histogram  from arrival to the last byte, by ``operation``
``prompttune_batch_size``                    histogram  rows in one backend call, by ``operation``
``prompttune_batch_latency_seconds``         histogram  one backend call (one decoding step for ``generate``)
``prompttune_queue_length``                  gauge      requests admitted and not finished
``prompttune_loaded_prompts``                gauge      prompts served
``prompttune_device_prompts``                gauge      prompts resident on the device
===========================================  =========  ==========================================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .server import PromptServer

PREFIX = "prompttune"
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
    """The metrics of one :class:`PromptServer` (needs ``prometheus_client``, in the ``serve`` extra)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(f"{PREFIX}_requests", "Requests by prompt, operation and HTTP status", ["prompt", "operation", "status"], registry=r)
        self.request_latency = Histogram(f"{PREFIX}_request_latency_seconds", "Request latency, arrival to last byte", ["operation"], registry=r)
        self.batch_size = Histogram(f"{PREFIX}_batch_size", "Rows in one backend call", ["operation"], buckets=BATCH_BUCKETS, registry=r)
        self.batch_latency = Histogram(f"{PREFIX}_batch_latency_seconds", "One backend call", ["operation"], registry=r)
        self.queue_length = Gauge(f"{PREFIX}_queue_length", "Requests admitted and not finished", registry=r)
        self.loaded_prompts = Gauge(f"{PREFIX}_loaded_prompts", "Prompts served", registry=r)
        self.device_prompts = Gauge(f"{PREFIX}_device_prompts", "Prompts resident on the device", registry=r)

    def watch(self, server: "PromptServer") -> None:
        """Reads the gauges from ``server`` at every scrape."""
        self.queue_length.set_function(lambda: server.held)
        self.loaded_prompts.set_function(lambda: len(server.registry))
        self.device_prompts.set_function(lambda: len(server.registry.resident()))

    def observe_batch(self, operation: str, size: int, seconds: float) -> None:
        self.batch_size.labels(operation).observe(size)
        self.batch_latency.labels(operation).observe(seconds)

    def observe_request(self, prompt: str, operation: str, status: int, seconds: float) -> None:
        self.requests.labels(prompt, operation, str(status)).inc()
        self.request_latency.labels(operation).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """The text a scrape returns, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


__all__ = ["ServerMetrics"]
