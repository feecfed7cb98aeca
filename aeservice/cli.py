"""The `aeservice` command: options in, configs built, the layers below called. Nothing imports it.

The options `train` and `tune` share are made from the config fields (`aeservice.config` says
how), so each setting is declared once. Heavy imports (Keras and its backend, MLflow) happen
inside commands, so `--help` and `datasets` are quick.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import sys
import typing
from typing import Any, Callable

import click

from aeservice import signals, sizes
from aeservice.config import DataConfig, ModelConfig, TrainConfig, parse_hidden
from aeservice.errors import UserError
from aeservice.models import MODELS  # the classes only: Keras is imported when a model trains
from aeservice.progress import progress_printer
from aeservice.timing import phase, summary

__all__ = ["aeservice_command", "run_and_exit", "train_options", "config_from_options", "user_errors"]

# The Keras backend and TensorFlow's log level are set by importing aeservice (aeservice.backend).
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

_DEFAULT_MODEL = ModelConfig()
_PHASES = ("imports", "data", "fit", "tracking in fit", "tracking", "saving the model", "plots", "model logging",
           "waiting for tracking")
_PARTS = (ModelConfig, DataConfig, TrainConfig)


class _OrAuto(click.ParamType):
    """A number, or 'auto' (None): the value is then chosen from the data or searched."""

    def __init__(self, integer: bool):
        self.integer = integer
        self.name = "INTEGER|auto" if integer else "FLOAT|auto"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, int if self.integer else float):
            return value
        if str(value).strip().lower() in ("auto", "", "none"):
            return None
        try:
            number = float(value)
        except ValueError:
            self.fail(f"{value!r} is not a number or 'auto'", param, ctx)
        if self.integer and not number.is_integer():
            self.fail(f"{value!r} is not a whole number or 'auto'", param, ctx)
        return int(number) if self.integer else number


def _whole(value: float, name: str) -> int:
    # MLproject passes numbers as text such as "100.0"; accept whole numbers only.
    if float(value) != int(float(value)):
        raise UserError(f"{name} must be a whole number, got {value}")
    return int(float(value))


def _kinds() -> str:
    """'pca baseline, dense ae, sparse ae, or vae' from each class's description."""
    words = [cls.description or kind for kind, cls in MODELS.items()]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + ", or " + words[-1]


def _base(hint: Any) -> type:
    """int, float, str or tuple: a field's type without its None."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return typing.get_origin(args[0]) or args[0]


def _option_fields() -> list[tuple[type, dataclasses.Field, Any]]:
    """(config class, field, type) of each field that is an option, in --help order: the kind and
    the data set first, then the other model settings, the other data settings, the experiment."""
    model, data, run = ([(part, f, typing.get_type_hints(part)[f.name]) for f in dataclasses.fields(part)
                         if "help" in f.metadata] for part in _PARTS)
    return [model[0], data[0], *model[1:], *data[1:], *run]


def _option(f: dataclasses.Field, hint: Any, words: dict[str, str]) -> Callable:
    """The click option of one config field, from its type, default and metadata."""
    meta, base, auto = f.metadata, _base(hint), f.metadata.get("auto")  # auto: None means "chosen from the data"
    text = meta["help"].format(**words)
    if auto is not None:
        text += " [default: auto" + (" = " + auto.format(**words) if auto else "") + "]"
    choices = tuple(MODELS) if f.name == "model" else meta.get("choices")  # the kinds are known above config.py
    if choices:
        kind = click.Choice(["auto", *choices] if auto is not None else list(choices))
    elif base in (int, float):
        kind = _OrAuto(integer=base is int) if auto is not None else meta.get("type", base)
    else:
        kind = None  # text: "256,128" for a tuple
    default = f.default if auto is None or isinstance(kind, _OrAuto) else "auto"
    shown = True if auto is None and f.default is not None else None  # auto: the help says how it is chosen
    return click.option("--" + f.name.replace("_", "-"), f.name, type=kind, default=default, show_default=shown,
                        help=text)


def train_options(func: Callable) -> Callable:
    """The data and model options shared by `train` and `tune`: one per config field that is an option."""
    words = {**sizes.describe(), "kinds": _kinds()}  # the help's {names}: how auto chooses, the kinds
    for _, f, hint in reversed(_option_fields()):
        func = _option(f, hint, words)(func)
    return func


def _config_value(f: dataclasses.Field, hint: Any, value: Any) -> Any:
    """An option's value as its field's: "auto" and "" are None, "256,128" a tuple, 30.0 a whole number."""
    if _base(hint) is tuple:
        return parse_hidden(value)
    if _base(hint) is int and f.metadata.get("type") is float:
        return _whole(value, f.name)
    if isinstance(value, str) and type(None) in typing.get_args(hint) and (
            value == "" or (value == "auto" and "auto" in f.metadata)):
        return None
    return value


def config_from_options(options: dict[str, Any]) -> TrainConfig:
    """Build a TrainConfig from the shared options; unknown keys are left for the caller."""
    values: dict[type, dict[str, Any]] = {part: {} for part in _PARTS}
    for part, f, hint in _option_fields():
        values[part][f.name] = _config_value(f, hint, options[f.name])
    return TrainConfig(DataConfig(**values[DataConfig]), ModelConfig(**values[ModelConfig]),
                       **values[TrainConfig]).validate()


def _import_tensorflow_quietly() -> None:
    """TensorFlow 2.21 prints C++ start-up lines before any log level applies; hide only those."""
    if os.environ.get("KERAS_BACKEND") != "tensorflow" or "tensorflow" in sys.modules:
        return
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    except ImportError:
        pass  # Keras will raise it again, with the message visible
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _fits(sizes) -> str:
    """How many seeded fits `train` makes, for its announce line."""
    if sizes.max_restarts == 1:
        return ""
    planned = f"{sizes.restarts} fit{'s' if sizes.restarts > 1 else ''}"
    more = f", up to {sizes.max_restarts} while none beats the linear model" if sizes.max_restarts > sizes.restarts else ""
    return f" per fit, {planned}{more}"


def user_errors(func: Callable) -> Callable:
    """Bad input ends the command with one line and exit code 1, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        _import_tensorflow_quietly()
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            raise click.ClickException(str(exc)) from None
        except Exception as exc:
            mlflow_errors = sys.modules.get("mlflow.exceptions")  # not imported just to check
            if mlflow_errors and isinstance(exc, mlflow_errors.MlflowException):
                raise click.ClickException(f"MLflow: {exc.message.splitlines()[0]}") from None
            raise
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM as signals.Terminated
            click.echo(signals.stop_message(exc), err=True)
            sys.exit(signals.exit_code(exc))

    return signals.sigterm_raises(wrapper)


