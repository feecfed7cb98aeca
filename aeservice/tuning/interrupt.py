"""Ctrl-C that stops a study at a safe point: the first press finishes the current epoch, the second stops at once.

A KeyboardInterrupt that lands inside a database write can leave a SQLite store locked for the
rest of the process, and then neither the summary nor the KILLED status of the parent run can be
written. So the first Ctrl-C only sets a flag; the epoch and trial callbacks raise
KeyboardInterrupt at the next boundary, outside any write.
"""
from __future__ import annotations

import signal
import sys
import threading
from typing import TextIO

__all__ = ["GracefulInterrupt"]


class GracefulInterrupt:
    """Context manager; a no-op outside the main thread, where signals cannot be handled."""

    def __init__(self, stream: TextIO | None = None):
        self.requested = False
        self.stream = stream
        self._previous = None

    def __enter__(self) -> "GracefulInterrupt":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum, frame) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second press stops at once
        print("\nCtrl-C: stopping after this epoch (press again to stop at once)", file=self.stream or sys.stderr,
              flush=True)

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def epoch_callback(self, epoch: int, logs: dict) -> None:
        self.check()

    def trial_callback(self, study, trial) -> None:
        self.check()
