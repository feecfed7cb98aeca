"""The `aeservice` command: options in, configs built, the layers below called. Nothing imports it.

One module per command group: `train` (train, datasets), `tune`, `pipeline` (main), `compare`
and `register`; `options` makes the options `train` and `tune` share from the config fields,
and `errors` turns bad input into one line. Heavy imports (Keras and its backend, MLflow, Optuna)
happen inside the commands, so `--help` and `datasets` are quick.
"""
from __future__ import annotations

import os
import sys

import click

from aeservice.cli import compare, pipeline, register, train, tune  # the command modules

__all__ = ["aeservice_command", "run_and_exit"]

# The Keras backend and TensorFlow's log level are set by importing aeservice (aeservice.backend).
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@click.group("aeservice", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="aeservice")
def aeservice_command() -> None:
    """Train, tune, compare, register and serve autoencoders, tracked in MLflow.

    Runs go to MLFLOW_TRACKING_URI, or to the embedded default sqlite:///mlflow.db in the
    current folder. See `aeservice COMMAND --help` for each command.
    """


for _command in (train.train, train.datasets, pipeline.pipeline, tune.tune, compare.compare, register.register):
    aeservice_command.add_command(_command)


def run_and_exit() -> None:
    """The console script: `aeservice_command`, then a quick exit once everything is written.

    After a train, interpreter teardown (finalising Keras, JAX/XLA, MLflow and SQLAlchemy
    modules) takes over a second, and nothing is left to write by then: runs have ended
    (their metrics written) and files are closed. So exit hooks run, streams are
    flushed, and the process ends without the module teardown. Tests call `aeservice_command`
    in-process.
    """
    import atexit
    import logging

    try:
        aeservice_command(prog_name="aeservice")
        code = 0
    except SystemExit as exc:
        code = exc.code
    atexit._run_exitfuncs()
    logging.shutdown()
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)  # sys.exit("message") convention
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
