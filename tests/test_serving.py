"""One real `mlflow models serve` of models:/NAME@champion: every method, every input format,
bad requests answered with 400 and a message that names the problem, and the Python client."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, served, small_config, subprocess_env

from aeservice.models import Autoencoder
from aeservice.registry import register_run
from aeservice.serving.methods import MAX_SAMPLES
from aeservice.tracking import train_run
from aeservice.training import prepare

NAME = "serving-vae"
JSON = "application/json"
CSV = "text/csv"


@dataclass
class Server:
    url: str
    model: Autoencoder  # the in-process twin of what the server loaded
    x: np.ndarray  # a few test rows in user units
    log: Path


@pytest.fixture(scope="module")
def server(module_tracking_uri, tmp_path_factory):
    prepared = prepare(small_config("vae", epochs=3, hidden=(16,)))
    run_id, result = train_run(prepared)
    register_run(run_id, NAME)
    log = tmp_path_factory.mktemp("server") / "serve.log"
    with served(f"models:/{NAME}@champion", subprocess_env(module_tracking_uri), log) as url:
        yield Server(url, result.model, prepared.split.test[:5], log)


def _post(server: Server, body: str | bytes, content_type: str = JSON) -> tuple[int, dict]:
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(f"{server.url}/invocations", data=data, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _columns(width: int) -> list[str]:
    return [f"c{i}" for i in range(width)]


def _body(fmt: str, rows: np.ndarray, params: dict | None) -> tuple[str, str]:
    """The same rows in each of MLflow's input formats."""
    rows = np.asarray(rows).tolist()
    extra = {"params": params} if params else {}
    cols = _columns(len(rows[0]))
    if fmt == "inputs":
        return json.dumps({"inputs": rows, **extra}), JSON
    if fmt == "instances":
        return json.dumps({"instances": rows, **extra}), JSON
    if fmt == "dataframe_split":
        return json.dumps({"dataframe_split": {"columns": cols, "data": rows}, **extra}), JSON
    if fmt == "dataframe_split_no_columns":
        return json.dumps({"dataframe_split": {"data": rows}, **extra}), JSON
    if fmt == "dataframe_records":
        return json.dumps({"dataframe_records": [dict(zip(cols, row)) for row in rows], **extra}), JSON
    if fmt == "csv":
        assert not params, "CSV bodies carry no params"
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(cols)
        writer.writerows(rows)
        return text.getvalue(), CSV
    raise AssertionError(fmt)


JSON_FORMATS = ["inputs", "instances", "dataframe_split", "dataframe_split_no_columns", "dataframe_records"]


def _expected(server: Server, method: str) -> tuple[np.ndarray, dict | None, np.ndarray]:
    """(request rows, params, what the in-process model returns)."""
    m, x = server.model, server.x
    return {
        "encode": (x, None, m.encode(x)),
        "decode": (m.encode(x), {"method": "decode"}, m.decode(m.encode(x))),
        "reconstruct": (x, {"method": "reconstruct"}, m.reconstruct(x)),
        "sample": (np.zeros((1, 1)), {"method": "sample", "n": 4, "seed": 3}, m.sample(4, seed=3)),
        "score": (x, {"method": "score"}, m.score(x)),
    }[method]


@pytest.mark.parametrize("fmt", JSON_FORMATS)
@pytest.mark.parametrize("method", ["encode", "decode", "reconstruct", "sample", "score"])
def test_every_method_in_every_json_format(server, method, fmt):
    rows, params, want = _expected(server, method)
    status, out = _post(server, *_body(fmt, rows, params))
    assert status == 200, out
    got = np.asarray(out["predictions"])
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_csv_body_is_encoded(server):
    """A CSV body has a header line and no params, so it gets the default method, encode."""
    status, out = _post(server, *_body("csv", server.x, None))
    assert status == 200, out
    np.testing.assert_allclose(out["predictions"], server.model.encode(server.x), rtol=1e-4, atol=1e-4)


def test_explicit_encode_and_the_default_agree(server):
    _, default = _post(server, *_body("inputs", server.x, None))
    _, explicit = _post(server, *_body("inputs", server.x, {"method": "encode"}))
    assert default == explicit and np.asarray(default["predictions"]).shape == (len(server.x), 2)


