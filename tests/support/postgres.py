"""A throwaway PostgreSQL cluster for tests, from Debian's `postgresql` package.

`start_postgres(directory)` runs `initdb` and `pg_ctl` from /usr/lib/postgresql/*/bin
(newest version first) with trust authentication, listening on 127.0.0.1 on a free port
only, creates a database and returns a `PostgresServer` with a SQLAlchemy URL;
`stop()` stops it and removes its files. PostgreSQL refuses to run as root, so when we
are root the cluster's directory belongs to the `postgres` system user (created by the
Debian package) and the server runs under `runuser -u postgres --`.

Without the binaries a test is skipped locally, but fails loudly in CI (`CI=true`),
where `.ci/run` installs the package.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support.ports import free_port


class PostgresUnavailable(RuntimeError):
    """The binaries are missing or the cluster would not start."""


def find_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/N/bin holding initdb and pg_ctl (or PG_BIN_DIR)."""
    override = os.environ.get("PG_BIN_DIR")
    candidates = (
        [override]
        if override
        else sorted(
            glob.glob("/usr/lib/postgresql/*/bin"),
            key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
            reverse=True,
        )
    )
    for candidate in candidates:
        path = Path(candidate)
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).parent
    return None


class PostgresServer:
    """One running cluster; `url` is a SQLAlchemy URL of its database."""

    def __init__(
        self,
        bin_dir: Path,
        root: Path,
        port: int,
        database: str,
        user: str,
        as_user: list[str],
    ):
        self.bin_dir, self.root, self.port = bin_dir, root, port
        self.database, self.user, self._as_user = database, user, as_user
        self.url = f"postgresql+psycopg://{user}@127.0.0.1:{port}/{database}"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self._as_user, *args],
            check=check,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def stop(self) -> None:
        if self.data_dir.exists():
            self._run(
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-m",
                "immediate",
                "-w",
                "stop",
                check=False,
            )
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres(
    directory: str | os.PathLike | None = None, database: str = "streams_test"
) -> PostgresServer:
    """Start a fresh cluster in a new directory under `directory` (default: the temp
    dir); PostgresUnavailable when the binaries are missing or it will not start."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise PostgresUnavailable(
            "PostgreSQL's initdb/pg_ctl not found under /usr/lib/postgresql/*/bin"
            " (apt-get install -y postgresql)"
        )
    root = Path(tempfile.mkdtemp(prefix="pg-", dir=directory))
    as_user: list[str] = []
    user = pwd.getpwuid(os.getuid()).pw_name
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresUnavailable(
                "running as root, and there is no `postgres` user to run PostgreSQL as"
            ) from None
        # `directory` must be traversable by postgres; the temp dir (/tmp) is.
        os.chown(root, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
        user = "postgres"
    port = free_port()
    server = PostgresServer(bin_dir, root, port, database, user, as_user)
    try:
        server._run(
            str(bin_dir / "initdb"),
            "-D",
            str(server.data_dir),
            "-A",
            "trust",
            "-U",
            user,
            "-E",
            "UTF8",
            "--no-sync",
        )
        socket_dir = root  # keep Unix sockets out of /var/run/postgresql
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={port}"
            f" -c unix_socket_directories={socket_dir} -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off"
            " -c max_connections=100"
        )
        server._run(
            str(bin_dir / "pg_ctl"),
            "-D",
            str(server.data_dir),
            "-o",
            options,
            "-l",
            str(root / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        server._run(
            str(bin_dir / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            user,
            database,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        log = ""
        if (root / "server.log").exists():
            log = (root / "server.log").read_text(errors="replace")[-2000:]
        output = getattr(exc, "stderr", "") or ""
        server.stop()
        raise PostgresUnavailable(
            f"PostgreSQL did not start: {exc}\n{output}\n{log}"
        ) from None
    return server


def postgres_or_skip(directory: str | os.PathLike | None = None) -> PostgresServer:
    """`start_postgres`, or skip the test (fail in CI, where PostgreSQL is installed)."""
    try:
        return start_postgres(directory)
    except PostgresUnavailable as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"PostgreSQL is required in CI: {exc}", pytrace=False)
        pytest.skip(str(exc))


def fresh_database(url: str, name: str | None = None) -> str:
    """Create a new empty database on the server of `url`; return its URL. Lets tests
    share one cluster without sharing tables."""
    import uuid

    import sqlalchemy
    from sqlalchemy.engine import make_url

    name = name or f"t_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False)
