#!/usr/bin/env python
"""A small client for an aeservice model served by `mlflow models serve`. Copy it freely.

    python scripts/client.py rows.csv                          # encode (the default method)
    python scripts/client.py --method score rows.csv           # one anomaly score per row
    python scripts/client.py --method detect rows.csv          # 1 for an outlier, 0 otherwise
    python scripts/client.py --method decode codes.npy         # latent rows back to data
    cat rows.csv | python scripts/client.py --method reconstruct -
    python scripts/client.py --method sample --n 16 --seed 7   # no input needed
    python scripts/client.py --method info                     # what the model is: widths, kind (JSON)

Input: a CSV file (an optional header line, then numeric rows), a .npy file, or `-` for CSV on
stdin. Output: CSV rows (or one number per line for score) on stdout; errors on stderr, exit 1.
Needs only the standard library (and numpy for .npy files).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import urllib.error
import urllib.request

METHODS = ("encode", "decode", "reconstruct", "sample", "score", "detect", "info")
NO_INPUT = ("sample", "info")  # these ignore their input rows


def read_rows(source: str) -> list[list[float]]:
    """Rows of numbers from a CSV file, a .npy file, or '-' (CSV on stdin); a header is skipped."""
    if source.endswith(".npy"):
        import numpy as np

        array = np.load(source, allow_pickle=False)
        return (array.reshape(1, -1) if array.ndim == 1 else array).tolist()
    try:
        text = sys.stdin.read() if source == "-" else open(source, newline="").read()
    except OSError as exc:
        raise SystemExit(f"Error: {exc}") from None
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    start = 1 if rows and not _numeric(rows[0]) else 0  # a header line
    try:
        return [[float(v) for v in row] for row in rows[start:]]
    except ValueError as exc:
        raise SystemExit(f"Error: {source}: {exc}") from None


def _numeric(row: list[str]) -> bool:
    try:
        [float(v) for v in row]
        return True
    except ValueError:
        return False


def invoke(url: str, rows: list[list[float]], method: str = "encode", n: int | None = None,
           seed: int | None = None, timeout: float = 60, threshold: float | None = None) -> list:
    """POST rows to URL/invocations and return the predictions; raises RuntimeError on an error reply."""
    given = {"n": n, "seed": seed, "threshold": threshold}
    params = {"method": method, **{k: v for k, v in given.items() if v is not None}}
    body = json.dumps({"inputs": rows, "params": params}).encode()
    request = urllib.request.Request(url.rstrip("/") + "/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())["predictions"]
    except urllib.error.HTTPError as err:
        reply = err.read().decode(errors="replace")
        try:
            reply = json.loads(reply).get("message", reply)
        except ValueError:
            pass
        raise RuntimeError(f"HTTP {err.code}: {reply}") from None
    except urllib.error.URLError as err:
        raise RuntimeError(f"cannot reach {url}: {err.reason}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", nargs="?", help="CSV or .npy file, or - for CSV on stdin (not needed for sample)")
    parser.add_argument("--url", default="http://127.0.0.1:5000", help="server address (default: %(default)s)")
    parser.add_argument("--method", choices=METHODS, default="encode", help="default: %(default)s")
    parser.add_argument("--n", type=int, help="sample: how many rows (default 10, at most 10000)")
    parser.add_argument("--seed", type=int, help="sample: seed of the draws (default 0)")
    parser.add_argument("--threshold", type=float, help="detect: flag scores above this (default: the model's)")
    args = parser.parse_args(argv)
    if args.method in NO_INPUT:
        rows = [[0.0]]
    elif args.input is None:
        parser.error(f"{args.method} needs an input file (or - for stdin)")
    else:
        rows = read_rows(args.input)
    try:
        predictions = invoke(args.url, rows, args.method, args.n, args.seed, threshold=args.threshold)
    except RuntimeError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    if isinstance(predictions, dict):  # info
        print(json.dumps(predictions))
        return 0
    writer = csv.writer(sys.stdout, lineterminator="\n")
    for row in predictions:
        writer.writerow(row if isinstance(row, list) else [row])
    return 0


if __name__ == "__main__":
    sys.exit(main())
