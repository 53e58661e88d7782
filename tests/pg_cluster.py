"""A PostgreSQL server of a test's own, in a temporary folder: for tests that stop, restart or
kill the database (the shared server must keep serving every other test).

Made with the distribution's ``initdb`` and ``pg_ctl``, run as the ``postgres`` user (PostgreSQL
refuses to run as root), listening on 127.0.0.1 on a free port with trust authentication.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def unavailable() -> str | None:
    """Why a private cluster cannot be made here, or ``None``."""
    if _bin("initdb") is None or _bin("pg_ctl") is None:
        return "initdb and pg_ctl are not installed"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Cluster:
    def __init__(self) -> None:
        # Not under pytest's temporary folders: those are closed to other users, and the server
        # runs as postgres.
        self.base = Path(tempfile.mkdtemp(prefix="tidings-pg-"))
        os.chmod(self.base, 0o755)
        self.data = self.base / "data"
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True, timeout=120)

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
        initdb = _bin("initdb")
        assert initdb is not None
        self._run(initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        pg_ctl = _bin("pg_ctl")
        assert pg_ctl is not None
        options = (
            f"-c port={self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.data} "
            "-c fsync=off -c max_connections=100"
        )
        self._run(pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.base / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        pg_ctl = _bin("pg_ctl")
        assert pg_ctl is not None
        self._run(pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def remove(self) -> None:
        """Stop the server at once and delete its files."""
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)
