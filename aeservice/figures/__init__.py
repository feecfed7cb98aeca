"""Matplotlib figures of fitted models, with no MLflow in them: what the tracking code logs.

`run` draws the figures each training run logs (`write_figures`); `comparison` puts several
models of one data set side by side for `aeservice compare`. Neither is imported here, so
importing the package does not start matplotlib.
"""
__all__ = ["run", "comparison"]