@click.group("aeservice", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="aeservice")
def aeservice_command() -> None:
    """Train, tune, compare, register and serve autoencoders, tracked in MLflow.

    Runs go to MLFLOW_TRACKING_URI, or to the embedded default sqlite:///mlflow.db in the
    current folder. See `aeservice COMMAND --help` for each command.
    """


@aeservice_command.command()
@train_options
@click.option("--quiet", is_flag=True, help="No per-epoch progress lines and no time and memory summary.")
@user_errors
def train(quiet: bool, **options: Any) -> None:
    """Train one model and log it to MLflow as one run.

    The run gets the whole config as parameters, per-epoch loss curves, the final val_mse,
    test_mse and explained_variance (test_elbo for the VAE), plots, and a pyfunc model that
    serves encode / decode / reconstruct / sample / score. MLflow logging runs in a forked
    worker on the other core (AESERVICE_TRACKING_WORKER=0: in-process); the last lines say
    where the time and memory went. Keras backend: KERAS_BACKEND if set, else JAX when installed.
    """
    config = config_from_options(options)
    from aeservice.tracking import worker

    callbacks: list = []  # the progress printer joins once the data says how many epochs at most

    def announce(prepared) -> None:
        from aeservice.training import prepared_sizes

        d, sizes = prepared.dataset, prepared_sizes(prepared)
        epochs = MODELS[config.model.model].trains_in_epochs  # else one fit, no net (PCA)
        net = "" if not epochs else (
            f"; hidden {','.join(map(str, sizes.hidden)) or 'none'}, batch {sizes.batch_size}, "
            f"at most {sizes.epochs} epochs" + _fits(sizes)
            + f"; {sizes.activation}" + (f", input noise {sizes.input_noise:g}" if sizes.input_noise else "")
            + ("; from a plain AE fitted first (ae_* lines)" if config.model.model == "vae" else ""))
        click.echo(f"training {config.model.model} on {d.name} ({len(d.x)} rows x {d.n_features} features, "
                   f"{d.kind}: {d.kind_reason}){net}", err=True)
        if not quiet:
            callbacks.append(progress_printer(sizes.epochs * sizes.max_restarts if epochs else 1))  # PCA: one step
    peak, worker_time = "", ""
    if worker.available():  # MLflow in a second process, on the other core
        run_id, _, result, tracker = worker.train_in_parallel(config, callbacks, announce)
        peak = f" + {tracker.peak_mb:.0f} MB tracking worker"
        worker_time = ", ".join(f"{k} {v:.2f} s" for k, v in tracker.phases.items())
    else:
        with phase("imports"):
            from aeservice.tracking import train_run
            from aeservice.training import import_libraries, prepare

            import_libraries(config)
        with phase("data"):
            prepared = prepare(config)
        announce(prepared)
        run_id, result = train_run(prepared, callbacks=callbacks)
    metrics = "  ".join(f"{k} {v:.5g}" for k, v in result.metrics.items())
    click.echo(f"run {run_id}: {metrics}")
    click.echo(f"model: runs:/{run_id}/model")
    if not quiet:
        click.echo(f"time: {summary(_PHASES)}", err=True)
        if worker_time:
            click.echo(f"tracking worker time (in parallel): {worker_time}", err=True)
        try:
            import resource  # POSIX only
        except ImportError:
            return
        click.echo(f"peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB{peak}", err=True)