def test_sample_is_seeded_and_bounded(server):
    def sample(**params):
        status, out = _post(server, json.dumps({"inputs": [[0]], "params": {"method": "sample", **params}}))
        assert status == 200, out
        return np.asarray(out["predictions"])

    a, b, c = sample(n=5, seed=11), sample(n=5, seed=11), sample(n=5, seed=12)
    assert a.shape == (5, server.model.n_features_)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert sample(seed=0).shape[0] == 10  # the default n
    assert sample(n=MAX_SAMPLES).shape[0] == MAX_SAMPLES  # the documented bound itself is allowed


def test_detect_flags_rows_above_the_trained_threshold_or_the_one_a_call_gives(server):
    m, x = server.model, server.x
    status, out = _post(server, *_body("inputs", x, {"method": "detect"}))
    assert status == 200, out
    assert out["predictions"] == (m.score(x) > m.threshold_).astype(int).tolist()
    scores = np.sort(m.score(x))
    middle = float((scores[1] + scores[2]) / 2)  # three of the five rows score above it
    for fmt in ("inputs", "dataframe_split"):
        status, out = _post(server, *_body(fmt, x, {"method": "detect", "threshold": middle}))
        assert status == 200, out
        assert out["predictions"] == (m.score(x) > middle).astype(int).tolist() and sum(out["predictions"]) == 3
    status, out = _post(server, *_body("inputs", x, {"method": "score"}))  # score stays the raw score
    np.testing.assert_allclose(out["predictions"], m.score(x), rtol=1e-4, atol=1e-4)
    status, out = _post(server, *_body("inputs", x, {"method": "detect", "threshold": "high"}))
    assert status == 400 and "threshold" in out["message"], out


def test_info_says_what_the_model_is_before_any_decode(server):
    """A client reads the widths first, then calls decode and sample with them."""
    status, out = _post(server, json.dumps({"inputs": [[0]], "params": {"method": "info"}}))
    assert status == 200, out
    info = out["predictions"]
    assert {k: info[k] for k in ("kind", "n_features", "latent_dim", "data_kind", "image_shape")} == {
        "kind": "vae", "n_features": 64, "latent_dim": 2, "data_kind": "image", "image_shape": [8, 8]}
    assert info["methods"] == ["encode", "decode", "reconstruct", "sample", "score", "detect", "info"]
    assert info["threshold"] == pytest.approx(server.model.threshold_)  # what detect flags above
    status, out = _post(server, json.dumps({"inputs": [[0.0] * info["latent_dim"]], "params": {"method": "decode"}}))
    assert status == 200 and np.asarray(out["predictions"]).shape == (1, info["n_features"])
    proc = _client(server, "--method", "info")
    assert proc.returncode == 0 and json.loads(proc.stdout) == info


def _too_wide_csv() -> str:
    return "a,b,c\n1,2,3\n"


