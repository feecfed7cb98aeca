"""Environments MLflow builds itself: the project's python_env.yaml, and a logged model served
with `--env-manager uv` from nothing but its own slim requirements."""
from __future__ import annotations

import json
import urllib.request

import mlflow
from conftest import REPO, served, small_config, subprocess_env
from mlflow.projects._project_spec import load_project

from aeservice.tracking import train_run
from aeservice.training import prepare


def test_the_project_environment_installs_this_project():
    project = load_project(str(REPO))
    assert project.env_type == "python_env" and project.env_config_path == str(REPO / "python_env.yaml")
    from mlflow.utils.environment import _PythonEnv

    env = _PythonEnv.from_yaml(project.env_config_path)
    assert env.dependencies == ["."]  # pyproject.toml's dependencies, resolved by uv or pip
    assert env.python.split(".")[0] == "3"


def test_a_model_served_with_uv_builds_an_environment_without_keras(module_tracking_uri, tmp_path):
    run_id, _ = train_run(prepare(small_config("vae", dataset="curve3d", epochs=2, hidden=(16,))))
    env = subprocess_env(module_tracking_uri)
    env.pop("PYTHONPATH")  # the server's environment has only what the model's requirements install
    log = tmp_path / "serve-uv.log"
    with served(f"runs:/{run_id}/model", env, log, timeout=600, env_manager="uv") as url:
        body = json.dumps({"inputs": [[0.5, -1.0]], "params": {"method": "decode"}}).encode()
        request = urllib.request.Request(f"{url}/invocations", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            decoded = json.loads(response.read())["predictions"]
    assert len(decoded) == 1 and len(decoded[0]) == 3
    text = log.read_text()
    assert "aeservice vae model loaded" in text and "not imported" in text, text[-2000:]
    path = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model/requirements.txt")
    assert not any(line.startswith(("keras", "jax", "tensorflow")) for line in open(path).read().split())
