"""One trial: Optuna's proposal -> a TrainConfig -> a nested `train_run` -> the objective value.

Every trial, whatever its end, is one nested MLflow child run logged by `aeservice.tracking.train_run`
(the same code `train` uses) plus the tags `optuna.trial`, `optuna.study` and `optuna.state`:

| trial ends | Optuna state | child run status | `optuna.state` tag |
|---|---|---|---|
| trained all its epochs (or stopped early) | COMPLETE | FINISHED | COMPLETE |
| the pruner stopped it between epochs | PRUNED | KILLED | PRUNED |
| loss turned NaN/inf, or another UserError | FAIL | FAILED | FAIL |

Pruned children are KILLED, not FAILED, because nothing went wrong: the study chose to stop them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Collection, Mapping, Sequence

import mlflow
import optuna

from aeservice.errors import UserError
from aeservice.models import MODELS, EpochCallback
from aeservice.models.detection import DETECTION_METRICS
from aeservice.tracking import run_name, train_run
from aeservice.training import Prepared, TrainResult, epoch_cap, prepare
from aeservice.tuning.space import Param, apply_params, suggest

__all__ = ["ObjectiveSpec", "FINAL_OBJECTIVES", "objectives", "objective_spec", "pruning_callback",
           "TrialObjective", "RUN_ID_ATTR", "DEFAULTS_ATTR"]

RUN_ID_ATTR = "mlflow_run_id"  # trial user attribute: the child run that trained it
# Trial user attribute of the first trial of a new study: it trains the given settings as they are
# (`train`'s own fit, epoch rule included), except where the user's --range excludes them. Its
# Optuna params are those settings clipped into the searched ranges (a weight decay of 0 shows as
# the range's low end), which is all the sampler needs.
DEFAULTS_ATTR = "given_settings"

Signal = Callable[[dict], "float | None"]  # epoch logs -> the number the pruner compares


@dataclass(frozen=True)
class ObjectiveSpec:
    name: str
    direction: str  # minimize | maximize
    signal: Signal  # per-epoch stand-in reported to the pruner (same direction as the objective)
    # What a kind must log for it: an entry of its `extra_metrics` (final) or `loss_terms` (per
    # epoch); None: every kind logs it.
    needs: str | None = None
    final: bool = True  # a final metric of the run; False: a per-epoch metric, best epoch counts

    def logged_by(self, kind: str) -> bool:
        model = MODELS.get(kind)
        if model is None:
            return False
        return self.needs is None or self.needs in (model.extra_metrics if self.final else model.loss_terms)


def _recon(logs: dict) -> float | None:
    return logs.get("val_recon")


def _neg_elbo_free(logs: dict) -> float | None:  # -(recon + kl): the ELBO whatever beta the trial used
    if "val_recon" not in logs:
        return None
    return -(logs["val_recon"] + logs.get("val_kl", 0.0))


def _elbo_free_loss(logs: dict) -> float | None:  # recon + kl: the ELBO's loss whatever beta the trial used
    value = _neg_elbo_free(logs)
    return None if value is None else -value


DETECTION_OBJECTIVES = DETECTION_METRICS[:2]  # roc_auc, average_precision: measures of the score itself

# Final metrics a study can optimise. Each trial reports its per-epoch validation reconstruction
# term (what val_mse measures at the end) so the pruner compares like with like across trials;
# for the ELBO it reports recon + KL without beta, since beta itself is searched.
FINAL_OBJECTIVES: dict[str, ObjectiveSpec] = {s.name: s for s in (
    ObjectiveSpec("val_mse", "minimize", _recon),
    ObjectiveSpec("test_mse", "minimize", _recon),
    ObjectiveSpec("explained_variance", "maximize", lambda logs: None if _recon(logs) is None else -_recon(logs)),
    ObjectiveSpec("val_elbo", "maximize", _neg_elbo_free, needs="elbo"),
    ObjectiveSpec("test_elbo", "maximize", _neg_elbo_free, needs="elbo"),
    ObjectiveSpec("val_nll", "minimize", _elbo_free_loss, needs="nll"),  # the IWAE bound; -ELBO per epoch
    ObjectiveSpec("test_nll", "minimize", _elbo_free_loss, needs="nll"),
    # Tuning on labels: the test rows' outlier flags choose the settings (docs/anomaly.md).
    *(ObjectiveSpec(f"test_{name}", "maximize", lambda logs: None if _recon(logs) is None else -_recon(logs))
      for name in DETECTION_OBJECTIVES),
)}


def objectives() -> dict[str, ObjectiveSpec]:
    """The final metrics, then the per-epoch metrics (lower is better) that may also be the
    objective, the best epoch's value counting: `loss` and every registered kind's loss terms."""
    table = dict(FINAL_OBJECTIVES)
    terms = dict.fromkeys(term for model in MODELS.values() for term in model.loss_terms)
    for term in ("loss", *terms):
        for name in (term, f"val_{term}"):
            table[name] = ObjectiveSpec(name, "minimize", lambda logs, n=name: logs.get(n),
                                        needs=None if term == "loss" else term, final=False)
    return table


def objective_spec(name: str, kind: str, direction: str | None = None) -> ObjectiveSpec:
    """The objective `name` for model `kind`; `direction` overrides the table's (for odd uses)."""
    table = objectives()
    if name not in table:
        raise UserError(f"unknown objective {name!r}; choose one of {', '.join(table)}")
    spec = table[name]
    if not spec.logged_by(kind):
        raise UserError(f"objective {name} is not logged by model {kind}; "
                        f"choose one of {', '.join(n for n, s in table.items() if s.logged_by(kind))}")
    if direction is None or direction == spec.direction:
        return spec
    if direction not in ("minimize", "maximize"):
        raise UserError(f"direction must be minimize or maximize, got {direction!r}")
    flipped = lambda logs, f=spec.signal: None if f(logs) is None else -f(logs)  # noqa: E731
    return ObjectiveSpec(spec.name, direction, flipped, spec.needs, spec.final)