BAD_REQUESTS = [
    # (id, body, content type, words the message must contain)
    ("too-few-columns", json.dumps({"inputs": [[1, 2, 3]]}), JSON, ["data rows must have 64 column(s)", "(1, 3)"]),
    ("too-many-columns-split", json.dumps({"dataframe_split": {"data": [list(range(65))]}}), JSON,
     ["must have 64 column(s)"]),
    ("wrong-width-csv", _too_wide_csv(), CSV, ["must have 64 column(s)"]),
    ("non-numeric-inputs", json.dumps({"inputs": [[1, "a"] + [0] * 62]}), JSON, ["non-numeric"]),
    ("non-numeric-split", json.dumps({"dataframe_split": {"columns": ["a", "b"], "data": [[1, "x"]]}}), JSON,
     ["non-numeric values in column(s) b"]),
    ("non-numeric-csv", "a,b\n1,x\n", CSV, ["non-numeric values in column(s) b"]),
    ("nan", '{"inputs": [[NaN' + ", 0" * 63 + "]]}", JSON, ["NaN or infinite"]),
    ("infinity", '{"inputs": [[Infinity' + ", 0" * 63 + "]]}", JSON, ["NaN or infinite"]),
    ("overflow", json.dumps({"inputs": [[1e300] * 64]}), JSON, ["non-finite values", "too large"]),
    ("null", json.dumps({"inputs": [[None] + [0] * 63]}), JSON, ["NaN or infinite"]),
    ("missing-record-field", json.dumps({"dataframe_records": [{"a": 1, "b": 2}, {"a": 3}]}), JSON,
     ["NaN or infinite"]),
    ("empty-inputs", json.dumps({"inputs": []}), JSON, ["input is empty"]),
    ("empty-row", json.dumps({"inputs": [[]]}), JSON, ["input is empty"]),
    ("csv-header-only", "a,b,c\n", CSV, ["input is empty", "header line"]),
    ("three-dimensions", json.dumps({"inputs": [[[1, 2], [3, 4]]]}), JSON, ["2-D"]),
    ("named-inputs", json.dumps({"inputs": {"a": [[1]], "b": [[2]]}}), JSON, ["one unnamed tensor"]),
    ("unknown-method", json.dumps({"inputs": [[0]], "params": {"method": "nope"}}), JSON,
     ["unknown method 'nope'", "encode, decode, reconstruct, sample, score"]),
    ("method-not-a-string", json.dumps({"inputs": [[0]], "params": {"method": 3}}), JSON, ["'method'", "string"]),
    ("n-text", json.dumps({"inputs": [[0]], "params": {"method": "sample", "n": "abc"}}), JSON, ["'n'", "long"]),
    ("n-fraction", json.dumps({"inputs": [[0]], "params": {"method": "sample", "n": 1.5}}), JSON, ["'n'", "long"]),
    ("n-zero", json.dumps({"inputs": [[0]], "params": {"method": "sample", "n": 0}}), JSON,
     [f"param 'n' must be between 1 and {MAX_SAMPLES}, got 0"]),
    ("n-too-big", json.dumps({"inputs": [[0]], "params": {"method": "sample", "n": MAX_SAMPLES + 1}}), JSON,
     [f"param 'n' must be between 1 and {MAX_SAMPLES}"]),
    ("seed-negative", json.dumps({"inputs": [[0]], "params": {"method": "sample", "seed": -1}}), JSON,
     ["param 'seed' must be between 0 and"]),
    ("seed-text", json.dumps({"inputs": [[0]], "params": {"method": "sample", "seed": "x"}}), JSON, ["'seed'"]),
    ("decode-wrong-width", json.dumps({"inputs": [[0, 1, 2]], "params": {"method": "decode"}}), JSON,
     ["latent rows must have 2 column(s)"]),
    ("score-wrong-width", json.dumps({"inputs": [[0, 1]], "params": {"method": "score"}}), JSON,
     ["must have 64 column(s)"]),
    ("ragged-rows", json.dumps({"inputs": [[1, 2], [3]]}), JSON, ["inhomogeneous"]),
    ("invalid-json", '{"inputs": [[0', JSON, ["valid JSON"]),
]


@pytest.mark.parametrize("body, content_type, words", [b[1:] for b in BAD_REQUESTS], ids=[b[0] for b in BAD_REQUESTS])
def test_bad_request_is_a_400_that_names_the_problem(server, body, content_type, words):
    status, out = _post(server, body, content_type)
    assert status == 400, out
    message = out.get("message", "")
    for word in words:
        assert word in message, message
    assert "unexpected error" not in message
    # and the server keeps serving
    status, out = _post(server, *_body("inputs", server.x[:1], None))
    assert status == 200 and len(out["predictions"]) == 1


def test_our_messages_are_not_buried_under_the_input(server):
    """MLflow prefixes predict errors with a dump of the input; ours stay one clean line."""
    status, out = _post(server, json.dumps({"inputs": np.ones((50, 3)).tolist()}))
    assert status == 400
    assert out["message"] == "data rows must have 64 column(s), got shape (50, 3)"


def test_server_is_healthy_after_the_bad_requests(server):
    with urllib.request.urlopen(f"{server.url}/ping", timeout=5) as response:
        assert response.status == 200
    status, out = _post(server, *_body("inputs", server.x, {"method": "score"}))
    assert status == 200 and len(out["predictions"]) == len(server.x)


