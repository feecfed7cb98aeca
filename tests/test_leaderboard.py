"""The leaderboard without MLflow: rows from params and metrics, ranking, and the three tables."""
from __future__ import annotations

import csv
import io

from aeservice.leaderboard import COLUMNS, METRICS, PARAMS, format_table, kind_params, make_row, rank, to_csv, to_markdown

PARAMS_AS_LOGGED = {"latent_dim": "auto", "latent_dim_used": "2", "hidden": "auto", "hidden_used": "256,128",
                    "epochs": "30", "learning_rate": "0.001", "beta": "1.0", "l1": "0.0001", "sparsity_weight": "0.0",
                    "weight_decay": "0.0"}


def _row(kind: str, dataset: str, val: float, test: float | None, run_id: str) -> dict:
    metrics = {"val_mse": val, "explained_variance": 0.5, **({} if test is None else {"test_mse": test})}
    return make_row(kind, dataset, PARAMS_AS_LOGGED, metrics, run_id)


def test_a_row_has_every_column_and_only_the_settings_that_shape_its_kind():
    row = _row("vae", "digits", 0.1, 0.2, "r1")
    assert tuple(row) == COLUMNS and set(METRICS) <= set(row) and set(PARAMS) <= set(row)
    assert row["latent_dim"] == 2 and row["hidden"] == "256,128"  # what the run used, not "auto"
    assert row["beta"] == "1.0" and row["l1"] is None and row["test_elbo"] is None
    pca = _row("pca", "digits", 0.1, 0.2, "r2")
    assert all(pca[name] is None for name in PARAMS) and kind_params("pca") == ()
    assert kind_params("gone") == PARAMS  # a kind no longer registered shows everything
    assert make_row("ae", "x", {"epochs": "auto", "epochs_used": "500", "epochs_trained": "87"}, {}, "r5")["epochs"] \
        == "87"  # what it trained, not the cap
    assert make_row("ae", "x", {"latent_dim": "3"}, {}, "r3")["latent_dim"] == 3
    assert make_row("ae", "x", {"latent_dim": "auto"}, {}, "r4")["latent_dim"] is None


def test_rank_keeps_the_best_per_data_set_and_kind_sorted_by_test_mse():
    rows = [_row("ae", "digits", 0.3, 0.1, "ae-worse"), _row("ae", "digits", 0.2, 0.4, "ae-best"),
            _row("pca", "digits", 0.5, 0.5, "pca"), _row("vae", "digits", 0.4, None, "vae-no-test"),
            _row("pca", "blobs", 0.9, 0.9, "blobs-pca"),
            _row("sparse", "digits", 0.6, 0.6, "sparse-newest"), _row("sparse", "digits", 0.6, 0.7, "sparse-old")]
    assert [r["run_id"] for r in rank(rows)] == ["blobs-pca", "ae-best", "pca", "sparse-newest", "vae-no-test"]
    every = rank(rows, all_runs=True)
    assert len(every) == len(rows) and [r["dataset"] for r in every] == ["blobs"] + ["digits"] * 6
    assert [r["run_id"] for r in every][1:3] == ["ae-worse", "ae-best"]  # by test_mse within a data set


def test_the_tables_show_blanks_as_dashes_and_the_csv_keeps_full_precision():
    rows = rank([_row("vae", "digits", 0.123456789, 0.2, "r1"), _row("pca", "digits", 0.3, 0.4, "r2")])
    table = format_table(rows).splitlines()
    assert table[0].split()[:5] == ["kind", "dataset", "latent", "val_mse", "test_mse"]
    assert table[2].split()[:4] == ["vae", "digits", "2", "0.1235"] and table[2].split()[-1] == "r1"
    # every kind's own metrics (test_elbo, ...), the two detection metrics (no outlier labels) and every
    # setting of a PCA
    assert table[3].split().count("-") == len(METRICS) - 3 + len(PARAMS)
    md = to_markdown(rows).splitlines()
    assert md[0] == "| " + " | ".join(COLUMNS) + " |" and md[1].startswith("|---|---|---:|")
    assert "| 0.001 |" in md[2] and md[3].startswith("| pca | digits | 2 | 0.3 | 0.4 | 0.5 | - |")
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert tuple(parsed[0]) == COLUMNS and float(parsed[0]["val_mse"]) == 0.123456789
    assert parsed[1]["beta"] == "" and parsed[0]["beta"] == "1.0"
