"""Optuna plumbing: where studies live, how trials are proposed and pruned, and worker safety.

Studies live in an RDB storage (SQLite by default, PostgreSQL for many machines) so that a
study can be resumed and several `tune` processes can share it. RDB storages get a heartbeat:
a worker that dies leaves its trial RUNNING only until the grace period ends, then the next
worker marks it FAIL and queues its parameters again (up to `max_retry` times).
"""
from __future__ import annotations

import hashlib
import time
import warnings
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

import optuna
from optuna.samplers import TPESampler

from aeservice.errors import UserError

__all__ = ["default_storage", "storage_url", "open_storage", "is_storage_error", "make_sampler", "make_pruner",
           "auto_warmup", "PRUNERS",
           "open_study",
           "redact", "STUDY_ATTRS"]

STORAGE_FILE = "optuna.db"
# Study attributes written when a study is made and checked when it is resumed.
STUDY_ATTRS = ("model", "dataset", "objective")


def default_storage(tracking_uri: str | None = None) -> str:
    """A SQLite study file beside the MLflow store: sqlite:///dir/mlflow.db -> sqlite:///dir/optuna.db.

    For a tracking server (http...) or anything else there is no local folder to share, so the
    study goes to ./optuna.db; many machines should pass --storage postgresql://... instead.
    """
    if tracking_uri is None:
        import mlflow

        tracking_uri = mlflow.get_tracking_uri()
    folder = Path(".")
    if tracking_uri.startswith("sqlite:///"):
        path = tracking_uri[len("sqlite:///"):]
        if path and path != ":memory:":
            folder = Path(path).parent
    elif tracking_uri.startswith("file:") or "://" not in tracking_uri:
        path = urlsplit(tracking_uri).path if tracking_uri.startswith("file:") else tracking_uri
        folder = Path(path).parent
    return f"sqlite:///{(folder / STORAGE_FILE).as_posix()}"


def storage_url(text: str) -> str:
    """An Optuna storage URL as given, or a plain file path made a SQLite URL (optuna.db -> sqlite:///optuna.db)."""
    return text if "://" in text else f"sqlite:///{Path(text).as_posix()}"


def redact(url: str) -> str:
    """The storage URL without its password, safe to log and print."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


class _Storage(optuna.storages.RDBStorage):
    """An RDBStorage whose heartbeat thread does not die with a traceback when the database goes
    away: the trial's own next write fails too, and `tune` ends with one line naming the storage."""

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except Exception as exc:  # noqa: BLE001
            if not is_storage_error(exc):
                raise


def is_storage_error(exc: BaseException) -> bool:
    """The study's database failed (lost connection, server down): Optuna's wrapper or SQLAlchemy's own."""
    import sqlalchemy.exc

    return isinstance(exc, (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError))


def open_storage(url: str, heartbeat_interval: int = 60, grace_period: int | None = None,
                 max_retry: int = 2) -> optuna.storages.BaseStorage:
    """An RDB storage with heartbeat and retry of trials whose worker died."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    retry = None if max_retry < 0 else max_retry
    for attempt in range(_CREATE_ATTEMPTS):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                return _Storage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period or 2 * heartbeat_interval,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=retry),
                )
            except ImportError as exc:  # e.g. postgresql:// without its driver installed
                raise UserError(f"storage {redact(url)}: {exc}; install the database driver") from None
            except Exception as exc:  # bad URL, unreachable server: one line, not a traceback
                if _is_creation_race(exc) and attempt + 1 < _CREATE_ATTEMPTS:
                    time.sleep(0.5 * (attempt + 1))
                    continue
                if type(exc).__module__.startswith(("sqlalchemy", "optuna")) or isinstance(exc, ValueError):
                    raise UserError(f"storage {redact(url)}: {str(exc).splitlines()[0]}") from None
                raise
    raise AssertionError("unreachable")


_CREATE_ATTEMPTS = 4


def _is_creation_race(exc: Exception) -> bool:
    """Workers started together on a new storage race to create its tables; the loser retries
    (PostgreSQL refuses the second CREATE TABLE as a ProgrammingError: "relation ... already exists")."""
    import sqlalchemy.exc

    if isinstance(exc, (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError)):
        return True
    return isinstance(exc, sqlalchemy.exc.ProgrammingError) and "already exists" in str(exc)


def _trial_seed(seed: int, number: int) -> int:
    digest = hashlib.sha256(f"{seed}/{number}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


class _TrialSeededTPE(optuna.samplers.BaseSampler):
    """TPE whose random state comes from (seed, trial number) alone.

    One worker with one seed proposes the same trials every time (the number and history are
    the same); parallel workers, which get distinct trial numbers, do not repeat each other's
    random start-up points; and a resumed study does not replay the proposals it already tried.

    Each trial is proposed by its own `TPESampler(seed=<trial seed>)`: TPE keeps no state
    between trials but its random generators (it reads the history from the study), so this
    proposes what one TPE reseeded before every trial would, through Optuna's public API only.
    """

    def __init__(self, seed: int, **tpe_options):
        self._base_seed, self._tpe_options = seed, tpe_options
        self._by_trial: dict[int, TPESampler] = {}  # the trials running in this process

    def _tpe(self, trial) -> TPESampler:
        if trial.number not in self._by_trial:
            self._by_trial[trial.number] = TPESampler(seed=_trial_seed(self._base_seed, trial.number),
                                                      **self._tpe_options)
        return self._by_trial[trial.number]

    def before_trial(self, study, trial) -> None:
        self._tpe(trial).before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._tpe(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._tpe(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._tpe(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._tpe(trial).after_trial(study, trial, state, values)
        self._by_trial.pop(trial.number, None)

    def reseed_rng(self) -> None:
        """Nothing to reseed: each trial's generators are seeded from its number."""