@aeservice_command.command()
def datasets() -> None:
    """List the built-in data sets (files by path work too: .csv, .npy, .npz)."""
    from aeservice.data import describe_builtins

    rows = describe_builtins()
    width = max(len(r[0]) for r in rows)
    click.echo(f"{'name':<{width}}  {'rows':>6}  description")
    for name, size, about in rows:
        click.echo(f"{name:<{width}}  {size:>6}  {about}")


@aeservice_command.command("main")
@click.option("--dataset", default="digits", show_default=True,
              help="Built-in set or a .csv/.npy/.npz path; every kind trains on it.")
@click.option("--latent-dim", type=_OrAuto(integer=True), default=None,
              help="Code size shared by every kind. [default: auto = "
                   + ModelConfig.__dataclass_fields__["latent_dim"].metadata["auto"] + "]")
@click.option("--n-trials", type=float, default=8, show_default=True,
              help="Optuna trials per tuned kind; the first tries the default settings.")
@click.option("--epochs", type=float, default=60, show_default=True, help="Most epochs per trial.")
@click.option("--seed", type=float, default=0, show_default=True)
@click.option("--force", type=click.BOOL, is_flag=False, flag_value=True, default=False, show_default=True,
              help="Run every step anew instead of reusing finished ones (bare flag or true/false).")
@click.option("--storage", default="auto", show_default=True,
              help="Optuna storage. auto: optuna.db beside the MLflow SQLite store.")
@click.option("--experiment", default="aeservice", show_default=True, help="MLflow experiment for every run.")
@user_errors
def pipeline(dataset: str, latent_dim: int | None, n_trials: float, epochs: float, seed: float, force: bool,
             storage: str, experiment: str) -> None:
    """The whole job: PCA baseline, tuned ae / sparse / vae, registered, compared.

    Registers the best of each kind as <dataset>-<kind> (champion/challenger rules of
    `register`), prints the leaderboard and a serve command per model. Steps already finished
    with the same settings and code are reused; --force runs everything anew.
    """
    from aeservice.pipeline import PipelineSettings, run_pipeline

    trials = _whole(n_trials, "n_trials")
    if trials < 1:
        raise UserError(f"n_trials must be at least 1, got {trials}")
    config = TrainConfig(DataConfig(dataset=dataset),
                         ModelConfig(latent_dim=latent_dim, epochs=_whole(epochs, "epochs"), seed=_whole(seed, "seed")),
                         experiment=experiment).validate()
    result = run_pipeline(config, PipelineSettings(n_trials=trials, force=force,
                                                   storage=None if storage.strip().lower() == "auto" else storage),
                          echo=lambda line: click.echo(line, err=True))
    click.echo(result.leaderboard)
    click.echo(f"\nmain run {result.run_id}; comparison run {result.comparison_run_id}")
    reused = sum(step.reused for step in result.steps)
    click.echo(f"{reused} of {len(result.steps)} steps reused")
    click.echo("serve a model (then POST to http://127.0.0.1:5000/invocations):")
    for step in result.steps:
        click.echo(f"  mlflow models serve -m models:/{step.registered_as}@champion --env-manager local -p 5000")


# ---- tune ---------------------------------------------------------------------------------------
# Options `tune` can search (ModelConfig fields; aeservice.tuning.OPTION_PARAMS says what each fixes).
_SEARCHABLE = ("latent_dim", "hidden", "learning_rate", "weight_decay", "beta", "l1", "sparsity_weight",
               "sparsity_target")
