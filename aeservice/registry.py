"""The model registry: every registered run becomes a version; aliases say which one to serve.

`challenger` always points to the newest version, `champion` to the best so far on `val_mse`
(lower is better), read from each version's own `val_mse` tag so that the rule needs nothing but
the registry. Aliases, not the deprecated stages: `models:/NAME@champion` is what a server loads.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import re
from dataclasses import dataclass

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from aeservice.errors import UserError

__all__ = ["CHAMPION", "CHALLENGER", "METRIC", "Registration", "register_run"]

CHAMPION = "champion"  # best so far: what production serves
CHALLENGER = "challenger"  # newest: what one would A/B test against the champion
METRIC = "val_mse"  # lower is better; every model kind logs it in the data's own units
SOURCE_RUN_TAG = "source_run_id"
# aeservice.tracking.MODEL_ARTIFACT (a test keeps them equal); not imported, because importing
# tracking loads the training and model code, and `register` needs nothing but the MLflow client.
MODEL_ARTIFACT = "model"


@dataclass(frozen=True)
class Registration:
    """What one `register_run` did, and where both aliases point afterwards."""

    name: str
    version: int
    val_mse: float
    champion_version: int
    challenger_version: int
    promoted: bool  # champion moved to this version
    previous_champion: int | None  # champion before this registration (None: there was none)
    previous_champion_val_mse: float | None = None
    forced: bool = False
    run_id: str = ""
    model: str = ""
    dataset: str = ""

    def lines(self) -> list[str]:
        """The lines the CLI prints: the new version, then where each alias now points."""
        what = f"{self.model} on {self.dataset}, " if self.model else ""
        lines = [f"registered {self.name} version {self.version} ({what}{METRIC} {self.val_mse:.6g}) "
                 f"from run {self.run_id}"]
        lines.append(f"{CHALLENGER} -> version {self.challenger_version}")
        prev = self.previous_champion
        prev_mse = "" if self.previous_champion_val_mse is None else f" ({METRIC} {self.previous_champion_val_mse:.6g})"
        if not self.promoted:
            why = f"version {self.version} did not beat it"
            lines.append(f"{CHAMPION} -> version {self.champion_version}{prev_mse}, unchanged: {why}")
        elif prev is None:
            lines.append(f"{CHAMPION} -> version {self.champion_version} (the first champion)")
        elif self.forced:
            lines.append(f"{CHAMPION} -> version {self.champion_version} (forced; was version {prev}{prev_mse})")
        else:
            lines.append(f"{CHAMPION} -> version {self.champion_version} (beat version {prev}{prev_mse})")
        return lines

    def __str__(self) -> str:
        return "\n".join(self.lines())


def register_run(run_id: str, name: str, force: bool = False) -> Registration:
    """Register `runs:/<run_id>/model` as a new version of `name` and move the aliases.

    `challenger` always moves to the new version; `champion` moves when there is none yet, when
    the new `val_mse` is strictly lower than the champion's, or when `force` is set.
    Bad input (unknown run, no logged model, no val_mse, a bad name) raises UserError.
    """
    run_id, name = (run_id or "").strip(), (name or "").strip()
    if not run_id:
        raise UserError("--run-id is empty: give the id of a training run")
    if not name:
        raise UserError("--name is empty: give the registered model's name, e.g. digits-vae")
    client = MlflowClient()
    run = _get_run(client, run_id)
    val_mse = run.data.metrics.get(METRIC)
    if val_mse is None:
        raise UserError(f"run {run_id} has no {METRIC} metric; register a run made by aeservice train or tune")
    if not math.isfinite(val_mse):
        raise UserError(f"run {run_id} has a non-finite {METRIC} ({val_mse}); it cannot be a champion")
    _require_logged_model(client, run)

    tags = {
        "model": run.data.tags.get("model", ""),
        "dataset": run.data.tags.get("dataset", ""),
        METRIC: repr(float(val_mse)),
        SOURCE_RUN_TAG: run_id,
    }
    previous, previous_mse = _champion(client, name)
    version = _create_version(run_id, name, tags)
    client.set_registered_model_alias(name, CHALLENGER, str(version))
    promoted = previous is None or force or previous_mse is None or val_mse < previous_mse
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, str(version))
    return Registration(
        name=name, version=version, val_mse=float(val_mse),
        champion_version=version if promoted else previous, challenger_version=version,
        promoted=promoted, previous_champion=previous, previous_champion_val_mse=previous_mse,
        forced=bool(force and previous is not None and previous_mse is not None and not val_mse < previous_mse),
        run_id=run_id, model=tags["model"], dataset=tags["dataset"],
    )


def _get_run(client: MlflowClient, run_id: str):
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            raise UserError(f"unknown run id {run_id!r} in {_redacted(mlflow.get_tracking_uri())}") from None
        raise
    if run.info.status in ("FAILED", "KILLED"):
        raise UserError(f"run {run_id} {run.info.status.lower()}; register a finished run")
    return run


def _redacted(uri: str) -> str:
    """The tracking URI without any user:password@ part, fit for an error message."""
    return re.sub(r"//[^/@]*@", "//***@", str(uri))


def _require_logged_model(client: MlflowClient, run) -> None:
    """MLflow 3 keeps `runs:/<id>/model` as a LoggedModel whose source is the run."""
    run_id = run.info.run_id
    found = client.search_logged_models(experiment_ids=[run.info.experiment_id],
                                        filter_string=f"name = '{MODEL_ARTIFACT}'", max_results=1000)
    if not any(m.source_run_id == run_id for m in found):
        if not any(a.path == f"{MODEL_ARTIFACT}/MLmodel" for a in _artifacts(client, run_id)):
            raise UserError(f"run {run_id} has no logged model at runs:/{run_id}/{MODEL_ARTIFACT}")


def _artifacts(client: MlflowClient, run_id: str) -> list:
    try:
        return client.list_artifacts(run_id, MODEL_ARTIFACT)
    except Exception:  # an artifact store that cannot list is the same as no model for us
        return []


def _champion(client: MlflowClient, name: str) -> tuple[int | None, float | None]:
    """The current champion's version and val_mse (from its tag; its run's metric as fallback)."""
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:  # no such model, or no champion yet
        return None, None
    try:
        return int(current.version), float(current.tags[METRIC])
    except (KeyError, ValueError):
        pass
    try:  # set by hand, or registered by something else: ask its run
        mse = client.get_run(current.run_id).data.metrics.get(METRIC) if current.run_id else None
    except MlflowException:
        mse = None
    return int(current.version), mse


def _create_version(run_id: str, name: str, tags: dict[str, str]) -> int:
    """mlflow.register_model, with its progress chatter kept off the user's terminal."""
    chatter = logging.getLogger("mlflow.tracking._model_registry.fluent")
    level = chatter.level
    chatter.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            version = mlflow.register_model(f"runs:/{run_id}/{MODEL_ARTIFACT}", name, tags=tags)
    except MlflowException as exc:
        raise UserError(f"cannot register {name!r}: {exc.message.splitlines()[0]}") from None
    finally:
        chatter.setLevel(level)
    return int(version.version)
