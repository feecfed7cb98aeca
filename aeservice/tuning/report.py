"""What a study tells its user: a line per finished trial, and the parent run's summary and plots."""
from __future__ import annotations

import sys
import warnings
from typing import Callable, TextIO

import matplotlib

matplotlib.use("Agg")  # plots go to files, never to a window

import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import optuna  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

from aeservice.tuning.objective import DEFAULTS_ATTR, RUN_ID_ATTR  # noqa: E402

__all__ = ["progress_printer", "counts", "log_summary", "mark_best", "GIVEN_TEXT"]

# How a trial of the given settings is shown instead of its params (Optuna holds them clipped into
# the searched ranges, which is not what it trained).
GIVEN_TEXT = "the given settings, as train fits them"


def _fmt(value) -> str:
    return f"{value:.5g}" if isinstance(value, float) else str(value)


def progress_printer(objective: str, stream: TextIO | None = None) -> Callable[[optuna.Study, FrozenTrial], None]:
    """An Optuna callback printing one line per finished trial: number, state, value, best so far."""

    def report(study: optuna.Study, trial: FrozenTrial) -> None:
        out = stream or sys.stderr
        state = trial.state.name
        if trial.state == TrialState.COMPLETE:
            what = f"{objective} {_fmt(trial.value)}"
        elif trial.state == TrialState.PRUNED:
            what = f"at epoch {trial.user_attrs.get('pruned_at_epoch', '?')}"
        else:
            what = trial.user_attrs.get("fail_reason", "")
        try:
            best = f"best {_fmt(study.best_value)} (trial {study.best_trial.number})"
        except ValueError:
            best = "best -"
        params = (GIVEN_TEXT if trial.user_attrs.get(DEFAULTS_ATTR)
                  else " ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items()))
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        print(f"trial {trial.number:>3} {state:<8} {what}  |  {best}  |  {params}  ({seconds:.1f}s)",
              file=out, flush=True)

    return report


def counts(study: optuna.Study) -> dict[str, int]:
    """Trials of the whole study (every worker, every resume) by final state."""
    trials = study.get_trials(deepcopy=False)
    return {
        "n_complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "n_pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "n_failed": sum(t.state == TrialState.FAIL for t in trials),
    }


def _best(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def mark_best(study_name: str, best_run_id: str | None) -> None:
    """Tag the best child `best_trial=true`; an earlier best of the same study (resumed or another
    worker's) loses the tag, so exactly one child of the study carries it."""
    client = mlflow.MlflowClient()
    if best_run_id:
        client.set_tag(best_run_id, "best_trial", "true")
    tagged = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                filter_string=f"tags.`optuna.study` = '{study_name}' and tags.best_trial = 'true'")
    for run in tagged:
        if run.info.run_id != best_run_id and "optuna.trial" in run.data.tags:
            client.set_tag(run.info.run_id, "best_trial", "false")


def _figures(study: optuna.Study) -> dict[str, "plt.Figure"]:
    """Optimisation history always; parameter importances need two complete trials that differ."""
    from optuna.visualization import matplotlib as ovm

    out = {}
    makers = {
        "plots/optimization_history.png": ovm.plot_optimization_history,
        "plots/intermediate_values.png": ovm.plot_intermediate_values,
        "plots/param_importances.png": ovm.plot_param_importances,
    }
    n_complete = counts(study)["n_complete"]
    for name, make in makers.items():
        if name.endswith("importances.png") and n_complete < 2:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ax = make(study)
            except (ValueError, RuntimeError, ZeroDivisionError):  # too few or identical trials
                continue
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.set_size_inches(8, 5)
        fig.tight_layout()
        out[name] = fig
    return out


def log_summary(study: optuna.Study, objective: str) -> dict:
    """Log on the active (parent) run: counts, the best trial and the plots; returns the summary."""
    summary: dict = {**counts(study), "best": _best(study)}
    mlflow.log_metrics({k: float(v) for k, v in counts(study).items()})
    best = summary["best"]
    if best is not None:
        mlflow.log_metrics({"best_value": float(best.value), f"best_{objective}": float(best.value)})
        mlflow.log_params({"best_trial": best.number, **{f"best.{k}": v for k, v in best.params.items()}})
        mlflow.set_tag("best_run_id", best.user_attrs.get(RUN_ID_ATTR, ""))
        mlflow.log_dict({"number": best.number, "value": best.value, "params": best.params,
                         "run_id": best.user_attrs.get(RUN_ID_ATTR)}, "best_trial.json")
    for name, fig in _figures(study).items():
        mlflow.log_figure(fig, name)
        plt.close(fig)
    return summary