_PRUNERS = ("median", "asha", "hyperband", "none")  # keys of aeservice.tuning.PRUNERS (a test checks); no TF import for --help
_GIVEN = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT,
          click.core.ParameterSource.PROMPT)


def _searchable(func: Callable) -> Callable:
    """Make the searchable train options say 'searched' by default and accept 'auto' (= search it)."""
    for param in getattr(func, "__click_params__", []):
        if param.name in _SEARCHABLE:
            if isinstance(param.type, click.types.FloatParamType):
                param.type = _OrAuto(integer=False)
            param.show_default = False
            param.help = (param.help or "").split(" [default")[0] + " [default: searched; a value fixes it]"
    return func


def _auto(value: Any) -> bool:
    return value is None or str(value).strip().lower() in ("auto", "")


@aeservice_command.command()
@_searchable
@train_options
@click.option("--n-trials", type=float, default=20, show_default=True,
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
@click.option("--pruner", type=click.Choice(_PRUNERS), default="median", show_default=True,
              help="Stop poor trials early, judged by their validation reconstruction each epoch.")
@click.option("--objective", default="val_mse", show_default=True,
              help="Metric to optimise: val_mse, test_mse, explained_variance, val_elbo / test_elbo (vae), "
                   "or a per-epoch metric such as val_loss (its best epoch counts).")
@click.option("--direction", type=click.Choice(["auto", "minimize", "maximize"]), default="auto",
              show_default=True, help="auto: down for errors, up for explained_variance and the ELBO.")
@click.option("--range", "ranges", multiple=True, metavar="NAME=LO,HI",
              help="Narrow a searched range, e.g. --range latent_dim=2,8 --range beta=0.1,1 (repeat, or join "
                   "with ';'). Names: latent_dim hidden_width hidden_depth learning_rate weight_decay beta l1 "
                   "sparsity_weight sparsity_target.")
@click.option("--prune-startup", type=float, default=5, show_default=True,
              help="Complete trials before the median pruner prunes anything.")
@click.option("--prune-warmup", type=_OrAuto(integer=True), default=None,
              help="Epochs each trial trains before it can be pruned (hyperband: its smallest budget). "
                   "[default: auto = max(5, epochs / 30); asha: max(10, epochs / 15)]")
@click.option("--register-as", default="none", metavar="NAME",
              help="When the study ends, register the best trial's model as NAME (champion/challenger "
                   "rules of `aeservice register`).")
@click.option("--quiet", is_flag=True, help="No line per trial.")
@click.pass_context
@user_errors
def tune(ctx: click.Context, n_trials: float, timeout: float, storage: str, study_name: str, pruner: str,
         objective: str, direction: str, ranges: tuple[str, ...], prune_startup: float, prune_warmup: int | None,
         register_as: str, quiet: bool, **options: Any) -> None:
    """Search hyperparameters with Optuna; every trial is a nested MLflow run of `train`.

    Searched per kind: latent_dim (up to the feature count), hidden width and depth, learning_rate,
    weight_decay, plus beta (vae) or l1, sparsity_weight and sparsity_target (sparse); pca searches
    latent_dim only. An option given on the command line (e.g. --latent-dim 2) is fixed and taken out
    of the search; --range narrows what is searched. The parent run logs the best trial, counts and
    plots; the best child run gets the tag best_trial=true. Run the same command on several machines
    with one --storage and --study-name to search in parallel.
    """
    fixed = tuple(name for name in _SEARCHABLE
                  if ctx.get_parameter_source(name) in _GIVEN and not _auto(options[name]))
    defaults = {name: getattr(_DEFAULT_MODEL, name) for name in _SEARCHABLE}
    for name in _SEARCHABLE:  # searched: the value only has to be valid, the trial sets it
        if name not in fixed and name != "latent_dim":
            options[name] = defaults[name]
    config = config_from_options(options)
    from aeservice.tuning import TuneSettings, parse_ranges
    from aeservice.tuning import tune as run_tune

    trials = _whole(n_trials, "n_trials")
    if trials < 0 or timeout < 0 or (prune_warmup or 0) < 0 or prune_startup < 0:
        raise UserError("n_trials, timeout, prune_startup and prune_warmup must not be negative")
    if trials == 0 and timeout == 0:
        raise UserError("give --n-trials or --timeout: with neither the study would never end")
    settings = TuneSettings(
        n_trials=trials or None, timeout=timeout or None, storage=None if _auto(storage) else storage,
        study_name=None if _auto(study_name) else study_name, pruner=pruner, objective=objective,
        direction=None if direction == "auto" else direction, fixed=fixed, ranges=parse_ranges(ranges),
        prune_startup_trials=_whole(prune_startup, "prune_startup"),
        prune_warmup_epochs=prune_warmup,
    )
    fixed_text = ", ".join(f"{n}={options[n]}" for n in fixed) or "none"
    click.echo(f"tuning {config.model.model} on {config.data.dataset}; fixed: {fixed_text}", err=True)
    r = run_tune(config, settings, progress=not quiet)
    click.echo(f"study {r.study_name} in {r.storage}: {r.n_complete} complete, {r.n_pruned} pruned, "
               f"{r.n_failed} failed")
    click.echo(f"parent run {r.parent_run_id}")
    if r.best_run_id is None and r.best_trial_number is None:
        raise UserError("no trial completed; see the failed trials' reasons above")
    params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.best_params.items())
    click.echo(f"best trial {r.best_trial_number}: {r.objective} {r.best_value:.5g}  {params}")
    if r.best_run_id:
        click.echo(f"best model: runs:/{r.best_run_id}/model")
    click.echo(f"dashboard: optuna-dashboard {r.storage}", err=True)
    if register_as.strip().lower() not in ("", "none"):
        if not r.best_run_id:
            raise UserError(f"the best trial has no logged model to register as {register_as!r}")
        from aeservice.registry import register_run

        for line in register_run(r.best_run_id, register_as.strip()).lines():
            click.echo(line)


