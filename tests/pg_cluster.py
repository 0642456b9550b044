"""A throwaway PostgreSQL cluster for the tests: initdb + pg_ctl on a temporary folder and a free local port.

PostgreSQL refuses to run as root, so under root the cluster runs as the `postgres` user (made by the
Debian package) on a folder that user owns. Trust authentication, TCP on 127.0.0.1 only, the unix
socket inside the folder. `stop()` shuts it down and removes the folder: nothing is left running.

    python tests/pg_cluster.py [--fsync]   # start one, print its URL; Ctrl-C or SIGTERM stops and removes it
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

SERVICE_USER = "postgres"


def find_bindir() -> Path | None:
    """$PG_BINDIR, else the newest /usr/lib/postgresql/*/bin that has initdb and pg_ctl."""
    candidates = [os.environ["PG_BINDIR"]] if os.environ.get("PG_BINDIR") else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    for folder in candidates:
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    def __init__(self, bindir: Path, fsync: bool = False):
        self.bindir, self.fsync = bindir, fsync
        # under root the service user must reach the folder: /tmp, not a private $TMPDIR
        self.root = Path(tempfile.mkdtemp(prefix="covid-sweep-pg-", dir="/tmp" if os.geteuid() == 0 else None))
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.port = _free_port()
        self._as_service_user = os.geteuid() == 0
        self._started = False

    def _run(self, *argv: str) -> None:
        prefix = ["runuser", "-u", SERVICE_USER, "--"] if self._as_service_user else []
        result = subprocess.run(prefix + list(argv), capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr[-2000:]}\n{log}")

    def start(self) -> "PgCluster":
        if self._as_service_user:
            shutil.chown(self.root, SERVICE_USER, SERVICE_USER)
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "--auth=trust", "--username=postgres",
                  "--encoding=UTF8", "--no-sync")
        self.resume()
        return self

    def resume(self) -> None:
        """Start the server (again: after pause(), on the same port and data)."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=100"
        if not self.fsync:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
        self._started = True

    def pause(self) -> None:
        """Stop the server as a restart or failover does, keeping its data: clients see their connections drop."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        self._started = False

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            if self._started:
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            self._started = False
            shutil.rmtree(self.root, ignore_errors=True)


if __name__ == "__main__":
    import signal
    import sys

    bindir = find_bindir()
    if bindir is None:
        sys.exit("no PostgreSQL binaries (apt-get install postgresql-15)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    cluster = PgCluster(bindir, fsync="--fsync" in sys.argv).start()
    try:
        print(cluster.url(), flush=True)
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
