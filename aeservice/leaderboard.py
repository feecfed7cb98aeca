"""The leaderboard of training runs: rows in, ranked rows and tables out. No MLflow here.

A row is one training run as plain values: its kind, data set, code size, the metrics of
METRICS and the settings of PARAMS, and its run id; `make_row` builds it from a run's params and
metrics (`aeservice.comparison` finds the runs). `rank` keeps the best row of each (data set,
kind) by `val_mse`, the number tuning chose on, so the test set stays an honest final score (or
every row), grouped by data set and sorted by `test_mse`. `format_table`, `to_markdown` and
`to_csv` are the three ways it is shown: the terminal, the report, and full precision.
"""
from __future__ import annotations

import csv
import io
from typing import Any, Mapping, Sequence

from aeservice.errors import UserError
from aeservice.models import MODELS  # the classes only: Keras is not imported with them

__all__ = ["METRICS", "PARAMS", "COLUMNS", "Row", "kind_params", "make_row", "rank", "format_table", "to_markdown",
           "to_csv"]

# Every kind's metrics, then the test_ value of each kind's own (`extra_metrics`: the VAE's test_elbo
# and test_nll, the sparse AE's code sparsity).
# Runs trained on labelled outliers add test_roc_auc and test_average_precision (the others are blank).
METRICS = ("val_mse", "test_mse", "explained_variance",
           *dict.fromkeys(f"test_{name}" for model in MODELS.values() for name in model.extra_metrics),
           "test_roc_auc", "test_average_precision")
# Every other metric ranks highest first; fewer active and dead code units rank first (sparser, all used).
LOWER_IS_BETTER = ("val_mse", "test_mse", "test_nll", "test_code_l0", "test_code_dead_units")
PARAMS = ("hidden", "epochs", "learning_rate", "beta", "l1", "sparsity_weight", "weight_decay")
COLUMNS = ("kind", "dataset", "latent_dim", *METRICS, *PARAMS, "run_id")

# Shorter headers for the terminal, where every column has to fit in one line.
_SHORT = {"latent_dim": "latent", "explained_variance": "expl_var", "test_roc_auc": "roc_auc",
          "test_average_precision": "avg_prec", "learning_rate": "lr",
          "sparsity_weight": "sparsity_w", "weight_decay": "w_decay", "test_nll": "nll", "test_code_l0": "l0",
          "test_code_dead_units": "dead", "test_code_share_inactive": "inactive"}

Row = dict[str, Any]


def kind_params(kind: str) -> tuple[str, ...]:
    """The settings that shape a kind (`Autoencoder.comparison_params`); the rest are left blank in
    its row, so the table does not suggest that a beta shaped a PCA. A kind no longer registered
    (an old run's) shows every parameter."""
    return MODELS[kind].comparison_params if kind in MODELS else PARAMS


def _latent(params: Mapping[str, str]) -> int | None:
    for key in ("latent_dim_used", "latent_dim"):
        try:
            return int(float(params[key]))
        except (KeyError, ValueError):
            continue
    return None


def _used(params: Mapping[str, str], name: str) -> str | None:
    """What the run trained with: `hidden_used` over `hidden` when the config said auto; for epochs,
    the epochs it trained (`epochs_trained`, restarts included) over the cap."""
    if name == "epochs" and "epochs_trained" in params:
        return params["epochs_trained"]
    return params.get(f"{name}_used", params.get(name))


def make_row(kind: str, dataset: str, params: Mapping[str, str], metrics: Mapping[str, float], run_id: str) -> Row:
    """One run's row (keys: COLUMNS) from its params and metrics as MLflow gives them back."""
    used = kind_params(kind)
    return {
        "kind": kind,
        "dataset": dataset,
        "latent_dim": _latent(params),
        **{name: metrics.get(name) for name in METRICS},
        **{name: _used(params, name) if name in used else None for name in PARAMS},
        "run_id": run_id,
    }


def _order(row: Row, metric: str = "test_mse") -> tuple:
    value = row[metric]
    key = float("inf") if value is None else value if metric in LOWER_IS_BETTER else -value  # missing: last
    return row["dataset"], key, row["val_mse"], row["kind"]


def rank(rows: Sequence[Row], all_runs: bool = False, metric: str = "test_mse") -> list[Row]:
    """The best row of each data set and kind by val_mse (on a tie the first given: pass the newest
    first), or every row with `all_runs`; grouped by data set and sorted by `metric` within it
    (errors lowest first, any other metric highest first)."""
    if metric not in METRICS:
        raise UserError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    chosen = list(rows)
    if not all_runs:
        best: dict[tuple[str, str], Row] = {}
        for candidate in sorted(rows, key=lambda r: r["val_mse"]):  # stable: ties keep their order
            best.setdefault((candidate["dataset"], candidate["kind"]), candidate)
        chosen = list(best.values())
    return sorted(chosen, key=lambda row: _order(row, metric))


_NUMERIC_PARAMS = ("learning_rate", "beta", "l1", "sparsity_weight", "weight_decay")


def _text(value: Any, blank: str, column: str = "") -> str:
    if value is None:
        return blank
    if column in _NUMERIC_PARAMS and isinstance(value, str):  # params come back as text: shorten them
        try:
            value = float(value)
        except ValueError:
            return value
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(rows: Sequence[Row]) -> str:
    """A fixed-width table for the terminal: text left, numbers right, '-' where a value does not apply."""
    headers = [_SHORT.get(c, c) for c in COLUMNS]
    cells = [[_text(row[c], "-", c) for c in COLUMNS] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    left = {"kind", "dataset", "run_id", "hidden"}

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if c in left else v.rjust(w) for c, v, w in zip(COLUMNS, values, widths)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def to_markdown(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |",
             "|" + "|".join("---" if c in ("kind", "dataset", "hidden", "run_id") else "---:" for c in COLUMNS) + "|"]
    lines += ["| " + " | ".join(_text(row[c], "-", c) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def to_csv(rows: Sequence[Row]) -> str:
    """Full precision, empty cells where a value does not apply; the header is COLUMNS."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row[c] is None else row[c] for c in COLUMNS})
    return out.getvalue()
