"""`register`: a run's model as a new registered version, with the champion/challenger aliases."""
from __future__ import annotations

import click

from aeservice.cli.errors import user_errors

__all__ = ["register"]


@click.command()
@click.option("--run-id", required=True, help="The training run whose logged model (runs:/ID/model) to register.")
@click.option("--name", required=True, help="Registered model name, e.g. digits-vae.")
@click.option("--force", type=click.BOOL, is_flag=False, flag_value=True, default=False, show_default=True,
              help="Make the version champion even if its interface, data or val_mse says no (bare flag or true/false).")
@user_errors
def register(run_id: str, name: str, force: bool) -> None:
    """Register a run's model as a new version; move the challenger and champion aliases.

    challenger always moves to the new version. champion moves to it when it is the first version,
    or when it has the champion's interface (kind, input width, data kind, image shape, code size),
    was trained on the same data and has a lower val_mse; --force moves it anyway. A run that
    already is a version is not registered again. Serve the best with
    `mlflow models serve -m models:/NAME@champion --env-manager local`.
    """
    from aeservice.registry import register_run

    for line in register_run(run_id, name, force=force).lines():
        click.echo(line)
