"""How a command fails: bad input is one line and exit code 1, Ctrl-C exit code 130, SIGTERM 143."""
from __future__ import annotations

import functools
import sys
from typing import Callable

import click

from aeservice import signals
from aeservice.backend import import_tensorflow_quietly
from aeservice.errors import UserError

__all__ = ["user_errors"]


def user_errors(func: Callable) -> Callable:
    """Bad input ends the command with one line and exit code 1, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        import_tensorflow_quietly()
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            raise click.ClickException(str(exc)) from None
        except Exception as exc:
            mlflow_errors = sys.modules.get("mlflow.exceptions")  # not imported just to check
            if mlflow_errors and isinstance(exc, mlflow_errors.MlflowException):
                raise click.ClickException(f"MLflow: {exc.message.splitlines()[0]}") from None
            raise
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM as signals.Terminated
            click.echo(signals.stop_message(exc), err=True)
            sys.exit(signals.exit_code(exc))

    return signals.sigterm_raises(wrapper)
