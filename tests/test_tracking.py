"""One MLflow run per training, on a real SQLite store; the logged pyfunc in a fresh process."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import mlflow
import numpy as np
import pytest
from conftest import small_config

from aeservice.models import MODELS
from aeservice.tracking import EpochMetrics, train_run
from aeservice.training import prepare

PLOTS = {"loss_curves", "latent_space", "latent_sweep", "reconstructions", "samples"}


@pytest.fixture(scope="module")
def runs(module_tracking_uri):
    out = {}
    for kind in MODELS:
        prepared = prepare(small_config(kind, dataset="digits"))
        run_id, result = train_run(prepared)
        out[kind] = (run_id, result, prepared)
    return out


@pytest.mark.parametrize("kind", tuple(MODELS))
def test_run_has_params_tags_metrics_plots_and_input(runs, kind):
    run_id, result, prepared = runs[kind]
    run = mlflow.get_run(run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    for key, value in prepared.config.flatten().items():
        assert params[key] == str(value)
    assert run.data.tags["model"] == kind and run.data.tags["dataset"] == "digits"
    assert run.data.tags["backend"] == os.environ["KERAS_BACKEND"]
    metrics = run.data.metrics
    for name in ("val_mse", "test_mse", "explained_variance"):
        assert metrics[name] == pytest.approx(result.metrics[name])
    assert ("test_elbo" in metrics) == (kind == "vae")
    client = mlflow.MlflowClient()
    history = client.get_metric_history(run_id, "val_loss")
    expected_epochs = 1 if kind == "pca" else prepared.config.model.epochs
    assert [m.step for m in history] == list(range(expected_epochs))
    terms = {"vae": {"recon", "kl"}, "sparse": {"recon", "sparsity"}}.get(kind, {"recon"})
    for term in terms:
        assert client.get_metric_history(run_id, term) and client.get_metric_history(run_id, f"val_{term}")
    plots = {a.path.split("/")[-1].removesuffix(".png") for a in client.list_artifacts(run_id, "plots")}
    assert plots == PLOTS
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["digits"]
    assert params.get("epochs_trained") == (None if kind == "pca" else str(len(history)))
    # the MLflow UI opens the experiment on its training runs, not on the GenAI overview
    experiment = mlflow.MlflowClient().get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def _required(run_id: str) -> set[str]:
    path = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model/requirements.txt")
    return {line.split("==")[0] for line in open(path).read().split() if line and not line.startswith("#")}


@pytest.mark.parametrize("kind", tuple(MODELS))
def test_a_model_that_runs_on_its_numpy_plans_requires_no_keras_to_serve(runs, kind):
    assert _required(runs[kind][0]) == {"mlflow", "numpy", "pandas", "scikit-learn", "threadpoolctl"}


def test_a_model_without_plans_requires_keras_and_its_backend(runs):
    from aeservice.tracking import log_model, mlflow_run

    _, result, prepared = runs["ae"]
    result.model.nets_.unfreeze()  # as a net no numpy plan reproduces would leave it
    try:
        with mlflow_run("no-plans") as run:
            log_model(result.model, prepared.split.test[:3])
    finally:
        result.model.freeze()
    backend = {"jax": {"jax", "jaxlib"}}.get(os.environ["KERAS_BACKEND"], {os.environ["KERAS_BACKEND"]})
    assert _required(run.info.run_id) >= {"mlflow", "numpy", "keras", *backend}


def test_an_experiment_kind_already_set_is_kept(tracking_uri):
    from aeservice.tracking import mlflow_run

    experiment_id = mlflow.create_experiment("chat", tags={"mlflow.experimentKind": "genai_development"})
    with mlflow_run("chat"):
        pass
    assert mlflow.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "genai_development"


@pytest.mark.parametrize("kind", tuple(MODELS))
def test_a_logged_model_says_what_it_is(runs, kind):
    """`info` through the pyfunc as loaded from the store: what a client needs before decode or sample."""
    run_id, result, prepared = runs[kind]
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    info = model.predict(np.zeros((1, 1)), params={"method": "info"})
    assert {k: info[k] for k in ("kind", "n_features", "latent_dim", "data_kind", "image_shape")} == {
        "kind": kind, "n_features": 64, "latent_dim": 2, "data_kind": "image", "image_shape": [8, 8]}
    code = model.predict(prepared.split.test[:3], params={"method": "encode"})
    assert code.shape == (3, info["latent_dim"])


_FRESH = """
import json, sys, numpy as np, mlflow
out = {}
for kind, uri in json.loads(sys.argv[1]).items():
    m = mlflow.pyfunc.load_model(uri)
    x = np.array(json.loads(sys.argv[2]))
    z = m.predict(x)
    out[kind] = {
        "encode": z.tolist(),
        "decode": m.predict(z, params={"method": "decode"}).tolist(),
        "reconstruct": m.predict(x, params={"method": "reconstruct"}).tolist(),
        "sample": m.predict(np.array([[0.0]]), params={"method": "sample", "n": 3, "seed": 4}).tolist(),
        "score": np.asarray(m.predict(x, params={"method": "score"})).tolist(),
    }
