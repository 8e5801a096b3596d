"""
A throwaway PostgreSQL cluster: a primary and a streaming standby made with
C{pg_basebackup -R}, owned by the caller, to rehearse failovers for real.

The primary and the standby are L{PostgresServer}s (each with its own port,
data directory, log, C{connect_kwargs}, C{start}/C{stop}/C{kill}/C{restart}
and C{admin_sql}); L{PostgresCluster} adds what a failover needs: promote
the standby, bring the old primary back read-only, make a server read-only
under its sessions' feet, and libpq's multi-host connection form.
"""

from __future__ import annotations

import subprocess
from typing import Callable, Dict, List, Mapping, Optional, Sequence

from twisted.logger import Logger

from txreconnect.testing import _target
from txreconnect.testing._lifecycle import Owned
from txreconnect.testing._process import SettingValue
from txreconnect.testing._sql import quote_ident, quote_literal
from txreconnect.testing.postgres import PostgresServer

__all__ = ["PostgresCluster", "StandbyServer"]

_log = Logger()

#: how long the cluster's own waits (streaming, promotion, settings) last
_DEFAULT_TIMEOUT = 60.0


def _conninfo_value(value: object) -> str:
    """
    Quote a value for a libpq C{key=value} connection string.
    """
    text = str(value)
    if text and not any(c in text for c in " '\\\t\n\r"):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _conninfo(params: Mapping[str, object]) -> str:
    """
    @param params: libpq connection parameters.
    @return: them as a libpq C{key=value} connection string, quoted where
        needed.
    """
    return " ".join("%s=%s" % (key, _conninfo_value(value)) for key, value in params.items())


class StandbyServer(PostgresServer):
    """
    A PostgreSQL hot standby of a running L{PostgresServer}: its data
    directory is a C{pg_basebackup -R -X stream} of the primary, so it
    starts in recovery and streams from the primary, which it reaches over
    the primary's Unix socket as C{postgres} with L{application_name}.

    It has the primary's database, user and password (they are
    replicated).  Its own settings (C{settings}) apply as for any
    L{PostgresServer}; after a promotion it is an ordinary primary with
    them.

    Usually made by L{PostgresCluster}.

    @ivar primary: the server it was copied from.
    @ivar application_name: the name it gives the primary, as seen in
        C{pg_stat_replication} and named by C{synchronous_standby_names}.
    """

    def __init__(
        self,
        primary: PostgresServer,
        application_name: str = "standby",
        settings: Optional[Mapping[str, SettingValue]] = None,
    ) -> None:
        """
        @param primary: the server to copy and stream from; it must be
            running when L{start} first runs.
        @param application_name: see L{application_name}.
        @param settings: server settings, as for L{PostgresServer}.
        """
        super().__init__(
            settings=settings,
            database=primary.database,
            user=primary.user,
            password=primary.password,
        )
        self.primary = primary
        self.application_name = application_name

    def _initialise(self, datadir: str) -> None:
        if not self.primary.running:
            raise RuntimeError("%r: the primary %r must run to be copied" % (self, self.primary))
        source = _conninfo(
            {
                "host": self.primary.datadir,
                "port": self.primary.port,
                "user": "postgres",
                "application_name": self.application_name,
            }
        )
        # -R writes standby.signal and a primary_conninfo made from the
        # connection string above (application_name included).
        self._run(
            [
                self._binary("pg_basebackup"),
                "-d", source,
                "-D", datadir,
                "-R",
                "-X", "stream",
                "-c", "fast",
                "--no-sync",
            ],
            as_server_user=True,
        )

    def _bootstrap(self) -> None:
        # The role and the database came with the base backup.
        self.version = self.admin_sql("SHOW server_version").strip()

    def in_recovery(self) -> bool:
        """
        @return: whether the server is still a standby
            (C{pg_is_in_recovery()}).
        @raise subprocess.CalledProcessError: the server did not answer.
        """
        return self.admin_sql("SELECT pg_is_in_recovery()").strip() == "t"


