"""SIGTERM stops a command the way Ctrl-C does: the same clean-up, then exit code 143 instead of 130.

`timeout`, a CI cancel and `docker stop` send SIGTERM. Ctrl-C raises KeyboardInterrupt in the main
thread, and every clean-up path catches that: a run ends KILLED, a study keeps its finished trials
and logs its summary, the tracking worker is told to end its run. SIGTERM raises `Terminated`, a
KeyboardInterrupt, so the same paths run; the CLI then exits 128 + 15, as a shell reports a process
that SIGTERM ended. SIGKILL cannot be caught: for that the tracking worker watches its trainer
(`aeservice.tracking.worker`).
"""
from __future__ import annotations

import functools
import signal
import threading
from typing import Callable

__all__ = ["Terminated", "raise_terminated", "sigterm_raises", "exit_code", "stop_message"]


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: stop as on Ctrl-C."""


def raise_terminated(signum, frame) -> None:
    """A signal handler: raise `Terminated` where the main thread is."""
    raise Terminated()


def sigterm_raises(func: Callable) -> Callable:
    """Run `func` with SIGTERM raising `Terminated`, then put the previous handler back.

    Outside the main thread, where Python cannot set handlers, `func` runs as it is.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            return func(*args, **kwargs)
        previous = signal.signal(signal.SIGTERM, raise_terminated)
        try:
            return func(*args, **kwargs)
        finally:
            if previous is not None:  # None: set outside Python, cannot be put back
                signal.signal(signal.SIGTERM, previous)

    return wrapper


def exit_code(exc: KeyboardInterrupt) -> int:
    """128 + the signal's number: 143 for SIGTERM, 130 for Ctrl-C."""
    return 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)


def stop_message(exc: KeyboardInterrupt) -> str:
    return "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
