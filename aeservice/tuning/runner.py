"""`tune`: one Optuna study worker inside one MLflow parent run, each trial a nested child run."""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import mlflow
import optuna

from aeservice.config import TrainConfig, is_auto
from aeservice.errors import UserError
from aeservice.tracking import log_new_params, mlflow_run, ui_link
from aeservice.tracking.retries import announce_retries
from aeservice.training import prepare, prepared_sizes
from aeservice.tuning.interrupt import GracefulInterrupt
from aeservice.tuning.liveness import RunHeartbeat, end_stale_runs, fail_unrecorded, heartbeat_settings
from aeservice.tuning.objective import DEFAULTS_ATTR, RUN_ID_ATTR, TrialObjective, objective_spec
from aeservice.tuning.report import GIVEN_TEXT, log_summary, mark_best, progress_printer
from aeservice.tuning.space import OPTION_PARAMS, default_params, describe, parse_ranges, search_space
from aeservice.tuning.study import (auto_warmup, default_storage, is_storage_error, make_pruner, make_sampler,
                                    open_storage, open_study, redact)
from aeservice.tuning.study import storage_url as to_url

__all__ = ["TuneSettings", "TuneResult", "tune"]


@dataclass
class TuneSettings:
    n_trials: int | None = 20  # trials this call adds; None: until `timeout`
    timeout: float | None = None  # seconds this call may spend starting trials; None: no limit
    storage: str | None = None  # any Optuna RDB URL or a SQLite file path; None: optuna.db beside the MLflow store
    study_name: str | None = None  # an existing name resumes that study; None: <model>-<dataset>-<time>
    pruner: str = "median"  # median | asha | hyperband | none
    objective: str = "val_mse"  # the same metric for every kind, so studies compare
    direction: str | None = None  # None: what the objective needs (val_mse down, ELBO up)
    fixed: tuple[str, ...] = ()  # options the user set (latent_dim, hidden, beta, ...): not searched
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # searched name -> (low, high)
    prune_startup_trials: int = 5  # complete trials before the median pruner judges anyone
    prune_warmup_epochs: int | None = None  # no pruning before this many epochs; None: study.auto_warmup
    heartbeat_interval: int = 60  # seconds; a dead worker's trial is failed and retried after the grace period
    grace_period: int | None = None  # seconds of silence before that; None: 2x the interval
    # (AESERVICE_HEARTBEAT_INTERVAL and AESERVICE_HEARTBEAT_GRACE, when set, override both: tuning.liveness)
    max_retry: int = 2  # retries of a trial whose worker died

    @classmethod
    def from_options(cls, n_trials: int, timeout: float, storage: str, study_name: str, pruner: str, objective: str,
                     direction: str, ranges: Sequence[str], prune_startup: int, prune_warmup: int | None,
                     fixed: tuple[str, ...] = ()) -> "TuneSettings":
        """The settings of the `tune` command's options: 0 trials or seconds is no limit, "auto" the
        default, the --range texts parsed. Raises UserError for negative counts, or no limit at all."""
        if n_trials < 0 or timeout < 0 or (prune_warmup or 0) < 0 or prune_startup < 0:
            raise UserError("n_trials, timeout, prune_startup and prune_warmup must not be negative")
        if n_trials == 0 and timeout == 0:
            raise UserError("give --n-trials or --timeout: with neither the study would never end")
        return cls(n_trials=n_trials or None, timeout=timeout or None, storage=None if is_auto(storage) else storage,
                   study_name=None if is_auto(study_name) else study_name, pruner=pruner, objective=objective,
                   direction=None if direction == "auto" else direction, fixed=fixed, ranges=parse_ranges(ranges),
                   prune_startup_trials=prune_startup, prune_warmup_epochs=prune_warmup)


