"""Ctrl-C (SIGINT) and SIGTERM during training: the first asks the trainer to stop after the current step and save
the run, a second aborts at once."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any


class StopSignals:
    """Handlers for SIGINT and SIGTERM while installed (main thread only; elsewhere nothing is installed).

    Attributes:
        requested: a first signal arrived; the trainer stops after the current step and saves.
    """

    def __init__(self) -> None:
        self.requested = False
        self._old_handlers: dict[int, Any] = {}

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.requested:  # a second Ctrl-C stops at once, without saving
            self.restore()
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{signal.Signals(signum).name}: stopping after this step and saving the run (Ctrl-C again to abort)", file=sys.stderr)

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def restore(self) -> None:
        """Puts back the handlers that were there before :meth:`install`."""
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers = {}


__all__ = ["StopSignals"]
