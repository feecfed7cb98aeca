"""The model registry: every registered run becomes a version; aliases say which one to serve.

A registered name is a contract: `models:/NAME@champion` takes rows of one width and codes of one
size, whichever version it points to. So each version records its interface as tags (`INTERFACE`:
the kind, input width, code size, data kind and image shape) and the data it was trained on
(`DATA`: the data set's name and the fingerprint of its training rows), all read from what its
training run logged. `challenger` always points to the newest version. `champion` moves to a new
version only if its interface is the champion's, it was trained on the same data (val_mse is not
compared across data), and its `val_mse` (read from each version's own tag) is lower; `force`
overrides all three, and the CLI line says what it overrode. Registering a run that already has a
version returns that version. Aliases, not the deprecated stages.

Concurrent registrations of one name would race (two read "no champion", both promote): on a
local store (SQLite file or file store) they take turns under a lock file beside the store. A
tracking server gets no lock from here: register one name from one process at a time there.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlsplit

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from aeservice.errors import UserError

__all__ = ["CHAMPION", "CHALLENGER", "METRIC", "INTERFACE", "DATA", "Contract", "Registration", "register_run"]

CHAMPION = "champion"  # best so far: what production serves
CHALLENGER = "challenger"  # newest: what one would A/B test against the champion
METRIC = "val_mse"  # lower is better; every model kind logs it in the data's own units
SOURCE_RUN_TAG = "source_run_id"
# aeservice.tracking.MODEL_ARTIFACT (a test keeps them equal); not imported, because importing
# tracking loads the training and model code, and `register` needs nothing but the MLflow client.
MODEL_ARTIFACT = "model"
# Version tags: what a client of the name depends on, and the data val_mse was measured on.
INTERFACE = ("n_features", "latent_dim", "data_kind", "image_shape", "model")
DATA = ("dataset", "data_fingerprint")
_NEEDED = ("n_features", "latent_dim", "data_kind", "model")  # unknown on either side: not the same interface
_LOCK_SUFFIX = ".aeservice-register.lock"


@dataclass(frozen=True)
class Contract:
    """A version's interface and data, as tag text; None where its run did not record it."""

    n_features: str | None = None
    latent_dim: str | None = None
    data_kind: str | None = None
    image_shape: str | None = None  # "8x8", or "none"
    model: str | None = None  # the kind
    dataset: str | None = None
    data_fingerprint: str | None = None  # MLflow's digest of the run's training rows (its dataset input)

    @classmethod
    def of_run(cls, run) -> "Contract":
        """From what `train` logs: tags model and dataset, params n_features, latent_dim_used,
        data_kind_used and image_shape, and the training dataset input's digest."""
        params, tags = run.data.params, run.data.tags
        return cls(n_features=params.get("n_features"), latent_dim=params.get("latent_dim_used"),
                   data_kind=params.get("data_kind_used"), image_shape=params.get("image_shape"),
                   model=tags.get("model"), dataset=tags.get("dataset"), data_fingerprint=_training_digest(run))

    @classmethod
    def of_tags(cls, tags: dict[str, str]) -> "Contract":
        return cls(**{f.name: tags.get(f.name) for f in fields(cls)})

    def tags(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def missing(self) -> bool:
        return any(getattr(self, f.name) is None for f in fields(self))

    def filled_from(self, other: "Contract") -> "Contract":
        """These values, with the unknown ones taken from `other`."""
        return Contract(**{f.name: getattr(self, f.name) if getattr(self, f.name) is not None else getattr(other, f.name)
                           for f in fields(self)})

    def differences(self, champion: "Contract") -> list[str]:
        """How this interface differs from the champion's, one phrase per field ([] when it is the same)."""
        out = []
        for name in INTERFACE:
            mine, theirs = getattr(self, name), getattr(champion, name)
            if mine == theirs or (name not in _NEEDED and (mine is None or theirs is None)):
                continue  # an image shape older runs did not log is not held against them
            out.append(_PHRASES[name].format(mine=_known(mine), theirs=_known(theirs)))
        return out

    def same_data(self, other: "Contract") -> bool:
        return self.data_fingerprint is not None and self.data_fingerprint == other.data_fingerprint

    def data_text(self) -> str:
        return f"{self.dataset or 'unknown data'} {self.data_fingerprint or '(no fingerprint)'}"


_PHRASES = {
    "n_features": "{mine} features, champion {theirs}",
    "latent_dim": "a code of {mine}, champion {theirs}",
    "data_kind": "{mine} data, champion {theirs}",
    "image_shape": "image shape {mine}, champion {theirs}",
    "model": "kind {mine}, champion {theirs}",
}


def _known(value: str | None) -> str:
    return "unknown" if value is None else value


@dataclass(frozen=True)
class Registration:
    """What one `register_run` did, and where both aliases point afterwards."""

    name: str
    version: int
    val_mse: float
    champion_version: int | None
    challenger_version: int | None
    promoted: bool  # champion moved to this version
    previous_champion: int | None  # champion before this registration (None: there was none)
    previous_champion_val_mse: float | None = None
    forced: bool = False  # promoted only because of force
    run_id: str = ""
    model: str = ""
    dataset: str = ""
    reason: str = ""  # why champion did not move, or what force overrode
    compared: bool = False  # the reason is the val_mse comparison
    existing: bool = False  # the run already was this version: nothing was registered

    def lines(self) -> list[str]:
        """The lines the CLI prints: the version, then where each alias now points."""
        what = f"{self.model} on {self.dataset}, " if self.model else ""
        if self.existing:
            lines = [f"run {self.run_id} is already {self.name} version {self.version} ({what}{METRIC} "
                     f"{self.val_mse:.6g}); nothing registered"]
        else:
            lines = [f"registered {self.name} version {self.version} ({what}{METRIC} {self.val_mse:.6g}) "
                     f"from run {self.run_id}"]
        if self.challenger_version is not None:
            lines.append(f"{CHALLENGER} -> version {self.challenger_version}")
        prev = self.previous_champion
        prev_mse = "" if self.previous_champion_val_mse is None else f" ({METRIC} {self.previous_champion_val_mse:.6g})"
        if self.existing and not self.promoted:
            where = f"version {self.champion_version}" if self.champion_version is not None else "no version"
            lines.append(f"{CHAMPION} -> {where}, unchanged")
        elif not self.promoted:
            shown = prev_mse if self.compared else ""
            lines.append(f"{CHAMPION} -> version {self.champion_version}{shown}, unchanged: {self.reason}")
        elif prev is None:
            lines.append(f"{CHAMPION} -> version {self.champion_version} (the first champion)")
        elif self.forced:
            lines.append(f"{CHAMPION} -> version {self.champion_version} (forced over version {prev}{prev_mse}: "
                         f"{self.reason})")
        else:
            lines.append(f"{CHAMPION} -> version {self.champion_version} (beat version {prev}{prev_mse})")
        return lines

    def __str__(self) -> str:
        return "\n".join(self.lines())


def register_run(run_id: str, name: str, force: bool = False) -> Registration:
    """Register `runs:/<run_id>/model` as a new version of `name` and move the aliases.

    `challenger` always moves to a new version; `champion` moves when there is none yet, or when
    the new version has the champion's interface, was trained on the same data and has a strictly
    lower `val_mse`; `force` moves it anyway. A run that already is a version of `name` is not
    registered again: that version is returned (with `force`, it becomes champion).
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
    contract = Contract.of_run(run)
    tags = {**contract.tags(), METRIC: repr(float(val_mse)), SOURCE_RUN_TAG: run_id}

    with _store_lock():  # from reading the champion to moving it: one registration at a time
        previous, previous_mse, champion = _champion(client, name)
        version = _version_of(client, name, run_id)
        existing = version is not None
        if not existing:
            version = _create_version(run_id, name, tags)
            client.set_registered_model_alias(name, CHALLENGER, str(version))
        better, reason, compared = _judge(version, float(val_mse), contract, previous, previous_mse, champion)
        if existing and previous == version:
            better, reason = True, ""  # already the champion: nothing to override
        promoted = previous != version and (force or (better and not existing))
        if promoted:
            client.set_registered_model_alias(name, CHAMPION, str(version))
    return Registration(
        name=name, version=version, val_mse=float(val_mse),
        champion_version=version if promoted else previous, challenger_version=_alias(client, name, CHALLENGER),
        promoted=promoted, previous_champion=previous, previous_champion_val_mse=previous_mse,
        forced=promoted and not better, run_id=run_id, model=contract.model or "", dataset=contract.dataset or "",
        reason=reason, compared=compared, existing=existing,
    )


def _judge(version: int, val_mse: float, new: Contract, previous: int | None, previous_mse: float | None,
           champion: Contract | None) -> tuple[bool, str, bool]:
    """(whether the version wins champion on its own, why not, whether that was the val_mse comparison)."""
    if previous is None or champion is None:
        return True, "", False
    differences = new.differences(champion)
    if differences:
        return False, f"version {version} expects " + "; ".join(differences), False
    if not new.same_data(champion):
        return False, (f"version {version} was trained on other data ({new.data_text()}; champion "
                       f"{champion.data_text()}), so {METRIC} is not compared"), False
    if previous_mse is not None and not val_mse < previous_mse:
        return False, f"version {version} did not beat it", True
    return True, "", True


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


def _training_digest(run) -> str | None:
    """The digest MLflow logged for the run's training rows (`mlflow.log_input`, context training)."""
    inputs = list(getattr(run.inputs, "dataset_inputs", None) or [])
    for dataset_input in inputs:
        if any(t.key == "mlflow.data.context" and t.value == "training" for t in dataset_input.tags):
            return dataset_input.dataset.digest
    return inputs[0].dataset.digest if inputs else None


def _champion(client: MlflowClient, name: str) -> tuple[int | None, float | None, Contract | None]:
    """The current champion's version, val_mse and contract: from its tags, what they lack from its run."""
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:  # no such model, or no champion yet
        return None, None, None
    contract, run = Contract.of_tags(current.tags), None
    try:
        mse = float(current.tags[METRIC])
    except (KeyError, ValueError):
        mse = None
    if (mse is None or contract.missing()) and current.run_id:  # set by hand or registered by older code: ask its run
        with contextlib.suppress(MlflowException):
            run = client.get_run(current.run_id)
    if run is not None:
        contract = contract.filled_from(Contract.of_run(run))
        mse = run.data.metrics.get(METRIC) if mse is None else mse
    return int(current.version), mse, contract


def _version_of(client: MlflowClient, name: str, run_id: str) -> int | None:
    """The version of `name` that already holds this run's model, if any (the lowest)."""
    try:
        found = client.search_model_versions(f"name = '{_quoted(name)}' and run_id = '{_quoted(run_id)}'")
    except MlflowException:
        return None
    return min((int(v.version) for v in found), default=None)


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


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _alias(client: MlflowClient, name: str, alias: str) -> int | None:
    try:
        return int(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


@contextlib.contextmanager
def _store_lock() -> Iterator[None]:
    """An exclusive lock file beside a local registry store, for as long as the block runs.

    A tracking server or a database server has no file here to lock: then nothing is locked.
    """
    path = _lock_path(mlflow.get_registry_uri())
    try:
        import fcntl
    except ImportError:  # not POSIX
        fcntl = None
    if path is None or fcntl is None:
        yield
        return
    try:
        handle = open(path, "a")
    except OSError:  # a read-only folder: the store cannot be written either, MLflow will say so
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _lock_path(uri: str) -> Path | None:
    """<file>.aeservice-register.lock beside a SQLite file; inside a file store's folder; else None."""
    uri = str(uri)
    if uri.startswith("sqlite:///"):  # sqlite:///relative.db or sqlite:////absolute.db
        path = unquote(uri[len("sqlite:///"):].split("?")[0])
        return None if path in ("", ":memory:") else Path(path).with_name(Path(path).name + _LOCK_SUFFIX)
    if uri.startswith("file:") or "://" not in uri:
        folder = Path(unquote(urlsplit(uri).path) if uri.startswith("file:") else uri)
        return folder / _LOCK_SUFFIX if folder.is_dir() else None
    return None
