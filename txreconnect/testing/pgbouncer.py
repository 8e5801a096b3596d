"""
A throwaway PgBouncer in front of a throwaway PostgreSQL server: its own
temporary directory, a free loopback port, a process owned by the caller,
and its admin console at hand (C{PAUSE}, C{RESUME}, C{RECONNECT}, C{KILL}).

What clients see, measured with PgBouncer 1.18, psycopg2 2.9 and psycopg
3.3 (a pool must count each of these as a lost connection; in every case
the driver's connection is closed afterwards: psycopg2 C{conn.closed} is
non-zero, psycopg C{conn.closed} is true):

  - C{KILL db} (L{PgBouncer.kill_database}), either pool mode: PgBouncer
    sends C{FATAL: database removed} (SQLSTATE C{08P01}) and closes.  A
    connected client's next query fails: psycopg 3 raises
    C{errors.ProtocolViolation} (08P01, C{database removed}); psycopg2
    raises C{OperationalError("server closed the connection
    unexpectedly")} with no C{pgcode} (its libpq loses the message).
  - Immediate shutdown (L{PgBouncer.stop}, L{PgBouncer.restart}) or
    SIGKILL (L{PgBouncer.kill}): the next query fails with
    C{OperationalError}, C{server closed the connection unexpectedly}
    (psycopg 3 prefixes C{consuming input failed:}), no SQLSTATE.
  - C{RECONNECT}: clients see nothing.  Each server connection is closed
    when it is next released: in session mode when its client
    disconnects, in transaction mode at once if idle.
  - C{PAUSE}: queries wait (they do not fail) until C{RESUME}, or until
    C{query_wait_timeout}, when the client is disconnected with
    C{query_wait_timeout} (08P01).
  - The PostgreSQL server restarts, stops or dies under PgBouncer:
      - session mode: a connected client's next query fails.  PgBouncer
        forwards the server's C{FATAL} if it sent one (57P01 C{terminating
        connection due to administrator command} on a clean stop or
        C{pg_terminate_backend}), then closes the client (its log says
        C{server conn crashed?}).  psycopg2: C{OperationalError("server
        closed the connection unexpectedly")}; psycopg 3 in a transaction:
        C{InternalError("received 2 results from command 'BEGIN'")} (not an
        C{OperationalError}: only C{conn.closed} tells); psycopg 3 in
        autocommit: C{errors.AdminShutdown} (57P01).
      - transaction mode: an idle client sees nothing if the server is
        back when it next queries (PgBouncer opens a new server
        connection).  While the server is down, its query waits for
        C{query_wait_timeout}; a client that comes while logins to the
        server are failing gets C{server login has been failing, try again
        later (server_login_retry)} (08P01) as soon as it queries, until a
        login succeeds again: the first client after C{server_login_retry}
        starts that login, and fails itself.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
from typing import Dict, List, Mapping, Optional

from txreconnect.testing._process import (
    SettingValue,
    ThrowawayServer,
    _kill_group,
    find_binary,
)
from txreconnect.testing import _target
from txreconnect.testing._sql import quote_ident
from txreconnect.testing.postgres import PostgresServer, _bindir

__all__ = ["PgBouncer"]

_INSTALL_HINT = "Debian: apt-get install pgbouncer"
_SEARCH = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin")
_POOL_MODES = ("session", "transaction")
#: the user that logs in to the admin console
_ADMIN_USER = "pgbouncer_admin"


@functools.lru_cache(maxsize=None)
def _binary() -> str:
    return find_binary("pgbouncer", "TXRECONNECT_PGBOUNCER_BINDIR", _SEARCH, _INSTALL_HINT)


def _ini_value(value: SettingValue) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _auth_quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


class PgBouncer(ThrowawayServer):
    """
    A PgBouncer of our own in front of a L{PostgresServer}, for tests and
    drills.

    It listens on 127.0.0.1 at L{port <ThrowawayServer.port>}, serves one
    database named like the server's
    (L{database <ThrowawayServer.database>}), trusts the client
    (C{auth_type = trust}; the user must be the server's) and logs in to the
    server over TCP with the server's user and password.  Its admin console
    (database C{pgbouncer}) is reached over its own Unix socket, so
    L{admin} never counts as a client.  When run as root it runs as the
    server's account, since PgBouncer refuses root.

    Use it from trial::

        def setUp(self):
            self.server = shared_server(self, PostgresServer)
            self.bouncer = PgBouncer(self.server, pool_mode="transaction")
            self.addCleanup(self.bouncer.destroy)
            self.bouncer.start()

    The binary comes from C{$TXRECONNECT_PGBOUNCER_BINDIR}, C{PATH},
    C{/usr/sbin} or C{/usr/bin}; the admin console is reached with the
    PostgreSQL server's C{psql}.

    Signals, in PgBouncer 1.18: SIGTERM is an immediate shutdown (the
    console's C{SHUTDOWN}: every client connection is closed at once);
    SIGINT is a safe shutdown (C{PAUSE} then C{SHUTDOWN}), which waits until
    every server connection is released, which in session mode means until
    every client has disconnected.  L{stop <ThrowawayServer.stop>} therefore
    sends SIGTERM.  SIGUSR1 is C{PAUSE} without waiting, SIGUSR2 is
    C{RESUME}, SIGHUP is C{RELOAD}.  L{kill <ThrowawayServer.kill>} sends
    SIGKILL, as a crash would.

    Console commands, in 1.18: C{PAUSE [db]} waits for every server
    connection to be released, then closes them; until C{RESUME} new
    queries wait.  C{RECONNECT [db]} closes each server connection when it
    is next released; clients see nothing.  C{KILL db} closes every client
    and server connection of C{db} at once, and leaves C{db} paused: new
    clients wait until C{RESUME}.

    Settings that differ from PgBouncer's defaults, for fast tests:
    C{server_login_retry = 1} (15 s by default) and C{query_wait_timeout =
    15} (120 s by default); override them with C{settings}.

    @ivar server: the PostgreSQL server behind it.
    @ivar pool_mode: C{"session"} or C{"transaction"}; change it before
        L{restart <ThrowawayServer.restart>}.
    @ivar settings: extra C{[pgbouncer]} settings, written to its ini file
        at every start; change them before
        L{restart <ThrowawayServer.restart>}, or change them and call
        L{reload}.

    @raise ServerNotAvailable: from L{start <ThrowawayServer.start>}, when
        PgBouncer (or psql) is not installed; the message says what to
        install.
    """

    product = "PgBouncer"
    family = "postgresql"
    run_as_candidates = ("postgres",)
    # SIGINT would wait for the clients to leave (in session mode); SIGTERM
    # closes them at once, as stopping a server does.
    stop_signal = signal.SIGTERM
    #: how long admin() waits for a console command, by default
    admin_timeout = 30.0

    def __init__(
        self,
        server: PostgresServer,
        pool_mode: str = "session",
        settings: Optional[Mapping[str, SettingValue]] = None,
    ) -> None:
        """
        @param server: the PostgreSQL server to pool connections to; it
            need not run yet (PgBouncer connects when a client comes).
        @param pool_mode: C{"session"} (a server connection per client
            session) or C{"transaction"} (a server connection per
            transaction).
        @param settings: extra or overriding C{[pgbouncer]} settings.
        @raise ValueError: C{pool_mode} is neither.
        """
        if pool_mode not in _POOL_MODES:
            raise ValueError("pool_mode must be one of %s, not %r" % (", ".join(_POOL_MODES), pool_mode))
        super().__init__(
            settings=settings,
            database=server.database,
            user=server.user,
            password=server.password,
        )
        self.server = server
        self.pool_mode = pool_mode
        # PgBouncer refuses root, like PostgreSQL: run it as the server does.
        self._run_as = server._run_as

    def __repr__(self) -> str:
        return "<%s %s (%s pooling) on 127.0.0.1:%d for %r (%s)>" % (
            type(self).__name__,
            self.version or self.product,
            self.pool_mode,
            self.port,
            self.server,
            "running" if self.running else "stopped",
        )

    # --- files ---------------------------------------------------------------

    @property
    def ini_file(self) -> str:
        """
        The configuration file, rewritten at every start.
        """
        return os.path.join(self.directory, "pgbouncer.ini")

    @property
    def auth_file(self) -> str:
        """
        The users file: the server's user (with its password, which
        PgBouncer uses to log in to the server) and the console's admin.
        """
        return os.path.join(self.directory, "userlist.txt")

    @property
    def socket_dir(self) -> str:
        """
        The directory of PgBouncer's Unix socket (used by L{admin}).
        """
        return self.datadir

    def _config(self) -> str:
        target = "host=127.0.0.1 port=%d dbname=%s" % (self.server.port, self.server.database)
        settings: Dict[str, SettingValue] = {
            "listen_addr": "127.0.0.1",
            "listen_port": self.port,
            "unix_socket_dir": self.socket_dir,
            "auth_type": "trust",
            "auth_file": self.auth_file,
            "admin_users": _ADMIN_USER,
            "pool_mode": self.pool_mode,
            # Session mode cleans a session before the next client gets its
            # server connection; transaction mode must not (clients may not
            # rely on session state there), as PgBouncer's documentation says.
            "server_reset_query": "DISCARD ALL" if self.pool_mode == "session" else "",
            # The default (15 s) would keep failing clients for that long
            # after the server comes back.
            "server_login_retry": 1,
            # PgBouncer's default is 120 s: a query sent while the server is
            # down (transaction mode) or while paused waits that long.
            "query_wait_timeout": 15,
            # Sent at startup by some clients (JDBC); harmless to ignore.
            "ignore_startup_parameters": "extra_float_digits",
            "server_tls_sslmode": "disable",
            "max_client_conn": 500,
            "default_pool_size": 50,
            "syslog": 0,
        }
        settings.update(self.settings)
        lines = ["[databases]", "%s = %s" % (self.server.database, target), "", "[pgbouncer]"]
        lines += ["%s = %s" % (name, _ini_value(value)) for name, value in settings.items()]
        return "\n".join(lines) + "\n"

    def _write_files(self) -> None:
        with open(self.ini_file, "w") as f:
            f.write(self._config())
        fd = os.open(self.auth_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(
                "%s %s\n%s %s\n"
                % (
                    _auth_quote(self.server.user),
                    _auth_quote(self.server.password),
                    _auth_quote(_ADMIN_USER),
                    _auth_quote(""),
                )
            )
        self._run_as.chown(self.directory)

    # --- ThrowawayServer -----------------------------------------------------

    def _initialise(self, datadir: str) -> None:
        _binary()  # fail now, with what to install, if it is missing
        _bindir()  # psql, for the console

    def _command(self, datadir: str) -> List[str]:
        self._write_files()
        return [_binary(), self.ini_file]

    def _bootstrap(self) -> None:
        self.version = self.admin("SHOW VERSION").strip()

    def _answers(self) -> bool:
        try:
            self.admin("SHOW VERSION", timeout=5)
        except (subprocess.CalledProcessError, RuntimeError):
            return False
        return True

    def admin_sql(self, sql: str) -> str:
        """
        L{admin}: run a console command.
        """
        return self.admin(sql)

    def terminate_sessions(self) -> int:
        """
        End every client session on L{database <ThrowawayServer.database>}
        (C{KILL}, then C{RESUME}).

        @return: how many there were.
        """
        count = self.client_connections()
        self.kill_database()
        return count

    def client_connections(self) -> int:
        """
        @return: how many clients are connected to
            L{database <ThrowawayServer.database>} (the admin console's own
            connection is not counted).
        """
        return len(self._show_ours("CLIENTS"))

    def server_connections(self) -> int:
        """
        @return: how many connections PgBouncer has to the server for
            L{database <ThrowawayServer.database>}, in use or idle.
        """
        return len(self._show_ours("SERVERS"))

    def connect_kwargs(self, driver: str, port: Optional[int] = None) -> Dict[str, object]:
        """
        Keyword arguments for a driver's C{connect()} to PgBouncer (see
        L{ThrowawayServer.connect_kwargs}).  In transaction mode they add
        what the driver needs behind a transaction pooler (its
        L{Driver <txreconnect.drivers.Driver>}'s
        C{transaction_pooling_keywords}): for psycopg 3, automatic
        server-side prepared statements off, since PgBouncer 1.18 does not
        track them, so a statement prepared on one server connection is
        missing on the next.

        @param driver: the DB-API module's name, a PostgreSQL driver.
        @param port: connect to this port on 127.0.0.1 instead (a proxy).
        @return: keyword arguments for C{driver.connect()}.
        @raise ValueError: C{driver} is not a PostgreSQL driver.
        """
        kwargs = super().connect_kwargs(driver, port)
        if self.pool_mode == "transaction":
            kwargs.update(_target.driver(self.family, driver).transaction_pooling_keywords)
        return kwargs

    # --- the admin console ---------------------------------------------------

    def admin(self, command: str, timeout: Optional[float] = None, header: bool = False) -> str:
        """
        Run a command on PgBouncer's admin console (database C{pgbouncer},
        over its Unix socket, with psql), and return what it printed, one
        row per line, columns separated by tabs.

        @param command: e.g. C{"SHOW POOLS"}, C{"PAUSE"}, C{"RESUME"},
            C{"RECONNECT txreconnect"}, C{"KILL txreconnect"}, C{"RELOAD"}.
        @param timeout: seconds to wait for it (default L{admin_timeout});
            C{PAUSE} waits for server connections to be released.
        @param header: print the column names on the first line.
        @raise subprocess.CalledProcessError: the console refused it (or
            PgBouncer does not run).
        @raise RuntimeError: it did not finish in time (psql is killed;
            what the command started, such as a pause, goes on).
        """
        timeout = self.admin_timeout if timeout is None else timeout
        argv = [
            os.path.join(_bindir(), "psql"),
            "-X", "-q", "-A", "-F", "\t", "-P", "footer=off",
            *([] if header else ["-t"]),
            "-v", "ON_ERROR_STOP=1",
            "-h", self.socket_dir,
            "-p", str(self.port),
            "-U", _ADMIN_USER,
            "-d", "pgbouncer",
            "-c", command,
        ]
        with subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        ) as process:
            try:
                stdout, stderr = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(process)
                raise RuntimeError(
                    "%r: %r did not finish within %.0f s; its log ends with:\n%s"
                    % (self, command, timeout, self.log_tail())
                )
            except BaseException:
                _kill_group(process)
                raise
        if process.returncode != 0:
            raise subprocess.CalledProcessError(process.returncode, argv, stdout, stderr)
        return stdout

    def show(self, what: str) -> List[Dict[str, str]]:
        """
        Run C{SHOW what} on the console (C{"POOLS"}, C{"CLIENTS"},
        C{"SERVERS"}, C{"DATABASES"}...).

        @return: its rows, each a dict by column name (values as text).
        @raise subprocess.CalledProcessError: the console refused it.
        """
        lines = self.admin("SHOW " + what, header=True).splitlines()
        if not lines:
            return []
        names = lines[0].split("\t")
        return [dict(zip(names, line.split("\t"))) for line in lines[1:]]

    def pool(self) -> Dict[str, str]:
        """
        @return: the C{SHOW POOLS} row of
            L{database <ThrowawayServer.database>} (C{cl_active},
            C{cl_waiting}, C{sv_active}, C{sv_idle}, C{sv_used},
            C{pool_mode}...), or an empty dict if it has no pool yet.
        """
        rows = self._show_ours("POOLS")
        return rows[0] if rows else {}

    def _show_ours(self, what: str) -> List[Dict[str, str]]:
        """
        @return: the rows of C{SHOW what} whose C{database} column is
            L{database <ThrowawayServer.database>}.
        """
        return [row for row in self.show(what) if row.get("database") == self.database]

    def pause(self, wait: bool = True, timeout: Optional[float] = None) -> None:
        """
        Pause L{database <ThrowawayServer.database>}: new queries and new
        clients wait (they do not fail) until L{resume}, or until
        C{query_wait_timeout} (15 s here, 120 s by PgBouncer's default),
        when the client is disconnected.

        @param wait: run the console's C{PAUSE}, which returns once every
            server connection is released and closed: in transaction mode
            when running transactions end, in session mode only when every
            client has disconnected.  With C{wait=False} the pause starts
            and this returns at once (SIGUSR1 on PgBouncer, a C{PAUSE} of
            every database).
        @param timeout: how long C{PAUSE} may wait (default
            L{admin_timeout}).
        @raise RuntimeError: C{PAUSE} did not return in time; the pause
            goes on until L{resume}.
        """
        if wait:
            self.admin("PAUSE " + quote_ident(self.database), timeout=timeout)
        else:
            self._send(signal.SIGUSR1)

    def resume(self) -> None:
        """
        Resume after L{pause} or L{kill_database}: waiting queries run and
        new clients are served.  Resuming what is not paused is harmless.
        """
        # A database paused by name (PAUSE db, KILL db) and the whole
        # pooler (PAUSE, SIGUSR1) are resumed separately; each refuses when
        # it is not paused.
        for command in ("RESUME " + quote_ident(self.database), "RESUME"):
            try:
                self.admin(command)
            except subprocess.CalledProcessError as e:
                if "not paused" not in (e.stderr or ""):
                    raise

    def reconnect(self) -> None:
        """
        C{RECONNECT} L{database <ThrowawayServer.database>}: close each
        server connection when it is next released (when its client
        disconnects in session mode, when its transaction ends in
        transaction mode), so the next ones are new.  Clients see nothing.
        """
        self.admin("RECONNECT " + quote_ident(self.database))

    def kill_database(self, resume: bool = True) -> None:
        """
        C{KILL} L{database <ThrowawayServer.database>}: close every client
        and server connection of it at once.  PgBouncer sends each client
        C{FATAL: database removed} (SQLSTATE C{08P01}); a connected client's
        next query fails with it (psycopg 3) or with
        C{server closed the connection unexpectedly} (psycopg2).

        Not to be confused with L{kill <ThrowawayServer.kill>}, which kills
        the PgBouncer process.

        @param resume: C{RESUME} right after, so that new clients are
            served (after C{KILL} alone they wait until C{RESUME}).
        """
        self.admin("KILL " + quote_ident(self.database))
        if resume:
            self.resume()

    def reload(self) -> None:
        """
        Rewrite the configuration file from L{server}, L{pool_mode} and
        L{settings}, and have PgBouncer reload it (C{RELOAD}).  A server
        connection to a changed destination is closed when it is next
        released.
        """
        self._write_files()
        self.admin("RELOAD")

    def point_to(self, server: PostgresServer) -> None:
        """
        Send new server connections to C{server} from now on (for instance
        a promoted standby), as a failover script would: L{reload} with it
        as L{server}.  Existing server connections are closed when next
        released; use L{kill_database} to cut them at once.

        @param server: it must have the same database, user and password.
        @raise ValueError: it does not.
        """
        if (server.database, server.user, server.password) != (
            self.database,
            self.user,
            self.password,
        ):
            raise ValueError("%r does not serve the same database and user as %r" % (server, self.server))
        self.server = server
        if self.running:
            self.reload()

    def _send(self, signum: int) -> None:
        if self._process is None or self._process.poll() is not None:
            raise RuntimeError("%r does not run" % (self,))
        self._process.send_signal(signum)

