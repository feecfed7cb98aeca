"""How a command fails: bad input is one line and exit code 1, Ctrl-C exit code 130."""
from __future__ import annotations

import functools
import sys
from typing import Callable

import click

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
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper
