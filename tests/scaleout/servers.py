"""Throwaway PostgreSQL and S3-compatible (moto) servers on free loopback ports.

Tests, ``bench/load.py`` and a developer trying the scale-out setup all start them the
same way, so a dev machine and CI behave alike: a PostgreSQL cluster ``initdb``-ed into a
temporary directory and run by the ``postgres`` binary of the Debian ``postgresql``
package, and ``moto``'s server mode (``moto[server]`` from PyPI). Nothing listens beyond
127.0.0.1 and both are stopped (and their files removed) by ``stop()``.

    python -m tests.scaleout.servers     # start both, print the settings to use, Ctrl-C stops
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "PostgresServer",
    "S3Server",
    "ServerUnavailable",
    "find_pg_bin",
    "free_port",
    "start_postgres",
    "start_s3",
]


class ServerUnavailable(RuntimeError):
    """The binaries or packages a server needs are not installed here."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(check: Any, what: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            check()
            return
        except Exception as exc:  # not up yet
            last = exc
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up in {timeout:.0f}s ({last}):\n{log.read_text(errors='replace')[-3000:]}")


# -- PostgreSQL ----------------------------------------------------------------------------


def find_pg_bin() -> Path | None:
    """The directory holding ``initdb`` and ``postgres``: $FRESHCONTEXT_PG_BIN, PATH, then Debian's."""
    candidates = [os.environ.get("FRESHCONTEXT_PG_BIN", "")]
    which = shutil.which("initdb")
    if which:
        candidates.append(str(Path(which).resolve().parent))
    # Debian keeps them out of PATH, one directory per major version; prefer the newest
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists() and (Path(candidate) / "postgres").exists():
            return Path(candidate)
    return None


@dataclass
class PostgresServer:
    port: int
    user: str
    password: str
    directory: Path
    proc: subprocess.Popen[bytes]
    _databases: list[str] = field(default_factory=list)

    def url(self, database: str = "postgres", driver: str = "psycopg") -> str:
        return f"postgresql+{driver}://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> Any:
        import psycopg

        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, password=self.password, dbname=database, autocommit=True,
            connect_timeout=5,
        )

    def create_database(self, name: str) -> str:
        """A new, empty database; returns its SQLAlchemy URL."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"database name {name!r}: letters, digits and _ only")
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self._databases.append(name)
        return self.url(name)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # "fast" shutdown: disconnect clients, then exit
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)


def start_postgres(*, max_connections: int = 200) -> PostgresServer:
    """initdb a cluster into a fresh temporary directory and serve it on 127.0.0.1 only.

    PostgreSQL refuses to run as root; then the cluster belongs to ``nobody``. Durability is
    switched off (fsync, synchronous_commit) because the cluster dies with the test run.
    """
    pg_bin = find_pg_bin()
    if pg_bin is None:
        raise ServerUnavailable(
            "PostgreSQL binaries (initdb, postgres) not found: apt-get install postgresql, or set FRESHCONTEXT_PG_BIN"
        )
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise ServerUnavailable("psycopg is not installed: pip install -e '.[test]'") from exc
    run_as = "nobody" if os.geteuid() == 0 else None
    directory = Path(tempfile.mkdtemp(prefix="freshcontext-pg-"))
    data = directory / "data"
    password = secrets.token_hex(12)
    pwfile = directory / "pw"
    pwfile.write_text(password + "\n")
    if run_as:
        import pwd

        entry = pwd.getpwnam(run_as)
        os.chown(directory, entry.pw_uid, entry.pw_gid)
        os.chown(pwfile, entry.pw_uid, entry.pw_gid)
    user = "freshcontext"
    init = subprocess.run(
        [
            str(pg_bin / "initdb"), "-D", str(data), "-U", user, f"--pwfile={pwfile}", "--auth=scram-sha-256",
            "--encoding=UTF8", "--no-locale", "--no-sync", "--no-instructions",
        ],
        capture_output=True, text=True, user=run_as, cwd=directory, timeout=120,
    )
    if init.returncode != 0:
        shutil.rmtree(directory, ignore_errors=True)
        raise RuntimeError(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}")
    port = free_port()
    log = directory / "postgres.log"
    with open(log, "wb") as out:
        if run_as:
            os.chown(log, entry.pw_uid, entry.pw_gid)
        proc = subprocess.Popen(
            [
                str(pg_bin / "postgres"), "-D", str(data), "-p", str(port),
                "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={directory}",
                "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                "-c", f"max_connections={max_connections}", "-c", "shared_buffers=64MB",
            ],
            stdout=out, stderr=subprocess.STDOUT, user=run_as, cwd=directory, start_new_session=True,
        )
    server = PostgresServer(port=port, user=user, password=password, directory=directory, proc=proc)

    def ready() -> None:
        server.connect().close()

    try:
        _wait(ready, "postgres", proc, log)
    except BaseException:
        server.stop()
        raise
    return server


# -- S3 (moto) -----------------------------------------------------------------------------


@dataclass
class S3Server:
    port: int
    proc: subprocess.Popen[bytes]
    directory: Path
    access_key_id: str = "freshcontext-test"
    secret_access_key: str = "freshcontext-test-secret"
    region: str = "us-east-1"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def object_storage(self) -> dict[str, Any]:
        """The ``object_storage`` block of freshcontext.yaml for this server."""
        return {
            "endpoint": self.endpoint,
            "region": self.region,
            "allow_http": True,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
        }

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=self.region,
            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key,
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)


def start_s3() -> S3Server:
    """moto's S3-compatible server in its own process (its threads never share our GIL)."""
    try:
        import boto3  # noqa: F401
        import moto.server  # noqa: F401
    except ImportError as exc:
        raise ServerUnavailable("moto[server] is not installed: pip install -e '.[test]'") from exc
    directory = Path(tempfile.mkdtemp(prefix="freshcontext-s3-"))
    port = free_port()
    log = directory / "moto.log"
    # moto would otherwise look for credentials and regions in the caller's AWS profile
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=directory, start_new_session=True,
        )
    server = S3Server(port=port, proc=proc, directory=directory)

    def ready() -> None:
        with urllib.request.urlopen(f"{server.endpoint}/moto-api/", timeout=2) as resp:  # noqa: S310 (loopback)
            resp.read(1)

    try:
        _wait(ready, "moto server", proc, log)
    except BaseException:
        server.stop()
        raise
    return server


def main() -> None:
    """Start both servers for a manual try-out and print the configuration that uses them."""
    pg, s3 = start_postgres(), start_s3()
    try:
        url = pg.create_database("freshcontext")
        s3.create_bucket("freshcontext")
        print(f"database_url: {url}")
        print("lancedb_uri: s3://freshcontext/lancedb")
        print(f"object_storage: {s3.object_storage()}")
        print("Ctrl-C stops both servers and deletes their data.", flush=True)
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        s3.stop()
        pg.stop()


if __name__ == "__main__":
    main()
