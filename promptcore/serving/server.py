"""The prompt server without HTTP: requests naming prompts in, one backend call per operation of a batch out.

>>> server = PromptServer(backend, registry)
>>> server.predict([("fashion", image_bytes), ("shoes", other_bytes)], top_k=3)   # one mixed batch, in order

The server admits a bounded number of requests (:meth:`PromptServer.admitted`; past ``max_queue`` it raises
:class:`QueueFullError`, HTTP 503), keeps the prompts of a running batch on the device (the registry's LRU tier) and
runs one forward at a time on the backbone. Batching many requests together is the serving engine's work (Ray
Serve's ``@serve.batch`` in :mod:`promptcore.serving.app`); what reaches :meth:`PromptServer.run` is one batch.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from ..errors import UserError
from .backend import OPERATIONS, Classification, GenerationStep, Request, ServingBackend
from .metrics import ServerMetrics
from .registry import PromptRegistry


class QueueFullError(UserError):
    """The server holds as many requests as it may (HTTP 503); ``retry_after`` is the seconds to wait."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Completion:
    """The whole answer to a ``generate`` request.

    Attributes:
        text: the generated text.
        token_ids: the generated tokens.
        finish_reason: ``stop`` or ``length``.
        num_input_tokens: tokens of the input (usage reports).
    """

    text: str
    token_ids: list[int]
    finish_reason: str
    num_input_tokens: int


class PromptServer:
    """Runs requests naming prompts on one backend.

    Args:
        backend: the served backbone.
        registry: its prompts.
        max_queue: requests held at once (admitted and not finished); past it :meth:`admitted` raises.
        metrics: Prometheus metrics to record batches and the queue in (optional).
    """

    def __init__(
        self, backend: ServingBackend, registry: PromptRegistry, max_queue: int = 256, metrics: ServerMetrics | None = None
    ) -> None:
        if max_queue < 1:
            raise UserError(f"max_queue: must be >= 1, got {max_queue}")
        self.backend = backend
        self.registry = registry
        self.max_queue = max_queue
        self.metrics = metrics
        self._run_lock = threading.Lock()  # one forward at a time on the backbone
        self._count = threading.Condition()
        self._held = 0
        self._closing = False
        if metrics is not None:
            metrics.watch(self)

    # ----- admission -------------------------------------------------------------------------------------------
    @property
    def held(self) -> int:
        """Requests admitted and not finished."""
        return self._held

    @contextmanager
    def admitted(self, n: int = 1) -> Iterator[None]:
        """Holds ``n`` places in the bounded queue for the duration of a ``with`` block.

        Raises:
            QueueFullError: the queue is full, or the server is shutting down.
        """
        with self._count:
            if self._closing:
                raise QueueFullError("the server is shutting down; retry on another replica", retry_after=5)
            if self._held + n > self.max_queue:
                raise QueueFullError(f"the server holds {self._held} requests, its limit (max_queue) is {self.max_queue}; retry shortly")
            self._held += n
        try:
            yield
        finally:
            with self._count:
                self._held -= n
                self._count.notify_all()

    def close(self, timeout: float | None = None) -> bool:
        """Stops admitting requests and waits (up to ``timeout`` seconds) for the admitted ones to finish.

        Returns whether every admitted request finished.
        """
        with self._count:
            self._closing = True
            return self._count.wait_for(lambda: self._held == 0, timeout)

    # ----- one batch -------------------------------------------------------------------------------------------
    def prepare(self, name: str, operation: str, payload: Any, params: dict[str, Any] | None = None) -> Request:
        """One request for prompt ``name``, checked and converted by the backend before it is queued.

        Raises:
            UnknownPromptError: no such prompt (HTTP 404).
            UserError: the prompt does not answer ``operation``, or the input or a parameter is malformed.
        """
        if operation not in OPERATIONS:
            raise UserError(f"operation {operation!r} is not one of {', '.join(OPERATIONS)}")
        prompt = self.registry.get(name)
        if operation not in prompt.info.operations:
            raise UserError(
                f"prompt {name!r} ({prompt.info.method}, {prompt.info.task}) answers {', '.join(prompt.info.operations)}, "
                f"not {operation}"
            )
        return self.backend.prepare(prompt, operation, payload, dict(params or {}))

    def classify(self, requests: list[Request]) -> list[Classification]:
        """One batch of ``classify`` requests (any mix of prompts) in one backend call, answers in order."""
        if not requests:
            return []
        with self.registry.pinned([r.prompt for r in requests]), self._run_lock:
            start = time.perf_counter()
            out = self.backend.classify(requests)
            self._observe("classify", len(requests), time.perf_counter() - start)
        return out

    def generate_steps(self, requests: list[Request]) -> Iterator[list[GenerationStep | None]]:
        """Streams one batch of ``generate`` requests: the backend's steps, one forward at a time (other batches
        may run between two steps; this batch's prompts stay on the device until it ends)."""
        if not requests:
            return
        with self.registry.pinned([r.prompt for r in requests]):
            steps = self.backend.generate(requests)
            while True:
                with self._run_lock:
                    start = time.perf_counter()
                    step = next(steps, None)
                    if step is not None:
                        self._observe("generate", sum(s is not None for s in step), time.perf_counter() - start)
                if step is None:
                    return
                yield step

    def complete(self, requests: list[Request]) -> list[Completion]:
        """One batch of ``generate`` requests run to the end: the whole answer of each, in order."""
        texts: list[list[str]] = [[] for _ in requests]
        tokens: list[list[int]] = [[] for _ in requests]
        reasons: list[str | None] = [None] * len(requests)
        for step in self.generate_steps(requests):
            for i, s in enumerate(step):
                if s is not None:
                    texts[i].append(s.text)
                    tokens[i] += s.token_ids
                    reasons[i] = s.finish_reason or reasons[i]
        return [
            Completion("".join(t), ids, reason or "length", r.num_input_tokens)
            for t, ids, reason, r in zip(texts, tokens, reasons, requests)
        ]

    def run(self, requests: list[Request]) -> list[Classification | Completion]:
        """One mixed batch: grouped by operation, one backend call per group, answers in the requests' order."""
        out: list[Classification | Completion | None] = [None] * len(requests)
        for operation, call in (("classify", self.classify), ("generate", self.complete)):
            where = [i for i, r in enumerate(requests) if r.operation == operation]
            for i, answer in zip(where, call([requests[i] for i in where])):
                out[i] = answer
        return out  # type: ignore[return-value]

    # ----- the Python API --------------------------------------------------------------------------------------
    def predict(self, items: Sequence[tuple[str, Any]], **params: Any) -> list[Classification | Completion]:
        """Answers ``[(prompt_name, input), ...]`` in order, as one batch: class scores from prompts that classify,
        the generated text from prompts that only generate. ``params`` go to every request (``top_k``;
        ``max_tokens``, ``temperature`` ...)."""
        requests = []
        for name, payload in items:
            prompt = self.registry.get(name)
            operation = "classify" if "classify" in prompt.info.operations else "generate"
            requests.append(self.prepare(name, operation, payload, params))
        with self.admitted(len(requests)):
            return self.run(requests)

    def generate(self, items: Sequence[tuple[str, Any]], **params: Any) -> list[Completion]:
        """Generates for ``[(prompt_name, text or chat messages), ...]`` as one batch; answers in order."""
        requests = [self.prepare(name, "generate", payload, params) for name, payload in items]
        with self.admitted(len(requests)):
            return self.complete(requests)

    def _observe(self, operation: str, size: int, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.observe_batch(operation, size, seconds)


__all__ = ["Completion", "PromptServer", "QueueFullError"]
