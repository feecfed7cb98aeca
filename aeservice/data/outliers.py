"""Labels as outlier flags (1 = outlier, 0 = not), for the detection metrics `train` logs."""
from __future__ import annotations

import numpy as np

from aeservice.errors import UserError

__all__ = ["outlier_flags"]


def _same(labels: np.ndarray, value: str) -> np.ndarray:
    """Where labels equal the value given as text: as text, or as a number ("1" matches 1.0)."""
    match = np.array([str(v) == value for v in labels])
    try:
        number = float(value)
    except ValueError:
        return match
    numeric = np.array([_number(v) == number for v in labels])
    return match | numeric


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def outlier_flags(labels: np.ndarray | None, outlier_label: str | None, required: bool,
                  column: str | None = None) -> np.ndarray | None:
    """0/1 outlier flags from a label column, or None when it holds none.

    `outlier_label` names the outlier class (every other value is an inlier). Without it, a
    column whose values are all 0 and 1 is the flag itself; any other column holds no flags,
    which is an error when `required` (detection metrics were asked for) and None otherwise.
    """
    name = f"label column {column!r}" if column else "the label column"
    if labels is None:
        if required:
            raise UserError("detection metrics need outlier labels: give --label-column with a 0/1 outlier flag "
                            "(or --outlier-label VALUE)")
        return None
    labels = np.asarray(labels)
    if outlier_label is not None:
        flags = _same(labels, outlier_label)
        if not flags.any():
            raise UserError(f"--outlier-label {outlier_label!r} is not a value of {name}")
        return flags.astype(int)
    values = {_number(v) for v in np.unique(labels.astype(str) if labels.dtype.kind in "OUS" else labels)}
    if values <= {0.0, 1.0}:
        return np.array([_number(v) for v in labels], dtype=float).astype(int)
    if required:
        shown = ", ".join(sorted(map(str, np.unique(labels.astype(str))))[:5])
        raise UserError(f"{name} is not a 0/1 outlier flag (values include {shown}); "
                        "give --outlier-label VALUE to name the outlier class")
    return None
