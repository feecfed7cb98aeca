"""Progress lines for long fits, in a module light enough to import before Keras."""
from __future__ import annotations

import sys
from typing import Callable

__all__ = ["progress_printer"]


def progress_printer(epochs: int, stream=sys.stderr) -> Callable[[int, dict], None]:
    """One line about every tenth epoch, so long fits show they are alive."""
    every = max(1, epochs // 10)

    def report(epoch: int, logs: dict) -> None:
        if epoch == 0 or (epoch + 1) % every == 0 or epoch + 1 == epochs:
            parts = " ".join(f"{k} {v:.4g}" for k, v in logs.items())
            print(f"epoch {epoch + 1}/{epochs}  {parts}", file=stream, flush=True)

    return report
