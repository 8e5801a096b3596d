"""
A throwaway MariaDB server: C{mariadb-install-db} in a temporary directory
and a C{mariadbd} process on a free loopback port, owned by the caller.
"""

from __future__ import annotations

import functools
import os
from typing import List

from txreconnect.testing._process import ThrowawayServer, find_binary
from txreconnect.testing._sql import quote_ident, quote_literal

__all__ = ["MariaDBServer"]

_INSTALL_HINT = "Debian: apt-get install mariadb-server mariadb-client"
_SEARCH = ("/usr/sbin", "/usr/bin", "/usr/local/mysql/bin")


@functools.lru_cache(maxsize=None)
def _binary(name: str) -> str:
    return find_binary(name, "TXRECONNECT_MARIADB_BINDIR", _SEARCH, _INSTALL_HINT)


class MariaDBServer(ThrowawayServer):
    """
    A MariaDB server of our own for tests and drills.

    It listens on 127.0.0.1 at L{port <ThrowawayServer.port>} (the user
    L{user <ThrowawayServer.user>} authenticates with its password over TCP;
    the administrator C{root} uses the server's Unix socket), has a database
    L{database <ThrowawayServer.database>}, and never touches a MariaDB or
    MySQL service already running on the machine.  When run as root, the
    server drops to the C{mysql} account (or C{nobody}).  It is fast
    rather than durable: nothing waits for the disk, and a COMMIT does not
    wait for the log (see L{txreconnect.testing.PostgresServer}, which
    runs with C{fsync=off}).

    Use it from trial::

        def setUp(self):
            self.server = MariaDBServer(settings={"wait_timeout": 2})
            self.addCleanup(self.server.destroy)
            self.server.start()

    The binaries come from C{$TXRECONNECT_MARIADB_BINDIR}, C{PATH},
    C{/usr/sbin} or C{/usr/bin}.

    @raise ServerNotAvailable: from L{start <ThrowawayServer.start>}, when
        MariaDB is not installed.
    """

    product = "MariaDB"
    family = "mysql"
    run_as_candidates = ("mysql",)

    @property
    def socket_path(self) -> str:
        """
        The server's Unix socket, used only by the administrator.
        """
        return os.path.join(self.directory, "mysqld.sock")

    def _user_args(self) -> List[str]:
        name = self._run_as.name
        return ["--user=" + name] if name else []

    def _initialise(self, datadir: str) -> None:
        self._run(
            [
                _binary("mariadb-install-db"),
                "--no-defaults",
                "--datadir=" + datadir,
                # Its bootstrap server's temporary tables go here too, not
                # into $TMPDIR: a server starting there removes every
                # #sql* file it finds, another bootstrap's included.
                "--tmpdir=" + self.directory,
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *self._user_args(),
            ]
        )

    def _extra_options(self) -> List[str]:
        """
        Command-line options a subclass adds to every start, before
        L{settings <ThrowawayServer.settings>} (which win over them).

        @return: none here.
        """
        return []

    def _command(self, datadir: str) -> List[str]:
        argv = [
            _binary("mariadbd"),
            "--no-defaults",
            "--datadir=" + datadir,
            "--port=%d" % (self.port,),
            "--bind-address=127.0.0.1",
            "--socket=" + self.socket_path,
            "--pid-file=" + os.path.join(self.directory, "mysqld.pid"),
            "--tmpdir=" + self.directory,
            "--skip-name-resolve",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=16M",
            "--innodb-log-file-size=16M",
            # Speed before durability, as the PostgreSQL kit server's
            # fsync=off and full_page_writes=off: a COMMIT does not wait
            # for the log (written about once a second: a killed server
            # loses the last second's commits, a write and its marker row
            # together), and no write waits for the disk.  InnoDB's
            # default writes its log and pages past the kernel's cache
            # (O_DIRECT) and syncs them: the writes of a server that had
            # just started stalled its first sessions by 10 to 70 ms on a
            # cloud VM's disk, for any client.
            "--innodb-flush-log-at-trx-commit=0",
            "--innodb-flush-method=nosync",
            "--innodb-log-file-buffering=ON",
            "--innodb-doublewrite=0",
            "--max-connections=200",
            # Every deadlock in the error log, for the tests that hit one.
            "--innodb-print-all-deadlocks=ON",
            *self._user_args(),
            *self._extra_options(),
        ]
        for name, value in self.settings.items():
            argv.append("--%s=%s" % (name, value))
        return argv

    def admin_sql(self, sql: str) -> str:
        return self._run(
            [
                _binary("mariadb"),
                "--no-defaults",
                "--batch",
                "--skip-column-names",
                "--socket=" + self.socket_path,
                "--user=root",
                "--execute=" + sql,
            ]
        )

    def _bootstrap(self) -> None:
        self.admin_sql(
            "CREATE DATABASE {database}; CREATE USER {user}@'%' IDENTIFIED BY {password}; "
            "GRANT ALL ON {database}.* TO {user}@'%'; "
            "GRANT PROCESS ON *.* TO {user}@'%'".format(
                database=quote_ident(self.database, "`"),
                user=quote_literal(self.user, backslashes=True),
                password=quote_literal(self.password, backslashes=True),
            )
        )
        self.version = self.admin_sql("SELECT VERSION()").strip()

    def _client_ids(self) -> List[str]:
        out = self.admin_sql(
            "SELECT id FROM information_schema.processlist"
            " WHERE id <> CONNECTION_ID() AND command NOT IN ('Daemon', 'Killed')"
            " AND user NOT IN ('system user', 'event_scheduler')"
        )
        return out.split()

    def terminate_sessions(self) -> int:
        ids = self._client_ids()
        if ids:
            # --force: a session that ended meanwhile is not an error.
            self._run(
                [
                    _binary("mariadb"),
                    "--no-defaults",
                    "--force",
                    "--socket=" + self.socket_path,
                    "--user=root",
                ],
                input="".join("KILL CONNECTION %s;\n" % (i,) for i in ids),
            )
        return len(ids)

    def client_connections(self) -> int:
        return len(self._client_ids())
