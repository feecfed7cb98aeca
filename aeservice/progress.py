"""Progress lines for long fits, in a module light enough to import before Keras."""
from __future__ import annotations

import sys
from typing import Callable

__all__ = ["progress_printer", "PACE_RATE", "PACE_ETA", "pace_text"]

# What a fit reports of its pace with every epoch's logs (models/callbacks.py), also logged as
# MLflow metrics: training rows per second, and seconds left at most (this fit's epoch cap).
PACE_RATE, PACE_ETA = "rows_per_second", "eta_seconds"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def pace_text(logs: dict) -> str:
    """'12,345 rows/s, at most 3m20s left' from an epoch's logs ('' when they hold no pace)."""
    rate = next((v for k, v in logs.items() if k.endswith(PACE_RATE)), None)
    eta = next((v for k, v in logs.items() if k.endswith(PACE_ETA)), None)
    if rate is None:
        return ""
    return f"{rate:,.0f} rows/s" + ("" if eta is None else f", at most {_duration(eta)} left")


def progress_printer(epochs: int, stream=sys.stderr) -> Callable[[int, dict], None]:
    """One line about every tenth epoch, so long fits show they are alive: the losses, the
    rows per second and the time left at most."""
    every = max(1, epochs // 10)

    def report(epoch: int, logs: dict) -> None:
        if epoch == 0 or (epoch + 1) % every == 0 or epoch + 1 == epochs:
            parts = " ".join(f"{k} {v:.4g}" for k, v in logs.items() if not k.endswith((PACE_RATE, PACE_ETA)))
            pace = pace_text(logs)
            print(f"epoch {epoch + 1}/{epochs}  {parts}" + (f"  ({pace})" if pace else ""), file=stream, flush=True)

    return report
