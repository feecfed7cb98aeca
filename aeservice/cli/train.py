"""`train` (one model, one MLflow run) and `datasets` (what it can train on)."""
from __future__ import annotations

from typing import Any

import click

from aeservice import backend

from aeservice.cli.errors import user_errors
from aeservice.cli.options import config_from_options, train_options
from aeservice.models import MODELS
from aeservice.progress import progress_printer
from aeservice.timing import peak_memory_mb, phase, summary

__all__ = ["train", "datasets"]

_PHASES = ("imports", "data", "fit", "tracking in fit", "tracking", "saving the model", "plots", "model logging",
           "waiting for tracking")


def _net(sizes) -> str:
    """The nets in a few words: "hidden 256,128" or "conv filters 32,64"."""
    widths = ",".join(map(str, sizes.hidden)) or "none"
    return f"conv filters {widths}" if sizes.arch == "conv" else f"hidden {widths}"


def _fits(sizes) -> str:
    """How many seeded fits `train` makes, for its announce line."""
    if sizes.max_restarts == 1:
        return ""
    planned = f"{sizes.restarts} fit{'s' if sizes.restarts > 1 else ''}"
    more = f", up to {sizes.max_restarts} while none beats the linear model" if sizes.max_restarts > sizes.restarts else ""
    return f" per fit, {planned}{more}"


@click.command()
@train_options
@click.option("--quiet", is_flag=True, help="No per-epoch progress lines and no time and memory summary.")
@user_errors
def train(quiet: bool, **options: Any) -> None:
    """Train one model and log it to MLflow as one run.

    The run gets the whole config as parameters, per-epoch loss curves, the final val_mse,
    test_mse and explained_variance (the VAE adds test_elbo and test_nll, the sparse AE its
    code's sparsity), plots, and a pyfunc model that serves encode / decode / reconstruct /
    sample / score. MLflow logging runs in a forked
    worker on the other core (AESERVICE_TRACKING_WORKER=0: in-process); the last lines say
    where the time and memory went. Keras backend: KERAS_BACKEND if set, else JAX when installed.
    """
    config = config_from_options(options)
    from aeservice.tracking import worker

    callbacks: list = []  # the progress printer joins once the data says how many epochs at most

    def announce(prepared) -> None:
        from aeservice.training import prepared_sizes

        d, sizes = prepared.dataset, prepared_sizes(prepared)
        kind = MODELS[config.model.model]
        epochs = kind.trains_in_epochs  # else one fit, no net (PCA)
        net = "" if not epochs else (
            f"; {_net(sizes)}, batch {sizes.batch_size}, "
            f"at most {sizes.epochs} epochs" + _fits(sizes)
            + f"; {sizes.activation}" + (f", input noise {sizes.input_noise:g}" if sizes.input_noise else "")
            + (f"; {kind.fit_note}" if kind.fit_note else "") + f"; Keras on {backend.current()}, {backend.device()}")
        click.echo(f"training {config.model.model} on {d.name} ({len(d.x)} rows x {d.n_features} features, "
                   f"{d.kind}: {d.kind_reason}){net}", err=True)
        if not quiet:
            callbacks.append(progress_printer(sizes.epochs * sizes.max_restarts if epochs else 1))  # PCA: one step
    peak, worker_time, link = "", "", ""
    if worker.available():  # MLflow in a second process, on the other core
        run_id, _, result, tracker = worker.train_in_parallel(config, callbacks, announce)
        peak = f" + {tracker.peak_mb:.0f} MB tracking worker"
        worker_time = ", ".join(f"{k} {v:.2f} s" for k, v in tracker.phases.items())
        link = tracker.link
    else:
        with phase("imports"):
            from aeservice.tracking import train_run, ui_link
            from aeservice.training import import_libraries, prepare

            import_libraries(config)
        with phase("data"):
            prepared = prepare(config)
        announce(prepared)
        run_id, result = train_run(prepared, callbacks=callbacks)
        link = ui_link(run_id)
    metrics = "  ".join(f"{k} {v:.5g}" for k, v in result.metrics.items())
    click.echo(f"run {run_id}: {metrics}")
    kept = getattr(result.model, "kept_", None)
    if kept and not quiet:  # which fit the run kept (param `kept`)
        why = {"linear": " (no net beat it beyond one standard error on validation and training rows)"}
        if kept == "linear" and getattr(result.model, "restart_scores_", None) == []:
            why["linear"] = " (it reconstructs the rows exactly: no net fitted)"
        click.echo(f"kept: {'the linear model' if kept == 'linear' else kept}{why.get(kept, '')}", err=True)
    click.echo(f"model: runs:/{run_id}/model")
    if link:  # for a local store, the page `mlflow ui` serves
        click.echo(f"ui: {link}")
    if not quiet:
        click.echo(f"time: {summary(_PHASES)}", err=True)
        if worker_time:
            click.echo(f"tracking worker time (in parallel): {worker_time}", err=True)
        own = peak_memory_mb()
        if own is not None:
            click.echo(f"peak memory: {own:.0f} MB{peak}", err=True)


@click.command()
def datasets() -> None:
    """List the built-in data sets (paths work too: .csv, .npy, .npz and IDX files, and folders of images)."""
    from aeservice.data import describe_builtins

    rows = describe_builtins()
    width = max(len(r[0]) for r in rows)
    click.echo(f"{'name':<{width}}  {'rows':>6}  description")
    for name, size, about in rows:
        click.echo(f"{name:<{width}}  {size:>6}  {about}")
