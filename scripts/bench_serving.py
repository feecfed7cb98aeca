#!/usr/bin/env python
"""Latency of a served aeservice model against the floor of the same server stack.

Starts two `mlflow models serve --env-manager local` processes on 127.0.0.1, one after the
other, timing each from its start to its first answered request: the model (default
models:/NAME@champion) and a pyfunc that does no work and answers with arrays of the same shape
and JSON size (scripts/floor_pyfunc.py). For each method and for 1 and 1000 rows it
sends the same `inputs` JSON requests to both, one at a time over a kept-alive connection, in
alternating blocks (so load from other processes hits both alike), and prints p50/p99 latency
and requests per second as a markdown table. Bounded request counts; stops both servers itself.

    MLFLOW_TRACKING_URI=sqlite:///mlflow.db python scripts/bench_serving.py --name digits-vae

Under load (`--concurrency N`): for 1 and 2 server workers (`mlflow models serve --workers`),
N client threads, each with its own kept-alive connection, send `--requests` requests in all to
the floor and to the model (in 4 alternating rounds), for each `--load-methods` method and `--load-rows` size; every
request is timed, every non-200 answer or failed connection counted as an error, and the table
gives req/s (requests / wall time), p50/p99 latency, the model's req/s over the floor's, and errors.

    MLFLOW_TRACKING_URI=sqlite:///mlflow.db python scripts/bench_serving.py --name digits-vae --concurrency 16
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

METHODS = ("encode", "decode", "reconstruct", "sample", "score")
HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(model_uri: str, log: Path, workers: int = 1) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    bin_dir = Path(sys.executable).parent  # uvicorn lives next to this python
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    with open(log, "w") as out:
        proc = subprocess.Popen([str(bin_dir / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager",
                                 "local", "-h", "127.0.0.1", "-p", str(port), "--workers", str(workers)],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, port


def _wait(proc: subprocess.Popen, port: int, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/ping")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"server on port {port} did not start within {timeout} s; see {log}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # its own process group: the mlflow CLI and its uvicorn
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


class _Client:
    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def post(self, body: bytes) -> float:
        start = time.perf_counter()
        self.conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
        response = self.conn.getresponse()
        payload = response.read()
        elapsed = time.perf_counter() - start
        if response.status != 200:
            raise SystemExit(f"HTTP {response.status}: {payload[:500]!r}")
        return elapsed


def _requests(model, rows: int) -> dict[str, bytes]:
    """One request body per method: `rows` data rows (or latent rows, or n for sample)."""
    x = np.round(model.sample(rows, seed=1), 3)  # rows in the data's own units, as a user sends them
    z = np.round(model.encode(x), 4)
    bodies = {}
    for method in METHODS:
        data = {"decode": z, "sample": np.zeros((1, 1))}.get(method, x)
        params = {"method": method, **({"n": rows, "seed": 7} if method == "sample" else {})}
        bodies[method] = json.dumps({"inputs": data.tolist(), "params": params}).encode()
    return bodies


def _floor_model(model, folder: Path, max_rows: int) -> Path:
    """Save the floor pyfunc with the model's own outputs as the arrays it slices."""
    import mlflow

    from aeservice.tracking import SIGNATURE

    x = model.sample(max_rows, seed=1)
    outputs = {"encode": model.encode(x), "decode": model.decode(model.encode(x)), "reconstruct": model.reconstruct(x),
               "sample": model.sample(max_rows, seed=7), "score": model.score(x)}
    np.savez(folder / "outputs.npz", **outputs)
    path = folder / "floor"
    mlflow.pyfunc.save_model(path=str(path), python_model=str(HERE / "floor_pyfunc.py"),
                             artifacts={"outputs": str(folder / "outputs.npz")}, signature=SIGNATURE,
                             pip_requirements=["mlflow", "numpy"])
    return path


def _stats(times: list[float]) -> tuple[float, float, float]:
    ms = np.asarray(times) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), float(len(ms) / np.sum(ms) * 1e3)


def _load(port: int, body: bytes, concurrency: int, total: int) -> tuple[list[float], int, float]:
    """`total` requests from `concurrency` threads, each over its own connection: (latencies, errors, wall s)."""
    lock, times, errors, left = threading.Lock(), [], [0], [total]

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                if left[0] == 0:
                    break
                left[0] -= 1
            start = time.perf_counter()
            try:
                conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            elapsed = time.perf_counter() - start
            with lock:
                if ok:
                    times.append(elapsed)
                else:
                    errors[0] += 1
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return times, errors[0], time.perf_counter() - start


_ROUNDS = 4


