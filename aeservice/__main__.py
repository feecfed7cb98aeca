"""`python -m aeservice` is the `aeservice` command (MLproject uses it, so no install is needed)."""
from aeservice.cli import run_and_exit

run_and_exit()
