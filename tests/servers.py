"""Real servers for the many-machines tests: a throw-away PostgreSQL cluster and an `mlflow server`.

`PostgresCluster` runs `initdb` in a fresh temp folder and `postgres` on a free loopback port.
`initdb` refuses to run as root, so as root the cluster belongs to an unprivileged user (the
`postgres` user the server package makes, else `nobody`) and its commands run as that user
through `runuser` (or `setpriv`); as anyone else they run directly. `TrackingServer` is
`mlflow server` with its backend store on that cluster and proxied artifacts in a temp folder.
Both stop and start again on the same port, for the fault tests, and remove their folders at the end.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from conftest import _wait_until_up

__all__ = ["postgres_bin", "PostgresCluster", "TrackingServer", "free_port"]

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server binaries (initdb, pg_ctl, postgres), or None."""
    candidates = [os.environ.get("AESERVICE_PG_BIN", "")]
    found = shutil.which("pg_ctl")
    if found:
        candidates.append(str(Path(os.path.realpath(found)).parent))
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for folder in candidates:
        if folder and all((Path(folder) / tool).exists() for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    return None


def _owner() -> pwd.struct_passwd | None:
    """The unprivileged user that owns the cluster when this process is root; None: this user."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and no unprivileged user (postgres, nobody) to own the cluster")


class PostgresCluster:
    """initdb + postgres on 127.0.0.1:<free port>, trust authentication, user `postgres`."""

    def __init__(self, bindir: Path):
        self.bindir, self.owner = bindir, _owner()
        self.folder = Path(tempfile.mkdtemp(prefix="aeservice-pg-"))  # under /tmp: the owner can reach it
        self.data, self.log = self.folder / "data", self.folder / "postgres.log"
        self.port = free_port()
        if self.owner is not None:
            os.chown(self.folder, self.owner.pw_uid, self.owner.pw_gid)
        self._as_owner("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")

    def _as_owner(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bindir / tool), *args]
        if self.owner is not None:
            if shutil.which("runuser"):
                command = ["runuser", "-u", self.owner.pw_name, "--", *command]
            else:
                command = ["setpriv", f"--reuid={self.owner.pw_uid}", f"--regid={self.owner.pw_gid}",
                           "--init-groups", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=self.folder)
        if check and done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
        return done

    def start(self) -> None:
        options = f"-p {self.port} -h 127.0.0.1 -k {self.folder} -F -c fsync=off"
        self._as_owner("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")

    def stop(self) -> None:
        """A fast shutdown: open connections are cut, as when a database server goes away."""
        self._as_owner("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop", check=False)

    def createdb(self, name: str) -> str:
        self._as_owner("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


class TrackingServer:
    """`mlflow server` on 127.0.0.1, its runs in PostgreSQL, artifacts proxied into a temp folder."""

    def __init__(self, backend_uri: str, env: dict[str, str]):
        self.backend_uri, self.env = backend_uri, env
        self.folder = Path(tempfile.mkdtemp(prefix="aeservice-mlflow-server-"))
        self.artifacts = self.folder / "artifacts"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout: float = 180) -> None:
        self.starts += 1
        log = self.folder / f"server-{self.starts}.log"
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                [str(BIN / "mlflow"), "server", "--backend-store-uri", self.backend_uri,
                 "--artifacts-destination", str(self.artifacts), "--host", "127.0.0.1", "--port", str(self.port),
                 "--workers", "1"],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=self.folder, start_new_session=True)
        _wait_until_up(self.url, self.proc, log, timeout, path="/health", what="mlflow server")

    def stop(self, graceful: bool = True) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # its own session: the CLI and its web server workers; graceful waits for open connections
            os.killpg(self.proc.pid, signal.SIGTERM if graceful else signal.SIGKILL)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def remove(self) -> None:
        self.stop(graceful=False)  # throw-away: nothing to wait for
        shutil.rmtree(self.folder, ignore_errors=True)
