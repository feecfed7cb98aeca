"""A tracking server that stops answering: one clear line per retry instead of urllib3's.

The MLflow client already retries every REST call whose connection fails or whose answer is a
5xx/429, with exponential backoff: `MLFLOW_HTTP_REQUEST_MAX_RETRIES` (7) attempts,
`MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR` (2) seconds doubling, each sleep at most 120 s: about
four minutes in all, after which the call raises and the command ends with one `MLflow:` line.
So a tracking server restarted within that bound costs a wait, not a trial. urllib3 logs each
retry as a long warning naming its internal Retry object; `announce_retries()` turns those
into one line that names the server and the bound, printed on stderr (urllib3 gives its logger
a NullHandler, so without this nothing at all says why a command is waiting).
"""
from __future__ import annotations

import logging
import os
import re
import sys

__all__ = ["announce_retries", "RetryLine"]

_RETRY = re.compile(r"Retrying \(.*?total=(\d+).*?\) after connection broken by '(.*?)': (\S+)", re.S)


class RetryLine(logging.Filter):
    """Rewrites urllib3's "Retrying (Retry(total=6, ...)) after connection broken by ..." records."""

    def __init__(self, server: str):
        super().__init__()
        self.server = server

    def filter(self, record: logging.LogRecord) -> bool:
        match = _RETRY.search(record.getMessage())
        if match is None:
            return True
        left, cause, path = int(match.group(1)), match.group(2), match.group(3)
        total = int(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7"))
        reason = "connection refused" if "refused" in cause.lower() else cause.split("(")[0] or "no answer"
        record.msg = (f"tracking server {self.server} not answering ({reason} on {path.split('?')[0]}); "
                      f"retry {max(total - left, 1)} of {total} (MLFLOW_HTTP_REQUEST_MAX_RETRIES)")
        record.args = ()
        record.aeservice_retry = True
        return True


def announce_retries(tracking_uri: str) -> None:
    """For an http(s) tracking URI: urllib3's retry warnings become `RetryLine`s (installed once)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    log = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, RetryLine) for f in log.filters):
        log.addFilter(RetryLine(tracking_uri))
        handler = logging.StreamHandler(sys.stderr)
        handler.addFilter(lambda record: getattr(record, "aeservice_retry", False))
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