def objective_value(spec: ObjectiveSpec, result: TrainResult) -> float:
    if spec.final:  # a detection metric is missing when the test rows hold one class only: a failed trial
        return float(result.metrics.get(spec.name, float("nan")))
    values = [v for v in result.history.get(spec.name, []) if math.isfinite(v)]
    if not values:
        return float("nan")  # Optuna records a NaN objective as a failed trial
    return float(min(values) if spec.direction == "minimize" else max(values))


def pruning_callback(trial: optuna.Trial, signal: Signal, epochs: int, prune: bool = True) -> EpochCallback:
    """Report the signal every epoch; raise TrialPruned when the pruner says so.

    The exception leaves Keras' fit at once. The last epoch is never pruned: by then the work is done.
    """

    def report(epoch: int, logs: dict) -> None:
        value = signal(logs)
        if value is None or not math.isfinite(value):
            return
        trial.report(float(value), epoch)
        if prune and epoch + 1 < epochs and trial.should_prune():
            trial.set_user_attr("pruned_at_epoch", epoch + 1)
            raise optuna.TrialPruned(f"pruned after epoch {epoch + 1} with {value:.5g}")

    return report


class TrialObjective:
    """The function Optuna calls once per trial."""

    def __init__(self, prepared: Prepared, space: Mapping[str, Param], spec: ObjectiveSpec, study_name: str,
                 prune: bool = True, callbacks: Sequence[EpochCallback] = (), narrowed: Collection[str] = ()):
        self.prepared, self.space, self.spec = prepared, dict(space), spec
        self.narrowed = frozenset(narrowed)  # searched names the user gave a range: the given settings obey it
        self.study_name, self.prune = study_name, prune and MODELS[prepared.config.model.model].trains_in_epochs
        self.callbacks = list(callbacks)  # more epoch listeners, e.g. the Ctrl-C check

    def __call__(self, trial: optuna.Trial) -> float:
        proposal = suggest(trial, self.space)  # asked even for the given settings: Optuna records them
        if trial.user_attrs.get(DEFAULTS_ATTR):  # the given settings; only what a --range moved is clipped into it
            proposal = {name: value for name, value in proposal.items() if name in self.narrowed}
        config = apply_params(self.prepared.config, proposal)
        prepared = prepare(config, dataset=self.prepared.dataset)  # same data; validates the proposal
        tags = {"optuna.trial": str(trial.number), "optuna.study": self.study_name,
                "mlflow.runName": f"{run_name(prepared)}-t{trial.number:02d}"}
        callback = pruning_callback(trial, self.spec.signal, epoch_cap(prepared), self.prune)
        try:
            run_id, result = train_run(prepared, callbacks=[callback, *self.callbacks], nested=True, tags=tags)
        except optuna.TrialPruned:
            self._close_child(trial, "PRUNED")
            raise
        except UserError as exc:  # NaN/inf loss and the like: this trial fails, the study goes on
            trial.set_user_attr("fail_reason", str(exc))
            self._close_child(trial, "FAIL")
            raise
        except KeyboardInterrupt:
            try:
                self._close_child(trial, "FAIL")
            except Exception:  # a second Ctrl-C may have cut a write short: stopping matters more
                pass
            raise
        trial.set_user_attr(RUN_ID_ATTR, run_id)
        value = objective_value(self.spec, result)
        mlflow.MlflowClient().set_tag(run_id, "optuna.state", "COMPLETE" if math.isfinite(value) else "FAIL")
        return value

    def _close_child(self, trial: optuna.Trial, state: str) -> None:
        """Tag the child run that just ended with the trial's state; a pruned child becomes KILLED."""
        parent = mlflow.active_run()
        if parent is None:
            return
        client = mlflow.MlflowClient()
        runs = client.search_runs(
            [parent.info.experiment_id],
            filter_string=(f"tags.mlflow.parentRunId = '{parent.info.run_id}' "
                           f"and tags.`optuna.trial` = '{trial.number}'"),
            max_results=1,
        )
        if not runs:  # failed before its run started (e.g. an invalid proposal)
            return
        run_id = runs[0].info.run_id
        trial.set_user_attr(RUN_ID_ATTR, run_id)
        client.set_tag(run_id, "optuna.state", state)
        if state == "PRUNED":
            client.set_terminated(run_id, "KILLED")