@dataclass
class TuneResult:
    parent_run_id: str
    study_name: str
    storage: str  # redacted: no password
    best_trial_number: int | None
    best_value: float | None
    best_params: dict[str, Any]
    best_run_id: str | None  # the child run of the best trial: runs:/<id>/model is its model
    n_complete: int
    n_pruned: int
    n_failed: int
    objective: str = "val_mse"
    direction: str = "minimize"
    best_given: bool = False  # the best trial trained the given settings (trial 0 of a new study)
    link: str = ""  # the parent run's page in the MLflow UI

    def lines(self) -> list[str]:
        """What the study holds and where, then its best trial and model (when one completed)."""
        lines = [f"study {self.study_name} in {self.storage}: {self.n_complete} complete, {self.n_pruned} pruned, "
                 f"{self.n_failed} failed", f"parent run {self.parent_run_id}"]
        if self.best_trial_number is not None:
            params = GIVEN_TEXT if self.best_given else " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.best_params.items())
            lines.append(f"best trial {self.best_trial_number}: {self.objective} {self.best_value:.5g}  {params}")
        if self.best_run_id:
            lines.append(f"best model: runs:/{self.best_run_id}/model")
        if self.link:
            lines.append(f"ui: {self.link}")
        return lines


def _lost(shown: str, exc: BaseException) -> UserError:
    return UserError(f"storage {shown}: lost the study's database ({_first_line(exc)}); the finished trials are "
                     "kept: run the same command again to resume the study")


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def tune(config: TrainConfig, settings: TuneSettings | None = None, progress: bool = True,
         nested: bool = False) -> TuneResult:
    """Run `settings.n_trials` trials of a (new or resumed) study; return the study's best so far.

    Values in `config` for searched parameters are ignored; options named in `settings.fixed`
    keep their config value. Bad settings raise UserError before any run or trial starts.
    Ctrl-C keeps the finished trials, logs the summary and ends the parent run KILLED.
    `nested` puts the parent run under the active run (the `main` pipeline's).
    """
    settings = settings or TuneSettings()
    prepared = prepare(config)
    kind = config.model.model
    space = search_space(kind, prepared.dataset.n_features, settings.fixed, settings.ranges,
                         n_rows=len(prepared.split.train))
    if not space:
        raise UserError(f"nothing to search: every parameter model {kind} searches is fixed "
                        f"({', '.join(o for o in OPTION_PARAMS if o in settings.fixed)}); use `train` instead")
    spec = objective_spec(settings.objective, kind, settings.direction)
    if settings.n_trials is not None and settings.n_trials < 1:
        raise UserError(f"n_trials must be at least 1, got {settings.n_trials}")
    if settings.timeout is not None and settings.timeout <= 0:
        raise UserError(f"timeout must be positive seconds, got {settings.timeout}")
    storage_url = to_url(settings.storage) if settings.storage else default_storage()
    study_name = settings.study_name or f"{kind}-{prepared.dataset.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    verbosity = optuna.logging.get_verbosity()
    if progress:  # our line per trial replaces Optuna's log lines (and their tracebacks of failed trials)
        optuna.logging.set_verbosity(logging.ERROR)
    try:
        return _tune(prepared, space, spec, settings, storage_url, study_name, progress, nested)
    finally:
        optuna.logging.set_verbosity(verbosity)


