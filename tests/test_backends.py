"""Backends: the fastest installed one is the default, KERAS_BACKEND overrides it, and a model
trained on one backend loads and serves on the other (one real server, on the other backend)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request

import keras
import mlflow
import numpy as np
import pytest
from conftest import BIN, served, small_config, subprocess_env

from aeservice.backend import default_backend
from aeservice.models.keras_base import infer
from aeservice.tracking import train_run
from aeservice.training import prepare

HERE = keras.backend.backend()
OTHER = "tensorflow" if HERE != "tensorflow" else "jax"
_ASK = "import aeservice, keras, sys; print(keras.backend.backend(), 'tensorflow' in sys.modules)"


def _env(tracking_uri: str, backend: str | None) -> dict[str, str]:
    env = subprocess_env(tracking_uri)
    env.pop("KERAS_BACKEND", None)
    if backend:
        env["KERAS_BACKEND"] = backend
    return env


def test_default_is_the_fastest_installed_and_the_variable_overrides_it(tracking_uri):
    def ask(backend):
        out = subprocess.run([sys.executable, "-c", _ASK], env=_env(tracking_uri, backend), capture_output=True,
                             text=True, check=True).stdout.split()
        return out[0], out[1] == "True"

    assert ask(None) == (default_backend(), default_backend() == "tensorflow")
    assert ask("tensorflow")[0] == "tensorflow"
    if default_backend() != "tensorflow":
        assert ask(None)[1] is False, "TensorFlow was imported although another backend runs"


@pytest.mark.skipif(default_backend() == "tensorflow", reason="TensorFlow is the default backend here")
def test_seeding_and_saving_a_net_leave_tensorflow_unimported(tracking_uri, tmp_path):
    """Keras imports TensorFlow on any backend when it seeds or saves, unless told it is absent
    (aeservice.models.keras_patch); this fails if a Keras upgrade moved what the patch sets."""
    code = ("import sys\nimport aeservice\nfrom aeservice.models.keras_base import keras_module\n"
            "keras = keras_module()\nkeras.utils.set_random_seed(0)\n"
            "x = keras.Input((3,))\nnet = keras.Model(x, keras.layers.Dense(2)(x))\n"
            f"net.save({str(tmp_path / 'net.keras')!r})\n"
            "print(keras.backend.backend(), 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env=_env(tracking_uri, None), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [default_backend(), "False"]


def test_a_model_trained_on_the_other_backend_loads_here_and_matches_keras(tracking_uri):
    out = subprocess.run([str(BIN / "aeservice"), "train", "--model", "vae", "--epochs", "2", "--hidden", "16",
                          "--quiet"], env=_env(tracking_uri, OTHER), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    run_id = re.search(r"runs:/(\w+)/model", out.stdout).group(1)
    assert mlflow.get_run(run_id).data.tags["backend"] == OTHER
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model").unwrap_python_model().model
    x = model.scaler_.transform(prepare(small_config("vae")).split.test[:7])
    # The nets loaded on this backend compute what numpy computes from the saved weights.
    assert model.nets_.planned() == {"encoder": True, "decoder": True}
    for name, inputs in (("encoder", x), ("decoder", np.random.default_rng(0).standard_normal((7, 2)))):
        keras_out, plan_out = infer(model.nets_.keras_net(name), inputs), model.nets_.plan(name)(inputs)
        for a, b in zip(keras_out if isinstance(keras_out, list) else [keras_out],
                        plan_out if isinstance(plan_out, list) else [plan_out]):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_a_model_trained_here_serves_on_the_other_backend(tracking_uri, tmp_path):
    prepared = prepare(small_config("vae", epochs=2, hidden=(16,)))
    run_id, result = train_run(prepared)
    x = prepared.split.test[:4]
    log = tmp_path / "serve.log"
    with served(f"runs:/{run_id}/model", _env(tracking_uri, OTHER), log) as url:
        answers = {}
        for method in ("encode", "reconstruct"):
            body = json.dumps({"inputs": x.tolist(), "params": {"method": method}}).encode()
            request = urllib.request.Request(f"{url}/invocations", data=body,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=60) as response:
                answers[method] = np.asarray(json.loads(response.read())["predictions"])
    assert f"model loaded (Keras backend {OTHER}, " in log.read_text()
    np.testing.assert_allclose(answers["encode"], result.model.encode(x), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(answers["reconstruct"], result.model.reconstruct(x), rtol=1e-4, atol=1e-4)



def test_a_k_sparse_code_trains_on_the_other_backend_and_its_plan_matches(tracking_uri, tmp_path):
    """TopK (top_k, one_hot) in a training graph of the other backend, saved, loaded and planned there."""
    code = ("import numpy as np\nfrom aeservice.models.keras_base import infer, keras_module\n"
            "from aeservice.models.layers import TopK\nfrom aeservice.models.plan import dense_plan\n"
            "keras = keras_module()\nrows = np.random.default_rng(0).standard_normal((64, 6)).astype('float32')\n"
            "x = keras.Input((6,), name='x')\nz = TopK(2, name='top_k')(keras.layers.Dense(8, 'relu', name='code')(x))\n"
            "net = keras.Model(x, keras.layers.Dense(6, name='out')(z))\nnet.compile('adam', 'mse')\n"
            "net.fit(rows, rows, epochs=2, batch_size=16, verbose=0)\n"
            f"keras.Model(x, z).save({str(tmp_path / 'encoder.keras')!r})\n"
            f"encoder = keras.saving.load_model({str(tmp_path / 'encoder.keras')!r})\n"
            "codes = infer(encoder, rows)\nassert (np.count_nonzero(codes, axis=1) <= 2).all()\n"
            "assert np.allclose(dense_plan(encoder)(rows), codes, atol=1e-5)\nprint(keras.backend.backend())")
    out = subprocess.run([sys.executable, "-c", code], env=_env(tracking_uri, OTHER), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] == OTHER
