"""The main job: every registered kind (the PCA baseline, tuned AE, sparse AE and VAE), each
registered, then compared. A kind with nothing to search once the code size is fixed (PCA) is
fitted once; every other kind is tuned.

Every step is a nested MLflow run under one `main` run. A finished step is tagged with a key
made of its settings and the code version; running again with the same key reuses that run
instead of training again, as MLflow's multistep workflow example does. `force` runs anew.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import mlflow

import aeservice
from aeservice.comparison import compare
from aeservice.config import TrainConfig
from aeservice.leaderboard import format_table
from aeservice.models import MODELS
from aeservice.registry import register_run
from aeservice.tracking import mlflow_run, train_run, ui_link
from aeservice.training import epoch_cap, prepare
from aeservice.tuning import TuneSettings, tune
from aeservice.tuning.space import search_space

__all__ = ["PipelineSettings", "PipelineResult", "StepResult", "code_version", "run_pipeline", "kinds", "tuned"]

FIXED = ("latent_dim",)  # the kinds are compared at one code size, like the baseline
STEP_TAG = "aeservice.step"  # which step a run is (main, pca, ae, sparse, vae)
KEY_TAG = "aeservice.step_key"  # set only when a step finished: what reuse looks for
BEST_RUN_TAG = "aeservice.best_run_id"  # the training run a step's model comes from


@dataclass
class PipelineSettings:
    n_trials: int = 8  # per tuned kind; trial 0 trains the defaults as `train` does, so no kind ends worse
    # The defaults are a strong first trial: in one digits job with 8 trials of each kind, none of
    # the 21 searched trials beat them, and the job took 22 min. Judged against trial 0 from the
    # start (after the pruner's warm-up epochs), a trial that falls behind it stops early.
    prune_startup_trials: int = 1
    force: bool = False  # True: ignore finished steps and run everything again
    storage: str | None = None  # Optuna storage; None: optuna.db beside the MLflow store


@dataclass
class StepResult:
    kind: str
    run_id: str  # the step's own run (train run for pca, tune parent otherwise)
    model_run_id: str  # the training run whose model is registered
    reused: bool
    registered_as: str
    registration: list[str] = field(default_factory=list)  # what the registry said


@dataclass
class PipelineResult:
    run_id: str
    steps: list[StepResult]
    comparison_run_id: str | None
    leaderboard: str
    link: str = ""  # the main run's page in the MLflow UI

    def lines(self) -> list[str]:
        """The leaderboard, the runs, how many steps were reused, and a serve command per model."""
        reused = sum(step.reused for step in self.steps)
        return [self.leaderboard, f"\nmain run {self.run_id}; comparison run {self.comparison_run_id}",
                f"{reused} of {len(self.steps)} steps reused", *([f"ui: {self.link}"] if self.link else []),
                "serve a model (then POST to http://127.0.0.1:5000/invocations):",
                *(f"  mlflow models serve -m models:/{step.registered_as}@champion --env-manager local -p 5000"
                  for step in self.steps)]


def code_version() -> str:
    """A hash of the package's source files: changed code means finished steps are not reused."""
    digest = hashlib.sha256()
    root = Path(aeservice.__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def kinds() -> tuple[str, ...]:
    """The steps, one per registered kind in registry order (the baseline, pca, first)."""
    return tuple(MODELS)


def tuned(kind: str, n_features: int) -> bool:
    """Whether the job tunes `kind`: it searches something besides the fixed code size."""
    return bool(search_space(kind, n_features, fixed=FIXED))


def step_key(kind: str, config: TrainConfig, settings: PipelineSettings, version: str,
             tuned_step: bool = True) -> str:
    payload = {"step": kind, "config": config.flatten(), "version": version,
               "n_trials": settings.n_trials if tuned_step else None}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _finished(experiment_id: str, key: str) -> mlflow.entities.Run | None:
    runs = mlflow.search_runs(
        [experiment_id], filter_string=f"tags.`{KEY_TAG}` = '{key}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1, output_format="list")
    return runs[0] if runs else None


def _register(model_run_id: str, name: str) -> list[str]:
    """A new version unless this run already is one (a reused step registers nothing again), under
    the registry's champion rules: the main job never forces a champion."""
    return register_run(model_run_id, name, force=False).lines()


@contextmanager
def _own_parent_run(experiment: str) -> Iterator[str | None]:
    """Under `mlflow run`, use its run as the parent only if it is in our experiment.

    `mlflow run .` puts its run in MLflow's Default experiment unless --experiment-name says
    otherwise; the job's runs belong together in `experiment` (where `compare` and the UI look),
    so then the job starts its own parent there and links the launcher run to it.
    """
    launcher = os.environ.get("MLFLOW_RUN_ID")
    if not launcher:
        yield None
        return
    launcher_experiment = mlflow.get_experiment(mlflow.get_run(launcher).info.experiment_id).name
    if launcher_experiment == experiment:
        yield None
        return
    del os.environ["MLFLOW_RUN_ID"]
    try:
        yield launcher
    finally:
        os.environ["MLFLOW_RUN_ID"] = launcher


def run_pipeline(base: TrainConfig, settings: PipelineSettings,
                 echo: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)
                 ) -> PipelineResult:
    """Run or reuse every step under one parent run, register each kind, then compare them."""
    prepared = prepare(base)  # bad settings or data fail here, before any run starts
    dataset = prepared.dataset.name
    version = code_version()
    steps: list[StepResult] = []
    with _own_parent_run(base.experiment) as launcher, \
            mlflow_run(base.experiment, run_name=f"main-{dataset}", tags={STEP_TAG: "main"}) as parent:
        if launcher:
            mlflow.MlflowClient().set_tag(launcher, "aeservice.main_run_id", parent.info.run_id)
            echo(f"runs go to experiment {base.experiment!r}; this mlflow run links to it (tag aeservice.main_run_id)")
        experiment_id = parent.info.experiment_id
        mlflow.log_params({"code_version": version, "n_trials": settings.n_trials, "force": settings.force})
        for kind in kinds():
            config = replace(base, model=replace(base.model, model=kind))
            tune_it = tuned(kind, prepared.dataset.n_features)
            key = step_key(kind, config, settings, version, tune_it)
            done = None if settings.force else _finished(experiment_id, key)
            if done is not None:
                run_id, model_run_id = done.info.run_id, done.data.tags.get(BEST_RUN_TAG, done.info.run_id)
                echo(f"[{kind}] reusing finished run {run_id} (same settings and code)")
            elif not tune_it:
                echo(f"[{kind}] fitting the baseline")
                run_id, _ = train_run(prepare(config, prepared.dataset), nested=True, tags={STEP_TAG: kind})
                model_run_id = run_id
            else:
                echo(f"[{kind}] tuning: {settings.n_trials} trials of at most {epoch_cap(prepared)} epochs each")
                # forced: a study of its own (named after this main run), not the finished one resumed,
                # whose old best trial would come back as the step's model
                fresh = f"-{parent.info.run_id[:8]}" if settings.force else ""
                study = tune(config, TuneSettings(n_trials=settings.n_trials, storage=settings.storage,
                                                  study_name=f"main-{dataset}-{kind}-{key[:8]}{fresh}",
                                                  fixed=FIXED, prune_startup_trials=settings.prune_startup_trials),
                             nested=True)
                if study.best_run_id is None:
                    raise RuntimeError(f"no {kind} trial finished; see the tune run {study.parent_run_id}")
                run_id, model_run_id = study.parent_run_id, study.best_run_id
            if done is None:  # only now is the step finished: mark it for reuse
                client = mlflow.MlflowClient()
                client.set_tag(run_id, STEP_TAG, kind)
                client.set_tag(run_id, BEST_RUN_TAG, model_run_id)
                client.set_tag(run_id, KEY_TAG, key)
            name = f"{Path(dataset).stem}-{kind}"
            lines = _register(model_run_id, name)
            for line in lines:
                echo(f"[{kind}] {line}")
            steps.append(StepResult(kind, run_id, model_run_id, done is not None, name, lines))
        echo("[compare] leaderboard of this job's models")
        # the parent's own experiment: under `mlflow run` that is --experiment-name's, not ours
        experiment = mlflow.MlflowClient().get_experiment(experiment_id).name
        report = compare(experiment, dataset=base.data.dataset, nested=True,
                         run_ids=[step.model_run_id for step in steps])
    return PipelineResult(parent.info.run_id, steps, report.run_id, format_table(report.rows), ui_link(parent.info.run_id))
