"""The `aeservice` group and its console script: every command is there, and exit codes survive the quick exit."""
from __future__ import annotations

import os
import subprocess

import pytest
from conftest import BIN, subprocess_env

from aeservice.cli import aeservice_command


def test_the_group_has_every_command():
    assert set(aeservice_command.commands) == {"train", "datasets", "main", "tune", "compare", "register"}


@pytest.mark.skipif(os.name != "posix", reason="the console script's quick exit is checked on POSIX")
def test_console_script_exit_codes(tracking_uri):
    env = subprocess_env(tracking_uri)
    env.pop("KERAS_BACKEND", None)
    bad = subprocess.run([str(BIN / "aeservice"), "train", "--epochs", "0"], env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.strip() == "Error: epochs must be at least 1, got 0"
    usage = subprocess.run([str(BIN / "aeservice"), "train", "--model", "nope"], env=env, capture_output=True)
    assert usage.returncode == 2
    ok = subprocess.run([str(BIN / "aeservice"), "datasets"], env=env, capture_output=True, text=True)
    assert ok.returncode == 0 and "digits" in ok.stdout
