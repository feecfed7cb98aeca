"""Optuna studies over each kind's search space; every trial a nested MLflow run of `train_run`.

`tune(config, settings)` is the entry point the CLI and MLproject call; the modules below it:
`space` (what is searched), `study` (storage, sampler, pruner), `objective` (one trial),
`report` (progress lines, the parent run's summary and plots).
"""
from __future__ import annotations

from aeservice.tuning.runner import TuneResult, TuneSettings, tune
from aeservice.tuning.space import OPTION_PARAMS, parse_ranges, search_space
from aeservice.tuning.study import PRUNERS, default_storage

__all__ = ["tune", "TuneSettings", "TuneResult", "OPTION_PARAMS", "PRUNERS", "parse_ranges",
           "search_space", "default_storage"]
