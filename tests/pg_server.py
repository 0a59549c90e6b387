"""A throwaway PostgreSQL cluster in a temp dir: for tests that stop and restart the server, and
for the suite's PostgreSQL variants on a machine whose own server is not running (conftest.py).

The machine's own server (127.0.0.1:5432) is shared by every test and CI; restarting it under the
bot would disturb them, so this starts a private one on a free loopback port (initdb + pg_ctl,
run as the `postgres` user because PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


def available() -> bool:
    return bool(PG_BIN) and shutil.which("runuser") is not None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThrowawayPostgres:
    """Its own directory under the system temp dir: pytest's tmp dirs are closed to `postgres`."""

    def __init__(self) -> None:
        self.bin = Path(PG_BIN[-1])
        self.directory = Path(tempfile.mkdtemp(prefix="cosign-pg-"))
        self.data = self.directory / "data"
        self.port = _free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.directory, user="postgres")

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.directory / "server.log"),
            "-w",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")


@contextmanager
def throwaway(stop_mode: str = "fast") -> Iterator[ThrowawayPostgres]:
    """A started cluster, stopped and deleted on exit (even if a test already stopped it)."""
    server = ThrowawayPostgres()
    try:
        server.init()
        server.start()
        yield server
    finally:
        try:
            server.stop(stop_mode)
        except subprocess.CalledProcessError:  # not running: a test stopped it, or start failed
            pass
        server.remove()
