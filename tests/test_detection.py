"""Anomaly detection: the score in scaled units, `detect` and its threshold, the labelled metrics
`train` logs, and a label column that is not an outlier flag refused in one line."""
from __future__ import annotations

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import run_statuses

from aeservice.cli import aeservice_command
from aeservice.config import DataConfig, ModelConfig, TrainConfig
from aeservice.errors import UserError
from aeservice.leaderboard import rank
from aeservice.models import load_model
from aeservice.serving.methods import run_method
from aeservice.training import fit_and_evaluate, fit_rows, prepare


def _rows(n: int = 400, seed: int = 0) -> np.ndarray:
    """Points near a line in 3-D, one feature in units a thousand times the others'."""
    rng = np.random.default_rng(seed)
    t = rng.standard_normal(n)
    x = np.c_[t, 2 * t, -t] + 0.1 * rng.standard_normal((n, 3))
    return x * np.array([1.0, 1.0, 1000.0])


def _pca(contamination: float | None = None):
    config = TrainConfig(model=ModelConfig(model="pca", latent_dim=1, contamination=contamination))
    return fit_rows(config, _rows())


def test_score_is_the_squared_error_per_feature_in_scaled_units_over_its_training_mean():
    model, x = _pca(), _rows(50, seed=1)
    errors = ((x - model.reconstruct(x)) / model.scaler_.scale_) ** 2
    np.testing.assert_allclose(model.score(x), np.mean(errors / model.error_scale_, axis=1), rtol=1e-9)
    assert model.score(_rows()).mean() == pytest.approx(1.0, abs=0.1)  # about 1 on rows like the training ones
    # whatever units a feature is in, the scores are the same: the 1000-unit feature does not outweigh the rest
    units = np.array([1.0, 1.0, 1e-3])
    rescaled = fit_rows(TrainConfig(model=ModelConfig(model="pca", latent_dim=1)), _rows() * units)
    np.testing.assert_allclose(rescaled.score(x * units), model.score(x), rtol=1e-6)


@pytest.mark.parametrize("contamination", [None, 0.25])
def test_detect_flags_the_contamination_share_of_the_training_rows(contamination, tmp_path):
    model = _pca(contamination)
    x = _rows()
    share = contamination or 0.1  # PyOD's default
    # fit_rows trains on the rows it does not hold out for validation (15%): those set the threshold
    assert abs(model.detect(x).mean() - share) < 0.03
    np.testing.assert_array_equal(model.detect(x), (model.score(x) > model.threshold_).astype(int))
    loaded = load_model(model.save(tmp_path / "m"))
    assert loaded.threshold_ == model.threshold_ and loaded.info()["threshold"] == model.threshold_
    np.testing.assert_array_equal(loaded.detect(x), model.detect(x))


def test_detect_takes_a_threshold_per_call_and_refuses_a_bad_one():
    model, x = _pca(), _rows(40, seed=2)
    scores = np.sort(model.score(x))
    middle = float((scores[9] + scores[10]) / 2)  # 30 rows score above it
    got = run_method(model, x, {"method": "detect", "threshold": middle})
    assert got.sum() == 30 and set(np.unique(got)) == {0, 1}
    assert run_method(model, x, {"method": "detect"}).tolist() == model.detect(x).tolist()
    assert run_method(model, x, {"method": "detect", "threshold": scores[-1] + 1}).sum() == 0
    with pytest.raises(UserError, match="param 'threshold' must be a number"):
        run_method(model, x, {"method": "detect", "threshold": "high"})
    model.threshold_ = None  # a model saved before thresholds were: only a given one works
    with pytest.raises(UserError, match="saved without a detection threshold"):
        model.detect(x)
    assert model.detect(x, threshold=middle).sum() == 30


