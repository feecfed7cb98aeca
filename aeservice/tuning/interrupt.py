"""Ctrl-C or SIGTERM that stops a study at a safe point: the first finishes the current epoch, a second stops at once.

A KeyboardInterrupt that lands inside a database write can leave a SQLite store locked for the
rest of the process, and then neither the summary nor the KILLED status of the parent run can be
written. So the first Ctrl-C (or SIGTERM) only sets a flag; the epoch and trial callbacks raise
KeyboardInterrupt (`Terminated` for SIGTERM, so the command exits 143) at the next boundary,
outside any write.
"""
from __future__ import annotations

import signal
import sys
import threading
from typing import TextIO

from aeservice.signals import Terminated, raise_terminated

__all__ = ["GracefulInterrupt"]

_AT_ONCE = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: raise_terminated}
_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


class GracefulInterrupt:
    """Context manager; a no-op outside the main thread, where signals cannot be handled."""

    def __init__(self, stream: TextIO | None = None):
        self.requested = False
        self.stream = stream
        self._signal: int | None = None  # the first signal that asked to stop
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "GracefulInterrupt":
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._handle) for signum in _AT_ONCE}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        self.requested, self._signal = True, signum
        for other, at_once in _AT_ONCE.items():  # a second Ctrl-C or SIGTERM stops at once
            signal.signal(other, at_once)
        again = "press again to stop at once" if signum == signal.SIGINT else "a second signal stops at once"
        print(f"\n{_NAMES[signum]}: stopping after this epoch ({again})", file=self.stream or sys.stderr, flush=True)

    def check(self) -> None:
        if self.requested:
            raise Terminated() if self._signal == signal.SIGTERM else KeyboardInterrupt()

    def epoch_callback(self, epoch: int, logs: dict) -> None:
        self.check()

    def trial_callback(self, study, trial) -> None:
        self.check()
