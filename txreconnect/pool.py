"""
L{ReconnectingConnectionPool}: C{adbapi.ConnectionPool} that survives lost
connections.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, Optional, TypeVar

from twisted.enterprise import adbapi
from twisted.logger import Logger

from txreconnect._replay import is_idempotent
from txreconnect._stats import Stats
from txreconnect.drivers import Driver, driver_for
from txreconnect.errors import ConfigurationError, DisconnectionError, TransactionOutcomeUnknown

__all__ = ["ReconnectingConnectionPool"]

_T = TypeVar("_T")

#: keys of connect() keywords that may be shown in a repr or a log line
_SHOWN_KEYS = ("host", "port", "dbname", "database", "db")


class _Connection(adbapi.Connection):
    """
    adbapi's connection wrapper without adbapi's own reconnect logic (the
    pool handles lost connections), recording what may have been committed.

    @ivar commit_started: whether C{commit()} was called, successfully or
        not, since this wrapper was made.
    @ivar statement_ran: whether a statement may have been sent.
    @ivar autocommit: whether the connection was in autocommit mode when
        the first statement was sent, or L{None} if not recorded.
    """

    _connection: Any
    _pool: "ReconnectingConnectionPool"
    commit_started = False
    statement_ran = False
    autocommit: Optional[bool] = None

    def sending(self) -> None:
        """
        Note that a statement is about to be sent.  The first time, record
        whether the connection is in autocommit mode: once the connection
        is lost it may be too late to ask.
        """
        if not self.statement_ran:
            self.statement_ran = True
            self.autocommit = self._pool._autocommit(self._connection)

    def rollback(self) -> None:
        self._connection.rollback()

    def commit(self) -> None:
        self.commit_started = True
        self._connection.commit()


class _Transaction(adbapi.Transaction):
    """
    adbapi's cursor wrapper, recording on its connection that a statement
    was sent, and never reconnecting by itself.
    """

    _connection: _Connection
    _cursor: Any

    def reopen(self) -> None:
        if self._cursor is not None:
            self.close()
        self._cursor = self._connection.cursor()

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        self._connection.sending()
        return self._cursor.execute(*args, **kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> Any:
        self._connection.sending()
        return self._cursor.executemany(*args, **kwargs)

    def callproc(self, *args: Any, **kwargs: Any) -> Any:
        self._connection.sending()
        return self._cursor.callproc(*args, **kwargs)


class _Birth:
    """
    When and under which pool generation a connection was opened (or last
    found alive).
    """

    __slots__ = ("generation", "opened")

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.opened = time.monotonic()


class ReconnectingConnectionPool(adbapi.ConnectionPool):
    """
    A drop-in replacement for L{adbapi.ConnectionPool} that survives lost
    database connections.

    It takes the same arguments: the DB-API module's name, then every
    argument for its C{connect()}, and the C{cp_*} keywords adbapi knows
    (C{cp_min}, C{cp_max}, C{cp_name}, C{cp_noisy}, C{cp_openfun},
    C{cp_reactor}; C{cp_reconnect} and C{cp_good_sql} are accepted and
    unused, since this pool always reconnects).  Its own keywords:

      - C{cp_replays} (default 1): how many times one call may be replayed
        on a new connection after its connection was lost.

    When the connection of a pool thread is lost during C{runInteraction},
    C{runQuery} or C{runOperation}, the pool discards it without noise,
    opens a new one and runs the interaction again on a fresh
    L{adbapi.Transaction}.  It never does so when the outcome is unknown:
    when the connection died while COMMIT was in flight, or, in autocommit
    mode, after a statement was sent; the caller then gets
    L{TransactionOutcomeUnknown}.  C{runWithConnection} is not replayed
    (the function may commit by itself) unless the function is marked
    with L{txreconnect.idempotent}.  A disconnection seen by one thread
    makes every other thread check its connection (one round trip) before
    using it again.  Errors that are not disconnections are rolled back
    and passed on unchanged, never replayed.

    @raise ConfigurationError: an unknown C{cp_*} keyword or an invalid
        value.
    @ivar dbapi: the driver module itself.
    """

    CP_ARGS = adbapi.ConnectionPool.CP_ARGS + ["replays"]

    #: how many times a call may be replayed after its connection was lost
    replays = 1

    connectionFactory = _Connection
    transactionFactory = _Transaction

    _log = Logger()

    def __init__(self, dbapiName: str, *connargs: Any, **connkw: Any) -> None:
        known = {"cp_" + name for name in self.CP_ARGS} | {"cp_reactor"}
        unknown = sorted(k for k in connkw if k.startswith("cp_") and k not in known)
        if unknown:
            raise ConfigurationError(
                "unknown pool option %s (known: %s)" % (", ".join(unknown), ", ".join(sorted(known)))
            )
        super().__init__(dbapiName, *connargs, **connkw)
        if not isinstance(self.replays, int) or isinstance(self.replays, bool) or self.replays < 0:
            raise ConfigurationError("cp_replays must be an integer >= 0, not %r" % (self.replays,))
        self._driver: Driver = driver_for(self.dbapi)
        shown = dict(self.connkw)
        if connargs and isinstance(connargs[0], str):
            shown.setdefault("dsn", connargs[0])
        for key, value in self._driver.connect_defaults(shown).items():
            self.connkw.setdefault(key, value)
        self._births: Dict[int, _Birth] = {}
        self._generation = 0
        self._generation_lock = threading.Lock()
        self._stats = Stats()

    def __repr__(self) -> str:
        where = " ".join(
            "%s=%s" % (key, self.connkw[key]) for key in _SHOWN_KEYS if key in self.connkw
        )
        return "<%s %s%s%s cp_max=%d>" % (
            type(self).__name__,
            self.dbapiName,
            " " + where if where else "",
            " name=%s" % (self.name,) if self.name else "",
            self.max,
        )

    def stats(self) -> Dict[str, float]:
        """
        @return: a snapshot of the pool's counters: C{opened}, C{closed},
            C{disconnects}, C{replays}, C{replays_failed},
            C{outcome_unknown}, C{connect_failures}, C{health_checks},
            C{health_check_failures}.
        """
        return self._stats.snapshot()

    # --- the run loop (pool threads) -----------------------------------------

    def _runInteraction(self, interaction: Callable[..., _T], *args: Any, **kw: Any) -> _T:
        def attempt(conn: _Connection) -> _T:
            trans = self.transactionFactory(self, conn)
            if not isinstance(trans, _Transaction):
                conn.statement_ran = True  # we cannot tell: assume the worst
            result = interaction(trans, *args, **kw)
            trans.close()
            conn.commit()
            return result

        marked = is_idempotent(interaction)
        return self._run(attempt, replay=True, idempotent=marked, what="interaction")

    def _runWithConnection(self, func: Callable[..., _T], *args: Any, **kw: Any) -> _T:
        def attempt(conn: _Connection) -> _T:
            conn.statement_ran = True  # the function uses the connection directly
            result = func(conn, *args, **kw)
            conn.commit()
            return result

        marked = is_idempotent(func)
        return self._run(attempt, replay=marked, idempotent=marked, what="function")

    def _run(
        self,
        attempt: Callable[[_Connection], _T],
        replay: bool,
        idempotent: bool,
        what: str,
    ) -> _T:
        replayed = 0
        while True:
            conn = self._checkout()
            try:
                return attempt(conn)
            except BaseException as error:
                raw = conn._connection
                if not self._driver.is_disconnect(error, raw):
                    self._rollback(conn)
                    raise
                unknown = conn.commit_started or (
                    conn.statement_ran
                    and (self._autocommit(raw) if conn.autocommit is None else conn.autocommit)
                )
                self._lost(raw)
                if unknown and not idempotent:
                    self._stats.add("outcome_unknown")
                    self._incident(error, "not replaying the %s: its outcome is unknown" % (what,))
                    raise TransactionOutcomeUnknown(
                        "lost the database connection (%s) after the %s may have committed "
                        "(COMMIT was in flight, or autocommit was on); it may or may not have "
                        "taken effect, so check before retrying" % (_describe(error), what)
                    ) from error
                if replay and replayed < self.replays:
                    replayed += 1
                    self._stats.add("replays")
                    self._incident(error, "replaying the %s (%d of %d)" % (what, replayed, self.replays))
                    continue
                if replayed:
                    self._stats.add("replays_failed")
                self._incident(error, "giving up after %d replays" % (replayed,))
                raise DisconnectionError(
                    "lost the database connection (%s) before the %s could commit; nothing "
                    "was committed, so retrying the call is safe" % (_describe(error), what)
                ) from error

    def _checkout(self) -> _Connection:
        """
        Get this thread's connection wrapper, opening a connection if needed.

        @raise DisconnectionError: the database could not be reached.
        """
        try:
            conn: _Connection = self.connectionFactory(self)
        except self.dbapi.Error as error:
            self._stats.add("connect_failures")
            self._log.warn(
                "{pool!r}: could not connect to the database: {error}",
                pool=self,
                error=_describe(error),
            )
            raise DisconnectionError(
                "could not connect to the database (%s); nothing was sent, so retrying "
                "the call is safe" % (_describe(error),)
            ) from error
        return conn

    def _rollback(self, conn: _Connection) -> None:
        """
        Roll back after an error that is not a disconnection.  If the
        rollback finds the connection dead, discard it without noise.
        """
        raw = conn._connection
        try:
            conn.rollback()
        except Exception as error:
            if not self._driver.is_disconnect(error, raw):
                self._log.failure("{pool!r}: rollback failed; discarding the connection", pool=self)
            self._lost(raw)

    def _autocommit(self, raw: Any) -> bool:
        try:
            return self._driver.is_autocommit(raw)
        except Exception:
            return True  # cannot tell: assume the worst

    def _lost(self, raw: Any) -> None:
        """
        Discard this thread's dead connection C{raw}, and if it was not
        already suspected, make every older connection suspect.
        """
        self._stats.add("disconnects")
        tid = self.threadID()
        birth = self._births.get(tid)
        if self.connections.get(tid) is raw:
            self._discard(tid)
        else:
            self._driver.close(raw)
        if birth is not None:
            with self._generation_lock:
                if birth.generation == self._generation:
                    self._generation += 1

    def _incident(self, error: BaseException, action: str) -> None:
        self._log.warn(
            "{pool!r}: lost the database connection ({error}); {action}",
            pool=self,
            error=_describe(error),
            action=action,
        )

    # --- connections (pool threads) ----------------------------------------

    def connect(self) -> Any:
        """
        Return this thread's DB-API connection, first replacing it if it is
        suspect (older than a disconnection another thread saw) and its
        ping fails, or opening one if there is none.

        Called in a pool thread only.

        @raise Exception: the driver's error if a new connection cannot be
            opened.
        """
        tid = self.threadID()
        conn = self.connections.get(tid)
        if conn is not None and not self._usable(tid, conn):
            self._discard(tid)
            conn = None
        if conn is None:
            conn = self._open()
            self.connections[tid] = conn
            self._births[tid] = _Birth(self._generation)
        return conn

    def _usable(self, tid: int, conn: Any) -> bool:
        birth = self._births[tid]
        generation = self._generation
        if birth.generation == generation:
            return True
        self._stats.add("health_checks")
        try:
            self._driver.ping(conn)
        except Exception:
            self._stats.add("health_check_failures")
            return False
        birth.generation = generation
        return True

    def _open(self) -> Any:
        if self.noisy:
            self._log.info("{pool!r}: connecting", pool=self)
        conn = self.dbapi.connect(*self.connargs, **self.connkw)
        try:
            self._driver.prepare(conn)
            if self.openfun is not None:
                self.openfun(conn)
        except BaseException:
            self._driver.close(conn)
            raise
        self._stats.add("opened")
        return conn

    def _discard(self, tid: int) -> None:
        conn = self.connections.pop(tid, None)
        self._births.pop(tid, None)
        if conn is not None:
            self._close(conn)

    def disconnect(self, conn: Any) -> None:
        """
        Close C{conn}, this thread's connection, and forget it.  Unlike
        adbapi's, never raises when the connection was already discarded.
        """
        if self.connections.get(self.threadID()) is conn:
            self._discard(self.threadID())
        else:
            self._driver.close(conn)

    def _close(self, conn: Any) -> None:
        if self.noisy:
            self._log.info("{pool!r}: closing a connection", pool=self)
        self._driver.close(conn)
        self._stats.add("closed")

    def finalClose(self) -> None:
        """
        Stop the threads and close every connection (the reactor's shutdown
        trigger, or L{close}).
        """
        super().finalClose()
        self._births.clear()

    def __getstate__(self) -> Dict[str, Any]:
        state: Dict[str, Any] = super().__getstate__()
        state["replays"] = self.replays
        return state


def _describe(error: BaseException) -> str:
    """
    @return: the error's type and the first line of its message.
    """
    lines = str(error).strip().splitlines()
    return "%s: %s" % (type(error).__name__, lines[0] if lines else "")