def _labelled_csv(tmp_path, labels) -> str:
    """Inliers near a line, every tenth row far off it, with a label column."""
    x = _rows(300, seed=3)
    odd = np.arange(len(x)) % 10 == 0
    x[odd] += np.array([3.0, -3.0, 0.0]) * x.std(axis=0)
    column = np.where(odd, labels[1], labels[0])
    path = tmp_path / f"outliers-{labels[1]}.csv"
    lines = ["a,b,c,label"] + [f"{r[0]},{r[1]},{r[2]},{c}" for r, c in zip(x, column)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _train(*args: str):
    return CliRunner().invoke(aeservice_command, ["train", "--model", "pca", "--latent-dim", "1", "--quiet",
                                                  "--experiment", "detection", *args])


def test_train_logs_detection_metrics_of_a_0_1_label_column(tracking_uri, tmp_path):
    result = _train("--dataset", _labelled_csv(tmp_path, (0, 1)), "--label-column", "label")
    assert result.exit_code == 0, result.output
    [run] = mlflow.search_runs(experiment_names=["detection"], output_format="list")
    metrics = run.data.metrics
    assert metrics["test_roc_auc"] > 0.95 and metrics["test_average_precision"] > 0.8, metrics
    assert 0.5 < metrics["test_detect_recall"] <= 1 and 0.5 < metrics["test_detect_precision"] <= 1, metrics
    assert "test_roc_auc" in result.output


def _prepared(path: str, **data):
    config = TrainConfig(DataConfig(dataset=path, label_column="label", **data), ModelConfig(model="pca", latent_dim=1))
    return prepare(config)


def test_an_outlier_label_names_the_outlier_class(tmp_path):
    path = _labelled_csv(tmp_path, ("normal", "odd"))
    assert _prepared(path).test_flags is None  # text labels, no --outlier-label: for plots only, no metrics
    prepared = _prepared(path, outlier_label="odd")
    assert set(prepared.test_flags) == {0, 1}
    np.testing.assert_array_equal(prepared.test_flags, prepared.split.test_labels == "odd")
    metrics = fit_and_evaluate(prepared).metrics
    assert metrics["test_roc_auc"] > 0.95 and 0.5 < metrics["test_detect_recall"] <= 1, metrics
    assert "test_roc_auc" not in fit_and_evaluate(_prepared(path)).metrics


def test_a_label_column_that_is_no_outlier_flag_is_one_line_when_detection_is_asked(tracking_uri, tmp_path,
                                                                                    monkeypatch):
    monkeypatch.setenv("AESERVICE_TRACKING_WORKER", "0")  # refused before any run: no worker to fork for it
    path = _labelled_csv(tmp_path, ("normal", "odd"))
    for args, message in (
            (["--contamination", "0.1"], "label column 'label' is not a 0/1 outlier flag (values include normal, "
                                         "odd); give --outlier-label VALUE to name the outlier class"),
            (["--outlier-label", "weird"], "--outlier-label 'weird' is not a value of label column 'label'")):
        result = _train("--dataset", path, "--label-column", "label", *args)
        assert result.exit_code == 1, result.output
        assert result.output.strip().splitlines()[-1] == f"Error: {message}"
        assert "Traceback" not in result.output
    numeric = _labelled_csv(tmp_path, (0, 1))
    result = _train("--dataset", numeric, "--outlier-label", "1")  # no --label-column: the flag is a feature
    assert result.exit_code == 1 and "--outlier-label needs labels" in result.output, result.output
    tuned = CliRunner().invoke(aeservice_command, ["tune", "--model", "pca", "--dataset", path, "--label-column",
                                                   "label", "--objective", "test_roc_auc", "--n-trials", "1"])
    assert tuned.exit_code == 1 and "is not a 0/1 outlier flag" in tuned.output, tuned.output
    assert run_statuses() == []  # refused before any run started


def test_the_leaderboard_ranks_by_a_detection_metric_highest_first():
    def row(kind, auc, mse):
        return {"kind": kind, "dataset": "d", "val_mse": mse, "test_mse": mse, "test_roc_auc": auc}

    rows = [row("pca", 0.7, 0.1), row("ae", 0.9, 0.3), row("vae", None, 0.2)]
    assert [r["kind"] for r in rank(rows, all_runs=True, metric="test_roc_auc")] == ["ae", "pca", "vae"]
    assert [r["kind"] for r in rank(rows, all_runs=True)] == ["pca", "vae", "ae"]  # test_mse, lowest first
    with pytest.raises(UserError, match="unknown metric 'auc'"):
        rank(rows, metric="auc")