def _under_load(model, uri: str, floor_path: Path, folder: Path, args) -> None:
    """The --concurrency table: per server worker count, method and rows, floor then model."""
    rows_out = []
    for workers in args.server_workers:
        servers = {}
        try:
            for label, served in (("floor", str(floor_path)), ("model", uri)):
                log = folder / f"{label}-{workers}w.log"
                servers[label] = proc, port = _serve(served, log, workers)
                _wait(proc, port, log, args.startup_timeout)
            print(f"{workers} worker(s): measuring {args.concurrency} clients", file=sys.stderr)
            for rows in args.load_rows:
                bodies = _requests(model, rows)
                for method in args.load_methods:
                    result = {label: ([], 0, 0.0) for label in servers}
                    for label, (_, port) in servers.items():
                        _load(port, bodies[method], args.concurrency, 4 * args.concurrency)  # warm-up: every worker
                    for part in range(_ROUNDS):  # alternating rounds: load from other processes hits both alike
                        for label, (_, port) in servers.items():
                            count = args.requests // _ROUNDS + (part < args.requests % _ROUNDS)
                            times, errors, wall = _load(port, bodies[method], args.concurrency, count)
                            have = result[label]
                            result[label] = (have[0] + times, have[1] + errors, have[2] + wall)
                    rows_out.append((workers, method, rows, result))
                    print(f"  {method} x{rows} done", file=sys.stderr)
        finally:
            for proc, _ in servers.values():
                _stop(proc)
    print(f"\n{uri} vs the floor under load: `mlflow models serve --workers W`, {args.concurrency} client threads "
          f"with a kept-alive connection each, {args.requests} `inputs` JSON requests per line and server\n")
    print("| workers | method | rows | floor req/s | model req/s | req/s ratio | floor p50 ms | model p50 ms "
          "| floor p99 ms | model p99 ms | errors (floor / model) |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for workers, method, rows, result in rows_out:
        (ft, fe, fw), (mt, me, mw) = result["floor"], result["model"]
        f50, f99 = (np.percentile(np.asarray(ft) * 1e3, q) for q in (50, 99)) if ft else (float("nan"),) * 2
        m50, m99 = (np.percentile(np.asarray(mt) * 1e3, q) for q in (50, 99)) if mt else (float("nan"),) * 2
        frps, mrps = len(ft) / fw, len(mt) / mw
        print(f"| {workers} | {method} | {rows} | {frps:.0f} | {mrps:.0f} | {mrps / frps:.2f}x | {f50:.1f} | {m50:.1f} "
              f"| {f99:.1f} | {m99:.1f} | {fe} / {me} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", help="registered model name; serves models:/NAME@champion")
    parser.add_argument("--model-uri", help="any model URI instead of --name (e.g. runs:/ID/model)")
    parser.add_argument("--small", type=int, default=300, help="requests per method with 1 row, per server")
    parser.add_argument("--large", type=int, default=60, help="requests per method with 1000 rows, per server")
    parser.add_argument("--block", type=int, default=10, help="requests in a row before switching server")
    parser.add_argument("--startup-timeout", type=float, default=300)
    parser.add_argument("--concurrency", type=int, default=0,
                        help="N parallel clients instead of the sequential table (0: sequential)")
    parser.add_argument("--requests", type=int, default=800, help="with --concurrency: requests per line and server")
    parser.add_argument("--server-workers", type=lambda t: [int(v) for v in t.split(",")], default=[1, 2],
                        help="with --concurrency: `mlflow models serve --workers` values, comma-separated")
    parser.add_argument("--load-methods", type=lambda t: t.split(","), default=["score", "encode"],
                        help="with --concurrency: methods, comma-separated")
    parser.add_argument("--load-rows", type=lambda t: [int(v) for v in t.split(",")], default=[1, 100],
                        help="with --concurrency: rows per request, comma-separated")
    args = parser.parse_args()
    if not (args.name or args.model_uri):
        parser.error("give --name or --model-uri")
    uri = args.model_uri or f"models:/{args.name}@champion"

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import mlflow

    print(f"loading {uri} to build request bodies and the floor's outputs", file=sys.stderr)
    model = mlflow.pyfunc.load_model(uri).unwrap_python_model().model
    sizes = {1: args.small, 1000: args.large}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        floor_path = _floor_model(model, folder, max(*sizes, *args.load_rows))
        if args.concurrency > 0:
            _under_load(model, uri, floor_path, folder, args)
            return
        servers = {}
        try:
            first_body, first_answer = _requests(model, 1)["encode"], {}
            for label, served in (("floor", str(floor_path)), ("model", uri)):  # one at a time: start-up alone
                start = time.perf_counter()
                servers[label] = proc, port = _serve(served, folder / f"{label}.log")
                _wait(proc, port, folder / f"{label}.log", args.startup_timeout)
                _Client(port).post(first_body)
                first_answer[label] = time.perf_counter() - start
            print(f"serving {uri} and the floor; measuring", file=sys.stderr)
            clients = {label: _Client(port) for label, (_, port) in servers.items()}
            rows_out = []
            for rows, count in sizes.items():
                bodies = _requests(model, rows)
                for method in METHODS:
                    times: dict[str, list[float]] = {"floor": [], "model": []}
                    for label in clients:  # warm-up, not counted
                        for _ in range(3):
                            clients[label].post(bodies[method])
                    while len(times["model"]) < count:
                        block = min(args.block, count - len(times["model"]))
                        for label, client in clients.items():
                            times[label] += [client.post(bodies[method]) for _ in range(block)]
                    rows_out.append((method, rows, _stats(times["floor"]), _stats(times["model"]), count))
                    print(f"  {method} x{rows} done", file=sys.stderr)
        finally:
            for proc, _ in servers.values():
                _stop(proc)
    print(f"\n{uri} vs the floor: `mlflow models serve`, 1 worker, `inputs` JSON, "
          "sequential requests over one kept-alive connection\n")
    print(f"time to first answer (`mlflow models serve` started -> first encode answered): model "
          f"{first_answer['model']:.1f} s, floor {first_answer['floor']:.1f} s\n")
    print("| method | rows | requests | floor p50 ms | model p50 ms | p50 ratio | floor p99 ms | model p99 ms "
          "| floor req/s | model req/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for method, rows, (f50, f99, frps), (m50, m99, mrps), count in rows_out:
        print(f"| {method} | {rows} | {count} | {f50:.2f} | {m50:.2f} | {m50 / f50:.2f}x | {f99:.2f} | {m99:.2f} "
              f"| {frps:.0f} | {mrps:.0f} |")


if __name__ == "__main__":
    main()
