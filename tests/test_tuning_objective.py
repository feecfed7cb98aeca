"""One trial (aeservice.tuning.objective) on real SQLite stores: a poor trial is pruned and its run
killed; a diverging one fails and the study goes on."""
from __future__ import annotations

import mlflow
import optuna
import pytest
from conftest import by_trial, child_runs, tiny_tune_config

from aeservice.tuning import TuneSettings, tune


@pytest.mark.parametrize("pruner", ["median", "asha"])
def test_a_poor_trial_is_pruned_and_its_run_killed(stores, pruner):
    storage = stores["optuna"]
    fixed = ("latent_dim", "hidden", "weight_decay")
    settings = TuneSettings(n_trials=2, storage=storage, study_name="prune", fixed=fixed, pruner=pruner,
                            ranges={"learning_rate": (1e-7, 1e-1)}, prune_startup_trials=1, prune_warmup_epochs=1)
    # Make the study first and queue a fast learner, then one that barely moves: the median pruner
    # (one complete trial suffices here) stops the second after its first epoch, and so does ASHA
    # (the second trial is not in the best third of those that reached that epoch).
    study = optuna.create_study(study_name="prune", storage=storage)
    study.enqueue_trial({"learning_rate": 3e-2})
    study.enqueue_trial({"learning_rate": 1e-7})
    result = tune(tiny_tune_config(epochs=4), settings, progress=False)

    study = optuna.load_study(study_name="prune", storage=storage)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]
    assert (result.n_complete, result.n_pruned, result.n_failed) == (1, 1, 0)
    pruned = by_trial(child_runs(result.parent_run_id))[1]
    assert pruned.info.status == "KILLED" and pruned.data.tags["optuna.state"] == "PRUNED"
    steps = mlflow.MlflowClient().get_metric_history(pruned.info.run_id, "val_loss")
    assert len(steps) < 4  # Keras stopped when the callback raised
    assert "val_mse" not in pruned.data.metrics


def test_a_diverging_trial_fails_and_the_study_goes_on(stores):
    storage = stores["optuna"]
    settings = TuneSettings(n_trials=2, storage=storage, study_name="nan", pruner="none",
                            fixed=("latent_dim", "hidden", "weight_decay"), ranges={"learning_rate": (1e-4, 1e12)})
    study = optuna.create_study(study_name="nan", storage=storage)
    study.enqueue_trial({"learning_rate": 1e11})  # loss turns NaN in the first epoch
    study.enqueue_trial({"learning_rate": 1e-3})
    result = tune(tiny_tune_config(epochs=2), settings, progress=False)

    study = optuna.load_study(study_name="nan", storage=storage)
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]
    assert "diverged" in study.trials[0].user_attrs["fail_reason"]
    runs = by_trial(child_runs(result.parent_run_id))
    assert runs[0].info.status == "FAILED" and runs[0].data.tags["optuna.state"] == "FAIL"
    assert runs[1].info.status == "FINISHED"
    assert result.best_trial_number == 1 and result.n_failed == 1
    assert mlflow.get_run(result.parent_run_id).info.status == "FINISHED"
