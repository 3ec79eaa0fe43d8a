"""Bounded waits for tests: a condition polled until a deadline, so a test whose event never comes fails naming what
it waited for, instead of holding the whole run."""

from __future__ import annotations

import time
from typing import Callable


def wait_for(condition: Callable[[], object], what: str, timeout: float = 60.0, alive: Callable[[], bool] | None = None) -> None:
    """Polls ``condition`` until it is true. Fails after ``timeout`` seconds, or as soon as ``alive`` (the thread or
    process that should bring the event) says it has ended."""
    deadline = time.monotonic() + timeout
    while not condition():
        if alive is not None and not alive():
            raise AssertionError(f"stopped waiting for {what}: the thread or process that should bring it has ended")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.01)
