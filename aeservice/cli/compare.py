"""`compare`: the leaderboard of an experiment's training runs, logged as a comparison run."""
from __future__ import annotations

import click

from aeservice.cli.errors import user_errors

__all__ = ["compare"]


@click.command()
@click.option("--experiment", default="aeservice", show_default=True, help="MLflow experiment whose runs to compare.")
@click.option("--dataset", default=None,
              help="Only runs on this data set (name or path as trained). [default: all data sets]")
@click.option("--all", "all_runs", is_flag=True,
              help="List every training run, not only the best of each data set and kind (by val_mse).")
@click.option("--metric", default="test_mse", show_default=True,
              help="Sort each data set's rows by this metric (errors lowest first, others highest first), e.g. "
                   "test_roc_auc for runs trained on labelled outliers.")
@click.option("--no-figures", is_flag=True, help="Only the table: skip loading the data and models for figures.")
@user_errors
def compare(experiment: str, dataset: str | None, all_runs: bool, metric: str, no_figures: bool) -> None:
    """Leaderboard of the training runs in an experiment, logged to a comparison run.

    Counts the finished runs tagged `model` (train runs and tune trials), shows the best run of
    each data set and kind by val_mse, sorted by test_mse, and logs comparison.md,
    comparison.csv and figures (test MSE per kind, reconstructions of every kind, the latent
    spaces side by side; one set per data set) to a new run tagged aeservice.comparison=true.
    """
    from aeservice.comparison import compare as run_compare

    if dataset is not None and dataset.strip().lower() in ("", "all"):
        dataset = None  # what the MLproject default ("all") means
    report = run_compare(experiment, dataset=dataset, all_runs=all_runs, figures=not no_figures, metric=metric,
                         progress=lambda message: click.echo(message, err=True))
    for line in report.lines():
        click.echo(line)
