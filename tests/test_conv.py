"""Convolutional nets (--arch conv): every kind fits, saves without pickles, answers from numpy
plans that match Keras (odd sizes and colour included), trains on either backend and serves
through the same pyfunc (one real server, on the backend the model was not trained on)."""
from __future__ import annotations

import json
import re
import subprocess
import urllib.request

import keras
import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import BIN, served, small_config, subprocess_env

from aeservice.cli import aeservice_command
from aeservice.config import ModelConfig
from aeservice.errors import UserError
from aeservice.models import build_model, load_model
from aeservice.models.keras_base import infer
from aeservice.models.plan import dense_plan
from aeservice.sizes import resolve_arch, resolve_sizes
from aeservice.training import fit_and_evaluate, prepare

HERE = keras.backend.backend()
OTHER = "tensorflow" if HERE != "tensorflow" else "jax"
SMALL_CONV = dict(arch="conv", hidden=(16, 32), epochs=60, restarts=1)  # digits 8x8: maps of 4x4, then 2x2


@pytest.mark.parametrize("shape", [(28, 28), (9, 7), (5, 6, 3)], ids=["28x28", "odd-9x7", "rgb-5x6x3"])
@pytest.mark.parametrize("kind", ["ae", "vae"])
def test_conv_nets_have_numpy_plans_that_match_keras(kind, shape):
    n_features = int(np.prod(shape))
    model = build_model(ModelConfig(model=kind, arch="conv", latent_dim=3), "image")
    model.image_shape_, model.n_features_, model.latent_dim_ = shape, n_features, 3
    model.sizes_ = resolve_sizes(model.config, 700, "image", 0.0, True, shape)
    model._build()
    rng = np.random.default_rng(0)
    for net, width in ((model.encoder_, n_features), (model.decoder_, 3)):
        for layer in net.layers:  # biases away from zero, so a misplaced one shows
            weights = layer.get_weights()
            if len(weights) == 2:
                layer.set_weights([weights[0], rng.uniform(-0.5, 0.5, weights[1].shape).astype("float32")])
        x = rng.random((20, width)).astype("float32")
        plan = dense_plan(net)
        assert plan is not None
        assert {op for op, _ in plan.ops.values()} >= {"reshape", "flatten", "conv" if width == n_features else "deconv"}
        want, got = infer(net, x), plan(x)
        for a, b in zip(want if isinstance(want, list) else [want], got if isinstance(got, list) else [got]):
            assert a.shape == b.shape
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    assert model.decoder_.outputs[0].shape[-1] == n_features  # cropped back to the image


@pytest.mark.parametrize("kind", ["ae", "sparse", "vae"])
def test_a_conv_model_fits_saves_without_pickles_and_answers_without_keras(kind, tmp_path):
    latent = 8 if kind == "sparse" else 2  # a ReLU code of 2 units needs more epochs to beat PCA
    result = fit_and_evaluate(prepare(small_config(kind, latent_dim=latent, **SMALL_CONV)))
    model = result.model
    assert model.sizes_.arch == "conv" and model.kept_ == "restart 1", model.kept_  # beat PCA on digits
    assert result.metrics["explained_variance"] > 0.3
    assert model.serves_on_numpy()
    path = model.save(tmp_path / "model")
    assert not [p.name for p in path.iterdir() if p.suffix in (".pkl", ".pickle", ".joblib")]
    loaded = load_model(path)
    x = prepare(small_config(kind)).split.test[:9]
    assert loaded.sizes_.arch == "conv" and loaded.image_shape_ == (8, 8)
    assert not any(loaded.nets_.is_deserialized(name) for name in ("encoder", "decoder"))  # plans only
    for method in ("encode", "reconstruct", "score"):
        np.testing.assert_allclose(getattr(loaded, method)(x), getattr(model, method)(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loaded.sample(5, seed=2), model.sample(5, seed=2), rtol=1e-5, atol=1e-6)


def test_auto_arch_is_dense_and_conv_needs_images_of_known_shape():
    config = ModelConfig(model="ae")
    assert resolve_arch(config, "image", (28, 28)) == "dense"
    assert resolve_arch(config, "continuous", None) == "dense"
    assert resolve_arch(ModelConfig(model="ae", arch="conv"), "image", (8, 8)) == "conv"
    assert resolve_arch(ModelConfig(model="ae", arch="dense"), "image", (28, 28)) == "dense"
    with pytest.raises(UserError, match="--arch conv needs images"):
        resolve_arch(ModelConfig(model="ae", arch="conv"), "continuous", None)


def test_arch_conv_on_rows_that_are_not_images_is_a_one_line_error(tracking_uri):
    out = CliRunner().invoke(aeservice_command, ["train", "--model", "ae", "--dataset", "curve3d", "--arch", "conv", "--quiet"])
    assert out.exit_code != 0
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and "--arch conv needs images" in lines[0] and "Traceback" not in out.output
    assert not mlflow.search_runs(search_all_experiments=True).shape[0]  # no run was started


def _post(url: str, payload: dict) -> np.ndarray:
    request = urllib.request.Request(f"{url}/invocations", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return np.asarray(json.loads(response.read())["predictions"])


def test_a_conv_model_trained_on_the_other_backend_serves_here(tracking_uri, tmp_path):
    env = subprocess_env(tracking_uri)
    out = subprocess.run([str(BIN / "aeservice"), "train", "--model", "vae", "--arch", "conv", "--hidden", "16,32",
                          "--epochs", "8", "--restarts", "1", "--quiet"], env={**env, "KERAS_BACKEND": OTHER},
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    run_id = re.search(r"runs:/(\w+)/model", out.stdout).group(1)
    run = mlflow.get_run(run_id)
    assert run.data.tags["backend"] == OTHER and run.data.params["arch_used"] in ("conv", "dense")
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model").unwrap_python_model().model
    x = prepare(small_config("vae")).split.test[:6]
    for name in ("encoder", "decoder"):  # the nets as Keras here compute what their plans compute
        net = model.nets_.keras_net(name)
        inputs = model.scaler_.transform(x) if name == "encoder" else np.random.default_rng(1).standard_normal((6, 2))
        want, got = infer(net, inputs), model.nets_.plan(name)(inputs)
        for a, b in zip(want if isinstance(want, list) else [want], got if isinstance(got, list) else [got]):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    env.pop("KERAS_BACKEND", None)
    with served(f"runs:/{run_id}/model", {**env, "KERAS_BACKEND": HERE}, tmp_path / "serve.log") as url:
        answers = {
            "encode": (_post(url, {"inputs": x.tolist()}), model.encode(x)),
            "decode": (_post(url, {"inputs": model.encode(x).tolist(), "params": {"method": "decode"}}),
                       model.decode(model.encode(x))),
            "reconstruct": (_post(url, {"dataframe_split": {"data": x.tolist()}, "params": {"method": "reconstruct"}}),
                            model.reconstruct(x)),
            "sample": (_post(url, {"inputs": [[0]], "params": {"method": "sample", "n": 3, "seed": 4}}),
                       model.sample(3, seed=4)),
            "score": (_post(url, {"instances": x.tolist(), "params": {"method": "score"}}), model.score(x)),
        }
    for method, (got, want) in answers.items():
        assert got.shape == want.shape, method
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=method)