def _tune(prepared, space, spec, settings: TuneSettings, storage_url: str, study_name: str,
          progress: bool, nested: bool = False) -> TuneResult:
    config, kind = prepared.config, prepared.config.model.model
    interval, grace = heartbeat_settings(settings.heartbeat_interval, settings.grace_period)
    storage = open_storage(storage_url, interval, grace, max_retry=settings.max_retry)
    announce_retries(mlflow.get_tracking_uri())
    sizes = prepared_sizes(prepared)  # epochs "auto": what each trial's model will resolve
    warmup = settings.prune_warmup_epochs
    if warmup is None:  # a few epochs for every trial to get going
        warmup = auto_warmup(settings.pruner, sizes.epochs)
    pruner = make_pruner(settings.pruner, sizes.epochs, settings.prune_startup_trials, warmup)
    study = open_study(study_name, storage, spec.direction, make_sampler(config.model.seed), pruner,
                       {"model": kind, "dataset": prepared.dataset.name, "objective": spec.name})
    shown = redact(storage_url)
    done = len(study.get_trials(deepcopy=False))
    if not done:  # a new study starts with the given settings as they are: tuning never ends worse than train
        study.enqueue_trial(default_params(config, space, sizes.hidden), user_attrs={DEFAULTS_ATTR: True},
                            skip_if_exists=True)
    if progress:
        print(f"study {study_name} in {shown}: " + (f"resuming, {done} trials so far" if done else "new"),
              file=sys.stderr, flush=True)
    tags = {"model": kind, "dataset": prepared.dataset.name, "optuna.study": study_name, "optuna.storage": shown}

    searched = set(space)
    fixed_params = {k: v for k, v in config.flatten().items()
                    if not any(p in searched for p in OPTION_PARAMS.get(k, ()))}
    callbacks = [progress_printer(spec.name)] if progress else []
    experiment_id, told = None, set()  # told: trials whose result the storage took

    def end_dead_workers_runs(study_, trial=None) -> None:  # tuning.liveness: runs of workers whose heartbeat stopped
        if trial is not None:
            told.add(trial.number)
        try:
            end_stale_runs(study, experiment_id, grace)
        except Exception as exc:  # best effort: the next trial's end tries again
            if is_storage_error(exc):
                raise

    with mlflow_run(config.experiment, nested=nested, tags=tags, run_name=f"tune-{study_name}") as parent, \
            RunHeartbeat(parent.info.run_id, interval):
        experiment_id = parent.info.experiment_id
        mlflow.set_tags(tags)  # under `mlflow run` the run already existed without them
        end_dead_workers_runs(study)
        log_new_params({**fixed_params, "study_name": study_name, "storage": shown, "objective": spec.name,
                         "direction": spec.direction, "pruner": settings.pruner, "n_trials": settings.n_trials,
                         "timeout": settings.timeout, **{f"search.{k}": v for k, v in describe(space).items()}})
        interrupted = storage_lost = False
        try:
            with GracefulInterrupt() as stop:
                objective = TrialObjective(prepared, space, spec, study_name, prune=settings.pruner != "none",
                                           callbacks=[stop.epoch_callback], narrowed=settings.ranges)
                study.optimize(objective, n_trials=settings.n_trials, timeout=settings.timeout,
                               catch=(UserError,), callbacks=[*callbacks, end_dead_workers_runs, stop.trial_callback],
                               gc_after_trial=True)
        except KeyboardInterrupt:
            interrupted = True
            raise
        except Exception as exc:
            if not is_storage_error(exc):
                raise
            storage_lost = True  # the database went away: what it committed stays, the same command resumes
            fail_unrecorded(parent.info.run_id, told)
            raise _lost(shown, exc) from None
        finally:  # also on Ctrl-C: what finished is summarised before the run ends KILLED
            try:
                summary = log_summary(study, spec.name)
                best = summary["best"]
                best_run_id = best.user_attrs.get(RUN_ID_ATTR) if best is not None else None
                mark_best(study_name, best_run_id)
            except Exception as exc:
                if not (interrupted or storage_lost):
                    if is_storage_error(exc):  # lost after the last trial
                        raise _lost(shown, exc) from None
                    raise
                if interrupted:
                    print(f"interrupted; the summary was not logged: {_first_line(exc)}", file=sys.stderr)
            if not (interrupted or storage_lost):
                end_dead_workers_runs(study)
    return TuneResult(
        parent_run_id=parent.info.run_id, study_name=study_name, storage=shown,
        best_trial_number=best.number if best else None, best_value=best.value if best else None,
        best_params=dict(best.params) if best else {}, best_run_id=best_run_id,
        n_complete=summary["n_complete"], n_pruned=summary["n_pruned"], n_failed=summary["n_failed"],
        objective=spec.name, direction=spec.direction,
        best_given=bool(best and best.user_attrs.get(DEFAULTS_ATTR)), link=ui_link(parent.info.run_id),
    )
