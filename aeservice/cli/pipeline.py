"""`main`: the whole job (`aeservice.pipeline`) on one data set."""
from __future__ import annotations

import click

from aeservice.cli.errors import user_errors
from aeservice.cli.options import OrAuto, WholeNumber, optional_text
from aeservice.config import DataConfig, ModelConfig, TrainConfig, is_auto
from aeservice.errors import UserError

__all__ = ["pipeline"]


@click.command("main")
@click.option("--dataset", default="digits", show_default=True,
              help="Built-in set, or a path to a .csv/.npy/.npz/IDX file or an image folder; every kind trains on it.")
@click.option("--label-column", default=None, help=DataConfig.__dataclass_fields__["label_column"].metadata["help"])
@click.option("--latent-dim", type=OrAuto(integer=True), default=None,
              help="Code size shared by every kind. [default: auto = "
                   + ModelConfig.__dataclass_fields__["latent_dim"].metadata["auto"] + "]")
@click.option("--n-trials", type=WholeNumber(), default=8, show_default=True,
              help="Optuna trials per tuned kind; the first tries the default settings.")
@click.option("--epochs", type=OrAuto(integer=True), default=None,
              help="Most epochs per trial. [default: auto = the epoch rule of `train`; early stopping ends most "
                   "trials far sooner]")
@click.option("--seed", type=WholeNumber(), default=0, show_default=True)
@click.option("--force", type=click.BOOL, is_flag=False, flag_value=True, default=False, show_default=True,
              help="Run every step anew instead of reusing finished ones (bare flag or true/false).")
@click.option("--storage", default="auto", show_default=True,
              help="Optuna storage. auto: optuna.db beside the MLflow SQLite store.")
@click.option("--experiment", default="aeservice", show_default=True, help="MLflow experiment for every run.")
@user_errors
def pipeline(dataset: str, label_column: str | None, latent_dim: int | None, n_trials: int, epochs: int | None,
             seed: int,
             force: bool, storage: str, experiment: str) -> None:
    """The whole job: PCA baseline, tuned ae / sparse / vae, registered, compared.

    Registers the best of each kind as <dataset>-<kind> (champion/challenger rules of
    `register`), prints the leaderboard and a serve command per model. Steps already finished
    with the same settings and code are reused; --force runs everything anew.
    """
    from aeservice.pipeline import PipelineSettings, run_pipeline

    if n_trials < 1:
        raise UserError(f"n_trials must be at least 1, got {n_trials}")
    config = TrainConfig(DataConfig(dataset=dataset, label_column=optional_text(label_column)),
                         ModelConfig(latent_dim=latent_dim, epochs=epochs, seed=seed), experiment=experiment).validate()
    result = run_pipeline(config, PipelineSettings(n_trials=n_trials, force=force,
                                                   storage=None if is_auto(storage) else storage),
                          echo=lambda line: click.echo(line, err=True))
    for line in result.lines():
        click.echo(line)