class PostgresCluster(Owned):
    """
    A PostgreSQL primary with one streaming hot standby, both throwaway
    servers on free loopback ports, for failover tests::

        def setUp(self):
            self.cluster = PostgresCluster(synchronous=True)
            self.addCleanup(self.cluster.destroy)
            self.cluster.start()

        def test_failover(self):
            self.cluster.kill_primary()
            self.cluster.promote()
            conn = psycopg2.connect(**self.cluster.standby.connect_kwargs("psycopg2"))

    or C{with PostgresCluster() as cluster:}, which destroys it when the
    block ends, even on error.

    L{primary} and L{standby} name the servers by the role they were made
    for; they keep those names after L{promote}.

    With C{synchronous=True} the primary names the standby in
    C{synchronous_standby_names} with C{synchronous_commit=on}: a commit on
    the primary returns only once the standby has flushed it, so a write
    acknowledged by the primary is never lost by a failover; but while the
    standby is down, commits on the primary wait (see L{make_asynchronous}).
    The promoted standby and the restarted old primary never wait for a
    standby.

    Every wait of the cluster has a deadline, and raises C{RuntimeError}
    with the end of the server's log when it passes.

    Both servers' C{kill()} (and L{kill_primary}) kill the backends with
    the postmaster, as a crashed machine would; C{PostgresServer.kill}
    leaves them to notice the postmaster's death, which takes them some
    tens of milliseconds, long enough to answer a query.

    @ivar primary: the primary, a L{PostgresServer}.
    @ivar standby: the standby, a L{StandbyServer}.
    @ivar synchronous: whether replication is synchronous.
    @ivar timeout: how many seconds each wait of the cluster lasts.
    """

    def __init__(
        self,
        synchronous: bool = True,
        settings: Optional[Mapping[str, SettingValue]] = None,
        standby_name: str = "standby",
        timeout: float = _DEFAULT_TIMEOUT,
    ) -> None:
        """
        @param synchronous: make replication synchronous.
        @param settings: server settings for both servers (PostgreSQL
            C{-c name=value}), on top of those replication needs.
        @param standby_name: the standby's C{application_name}.
        @param timeout: see L{timeout}.
        @raise ServerNotAvailable: from L{start}, when PostgreSQL is not
            installed.
        """
        self.synchronous = synchronous
        self.timeout = timeout
        common: Dict[str, SettingValue] = {
            "wal_level": "replica",
            "max_wal_senders": 10,
            "hot_standby": "on",
            # PostgresServer turns synchronous_commit off for speed; it
            # must be on for the primary to wait for a synchronous standby.
            "synchronous_commit": "on",
            "wal_keep_size": "64MB",
            "wal_receiver_status_interval": "1s",
            # A standby whose primary went away retries every 5 s by
            # default; a restarted primary should get it back sooner.
            "wal_retrieve_retry_interval": "200ms",
        }
        common.update(settings or {})
        self.primary: PostgresServer = PostgresServer(settings=common)
        self.standby = StandbyServer(self.primary, standby_name, settings=common)

    def __repr__(self) -> str:
        return "<%s primary=%r standby=%r>" % (type(self).__name__, self.primary, self.standby)

    @property
    def servers(self) -> List[PostgresServer]:
        """
        The primary and the standby, in that order.
        """
        return [self.primary, self.standby]

    # --- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """
        Start the primary, copy it into the standby with C{pg_basebackup},
        start the standby, and return once the primary sees it streaming
        (and, when L{synchronous}, as its synchronous standby).

        On failure both servers are destroyed.

        @raise ServerNotAvailable: PostgreSQL is not installed.
        @raise RuntimeError: a server did not come up, or the standby did
            not stream in time; the message has the end of its log.
        """
        try:
            self.primary.start()
            self.standby.start()
            if self.synchronous:
                self._set_primary_setting(
                    "synchronous_standby_names", quote_ident(self.standby.application_name)
                )
            self.wait_for_streaming()
        except BaseException:
            self.destroy()
            raise
        _log.info("{cluster!r} started", cluster=self)

    def destroy(self) -> None:
        """
        Kill both servers and remove their directories.  Safe to call more
        than once, and from C{addCleanup}.
        """
        self.standby.destroy()
        self.primary.destroy()

    # --- replication state ---------------------------------------------------

    def replication_state(self) -> Optional[Dict[str, str]]:
        """
        @return: the primary's C{pg_stat_replication} row for the standby
            (C{state}, C{sync_state}, C{application_name}), or C{None} if
            the standby is not connected.
        @raise subprocess.CalledProcessError: the primary did not answer.
        """
        out = self.primary.admin_sql(
            "SELECT application_name, state, sync_state FROM pg_stat_replication"
            " WHERE application_name = %s" % (quote_literal(self.standby.application_name),)
        ).strip()
        if not out:
            return None
        name, state, sync_state = out.splitlines()[0].split("\t")
        return {"application_name": name, "state": state, "sync_state": sync_state}

    def wait_for_streaming(self, timeout: Optional[float] = None) -> None:
        """
        Wait until the primary's C{pg_stat_replication} shows the standby
        C{streaming}, and C{sync} when L{synchronous}.

        @raise RuntimeError: it did not within C{timeout} seconds (default
            L{timeout}); the message has the end of the standby's log.
        """
        wanted = "sync" if self.synchronous else "async"

        def streaming() -> bool:
            state = self.replication_state()
            return (
                state is not None
                and state["state"] == "streaming"
                and state["sync_state"] == wanted
            )

        self._wait(
            self.standby,
            streaming,
            "stream from the primary (%s)" % (wanted,),
            timeout,
        )

    def wait_for_replay(self, timeout: Optional[float] = None) -> None:
        """
        Wait until the standby has replayed everything the primary has
        written so far, so that a read on the standby sees it.

        @raise RuntimeError: it had not within C{timeout} seconds (default
            L{timeout}); the message has the end of the standby's log.
        """
        target = self.primary.admin_sql("SELECT pg_current_wal_lsn()").strip()
        self._wait(
            self.standby,
            lambda: self.standby.admin_sql(
                "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn" % (quote_literal(target),)
            ).strip()
            == "t",
            "replay the primary's WAL up to %s" % (target,),
            timeout,
        )

    def make_asynchronous(self) -> None:
        """
        Stop the primary waiting for the standby: reset
        C{synchronous_standby_names} and reload.  Commits that were waiting
        for the standby then return.  L{make_synchronous} is the inverse.

        @raise subprocess.CalledProcessError: the primary did not answer.
        """
        self._set_primary_setting("synchronous_standby_names", None)
        self.synchronous = False

    def make_synchronous(self) -> None:
        """
        Make the primary wait for the standby again, and wait until the
        standby is its synchronous standby.

        @raise RuntimeError: the standby did not become synchronous in time.
        """
        self._set_primary_setting(
            "synchronous_standby_names", quote_ident(self.standby.application_name)
        )
        self.synchronous = True
        self.wait_for_streaming()

    # --- failover ------------------------------------------------------------

    def kill_primary(self) -> None:
        """
        Kill the primary with SIGKILL, as a crashed machine would: the
        postmaster and every backend at once, so that no client of it can
        run another query.  The standby keeps running (and retries to
        stream).
        """
        self.primary.kill()

    def stop_primary(self) -> None:
        """
        Shut the primary down cleanly (fast shutdown: its sessions end with
        SQLSTATE 57P01; it sends its last WAL to the standby first).
        """
        self.primary.stop()

    def promote(self, timeout: Optional[float] = None) -> None:
        """
        Promote the standby (C{pg_promote()}) and wait until it is out of
        recovery and accepts writes.  The primary is left as it is: kill or
        stop it first to rehearse a failover, or keep it to rehearse a
        split brain (a synchronous primary's commits then wait for the
        standby it lost, until L{make_asynchronous}).

        @raise RuntimeError: the standby is not running, or it was still in
            recovery after C{timeout} seconds (default L{timeout}); the
            message has the end of its log.
        """
        if not self.standby.running:
            raise RuntimeError("%r: cannot promote a standby that does not run" % (self,))
        timeout = self.timeout if timeout is None else timeout
        self.standby.admin_sql("SELECT pg_promote(wait => false)")
        self._wait(self.standby, lambda: not self.standby.in_recovery(), "leave recovery", timeout)
        _log.info("{standby!r} promoted", standby=self.standby)

    def restart_old_primary_read_only(self) -> None:
        """
        Start the old primary again (stopping it first if it still runs) as
        a server that accepts connections but refuses writes, as a demoted
        primary or a reader node does after a failover: a write fails with
        SQLSTATE 25006 (C{cannot execute INSERT in a read-only
        transaction}).

        How: it starts with C{default_transaction_read_only=on} on its
        command line, so every transaction is read-only (a client that asks
        for C{READ WRITE} explicitly could still write: this rehearses what
        clients see, it is no fence), and with an empty
        C{synchronous_standby_names}, so that it never waits for a standby
        that is gone.  It is not a standby: C{pg_is_in_recovery()} is false
        on it, but C{default_transaction_read_only} is reported to clients,
        so libpq's C{target_session_attrs=read-write} skips it.

        Undo with L{restore_old_primary}.

        @raise RuntimeError: it did not come up; the message has the end of
            its log.
        """
        self.primary.stop()
        self.primary.settings["default_transaction_read_only"] = "on"
        self.primary.settings["synchronous_standby_names"] = ""
        self.primary.start()

    def restore_old_primary(self) -> None:
        """
        Undo L{restart_old_primary_read_only}: restart the old primary
        writable, with the settings it had before (synchronous again, if it
        was: then, after a promotion, its commits wait for a standby that
        never comes back, until L{make_asynchronous}).

        @raise RuntimeError: it did not come up; the message has the end of
            its log.
        """
        self.primary.stop()
        self.primary.settings.pop("default_transaction_read_only", None)
        self.primary.settings.pop("synchronous_standby_names", None)
        self.primary.start()

    def make_read_only(self, server: PostgresServer, timeout: Optional[float] = None) -> None:
        """
        Make C{server} read-only under its sessions' feet, as a managed
        database does when a disk fills or a node is demoted: C{ALTER SYSTEM
        SET default_transaction_read_only = on} and C{pg_reload_conf()}.
        Every session's next transaction, existing sessions included, is
        read-only: a write fails with SQLSTATE 25006.

        Returns once new sessions see the setting; by then the server has
        signalled every existing session, which applies it before its next
        command.  A setting given on the command line (as
        L{restart_old_primary_read_only} does) takes precedence over
        C{ALTER SYSTEM}.

        @param server: L{primary}, L{standby} (once promoted), or any
            running L{PostgresServer}.
        @raise RuntimeError: the setting did not take effect within
            C{timeout} seconds (default L{timeout}).
        @raise subprocess.CalledProcessError: the server did not answer.
        """
        self._alter_system(server, "default_transaction_read_only", "on", timeout)

    def make_read_write(self, server: PostgresServer, timeout: Optional[float] = None) -> None:
        """
        Undo L{make_read_only}: C{ALTER SYSTEM RESET
        default_transaction_read_only} and reload; every session's next
        transaction may write again.

        @raise RuntimeError: the setting did not take effect within
            C{timeout} seconds (default L{timeout}).
        @raise subprocess.CalledProcessError: the server did not answer.
        """
        self._alter_system(server, "default_transaction_read_only", None, timeout)

    # --- connecting ----------------------------------------------------------

    def multi_host_kwargs(
        self,
        driver: str,
        target_session_attrs: Optional[str] = "read-write",
        servers: Optional[Sequence[PostgresServer]] = None,
    ) -> Dict[str, object]:
        """
        Keyword arguments for C{driver.connect()} in libpq's multi-host
        form (C{host=127.0.0.1,127.0.0.1 port=p1,p2}): libpq tries the
        servers in order and keeps the first that suits
        C{target_session_attrs}.

        @param driver: the DB-API module's name, a PostgreSQL driver
            built on libpq.
        @param target_session_attrs: libpq's setting (C{"read-write"},
            C{"any"}, C{"primary"}, C{"standby"}...), or C{None} to leave
            it out.
        @param servers: the servers in the order to try them (default:
            L{primary} then L{standby}).
        @raise ValueError: C{driver} is not a PostgreSQL driver.
        """
        ports = [server.port for server in servers or self.servers]
        kwargs = _target.connect_kwargs(self.primary, driver, ports)
        if target_session_attrs is not None:
            kwargs["target_session_attrs"] = target_session_attrs
        return kwargs

    def multi_host_dsn(
        self,
        target_session_attrs: Optional[str] = "read-write",
        servers: Optional[Sequence[PostgresServer]] = None,
    ) -> str:
        """
        L{multi_host_kwargs} as a libpq connection string, for
        C{psycopg2.connect(dsn)}, C{psycopg.connect(conninfo)} or psql.
        """
        # Spelled as the default PostgreSQL driver spells libpq's keywords.
        libpq = _target.default_driver(self.primary.family).name
        return _conninfo(self.multi_host_kwargs(libpq, target_session_attrs, servers))

    def url(
        self,
        driver: Optional[str] = None,
        target_session_attrs: Optional[str] = "read-write",
        servers: Optional[Sequence[PostgresServer]] = None,
    ) -> str:
        """
        A database URL with both servers as a host list, for
        L{ReconnectingConnectionPool.from_url
        <txreconnect.ReconnectingConnectionPool.from_url>}: the pool's
        driver tries them in order and keeps the first that suits
        C{target_session_attrs}.

        @param driver: a PostgreSQL driver's module name for a
            C{postgresql+driver://} scheme, or C{None} for
            C{postgresql://} (the default driver).
        @param target_session_attrs: which server to keep (C{"read-write"},
            C{"any"}, C{"primary"}, C{"standby"}...), or C{None} to leave
            it out.
        @param servers: the servers in the order to try them (default:
            L{primary} then L{standby}).
        @return: C{postgresql[+driver]://user:password@127.0.0.1:p1,}
            C{127.0.0.1:p2/database?target_session_attrs=...}.
        @raise ValueError: C{driver} is not a PostgreSQL driver.
        """
        ports = [server.port for server in servers or self.servers]
        query = None if target_session_attrs is None else {"target_session_attrs": target_session_attrs}
        return _target.url(self.primary, driver, ports, query)

    # --- helpers -------------------------------------------------------------

    def _set_primary_setting(self, name: str, value: Optional[str]) -> None:
        self._alter_system(self.primary, name, value, None)

    def _alter_system(
        self, server: PostgresServer, name: str, value: Optional[str], timeout: Optional[float]
    ) -> None:
        if value is None:
            server.admin_sql("ALTER SYSTEM RESET %s" % (name,))
        else:
            server.admin_sql("ALTER SYSTEM SET %s = %s" % (name, quote_literal(value)))
        before = server.admin_sql("SELECT pg_conf_load_time()").strip()
        server.admin_sql("SELECT pg_reload_conf()")
        # The postmaster reloads its configuration, then signals every
        # backend, and only then forks new ones, which inherit its load
        # time: a new session that sees a later load time proves that every
        # existing session has been told (each applies it before its next
        # command).
        self._wait(
            server,
            lambda: server.admin_sql(
                "SELECT pg_conf_load_time() > %s::timestamptz" % (quote_literal(before),)
            ).strip()
            == "t",
            "reload its configuration (%s)" % (name,),
            timeout,
        )

    def _wait(
        self,
        server: PostgresServer,
        condition: Callable[[], bool],
        what: str,
        timeout: Optional[float] = None,
    ) -> None:
        """
        Wait until C{condition} holds, asking C{server} (whose admin SQL
        may fail meanwhile: the last failure is reported).

        @raise WaitTimeout: (a C{RuntimeError}) it did not hold within
            C{timeout} seconds (default L{timeout}); the message has the
            end of C{server}'s log.
        """
        timeout = self.timeout if timeout is None else timeout
        server._wait_until(condition, timeout, what, retry_on=(subprocess.CalledProcessError,))

