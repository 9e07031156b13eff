"""A PgBouncer of the test's own in transaction pooling mode, in front of the test
PostgreSQL: how most production PostgreSQL is reached. Debian's ``pgbouncer`` package;
``.ci/run`` installs it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tests import backends

INSTALL = "apt-get install -y pgbouncer"
# Fewer server connections than the client pools hold: clients share them, transaction
# by transaction, as they do in production.
SERVER_POOL_SIZE = 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def through(url: str, port: int) -> str:
    """``url`` with its host and port replaced by the pooler's."""
    parts = urlsplit(url)
    user = parts.username or "postgres"
    return urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{port}"))


@contextmanager
def pgbouncer() -> Iterator[int]:
    """Run PgBouncer in transaction pooling mode in front of the test PostgreSQL (trust
    authentication, as the test server has); yield its port. Its log goes to
    ``pgbouncer.out`` in a folder of its own under the system's temporary folder (one
    the postgres user can reach), removed afterwards."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(binary).exists():
        backends.unavailable(f"pgbouncer is not installed: {INSTALL}")
    target = urlsplit(backends.POSTGRES_ADMIN_URL)
    port = _free_port()
    workdir = Path(tempfile.mkdtemp(prefix="taskmill-pgbouncer-"))
    (workdir / "userlist.txt").write_text(f'"{target.username or "postgres"}" ""\n')
    config = workdir / "pgbouncer.ini"
    config.write_text(
        f"""[databases]
* = host={target.hostname or "127.0.0.1"} port={target.port or 5432}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {workdir / "userlist.txt"}
pool_mode = transaction
default_pool_size = {SERVER_POOL_SIZE}
max_client_conn = 1000
"""
    )
    # PgBouncer refuses to run as root; as root (CI) it drops to the postgres user.
    as_user = ["-u", "postgres"] if os.geteuid() == 0 else []
    if as_user:
        os.chmod(workdir, 0o777)
        for path in workdir.iterdir():
            os.chmod(path, 0o644)
    output = workdir / "pgbouncer.out"
    with output.open("wb") as out:
        process = subprocess.Popen([binary, *as_user, str(config)], stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {output.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(workdir, ignore_errors=True)
