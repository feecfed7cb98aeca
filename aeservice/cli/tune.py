"""`tune`: an Optuna study over the train options, each trial a nested MLflow run.

The searchable options (ModelConfig fields; `aeservice.tuning.OPTION_PARAMS` says what each
fixes) default to "searched": one given on the command line is fixed and taken out of the search.
"""
from __future__ import annotations

from typing import Any, Callable

import click

from aeservice.cli.errors import user_errors
from aeservice.cli.options import OrAuto, WholeNumber, config_from_options, train_options
from aeservice.config import ModelConfig, is_auto
from aeservice.errors import UserError
from aeservice.models.detection import DETECTION_METRICS

__all__ = ["tune", "SEARCHABLE", "PRUNERS"]

# The keys of aeservice.tuning.OPTION_PARAMS and .PRUNERS (a test checks): named here, since
# importing aeservice.tuning starts Optuna and MLflow, and `--help` should not wait for them.
SEARCHABLE = ("latent_dim", "hidden", "learning_rate", "weight_decay", "beta", "l1", "sparsity_weight",
              "sparsity_target")
PRUNERS = ("median", "asha", "hyperband", "none")
_GIVEN = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT,
          click.core.ParameterSource.PROMPT)


def _searchable(func: Callable) -> Callable:
    """Make the searchable train options say 'searched' by default and accept 'auto' (= search it)."""
    for param in getattr(func, "__click_params__", []):
        if param.name in SEARCHABLE:
            if isinstance(param.type, click.types.FloatParamType):
                param.type = OrAuto(integer=False)
            param.default = None if isinstance(param.type, OrAuto) else "auto"  # searched
            param.show_default = False
            param.help = (param.help or "").split(" [default")[0] + " [default: searched; a value fixes it]"
    return func


@click.command()
@_searchable
@train_options
@click.option("--n-trials", type=WholeNumber(), default=20, show_default=True,
              help="Trials this call adds to the study (0: as many as --timeout allows).")
@click.option("--timeout", type=float, default=0, show_default=True,
              help="Seconds after which this call starts no new trial (0: no limit).")
@click.option("--storage", default="auto", show_default=True,
              help="Optuna RDB storage URL, e.g. sqlite:///optuna.db or postgresql://user@host/db (a plain "
                   "file path means SQLite). "
                   "auto: optuna.db beside the MLflow SQLite store (else ./optuna.db).")
@click.option("--study-name", default="auto", show_default=True,
              help="An existing name resumes that study; workers with one storage and name share it. "
                   "auto: <model>-<dataset>-<date-time>.")
@click.option("--pruner", type=click.Choice(PRUNERS), default="median", show_default=True,
              help="Stop poor trials early, judged by their validation reconstruction each epoch.")
@click.option("--objective", default="val_mse", show_default=True,
              help="Metric to optimise: val_mse, test_mse, explained_variance, val_elbo / test_elbo and "
                   "val_nll / test_nll (vae), test_roc_auc / test_average_precision (tuning on outlier labels: "
                   "needs --label-column), or a per-epoch metric such as val_loss (its best epoch counts).")
@click.option("--direction", type=click.Choice(["auto", "minimize", "maximize"]), default="auto",
              show_default=True, help="auto: down for errors, up for explained_variance and the ELBO.")
@click.option("--range", "ranges", multiple=True, metavar="NAME=LO,HI",
              help="Narrow a searched range, e.g. --range latent_dim=2,8 --range beta=0.1,1 (repeat, or join "
                   "with ';'). Names: latent_dim hidden_width hidden_depth learning_rate weight_decay beta l1 "
                   "sparsity_weight sparsity_target.")
@click.option("--prune-startup", type=WholeNumber(), default=5, show_default=True,
              help="Complete trials before the median pruner prunes anything.")
@click.option("--prune-warmup", type=OrAuto(integer=True), default=None,
              help="Epochs each trial trains before it can be pruned (hyperband: its smallest budget). "
                   "[default: auto = max(5, epochs / 30); asha: max(10, epochs / 15)]")
@click.option("--register-as", default="none", metavar="NAME",
              help="When the study ends, register the best trial's model as NAME (champion/challenger "
                   "rules of `aeservice register`).")
@click.option("--quiet", is_flag=True, help="No line per trial.")
@click.pass_context
@user_errors
def tune(ctx: click.Context, n_trials: int, timeout: float, storage: str, study_name: str, pruner: str,
         objective: str, direction: str, ranges: tuple[str, ...], prune_startup: int, prune_warmup: int | None,
         register_as: str, quiet: bool, **options: Any) -> None:
    """Search hyperparameters with Optuna; every trial is a nested MLflow run of `train`.

    Searched per kind: latent_dim (up to the feature count), hidden width and depth, learning_rate,
    weight_decay, plus beta (vae) or l1, sparsity_weight and sparsity_target (sparse); pca searches
    latent_dim only. An option given on the command line (e.g. --latent-dim 2) is fixed and taken out
    of the search; --range narrows what is searched. The parent run logs the best trial, counts and
    plots; the best child run gets the tag best_trial=true. Run the same command on several machines
    with one --storage and --study-name to search in parallel.
    """
    fixed = tuple(name for name in SEARCHABLE
                  if ctx.get_parameter_source(name) in _GIVEN and not is_auto(options[name]))
    defaults = ModelConfig()
    for name in SEARCHABLE:  # searched: the value only has to be valid, the trial sets it
        if name not in fixed and name != "latent_dim":
            options[name] = getattr(defaults, name)
    config = config_from_options(options)
    if objective.removeprefix("test_") in DETECTION_METRICS:  # tuning on labels: they must be outlier flags
        from aeservice.training import require_outlier_flags

        require_outlier_flags(config)
    from aeservice.tuning import TuneSettings
    from aeservice.tuning import tune as run_tune

    settings = TuneSettings.from_options(n_trials, timeout, storage, study_name, pruner, objective, direction, ranges,
                                         prune_startup, prune_warmup, fixed=fixed)
    fixed_text = ", ".join(f"{n}={options[n]}" for n in fixed) or "none"
    click.echo(f"tuning {config.model.model} on {config.data.dataset}; fixed: {fixed_text}", err=True)
    result = run_tune(config, settings, progress=not quiet)
    for line in result.lines():
        click.echo(line)
    if result.best_run_id is None and result.best_trial_number is None:
        raise UserError("no trial completed; see the failed trials' reasons above")
    click.echo(f"dashboard: optuna-dashboard {result.storage}", err=True)
    if register_as.strip().lower() not in ("", "none"):
        if not result.best_run_id:
            raise UserError(f"the best trial has no logged model to register as {register_as!r}")
        from aeservice.registry import register_run

        for line in register_run(result.best_run_id, register_as.strip()).lines():
            click.echo(line)