print("RESULT" + json.dumps(out))
"""


def test_logged_models_serve_all_methods_in_a_fresh_process(runs, module_tracking_uri):
    uris = {kind: f"runs:/{run_id}/model" for kind, (run_id, _, _) in runs.items()}
    x = runs["ae"][2].split.test[:4]
    proc = subprocess.run([sys.executable, "-c", _FRESH, json.dumps(uris), json.dumps(x.tolist())],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    for kind, (_, result, _) in runs.items():
        model, got = result.model, out[kind]
        np.testing.assert_allclose(got["encode"], model.encode(x), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got["decode"], model.decode(model.encode(x)), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got["reconstruct"], model.reconstruct(x), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got["sample"], model.sample(3, seed=4), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got["score"], model.score(x), rtol=1e-5, atol=1e-5)


def test_epoch_metrics_are_batched_and_all_arrive(tracking_uri):
    """One SQLite commit per epoch cost more than a fused epoch: metrics wait, then all land."""
    client = mlflow.MlflowClient()
    mlflow.set_experiment("batched")
    with mlflow.start_run() as run:
        epochs = EpochMetrics()
        epochs.FLUSH_SECONDS = 3600.0
        for epoch in range(5):
            epochs(epoch, {"loss": 1.0 / (epoch + 1), "val_loss": 2.0})
        assert epochs.pending and client.get_metric_history(run.info.run_id, "loss") == []
        epochs.flush()
        assert not epochs.pending
        history = client.get_metric_history(run.info.run_id, "loss")
        assert [(m.step, m.value) for m in history] == [(e, 1.0 / (e + 1)) for e in range(5)]
        epochs.FLUSH_SECONDS = 0.0  # due at once: written by the call itself
        epochs(5, {"loss": 0.1})
        assert len(client.get_metric_history(run.info.run_id, "loss")) == 6 and not epochs.pending


def test_logging_and_serving_a_saved_model_imports_neither_keras_nor_its_backend(tmp_path):
    """The tracking worker and the model server load models from their saved numpy plans."""
    from aeservice.training import fit_and_evaluate

    prepared = prepare(small_config("vae", epochs=2, hidden=(16,)))
    path = fit_and_evaluate(prepared).model.save(tmp_path / "vae")
    code = ("import sys, numpy as np\n"
            "import aeservice.tracking.runs, aeservice.training, aeservice.serving.pyfunc_model\n"
            "from aeservice.models import load_model\nfrom aeservice.serving.methods import prepare_for_serving\n"
            f"model = load_model({str(path)!r})\nprint(prepare_for_serving(model))\n"
            "print(model.encode(np.zeros((3, model.n_features_))).shape)\n"
            "print(sorted(m for m in ('keras', 'jax', 'tensorflow', 'torch') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[:3] == ["{'encoder_': True, 'decoder_': True}", "(3, 2)", "[]"]