# ---- the fast path: numpy plans of frozen Keras nets ---------------------------------------------------
@pytest.mark.parametrize("kind", ["ae", "sparse", "vae"])
def test_frozen_model_runs_numpy_plans_that_match_keras(kind, tmp_path):
    from aeservice.models import load_model
    from aeservice.serving.methods import prepare_for_serving, run_method
    from aeservice.training import fit_and_evaluate

    prepared = prepare(small_config(kind, epochs=2, hidden=(16, 8)))
    path = fit_and_evaluate(prepared).model.save(tmp_path / kind)
    keras_model, frozen = load_model(path), load_model(path)
    keras_model.nets_.unfreeze()  # every call through the Keras nets
    assert keras_model.nets_.planned() == {"encoder": False, "decoder": False}
    assert prepare_for_serving(frozen) == {"encoder_": True, "decoder_": True}
    x = prepared.split.test[:20]
    z = keras_model.encode(x)
    for method, rows, params in (("encode", x, {}), ("decode", z, {}), ("reconstruct", x, {}), ("score", x, {}),
                                 ("sample", [[0]], {"n": 7, "seed": 2})):
        want = run_method(keras_model, rows, {"method": method, **params})
        got = run_method(frozen, rows, {"method": method, **params})
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=method)


def test_a_loaded_model_answers_from_its_saved_plans_and_a_tampered_plan_falls_back_to_keras(tmp_path):
    from aeservice.models import load_model
    from aeservice.training import fit_and_evaluate

    prepared = prepare(small_config("vae", epochs=2, hidden=(16, 8)))
    trained = fit_and_evaluate(prepared).model
    path = trained.save(tmp_path / "vae")
    x = prepared.split.test[:9]

    with np.load(path / "plans.npz") as saved:  # the saved format, which models saved earlier have too
        keys = set(saved.files)
        layouts = {name: json.loads(str(saved[f"{name}_layout"])) for name in ("encoder", "decoder")}
    expected_keys = set()
    for name, layout in layouts.items():
        assert set(layout) == {"input", "outputs", "steps"}
        expected_keys |= {f"{name}_layout", f"{name}_probe"}
        expected_keys |= {f"{name}_expected_{j}" for j in range(len(layout["outputs"]))}
        for i, (_, _, _, has_bias) in enumerate(layout["steps"]):
            expected_keys |= {f"{name}_{i}_kernel"} | ({f"{name}_{i}_bias"} if has_bias else set())
    assert keys == expected_keys and len(layouts["encoder"]["outputs"]) == 2  # the VAE's mean and log-variance

    loaded = load_model(path)
    assert loaded.freeze() == {"encoder_": True, "decoder_": True}
    np.testing.assert_allclose(loaded.reconstruct(x), trained.reconstruct(x), rtol=1e-5, atol=1e-6)
    # no Keras net deserialized
    assert not loaded.nets_.is_deserialized("encoder") and not loaded.nets_.is_deserialized("decoder")
    resaved = load_model(loaded.save(tmp_path / "again"))  # the files as read, plans and all
    np.testing.assert_allclose(resaved.encode(x), trained.encode(x), rtol=1e-5, atol=1e-6)
    code = ("import sys, numpy as np\nfrom aeservice.models import load_model\n"  # and all of it without Keras
            f"model = load_model({str(path)!r})\nx = np.load({str(tmp_path / 'x.npy')!r})\n"
            "out = [model.encode(x), model.decode(model.encode(x)), model.reconstruct(x), model.score(x), model.sample(3, 1)]\n"
            f"again = load_model(model.save({str(tmp_path / 'third')!r}))\n"
            "np.testing.assert_array_equal(again.reconstruct(x), out[2])\n"
            "print(model.freeze(), sorted(m for m in ('keras', 'jax', 'tensorflow', 'torch') if m in sys.modules))")
    np.save(tmp_path / "x.npy", x)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "{'encoder_': True, 'decoder_': True} []"

    with np.load(path / "plans.npz") as saved:  # a plan whose weights no longer match the saved answers
        arrays = {k: saved[k] for k in saved.files}
    arrays["decoder_0_kernel"] = arrays["decoder_0_kernel"] + 0.5
    np.savez(path / "plans.npz", **arrays)
    fallback = load_model(path)
    assert fallback.nets_.is_deserialized("decoder")  # the check failed: the Keras net was loaded and planned afresh
    assert not fallback.nets_.is_deserialized("encoder")  # its plan passed: that net stays a file
    assert fallback.freeze() == {"encoder_": True, "decoder_": True}
    np.testing.assert_allclose(fallback.reconstruct(x), trained.reconstruct(x), rtol=1e-5, atol=1e-6)

    (path / "plans.npz").unlink()  # as saved before plans were: Keras nets, planned at load
    older = load_model(path)
    assert older.nets_.is_deserialized("encoder") and older.freeze() == {"encoder_": True, "decoder_": True}
    np.testing.assert_allclose(older.reconstruct(x), trained.reconstruct(x), rtol=1e-5, atol=1e-6)


