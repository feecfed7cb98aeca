"""`train` with its MLflow work in a second process, so tracking runs on the other CPU core.

Importing MLflow and opening its SQLite store cost seconds before the first epoch, and logging
the run's params, plots and model costs more after the last one. The CLI
forks a worker before Keras is imported (forking a process that runs JAX or TensorFlow threads
is unsafe); while this process imports Keras and trains, the worker imports MLflow, opens the
store and, once the data has loaded here, starts the run and logs its settings. Epoch metrics
stream to it over a pipe and are written in batches. At the end this process saves the model;
the worker logs the final metrics and the pyfunc model while this process draws the figures,
then logs those, with the very functions `train_run`'s `log_results` uses; it ends the run and
answers with the run id. Where forking is not possible, `train_run` does it all in-process.
The worker never imports Keras or its backend: a saved model loads from its numpy plans.

The worker is told not to start a run until the data has loaded, so bad input leaves no run.
"""
from __future__ import annotations

import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

from aeservice.config import TrainConfig
from aeservice.errors import UserError
from aeservice.timing import phase, phases

__all__ = ["available", "train_in_parallel", "TrackingWorker"]

_HEAVY = ("jax", "tensorflow", "torch", "keras")


def available() -> bool:
    """Fork only where it is safe: POSIX, and no multithreaded ML library loaded yet."""
    return (hasattr(os, "fork") and sys.platform != "darwin"
            and os.environ.get("AESERVICE_TRACKING_WORKER", "1") != "0"
            and not any(name in sys.modules for name in _HEAVY))


class TrackingWorker:
    """This process's end of the pipe. Every call raises UserError if the worker has failed."""

    def __init__(self, config: TrainConfig):
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, config), name="aeservice-tracking", daemon=True)
        self._proc.start()
        child.close()
        self.run_id: str | None = None
        self.peak_mb = 0.0
        self.phases: dict[str, float] = {}  # the worker's own time per phase

    def start(self) -> None:
        """The data loaded here too: the worker may start the run."""
        self._send(("start",))

    def epoch(self, epoch: int, logs: dict) -> None:
        with phase("tracking in fit"):
            self._poll()
            self._send(("epoch", epoch, dict(logs)))

    def finish(self, prepared, result) -> str:
        """Hand over the trained model, draw the figures meanwhile, and wait until everything is
        logged; returns the run id. The worker logs the model while this process draws."""
        from aeservice.figures.run import write_figures
        from aeservice.training import used_params

        with tempfile.TemporaryDirectory(prefix="aeservice-") as tmp:
            with phase("saving the model"):
                model_dir = result.model.save(Path(tmp) / "autoencoder")
            self._send(("result", result.metrics, used_params(result.model), str(model_dir)))
            with phase("plots"):
                plots = write_figures(result.model, result.history, prepared.dataset, prepared.split,
                                      prepared.config.model.seed, Path(tmp))
            self._send(("plots", str(plots)))
            with phase("waiting for tracking"):
                while True:
                    kind, *rest = self._recv()
                    if kind == "done":
                        self.run_id, self.peak_mb, self.phases = rest
                        break
                    self._handle(kind, rest)
        self._proc.join(timeout=60)
        return self.run_id

    def abort(self, status: str) -> None:
        """End the run FAILED or KILLED (or start none), then let the worker go."""
        if self._proc.is_alive():
            try:
                self._conn.send(("abort", status))
                if self._conn.poll(60):
                    self._conn.recv()
            except (OSError, EOFError):
                pass
        self._proc.join(timeout=60)
        if self._proc.is_alive():
            self._proc.kill()

    def _send(self, message: tuple) -> None:
        try:
            self._conn.send(message)
        except (OSError, EOFError):
            self._poll()
            raise UserError("MLflow tracking stopped unexpectedly") from None

    def _recv(self) -> tuple:
        try:
            return self._conn.recv()
        except (OSError, EOFError):
            raise UserError("MLflow tracking stopped unexpectedly") from None

    def _poll(self) -> None:
        while self._conn.poll():
            kind, *rest = self._recv()
            self._handle(kind, rest)

    def _handle(self, kind: str, rest: list) -> None:
        if kind == "started":
            self.run_id = rest[0]
        elif kind == "error":
            self._proc.join(timeout=10)
            raise UserError(rest[0])


