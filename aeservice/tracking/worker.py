"""`train` with its MLflow work in a second process, so tracking runs on the other CPU core.

Importing MLflow and opening its SQLite store cost seconds before the first epoch, and logging
the run's params, plots and model costs more after the last one. The CLI forks a worker before
Keras is imported (forking a process that runs JAX or TensorFlow threads is unsafe); while this
process imports Keras and trains, the worker imports MLflow, opens the store and warms up model
logging. Then this process runs the same steps as in-process `train_run`
(`steps.train_tracked`) with a `TrackingWorker` as its `Tracker`: each message
(`aeservice.tracking.messages`) goes over a pipe, and the worker applies it with the in-process
`runs.MlflowTracker`. Epoch metrics are written in batches; the worker logs the final metrics
and the pyfunc model while this process draws the figures, then logs those, ends the run and
answers with the run id. The trainer sends what it knows (settings, the data's facts and
training rows, the sizes used): the worker never loads the data itself. Where forking is not
possible, `train_run` does it all in-process. The worker never imports Keras or its backend: a
saved model loads from its numpy plans.

The first message is `RunStarted` once the data has loaded here, or `Failed`: bad input leaves no run.

Stopping: Ctrl-C or SIGTERM in the trainer sends `Failed("KILLED")`, and the worker ends the run
KILLED; the same signal sent to the whole process group does that in the worker too. A trainer
killed outright (SIGKILL, the OOM killer) cannot say anything: its end of the pipe closes, and the
worker ends the run FAILED, tagged `aeservice.failure_reason`, and exits.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from aeservice.config import TrainConfig
from aeservice.errors import UserError
from aeservice.signals import raise_terminated
from aeservice.timing import peak_memory_mb, phase, phases
from aeservice.tracking.messages import Epoch, Failed, Finished, Message

__all__ = ["available", "train_in_parallel", "TrackingWorker"]

_HEAVY = ("jax", "tensorflow", "torch", "keras")


def available() -> bool:
    """Fork only where it is safe: POSIX, and no multithreaded ML library loaded yet."""
    return (hasattr(os, "fork") and sys.platform != "darwin"
            and os.environ.get("AESERVICE_TRACKING_WORKER", "1") != "0"
            and not any(name in sys.modules for name in _HEAVY))


class TrackingWorker:
    """The forked `Tracker`: this process's end of the pipe to the worker, which applies each
    message with an `MlflowTracker`. Every call raises UserError if the worker has failed.

    A sender thread writes the messages in order, so training never waits on the pipe: not for
    the training rows (sent without a copy; nothing changes them), nor while the worker is still
    starting up.
    """

    save_phase = "saving the model"  # saved here, where the model is; logged there while this process draws

    def __init__(self) -> None:
        import multiprocessing
        import queue
        import threading

        ctx = multiprocessing.get_context("fork")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, self._conn, os.getpid()), name="aeservice-tracking",
                                 daemon=True)
        self._proc.start()
        child.close()
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._broken = False  # the sender could not write: the worker is gone
        self._sender = threading.Thread(target=self._feed, name="aeservice-tracking-sender", daemon=True)
        self._sender.start()  # after the fork: the worker has no copy of it
        self._closed = False
        self.run_id: str | None = None
        self.peak_mb = 0.0
        self.phases: dict[str, float] = {}  # the worker's own time per phase
        self.link = ""  # the run's page in the MLflow UI, once the worker says

    def send(self, message: Message) -> None:
        if isinstance(message, Epoch):
            with phase("tracking in fit"):
                self._poll()
                self._post(message)
        elif isinstance(message, Finished):
            self._post(message)
            with phase("waiting for tracking"):  # the worker logs the model and figures meanwhile
                while True:
                    reply = self._recv()
                    if isinstance(reply, _Done):
                        self.run_id, self.peak_mb, self.phases, self.link = (reply.run_id, reply.peak_mb,
                                                                             reply.phases, reply.link)
                        break
                    self._handle(reply)
            self._proc.join(timeout=60)
            self._close()
        elif isinstance(message, Failed):
            self.abort(message.status)
        else:
            self._post(message)

    def abort(self, status: str) -> None:
        """End the run FAILED or KILLED (or start none), then let the worker go."""
        if self._closed:
            return
        if self._proc.is_alive():
            self._outbox.put(Failed(status))
            try:
                if self._conn.poll(60):
                    self._conn.recv()
            except (OSError, EOFError):
                pass
        self._proc.join(timeout=60)
        if self._proc.is_alive():
            self._proc.kill()
        self._close()

    def _close(self) -> None:
        self._closed = True
        self._outbox.put(None)  # the sender stops once the rest is written (or the worker is gone)
        self._sender.join(timeout=10)

    def _feed(self) -> None:
        """The sender thread."""
        while (message := self._outbox.get()) is not None:
            try:
                _write(self._conn, message)
            except (OSError, EOFError):
                self._broken = True  # the reply side tells why
                return

    def _post(self, message: Message) -> None:
        if self._broken:
            self._poll()
            raise UserError("MLflow tracking stopped unexpectedly")
        self._outbox.put(message)

    def _recv(self) -> Any:
        try:
            return self._conn.recv()
        except (OSError, EOFError):
            raise UserError("MLflow tracking stopped unexpectedly") from None

    def _poll(self) -> None:
        while self._conn.poll():
            self._handle(self._recv())

    def _handle(self, reply: Any) -> None:
        if isinstance(reply, _Error):
            self._proc.join(timeout=10)
            raise UserError(reply.line)
        raise UserError("MLflow tracking stopped unexpectedly")  # it ended the run on its own (Ctrl-C)


def _write(conn, message: Message) -> None:
    """Pickle a message with its arrays out of band: they go down the pipe from their own memory."""
    buffers: list = []
    data = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
    conn.send((data, len(buffers)))
    for buffer in buffers:
        conn.send_bytes(buffer.raw())


def _read(conn) -> Message:
    data, count = conn.recv()
    return pickle.loads(data, buffers=[conn.recv_bytes() for _ in range(count)])


def train_in_parallel(config: TrainConfig, callbacks: Sequence = (),
                      announce: Callable[[Any], None] | None = None) -> tuple[str, Any, Any, TrackingWorker]:
    """`prepare` + `train_run`'s steps with the tracking in a worker forked first.

    Call before anything has imported Keras (see `available()`); Keras is imported here, after
    the fork. `announce(prepared)` runs once the data has loaded. Returns (run id, prepared,
    result, worker).
    """
    worker = TrackingWorker()
    try:
        with phase("imports"):
            from aeservice.tracking.steps import train_tracked
            from aeservice.training import import_libraries, prepare

            import_libraries(config)
        with phase("data"):
            prepared = prepare(config)
        if announce is not None:
            announce(prepared)
    except KeyboardInterrupt:
        worker.send(Failed("KILLED"))  # before any run: the worker starts none
        raise
    except BaseException:
        worker.send(Failed("FAILED"))
        raise
    run_id, result = train_tracked(prepared, worker, callbacks)
    return run_id, prepared, result, worker


# The worker's answers: after Finished, after Failed, or on its own failure.
@dataclass(frozen=True)
class _Done:
    run_id: str
    peak_mb: float
    phases: dict[str, float]
    link: str  # the run's page in the MLflow UI ("" if it could not be read)


@dataclass(frozen=True)
class _Aborted:
    pass


@dataclass(frozen=True)
class _Error:
    line: str  # what the user sees: one line


class _TrainerGone(Exception):
    """The trainer ended without ending the run (SIGKILL, the OOM killer, a crash)."""


TRAINER_GONE = ("the training process ended before the run did (killed by SIGKILL or the OOM killer, or "
                "crashed); the tracking worker ended the run")
PARENT_CHECK_SECONDS = 1.0  # how often a waiting worker looks whether its trainer is still there


def _arrived(conn, trainer: int, timeout: float | None) -> bool:
    """Wait up to `timeout` seconds (None: for ever) for a message; raise _TrainerGone once the
    trainer is gone. The pipe says so itself (EOF, see `_serve`); the parent id is the second check."""
    waited = 0.0
    while timeout is None or waited < timeout:
        step = PARENT_CHECK_SECONDS if timeout is None else min(PARENT_CHECK_SECONDS, timeout - waited)
        if conn.poll(step):
            return True
        if os.getppid() != trainer:  # re-parented: the trainer died
            raise _TrainerGone()
        waited += step
    return False


def _serve(conn, trainer_end, trainer: int) -> None:
    """The worker: import and connect while the parent trains, then apply what it is sent.

    SIGTERM here (to the whole process group) ends the run KILLED, as Ctrl-C does. If the trainer
    dies without a word (SIGKILL), the run ends FAILED tagged with the reason, and the worker exits.
    """
    trainer_end.close()  # the fork copied the trainer's end: closed, the pipe ends (EOF) when the trainer does
    signal.signal(signal.SIGTERM, raise_terminated)
    code, tracker = 0, None
    try:
        with phase("imports"):  # MLflow; no Keras: MLflow's check of the logged model runs its saved plans
            import mlflow

            from aeservice.tracking.runs import EpochMetrics, MlflowTracker, ui_link, warm_up_model_logging

        with phase("connect"):
            mlflow.tracking.MlflowClient()._tracking_client.store  # noqa: B018  (opens the store now)
        with phase("warm-up"):
            warm_up_model_logging()
        tracker = MlflowTracker()
        while True:
            if not _arrived(conn, trainer, EpochMetrics.FLUSH_SECONDS if tracker.pending else None):
                tracker.flush()  # the trainer is quiet (validating, evaluating): write now
                continue
            message = _read(conn)
            tracker.send(message)
            if isinstance(message, Failed):  # the run (if any) ended FAILED or KILLED
                conn.send(_Aborted())
                return
            if isinstance(message, Finished):
                break
        peak_mb = peak_memory_mb() or 0.0
        link = ""
        with contextlib.suppress(Exception):  # only a convenience: the run is logged whatever this says
            link = ui_link(tracker.run_id)
        conn.send(_Done(tracker.run_id, peak_mb, phases(), link))
    except BaseException as exc:  # noqa: BLE001  (reported to the parent as one line)
        interrupted = isinstance(exc, KeyboardInterrupt)
        gone = isinstance(exc, (EOFError, _TrainerGone))  # EOFError: the pipe closed, the trainer is gone
        code = 0 if interrupted else 1
        if tracker is not None:  # the curve so far, and the run ended FAILED, or KILLED on Ctrl-C or SIGTERM
            reason = "" if interrupted else TRAINER_GONE if gone else _one_line(exc)
            with contextlib.suppress(BaseException):
                tracker.send(Failed("KILLED" if interrupted else "FAILED", reason))
        if not gone:
            try:
                conn.send(_Aborted() if interrupted else _Error(_one_line(exc)))
            except OSError:
                if not interrupted:
                    traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # a forked child: none of the parent's exit hooks or teardown


def _one_line(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc)
    first = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
    return first if isinstance(exc, UserError) else f"MLflow tracking failed: {first}"