def make_sampler(seed: int) -> optuna.samplers.BaseSampler:
    # constant_liar: running trials count as bad guesses, so parallel workers spread out
    return _TrialSeededTPE(seed, constant_liar=True)


PRUNERS: dict[str, Callable[[int, int, int], optuna.pruners.BasePruner]] = {
    # (epochs, startup trials, warm-up epochs) -> pruner
    "median": lambda epochs, startup, warmup: optuna.pruners.MedianPruner(
        n_startup_trials=startup, n_warmup_steps=warmup),
    "asha": lambda epochs, startup, warmup: optuna.pruners.SuccessiveHalvingPruner(
        min_resource=max(1, min(warmup, epochs)), reduction_factor=3),
    "hyperband": lambda epochs, startup, warmup: optuna.pruners.HyperbandPruner(
        min_resource=max(1, min(warmup, epochs)), max_resource=max(epochs, 1), reduction_factor=3),
    "none": lambda epochs, startup, warmup: optuna.pruners.NopPruner(),
}


def auto_warmup(name: str, epochs: int) -> int:
    """Epochs before the first pruning decision when --prune-warmup is auto, measured per pruner
    with scripts/bench_tuning.py (docs/benchmarks.md): the median rule judges from max(5, epochs
    / 30) (epochs / 10 pruned later for no better best); successive halving's first rung at 10
    rather than 5 kept the best of one `ae` study (0.91x against 1.04x the unpruned best) for
    0.46 of its epochs instead of 0.31, and changed nothing in four other studies."""
    if name == "asha":
        return max(10, epochs // 15)
    return max(5, epochs // 30)


def make_pruner(name: str, epochs: int, startup_trials: int = 5, warmup_epochs: int = 5) -> optuna.pruners.BasePruner:
    if name not in PRUNERS:
        raise UserError(f"unknown pruner {name!r}; choose one of {', '.join(PRUNERS)}")
    return PRUNERS[name](epochs, startup_trials, warmup_epochs)


def open_study(name: str, storage: optuna.storages.BaseStorage, direction: str, sampler, pruner,
               attrs: dict[str, str]) -> optuna.Study:
    """Create the study, or load it if it exists and was made for the same model, data and objective."""
    study = optuna.create_study(study_name=name, storage=storage, direction=direction, sampler=sampler,
                                pruner=pruner, load_if_exists=True)
    have = study.user_attrs
    # A key not there yet is written now: workers that start together race to create the study,
    # and one may load it while another is still writing its attributes one by one.
    clash = [f"{k} {have[k]!r} (asked {attrs[k]!r})" for k in STUDY_ATTRS if k in attrs and k in have
             and have[k] != attrs[k]]
    if study.direction.name.lower() != direction:
        clash.append(f"direction {study.direction.name.lower()} (asked {direction})")
    if clash:
        raise UserError(f"study {name!r} already exists with {', '.join(clash)}; "
                        "use another --study-name to start a new study")
    for key, value in attrs.items():
        if key not in have:
            study.set_user_attr(key, value)
    return study
