"""Outlier detection on top of any kind's `score`: the threshold and the labelled metrics.

A model's `score` is one number per row, higher for rows less like the training data; `detect`
flags the rows whose score is above `threshold_`. The threshold is set at fit time as PyOD sets
its own: the (1 - contamination) quantile of the training rows' scores, so that about
`contamination` of the training rows are flagged. With labels (1 = outlier), `detection_metrics`
measures the score (ROC-AUC, average precision: no threshold needed) and `detect` (precision
and recall at the threshold) with scikit-learn.
"""
from __future__ import annotations

import numpy as np

from aeservice.errors import UserError

__all__ = ["CALIBRATION_ROWS", "DEFAULT_CONTAMINATION", "DETECTION_LATENT_DIM", "DETECTION_METRICS",
           "check_contamination", "contamination_threshold",
           "detection_metrics", "error_scale"]

DEFAULT_CONTAMINATION = 0.1  # PyOD's default share of outliers among the training rows
# Training rows the error scale and the threshold are computed on (a seeded sample of larger
# sets): a per-feature mean and a 0.9 quantile need no more, and memory stays bounded on
# millions of rows. Every row of the sets this was measured on (at most 1,100 training rows).
CALIBRATION_ROWS = 100_000

# The auto code size when detection is asked for (a contamination is given), in place of 2: a code
# of 4 leaves less of the inliers' spread in the errors (ODDS sets, PCA, five splits: mean ROC-AUC
# 0.870 against 0.837 at 2; docs/anomaly.md has the table).
DETECTION_LATENT_DIM = 4

# What `detection_metrics` returns, logged as test_<name>; higher is better for every one.
DETECTION_METRICS = ("roc_auc", "average_precision", "detect_precision", "detect_recall")


# The smallest per-feature error scale, as a share of the mean over features: a feature the model
# reconstructs (almost) exactly on the training rows, such as a constant one, would otherwise
# make the slightest error on it outweigh every other feature. (ODDS sets: ROC-AUC within 0.01
# of no floor at 0.01; docs/anomaly.md.)
ERROR_FLOOR = 0.01


def error_scale(train_errors: np.ndarray) -> np.ndarray:
    """Each feature's mean squared reconstruction error on the training rows, floored: what `score`
    divides the errors by, so that a feature counts by how unusual its error is."""
    per_feature = np.mean(np.asarray(train_errors, dtype=np.float64), axis=0)
    floor = ERROR_FLOOR * float(np.mean(per_feature)) or 1.0  # all zero (a perfect fit): plain errors
    return np.maximum(per_feature, floor)


def check_contamination(contamination: float) -> float:
    if not 0 < contamination <= 0.5:
        raise UserError(f"contamination must be in (0, 0.5], got {contamination}")
    return float(contamination)


def contamination_threshold(train_scores: np.ndarray, contamination: float) -> float:
    """The score above which `contamination` of the training rows lie (PyOD's `threshold_`)."""
    scores = np.asarray(train_scores, dtype=np.float64)
    return float(np.quantile(scores, 1.0 - check_contamination(contamination)))


def detection_metrics(scores: np.ndarray, flags: np.ndarray, threshold: float) -> dict[str, float]:
    """ROC-AUC and average precision of the scores, precision and recall of score > threshold, on
    rows whose outlier flags (0/1) are given; empty when the rows hold only one class (no ranking
    can be measured on them)."""
    from sklearn.metrics import average_precision_score, precision_score, recall_score, roc_auc_score

    flags = np.asarray(flags).astype(int)
    if len(np.unique(flags)) < 2:
        return {}
    flagged = (np.asarray(scores) > threshold).astype(int)
    return {"roc_auc": float(roc_auc_score(flags, scores)),
            "average_precision": float(average_precision_score(flags, scores)),
            "detect_precision": float(precision_score(flags, flagged, zero_division=0.0)),
            "detect_recall": float(recall_score(flags, flagged, zero_division=0.0))}