def test_nets_with_other_layers_get_no_plan_and_plain_ones_match():
    import keras

    from aeservice.models.layers import gelu_tanh
    from aeservice.models.plan import dense_plan

    def net(*middle):
        x = keras.Input((5,))
        h = keras.layers.Dense(4, activation="relu")(x)
        for layer in middle:
            h = layer(h)
        return keras.Model(x, keras.layers.Dense(3, activation="sigmoid")(h))

    assert dense_plan(net(keras.layers.Dropout(0.5))) is None
    assert dense_plan(net(keras.layers.BatchNormalization())) is None
    assert dense_plan(net(keras.layers.Dense(4, activation="selu"))) is None  # not in ACTIVATIONS
    x = 3 * np.random.default_rng(0).standard_normal((9, 5)).astype("float32")
    for activation in ("tanh", gelu_tanh, "elu", "silu"):  # every hidden activation --activation offers
        plain = net(keras.layers.Dense(6, activation=activation, use_bias=False))
        np.testing.assert_allclose(dense_plan(plain)(x), keras.ops.convert_to_numpy(plain(x)), rtol=1e-5, atol=1e-6,
                                   err_msg=activation)


# ---- the copy-paste client in scripts/ --------------------------------------------------------------
CLIENT = REPO / "scripts" / "client.py"


def _client(server: Server, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CLIENT), "--url", server.url, *args], input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_client_encodes_a_csv_file_and_stdin(server, tmp_path):
    path = tmp_path / "rows.csv"
    np.savetxt(path, server.x, delimiter=",", header=",".join(_columns(server.x.shape[1])), comments="")
    proc = _client(server, "--method", "encode", str(path))
    assert proc.returncode == 0, proc.stderr
    got = np.loadtxt(io.StringIO(proc.stdout), delimiter=",", ndmin=2)
    np.testing.assert_allclose(got, server.model.encode(server.x), rtol=1e-4, atol=1e-4)
    proc = _client(server, "--method", "score", "-", stdin=path.read_text())
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(np.loadtxt(io.StringIO(proc.stdout)), server.model.score(server.x), rtol=1e-4,
                               atol=1e-4)


def test_client_reads_npy_and_samples(server, tmp_path):
    path = tmp_path / "z.npy"
    z = server.model.encode(server.x)
    np.save(path, z)
    proc = _client(server, "--method", "decode", str(path))
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(np.loadtxt(io.StringIO(proc.stdout), delimiter=",", ndmin=2),
                               server.model.decode(z), rtol=1e-4, atol=1e-4)
    proc = _client(server, "--method", "sample", "--n", "3", "--seed", "5")
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(np.loadtxt(io.StringIO(proc.stdout), delimiter=",", ndmin=2),
                               server.model.sample(3, seed=5), rtol=1e-4, atol=1e-4)


def test_client_reports_a_bad_request_in_one_line(server, tmp_path):
    path = tmp_path / "narrow.csv"
    path.write_text("a,b\n1,2\n")
    proc = _client(server, "--method", "encode", str(path))
    assert proc.returncode == 1
    assert proc.stderr.strip() == "Error: HTTP 400: data rows must have 64 column(s), got shape (1, 2)"