def train_in_parallel(config: TrainConfig, callbacks: Sequence = (),
                      announce: Callable[[Any], None] | None = None) -> tuple[str, Any, Any, TrackingWorker]:
    """`prepare` + `train_run` with the tracking in a worker forked first.

    Call before anything has imported Keras (see `available()`); Keras is imported here, after
    the fork. `announce(prepared)` runs once the data has loaded. Returns (run id, prepared,
    result, worker).
    """
    worker = TrackingWorker(config)
    try:
        with phase("imports"):
            from aeservice.training import fit_and_evaluate, import_libraries, prepare

            import_libraries(config)
        with phase("data"):
            prepared = prepare(config)
        if announce is not None:
            announce(prepared)
        worker.start()
        with phase("fit"):
            result = fit_and_evaluate(prepared, callbacks=[worker.epoch, *callbacks])
        run_id = worker.finish(prepared, result)
    except KeyboardInterrupt:
        worker.abort("KILLED")
        raise
    except BaseException:
        worker.abort("FAILED")
        raise
    return run_id, prepared, result, worker


class _Abort(Exception):
    """The training side failed: the run ends FAILED."""


def _serve(conn, config: TrainConfig) -> None:
    """The worker: import and connect while the parent trains, then log what it is sent."""
    code = 0
    try:
        with phase("imports"):  # MLflow; no Keras: MLflow's check of the logged model runs its saved plans
            import mlflow

            from aeservice.tracking.runs import (EpochMetrics, log_model, log_plots, log_scores, log_setup, mlflow_run,
                                                 model_example, run_name, run_tags,
                                                 warm_up_model_logging)
            from aeservice.training import prepare

        with phase("connect"):
            mlflow.tracking.MlflowClient()._tracking_client.store  # noqa: B018  (opens the store now)
        with phase("warm-up"):
            warm_up_model_logging()
        message = conn.recv()
        if message[0] != "start":
            return  # aborted before any run: bad input leaves nothing behind
        prepared = prepare(config)
        try:
            with mlflow_run(config.experiment, tags=run_tags(prepared), run_name=run_name(prepared)) as run:
                log_setup(prepared)
                conn.send(("started", run.info.run_id))

                epochs = EpochMetrics()
                while True:
                    if epochs.pending and not conn.poll(EpochMetrics.FLUSH_SECONDS):
                        epochs.flush()  # the trainer is quiet (validating, evaluating): write now
                    message = conn.recv()
                    if message[0] == "epoch":
                        epochs(message[1], message[2])
                    elif message[0] == "abort":  # mlflow_run ends the run KILLED or FAILED
                        epochs.flush()  # the curve up to the failure
                        raise KeyboardInterrupt if message[1] == "KILLED" else _Abort()
                    elif message[0] == "result":  # what train_run's log_results logs, in two parts
                        _, metrics, used, model_dir = message
                        with phase("tracking"):
                            epochs.flush()
                        log_scores(metrics, used)
                        with phase("model logging"):
                            log_model(Path(model_dir), model_example(prepared))
                    elif message[0] == "plots":
                        log_plots(Path(message[1]))
                        break
        except (_Abort, KeyboardInterrupt):
            conn.send(("aborted",))
            return
        import resource  # POSIX, as fork is

        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        conn.send(("done", run.info.run_id, peak_mb, phases()))
    except EOFError:
        code = 1  # the parent is gone
    except BaseException as exc:  # noqa: BLE001  (reported to the parent as one line)
        code = 1
        try:
            conn.send(("error", _one_line(exc)))
        except OSError:
            traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # a forked child: none of the parent's exit hooks or teardown


def _one_line(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc)
    first = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
    return first if isinstance(exc, UserError) else f"MLflow tracking failed: {first}"