@aeservice_command.command()
@click.option("--experiment", default="aeservice", show_default=True, help="MLflow experiment whose runs to compare.")
@click.option("--dataset", default=None,
              help="Only runs on this data set (name or path as trained). [default: all data sets]")
@click.option("--all", "all_runs", is_flag=True,
              help="List every training run, not only the best of each data set and kind (by val_mse).")
@click.option("--no-figures", is_flag=True, help="Only the table: skip loading the data and models for figures.")
@user_errors
def compare(experiment: str, dataset: str | None, all_runs: bool, no_figures: bool) -> None:
    """Leaderboard of the training runs in an experiment, logged to a comparison run.

    Counts the finished runs tagged `model` (train runs and tune trials), shows the best run of
    each data set and kind by val_mse, sorted by test_mse, and logs comparison.md,
    comparison.csv and figures (test MSE per kind, reconstructions of every kind, the latent
    spaces side by side; one set per data set) to a new run tagged aeservice.comparison=true.
    """
    from aeservice.comparison import compare as run_compare

    if dataset is not None and dataset.strip().lower() in ("", "all"):
        dataset = None  # what the MLproject default ("all") means
    report = run_compare(experiment, dataset=dataset, all_runs=all_runs, figures=not no_figures,
                         progress=lambda message: click.echo(message, err=True))
    for line in report.lines():
        click.echo(line)


@aeservice_command.command()
@click.option("--run-id", required=True, help="The training run whose logged model (runs:/ID/model) to register.")
@click.option("--name", required=True, help="Registered model name, e.g. digits-vae.")
@click.option("--force", type=click.BOOL, is_flag=False, flag_value=True, default=False, show_default=True,
              help="Make the version champion even if its interface, data or val_mse says no (bare flag or true/false).")
@user_errors
def register(run_id: str, name: str, force: bool) -> None:
    """Register a run's model as a new version; move the challenger and champion aliases.

    challenger always moves to the new version. champion moves to it when it is the first version,
    or when it has the champion's interface (kind, input width, data kind, image shape, code size),
    was trained on the same data and has a lower val_mse; --force moves it anyway. A run that
    already is a version is not registered again. Serve the best with
    `mlflow models serve -m models:/NAME@champion --env-manager local`.
    """
    from aeservice.registry import register_run

    for line in register_run(run_id, name, force=force).lines():
        click.echo(line)


def run_and_exit() -> None:
    """The console script: `aeservice_command`, then a quick exit once everything is written.

    After a train, interpreter teardown (finalising Keras, JAX/XLA, MLflow and SQLAlchemy
    modules) takes over a second, and nothing is left to write by then: runs have ended
    (their metrics written) and files are closed. So exit hooks run, streams are
    flushed, and the process ends without the module teardown. Tests call `aeservice_command`
    in-process.
    """
    import atexit
    import logging

    try:
        aeservice_command(prog_name="aeservice")
        code = 0
    except SystemExit as exc:
        code = exc.code
    atexit._run_exitfuncs()
    logging.shutdown()
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)  # sys.exit("message") convention
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    aeservice_command()
