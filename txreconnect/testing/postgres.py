"""
A throwaway PostgreSQL server: C{initdb} in a temporary directory and a
C{postgres} process on a free loopback port, owned by the caller.
"""

from __future__ import annotations

import functools
import glob
import os
import signal
from typing import List

from txreconnect.testing._process import ThrowawayServer, children as _children, find_binary
from txreconnect.testing._sql import quote_ident, quote_literal
from txreconnect.testing._wait import wait_until

__all__ = ["PostgresServer"]

_INSTALL_HINT = "Debian: apt-get install postgresql"


@functools.lru_cache(maxsize=None)
def _bindir() -> str:
    search = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda d: [int(p) if p.isdigit() else 0 for p in d.split("/")[4].split(".")],
        reverse=True,
    )
    return os.path.dirname(find_binary("initdb", "TXRECONNECT_PG_BINDIR", search, _INSTALL_HINT))


def _gone(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % (pid,)) as f:
            return f.read().rsplit(")", 1)[-1].split()[0] in ("Z", "X")
    except OSError:
        return True


def _kill_with_backends(server: PostgresServer, timeout: float = 10.0) -> None:
    """
    Kill a PostgreSQL server as a crashed machine would: the postmaster
    and every backend at once, with SIGKILL, and wait until they are gone.

    Killing the postmaster's process group is not enough: each backend
    leads a process group of its own (PostgreSQL calls C{setsid} in every
    child), so its backends outlive it for a few tens of milliseconds,
    long enough to answer a query (seen through PgBouncer).  Here the
    postmaster is stopped first (so it forks no more), its children are
    killed, then the postmaster.

    @param server: the server to kill.
    @param timeout: how many seconds the backends may take to die.
    @raise WaitTimeout: (a C{RuntimeError}) a backend outlived SIGKILL
        for C{timeout} seconds.
    """
    process = server._process
    if process is None or process.poll() is not None:
        return
    try:
        os.kill(process.pid, signal.SIGSTOP)
    except ProcessLookupError:
        return
    children = _children(process.pid)
    for child in children:
        try:
            os.kill(child, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    ThrowawayServer.kill(server)  # the postmaster's process group
    wait_until(
        lambda: all(_gone(child) for child in children),
        timeout,
        "the backends %s of %r to die of SIGKILL" % (children, server),
        interval=0.01,
    )


class PostgresServer(ThrowawayServer):
    """
    A PostgreSQL server of our own for tests and drills.

    It listens on 127.0.0.1 at L{port <ThrowawayServer.port>} (password
    authentication over TCP, the administrator C{postgres} trusted on its
    Unix socket), has a database L{database <ThrowawayServer.database>}
    owned by L{user <ThrowawayServer.user>}, and never touches a PostgreSQL
    service already running on the machine.  When run as root it runs as the
    C{postgres} account (or C{nobody}), since PostgreSQL refuses root.

    Use it from trial::

        def setUp(self):
            self.server = PostgresServer(settings={"idle_session_timeout": "2s"})
            self.addCleanup(self.server.destroy)
            self.server.start()

    The binaries come from C{$TXRECONNECT_PG_BINDIR}, C{PATH}, or the
    newest C{/usr/lib/postgresql/*/bin}.

    @raise ServerNotAvailable: from L{start <ThrowawayServer.start>}, when
        PostgreSQL is not installed.
    """

    product = "PostgreSQL"
    family = "postgresql"
    run_as_candidates = ("postgres",)
    # SIGINT is PostgreSQL's "fast" shutdown: it ends the sessions instead
    # of waiting for every client to leave (SIGTERM, "smart").
    stop_signal = signal.SIGINT

    def _binary(self, name: str) -> str:
        return os.path.join(_bindir(), name)

    def _initialise(self, datadir: str) -> None:
        self._run(
            [
                self._binary("initdb"),
                "-D", datadir,
                "-U", "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E", "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            as_server_user=True,
        )

    def _command(self, datadir: str) -> List[str]:
        argv = [
            self._binary("postgres"),
            "-D", datadir,
            "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1",
            "-c", "unix_socket_directories=" + datadir,
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
            "-c", "max_connections=200",
            "-c", "shared_buffers=16MB",
        ]
        for name, value in self.settings.items():
            argv += ["-c", "%s=%s" % (name, value)]
        return argv

    def admin_sql(self, sql: str, database: str = "postgres") -> str:
        return self._run(
            [
                self._binary("psql"),
                "-X", "-q", "-A", "-t", "-F", "\t",
                "-v", "ON_ERROR_STOP=1",
                "-h", self.datadir,
                "-p", str(self.port),
                "-U", "postgres",
                "-d", database,
                "-c", sql,
            ]
        )

    def _bootstrap(self) -> None:
        self.admin_sql(
            "CREATE ROLE %s LOGIN PASSWORD %s"
            % (quote_ident(self.user), quote_literal(self.password))
        )
        self.admin_sql(
            "CREATE DATABASE %s OWNER %s" % (quote_ident(self.database), quote_ident(self.user))
        )
        self.version = self.admin_sql("SHOW server_version").strip()

    def terminate_sessions(self) -> int:
        out = self.admin_sql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        return int(out.strip())

    def client_connections(self) -> int:
        out = self.admin_sql(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        return int(out.strip())

    def kill(self) -> None:
        """
        Kill the server and every backend with SIGKILL, as a crashed
        machine would, and wait until they are all gone (see
        L{_kill_with_backends}).

        @raise RuntimeError: a backend outlived SIGKILL for 10 s.
        """
        _kill_with_backends(self)
