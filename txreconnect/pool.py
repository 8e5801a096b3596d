"""
L{ReconnectingConnectionPool}: C{adbapi.ConnectionPool} that survives lost
connections.
"""

from __future__ import annotations

import dataclasses
import math
import random
import threading
import time
from functools import cached_property
from types import MappingProxyType
from threading import get_ident as _get_ident
from time import monotonic as _monotonic
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple, Type, TypeVar

from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python import reflect
from twisted.python.threadpool import ThreadPool

from txreconnect import _decide, _fork
from txreconnect._admission import Gate
from txreconnect._credentials import Credentials, CredentialsFailed
from txreconnect._decide import Attempt, Kind, Outcome
from txreconnect._options import count, flag, optional_seconds, sizes
from txreconnect._outage import UP, Outage, describe
from txreconnect._replay import is_idempotent
from txreconnect._resolve import CommitMarkers, Marker
from txreconnect._stats import Stats
from txreconnect._timing import Snapshot, Timings
from txreconnect._watchdog import SocketId, Watchdog, socket_id
from txreconnect.drivers import Driver, driver_for
from txreconnect.errors import ConfigurationError
from txreconnect.policy import FailFast, ReconnectPolicy

__all__ = ["ReconnectingConnectionPool"]

_T = TypeVar("_T")

#: the counter of each answer of a commit resolution
_RESOLVED = {True: "resolved_committed", False: "resolved_aborted", None: "resolve_failed"}

#: what the log line says happened, by kind of error
_INCIDENTS = {
    Kind.DISCONNECT: "lost the database connection",
    Kind.WRONG_SERVER: "a server that is read-only or not ready (a Galera node outside the primary component) refused a statement",
    Kind.CONFLICT: "the database rolled the transaction back because of a conflict",
}

#: the pool's own options, as cp_* keywords
_OWN_OPTIONS = (
    "replays",
    "policy",
    "health_check",
    "max_lifetime",
    "stall_timeout",
    "follow_writer",
    "conflict_retries",
    "resolve_commits",
    "max_waiting",
    "wait_timeout",
    "credentials",
)

#: conflicts further apart than this (seconds) are separate bursts, each
#: logged once
_CONFLICT_BURST_GAP = 10.0


class _Connection(adbapi.Connection):
    """
    adbapi's connection wrapper without adbapi's own reconnect logic (the
    pool handles lost connections), recording what may have been committed.

    @ivar commit_started: whether C{commit()} was called, successfully or
        not, since this wrapper was made.
    @ivar statement_ran: whether a statement may have been sent.
    @ivar autocommit: whether the connection was in autocommit mode when
        the first statement was sent, or C{None} if not recorded.
    @ivar marker: the marker the transaction left before COMMIT
        (C{cp_resolve_commits}), or C{None}.
    @ivar result: what the interaction returned, kept until its COMMIT
        is through.
    """

    _connection: Any
    _pool: "ReconnectingConnectionPool"
    commit_started = False
    statement_ran = False
    marker: Optional[Marker] = None
    result: Any = None
    autocommit: Optional[bool] = None

    def __init__(self, pool: "ReconnectingConnectionPool") -> None:
        # adbapi's, without the indirection through reconnect(): this is
        # on the path of every call.
        self._pool = pool
        self._connection = pool.connect()

    def sending(self) -> None:
        """
        Note that a statement is about to be sent.  The first time, record
        whether the connection is in autocommit mode: once the connection
        is lost it may be too late to ask.
        """
        if not self.statement_ran:
            self.statement_ran = True
            self.autocommit = self._pool._driver.is_autocommit(self._connection)

    def rollback(self) -> None:
        self._connection.rollback()

    def commit(self) -> None:
        self.commit_started = True
        self._connection.commit()


class _MarkingConnection(_Connection):
    """
    The connection wrapper of a pool with C{cp_resolve_commits}: a
    transaction that ran a statement, outside autocommit, leaves its
    marker just before COMMIT (see L{txreconnect._resolve}).  A pool
    without the option never pays for the check.
    """

    def commit(self) -> None:
        if self.statement_ran:
            pool = self._pool
            raw = self._connection
            autocommit = self.autocommit
            if autocommit is None:
                autocommit = pool._driver.is_autocommit(raw)
            markers = pool._markers
            if not autocommit and markers is not None:
                self.marker = markers.mark(pool, raw, _get_ident())
        self.commit_started = True
        self._connection.commit()
        # Through: a marker describes only a COMMIT in flight (a function
        # of runWithConnection may commit more than once).
        self.marker = None


#: cursor attributes that send no statement (DB-API's, and what the drivers
#: add of the kind); any other reached through a transaction may send one
#: (psycopg2's C{copy_from}, psycopg's C{copy}, C{connection})
_SENDS_NOTHING = frozenset(
    {
        "arraysize",
        "description",
        "fetchall",
        "fetchmany",
        "fetchone",
        "lastrowid",
        "mogrify",
        "query",
        "rowcount",
        "rownumber",
        "setinputsizes",
        "setoutputsize",
        "statusmessage",
    }
)


class _Transaction(adbapi.Transaction):
    """
    adbapi's cursor wrapper, recording on its connection that a statement
    was sent (through C{execute}, C{executemany}, C{callproc}, or any
    cursor attribute that may send one), and never reconnecting by
    itself.
    """

    _connection: _Connection
    _cursor: Any

    def __init__(self, pool: "ReconnectingConnectionPool", connection: _Connection) -> None:
        # adbapi's, without the indirection through reopen(): this is on
        # the path of every call.
        self._pool = pool
        self._connection = connection
        self._cursor = connection._connection.cursor()

    def reopen(self) -> None:
        if self._cursor is not None:
            self.close()
        self._cursor = self._connection.cursor()

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        if not self._connection.statement_ran:
            self._connection.sending()
        return self._cursor.execute(*args, **kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> Any:
        self._connection.sending()
        return self._cursor.executemany(*args, **kwargs)

    def callproc(self, *args: Any, **kwargs: Any) -> Any:
        self._connection.sending()
        return self._cursor.callproc(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        connection = self._connection
        if not connection.statement_ran and name not in _SENDS_NOTHING:
            connection.sending()
        return getattr(self._cursor, name)


class _Tries:
    """
    How many times one call ran again already, by reason; made only when
    an attempt fails.
    """

    __slots__ = ("replayed", "conflicts", "done", "result")

    def __init__(self) -> None:
        self.replayed = 0
        self.conflicts = 0
        #: whether the call turned out to have succeeded after all
        self.done = False
        self.result: Any = None


class _Birth:
    """
    What the pool knows about one thread's connection: the pool generation
    it belongs to (older ones are suspect), when it must be recycled, and
    when it was last used.
    """

    __slots__ = ("generation", "expires", "last_used", "socket", "probe", "track_use")

    def __init__(
        self,
        generation: int,
        lifetime: Optional[float],
        socket: Optional[SocketId],
        health_check: bool = False,
        probe: bool = False,
    ) -> None:
        now = _monotonic()
        self.generation = generation
        self.socket = socket
        # The probe that found the database back: its first call ends the
        # head start (Outage.end_head_start).
        self.probe = probe
        # Whether the end of each call must be noted (ReconnectingConnectionPool._used):
        # one attribute read on the path of every call.
        self.track_use = health_check or probe
        # Recycle ages get up to 10% jitter, so that connections opened
        # together are not all replaced at once.
        self.expires = math.inf if lifetime is None else now + lifetime * (1 - 0.1 * random.random())
        self.last_used = now


def _interact(pool: Any, conn: _Connection, interaction: Callable[..., _T], args: Any, kw: Any) -> _T:
    """
    One attempt of C{runInteraction}: the interaction on a new transaction,
    then COMMIT.
    """
    trans = pool.transactionFactory(pool, conn)
    if not isinstance(trans, _Transaction):
        conn.statement_ran = True  # we cannot tell: assume the worst
    result = interaction(trans, *args, **kw)
    trans.close()
    try:
        conn.commit()
    except BaseException:
        conn.result = result  # for a COMMIT that turns out to have taken effect
        raise
    return result


def _with_connection(pool: Any, conn: _Connection, func: Callable[..., _T], args: Any, kw: Any) -> _T:
    """
    One attempt of C{runWithConnection}: the function on the connection,
    then COMMIT.
    """
    conn.statement_ran = True  # the function uses the connection directly
    result = func(conn, *args, **kw)
    try:
        conn.commit()
    except BaseException:
        conn.result = result  # for a COMMIT that turns out to have taken effect
        raise
    return result


class ReconnectingConnectionPool(adbapi.ConnectionPool):
    """
    A drop-in replacement for C{adbapi.ConnectionPool} that survives lost
    database connections.

    It takes the same arguments: the DB-API module's name, then every
    argument for its C{connect()}, and the C{cp_*} keywords adbapi knows
    (C{cp_min}, C{cp_max}, C{cp_name}, C{cp_noisy}, C{cp_openfun},
    C{cp_reactor}; C{cp_reconnect} and C{cp_good_sql} are accepted and
    unused, since this pool always reconnects).  Its own keywords:

      - C{cp_replays} (default 1): how many times one call may be replayed
        on a new connection after its connection was lost.
      - C{cp_policy} (default L{FailFast()<txreconnect.FailFast>}): what to
        do when a new connection cannot be had: fail at once, or
        L{WaitForDatabase<txreconnect.WaitForDatabase>} with backoff.
      - C{cp_health_check} (default C{None}, off): ping a connection that
        sat idle for more than this many seconds before using it (0: on
        every checkout), and replace it quietly if the ping fails.
      - C{cp_max_lifetime} (default C{None}, off): replace a connection
        older than this many seconds (less up to 10% jitter), e.g. below
        MySQL's C{wait_timeout} or a proxy's limit.
      - C{cp_stall_timeout} (default 300): the most seconds one attempt of
        a call may take before the pool takes the network path for dead,
        shuts its socket down and fails the call with
        L{DisconnectionError}, without replaying it.  C{None} turns it off.
      - C{cp_conflict_retries} (default 0): how many times a transaction
        that the server rolled back because of a conflict (a deadlock, a
        serialization failure, a lock wait timeout: see each driver's
        C{is_conflict}) is run again, after a short jittered backoff, on
        the same connection.  Never in autocommit once a statement ran,
        nor for C{runWithConnection}, unless marked idempotent.  When the
        budget is spent the driver's error reaches the caller unchanged.
      - C{cp_resolve_commits} (default C{False}): when the connection is
        lost while COMMIT is in flight, ask the database, on a new
        connection, whether the transaction committed, instead of raising
        L{TransactionOutcomeUnknown}: if it did, the call succeeds with
        the interaction's result; if it did not, it is replayed under the
        usual rules.  Each transaction that wrote leaves a marker row, in
        the table C{txreconnect_commits} (made on first use), as its last
        statement before COMMIT: one more statement per transaction.
        PostgreSQL and MySQL drivers only (see L{txreconnect._resolve}).
      - C{cp_follow_writer} (default C{True}): treat a write refused
        because the server is read-only (PostgreSQL SQLSTATE 25006; MySQL
        and MariaDB errors 1290 and 1836 when C{target_session_attrs} is
        C{read-write}) like a lost connection: discard the connection,
        reconnect through host selection (libpq's multi-host targets; for
        MySQL drivers, the pool's own host list) and replay under the same
        rules.  If the replay meets a read-only server again, the caller
        gets L{WrongServerError}.  C{False}: such errors pass on unchanged.
      - C{cp_max_waiting} (default C{None}, no bound): the most calls that
        may wait for a pool thread; a call beyond it fails at once with
        L{PoolOverloaded}, without reaching the database.
      - C{cp_wait_timeout} (default C{None}, no bound): the longest a call
        may wait for a pool thread, in seconds; past it the call fails
        with L{PoolOverloaded} and never reaches the database.
      - C{cp_credentials} (default C{None}): a callable returning a
        mapping of C{connect()} keywords (say C{user} and C{password}),
        laid over the others for every new connection.  A password (any
        of the driver's secret keywords) may also be given as a callable
        returning it.  Both are called in the pool thread, for each new
        connection; what they raise or return that cannot be used is a
        failed connection attempt, which goes through C{cp_policy}.  With
        L{drain}, credentials rotate without a restart.

    When the connection of a pool thread is lost during C{runInteraction},
    C{runQuery} or C{runOperation}, the pool discards it without noise,
    opens a new one and runs the interaction again on a fresh
    C{adbapi.Transaction}.  It never does so when the outcome is unknown:
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

    CP_ARGS = adbapi.ConnectionPool.CP_ARGS + list(_OWN_OPTIONS)

    #: how many times a call may be replayed after its connection was lost
    replays = 1
    #: what to do when a new connection cannot be had
    policy: ReconnectPolicy = FailFast()
    #: ping connections idle for longer than this (seconds); None: never
    health_check: Optional[float] = None
    #: replace connections older than this (seconds); None: never
    max_lifetime: Optional[float] = None
    #: the longest one attempt may block (seconds); None: no bound
    stall_timeout: Optional[float] = 300.0
    #: treat a write refused by a read-only server as the wrong server
    follow_writer = True
    #: the longest a health-check ping may take (seconds)
    ping_timeout = 10.0
    #: how many times a call may be retried after a conflict
    conflict_retries = 0
    #: whether a COMMIT in flight when the connection was lost is resolved
    resolve_commits = False
    #: the most calls that may wait for a pool thread; None: no bound
    max_waiting: Optional[int] = None
    #: the longest a call may wait for a pool thread (seconds); None: no bound
    wait_timeout: Optional[float] = None
    #: a callable returning connect() keywords for each new connection
    credentials: Optional[Callable[[], Mapping[str, Any]]] = None

    connectionFactory = _Connection
    transactionFactory = _Transaction

    _log = Logger()

    def __init__(self, dbapiName: str, *connargs: Any, **connkw: Any) -> None:
        # Everything that can raise runs before adbapi's __init__, which
        # starts the threads at once when the reactor runs: a bad option
        # leaves no thread and no reactor trigger behind.
        known = {"cp_" + name for name in self.CP_ARGS} | {"cp_reactor"}
        unknown = sorted(k for k in connkw if k.startswith("cp_") and k not in known)
        if unknown:
            raise ConfigurationError(
                "unknown pool option %s (known: %s)" % (", ".join(unknown), ", ".join(sorted(known)))
            )
        sizes(
            connkw.get("cp_min", self.min),
            connkw.get("cp_max", self.max),
            min_given="cp_min" in connkw,
        )
        mine = {name: connkw.get("cp_" + name, getattr(self, name)) for name in _OWN_OPTIONS}
        replays = count("cp_replays", mine["replays"])
        if not isinstance(mine["policy"], ReconnectPolicy):
            raise ConfigurationError(
                "cp_policy must be FailFast() or WaitForDatabase(...), not %r" % (mine["policy"],)
            )
        health_check = optional_seconds("cp_health_check", mine["health_check"], allow_zero=True)
        max_lifetime = optional_seconds("cp_max_lifetime", mine["max_lifetime"])
        stall_timeout = optional_seconds("cp_stall_timeout", mine["stall_timeout"])
        follow_writer = flag("cp_follow_writer", mine["follow_writer"])
        conflict_retries = count("cp_conflict_retries", mine["conflict_retries"])
        resolve_commits = flag("cp_resolve_commits", mine["resolve_commits"])
        max_waiting = None if mine["max_waiting"] is None else count("cp_max_waiting", mine["max_waiting"])
        if max_waiting == 0:
            raise ConfigurationError("cp_max_waiting must be at least 1 (or None: no bound), not 0")
        wait_timeout = optional_seconds("cp_wait_timeout", mine["wait_timeout"])
        # adbapi imports the module by the same name; it is cached.
        driver = driver_for(reflect.namedModule(dbapiName))
        given = {key: value for key, value in connkw.items() if not key.startswith("cp_")}
        credentials = Credentials.find(given, driver.secret_keywords, mine["credentials"])
        wants_writer = driver.wants_writer(connargs, given)
        if resolve_commits and not driver.commit_markers:
            raise ConfigurationError(
                "cp_resolve_commits needs a driver of a PostgreSQL or MySQL server that leaves commit "
                "markers; %s has none" % (dbapiName,)
            )
        defaults = driver.connect_defaults(connargs, given, stall_timeout)
        super().__init__(dbapiName, *connargs, **connkw)
        try:
            self.replays = replays
            self.health_check = health_check
            self.max_lifetime = max_lifetime
            self.stall_timeout = stall_timeout
            self.follow_writer = follow_writer
            self.conflict_retries = conflict_retries
            self.resolve_commits = resolve_commits
            self.max_waiting = max_waiting
            self.wait_timeout = wait_timeout
            self._credentials = credentials
            if resolve_commits and self.connectionFactory is _Connection:
                self.connectionFactory = _MarkingConnection
            # The same ids as adbapi's threadable.getThreadID, without two
            # Python calls on the path of every call.
            self.threadID = _get_ident
            self._driver = driver
            for key, value in defaults.items():
                self.connkw.setdefault(key, value)
            self._wants_writer = wants_writer
            self._births = {}
            self._replacing = set()
            self._new_process_state()
            _fork.track(self)
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_url(cls, url: str, **pool_kw: Any) -> "ReconnectingConnectionPool":
        """
        Make a pool from a DATABASE_URL-style URL, such as
        C{postgresql://app:secret@db/shop?cp_max=10} (the grammar is in
        L{txreconnect.url}).

        @param pool_kw: C{cp_*} options and C{connect()} keywords, which
            override the URL's.
        @raise ConfigurationError: the URL or an option is invalid.
        """
        from txreconnect.url import parse_url

        args, kwargs = parse_url(url).arguments(**pool_kw)
        return cls(*args, **kwargs)

    # --- state, with defaults for a subclass that skips our __init__ ---------
    #
    # A subclass whose __init__ does not call ours (Twisted's own tests do
    # this) still gets a pool that behaves like adbapi's: each piece of
    # state below is made on first use, or, for what every call reads,
    # is a harmless class-level default: a shadowed cached_property would
    # make each read on the path of every call about three times slower
    # (CPython cannot specialise the lookup).

    #: the pool generation: a disconnection seen by one thread makes every
    #: connection of an older generation suspect
    _generation = 0
    #: connections of an older generation than this are replaced without
    #: a ping (they may be on the wrong server)
    _replace_before = 0
    #: whether the connect() arguments ask for a writable server
    _wants_writer = False
    #: when (monotonic) the last conflict was seen
    _last_conflict = -math.inf
    #: the commit markers of this process, with cp_resolve_commits
    _markers: Optional[CommitMarkers] = None
    #: the admission of calls, with cp_max_waiting, cp_wait_timeout or
    #: timings (None: adbapi's path)
    _gate: Optional[Gate] = None
    #: the wait, use and connect histograms, once enable_timings() ran
    _timings: Optional[Timings] = None
    #: the callables among the connect keywords, if any
    _credentials: Optional[Credentials] = None

    #: the driver's rules (a subclass that skips our __init__: generic
    #: rules that know no error, as adbapi knows none)
    _driver: Driver = Driver(None)
    #: what the pool knows about each thread's connection (read-only here)
    _births: Dict[int, _Birth] = MappingProxyType({})  # type: ignore[assignment]
    #: the adbapi pool's connections by thread (read-only here)
    connections: Dict[int, Any] = MappingProxyType({})  # type: ignore[assignment]
    #: the stall watchdog (a subclass that skips our __init__: one that is
    #: never started, since no connection of its is ever born)
    _watchdog: Watchdog = Watchdog(name="txreconnect: no pool")

    @cached_property
    def _replacing(self) -> Set[int]:
        return set()

    @cached_property
    def _generation_lock(self) -> threading.Lock:
        return threading.Lock()

    @cached_property
    def _stats(self) -> Stats:
        return Stats()

    @cached_property
    def _outage(self) -> Outage:
        return Outage(lambda: repr(self), self._stats, self._connect_errors())

    def _connect_errors(self) -> Tuple[Type[BaseException], ...]:
        """
        @return: what a failed connection attempt raises: the driver's
            errors, and L{CredentialsFailed}.
        """
        errors = self._driver.errors or (Exception,)
        return (*(errors if isinstance(errors, tuple) else (errors,)), CredentialsFailed)

    def _new_process_state(self) -> None:
        """
        The state shared by the pool's threads, made anew in a forked
        child (where another thread may have held its locks).
        """
        self._generation = 0
        self._replace_before = 0
        self._generation_lock = threading.Lock()
        self._stats = Stats()
        self._outage = Outage(lambda: repr(self), self._stats, self._connect_errors())
        self._watchdog = Watchdog(name=repr(self))
        self._last_conflict = -math.inf
        self._markers = CommitMarkers() if self.resolve_commits else None
        self._make_gate()

    def _make_gate(self) -> None:
        """
        Admit calls through a L{Gate} if the pool bounds waiting calls or
        measures timings; else straight to the thread pool, as adbapi.
        """
        if self.max_waiting is None and self.wait_timeout is None and self._timings is None:
            self._gate = None
        else:
            self._gate = Gate(self, self.max_waiting, self.wait_timeout, self._timings)

    def __repr__(self) -> str:
        connkw = getattr(self, "connkw", {})
        where = " ".join(
            "%s=%s" % (key, connkw[key]) for key in self._driver.shown_keywords if key in connkw
        )
        return "<%s %s%s%s cp_max=%d>" % (
            type(self).__name__,
            getattr(self, "dbapiName", "?"),
            " " + where if where else "",
            " name=%s" % (self.name,) if self.name else "",
            self.max,
        )

    def stats(self) -> Dict[str, Any]:
        """
        @return: a snapshot of the pool's counters: connections C{opened}
            and C{closed}, C{disconnects} detected, C{replays} and
            C{replays_failed}, C{outcome_unknown} errors, C{stalls} (calls
            ended by the stall bound), C{wrong_server} (writes refused by
            a read-only server, see C{cp_follow_writer}), C{conflicts}
            (transactions the server rolled back because of a conflict)
            and C{conflict_retries}, C{connect_attempts},
            C{reconnect_attempts} (those replacing a lost connection or
            made while the database was down), C{connect_failures},
            C{health_checks} and C{health_check_failures},
            C{seconds_waiting} for the database, and its C{state}:
            C{"up"}, C{"down"} or C{"probing"}.
        """
        snapshot: Dict[str, Any] = self._stats.snapshot()
        snapshot["state"] = self._outage.state
        return snapshot

    def occupancy(self) -> Dict[str, int]:
        """
        What the pool holds now, read without a lock (each number is
        current, their sum may be a moment apart).

        @return: C{max} (C{cp_max}), C{connections} (open connections),
            C{used} (pool threads running a call), C{idle} (open
            connections not in use) and C{waiting} (calls waiting for a
            pool thread).
        """
        gate = self._gate
        pool = self.threadpool
        used = len(pool.working)
        connections = len(self.connections)
        return {
            "max": self.max,
            "connections": connections,
            "used": used,
            "idle": max(0, connections - used),
            "waiting": gate.waiting if gate is not None else pool.q.qsize(),
        }

    def enable_timings(self) -> None:
        """
        Measure, from now on, how long each call waits for a pool thread
        (C{wait}), how long it holds it (C{use}) and how long each new
        connection takes to open (C{connect}), for L{timings}.  Off by
        default; L{txreconnect.metrics} turns it on for the pools it
        serves.  Counting takes no lock on the path of a call.  Calling it
        again does nothing.
        """
        if self._timings is None:
            self._timings = Timings()
            self._make_gate()

    def timings(self) -> Dict[str, Snapshot]:
        """
        @return: by name (C{wait}, C{use}, C{connect}): the histogram's
            bucket upper bounds in seconds, the count in each bucket and
            one more for the rest (not cumulative), the sum of the
            observations and their count.  Empty until L{enable_timings}.
        """
        timings = self._timings
        return {} if timings is None else timings.snapshot()

    def drain(self) -> None:
        """
        Replace every connection of the pool at its next checkout: each
        call that starts after this gets a new connection (through the
        reconnect policy, with fresh credentials), and no call fails for
        it; calls in flight finish on their connections.  For a rotation
        of credentials, or before a planned failover.  Safe from any
        thread.
        """
        with self._generation_lock:
            self._generation += 1
            self._replace_before = self._generation
        self._log.info("{pool!r}: draining: every connection is replaced at its next use", pool=self)

    # --- admission (the reactor thread) --------------------------------------

    def runInteraction(self, interaction: Callable[..., _T], *args: Any, **kw: Any) -> "defer.Deferred[_T]":
        """
        As C{adbapi.ConnectionPool.runInteraction}; with C{cp_max_waiting}
        or C{cp_wait_timeout}, the call may fail with L{PoolOverloaded <txreconnect.PoolOverloaded>}
        before it reaches the database.
        """
        if self._gate is not None:
            return self._gate.submit(self._runInteraction, interaction, *args, **kw)
        # L{_defer}, written out: this is the path of nearly every call
        # (runQuery and runOperation come here too), and a helper's frame
        # costs about 2,000 instructions per call (callgrind, sqlite3).
        d: "defer.Deferred[_T]" = defer.Deferred()
        reactor = self._reactor
        outage = self._outage

        def onResult(success: bool, result: Any) -> None:
            if success:
                reactor.callFromThread(d.callback, result)
            else:
                reactor.callFromThread(d.errback, result)
            if outage.ending is not None:
                self._hand_over()

        self.threadpool.callInThreadWithCallback(onResult, self._runInteraction, interaction, *args, **kw)
        return d

    def runWithConnection(self, func: Callable[..., _T], *args: Any, **kw: Any) -> "defer.Deferred[_T]":
        """
        As C{adbapi.ConnectionPool.runWithConnection}; with
        C{cp_max_waiting} or C{cp_wait_timeout}, the call may fail with
        L{PoolOverloaded <txreconnect.PoolOverloaded>} before it reaches the database.
        """
        gate = self._gate
        if gate is None:
            return self._defer(self._runWithConnection, func, *args, **kw)
        return gate.submit(self._runWithConnection, func, *args, **kw)

    def _defer(self, function: Callable[..., _T], *args: Any, **kw: Any) -> "defer.Deferred[_T]":
        """
        C{threads.deferToThreadPool} on the pool's reactor and threads,
        and, once a call's result is queued for the reactor, the end of a
        probe's head start if that call was its first (L{_hand_over}).
        """
        d: "defer.Deferred[_T]" = defer.Deferred()
        reactor = self._reactor
        outage = self._outage

        def onResult(success: bool, result: Any) -> None:
            if success:
                reactor.callFromThread(d.callback, result)
            else:
                reactor.callFromThread(d.errback, result)
            if outage.ending is not None:
                self._hand_over()

        self.threadpool.callInThreadWithCallback(onResult, function, *args, **kw)
        return d

    # --- the run loop (pool threads) -----------------------------------------

    def _runInteraction(self, interaction: Callable[..., _T], *args: Any, **kw: Any) -> _T:
        return self._run(_interact, interaction, True, "interaction", args, kw)

    def _runWithConnection(self, func: Callable[..., _T], *args: Any, **kw: Any) -> _T:
        return self._run(_with_connection, func, False, "function", args, kw)

    def _run(
        self,
        body: Callable[[Any, _Connection, Callable[..., _T], Any, Any], _T],
        function: Callable[..., _T],
        replay: bool,
        what: str,
        args: Any,
        kw: Any,
    ) -> _T:
        """
        Run C{body(pool, conn, function, args, kw)} on this thread's
        connection, replaying it after a lost connection as the rules
        allow (see L{_failed}).  Every call of the pool takes this path,
        so it is written out, without helper calls, where nothing fails.
        """
        tries: Optional[_Tries] = None
        tid = _get_ident()
        bound = self.stall_timeout
        watched = self._watchdog.watched
        while True:
            conn: _Connection = self.connectionFactory(self)
            birth = self._births.get(tid)
            deadline: Optional[float] = None
            watching = False
            if bound is not None:
                deadline = _monotonic() + bound
                if birth is not None and birth.socket is not None:
                    # The watchdog runs since the connection was born
                    # (connect()); no method call on this path.
                    watched[tid] = (deadline, birth.socket)
                    watching = True
            try:
                return body(self, conn, function, args, kw)
            except BaseException as error:
                tries = self._failed(error, conn, function, replay, tries, deadline, what)
                if tries is None:
                    raise
                if tries.done:
                    return tries.result
            finally:
                if watching:
                    watched.pop(tid, None)
                if birth is not None and birth.track_use:
                    self._used(birth)

    def _used(self, birth: _Birth) -> None:
        """
        A call on the connection of C{birth} has ended: note when, for
        C{cp_health_check}, and end the head start if it was the probe's
        first call.
        """
        if self.health_check is not None:
            birth.last_used = _monotonic()
        if birth.probe:
            birth.probe = False
            birth.track_use = self.health_check is not None
            self._outage.first_call_ended()

    def _hand_over(self) -> None:
        """
        In a pool thread, right after it queued its call's result for the
        reactor, while L{Outage.ending} is set: if this thread's call was
        the probe's first, end the head start in the reactor, so after
        the result.
        """
        tid = _get_ident()
        outage = self._outage
        if outage.ending == tid:
            self._reactor.callFromThread(outage.end_head_start, tid)

    def _failed(
        self,
        error: BaseException,
        conn: _Connection,
        function: Callable[..., Any],
        replay: bool,
        tries: Optional[_Tries],
        deadline: Optional[float],
        what: str,
    ) -> Optional[_Tries]:
        """
        Carry out what follows an attempt that raised C{error}: classify
        the error (L{_classify}), let L{_decide.decide} say what to do,
        then do it: count, log, and pass the error on, replay, or raise.

        @param function: the user's interaction or function; whether it is
            marked L{idempotent} is looked up only here, off the path of
            calls that go well.
        @param replay: whether an unmarked C{function} may be replayed when
            its outcome is known (C{runInteraction}: yes;
            C{runWithConnection}: no, it may commit by itself).
        @param tries: how many times the call ran again already, by
            reason (C{None}: never).
        @param deadline: when (C{time.monotonic()}) the attempt's
            C{cp_stall_timeout} ran out (and the watchdog shut its socket
            down), or C{None} without a bound.
        @return: the updated counts to run the call again, or C{None} to
            re-raise C{error}.
        @raise DisconnectionError: the outcome's error, chaining C{error}.
        """
        raw = getattr(conn, "_connection", None)
        kind = self._classify(error, conn, raw)
        if kind is Kind.OTHER:
            return None
        if tries is None:
            tries = _Tries()
        # A connection wrapper that is not ours records nothing: assume
        # the worst.
        commit_started = getattr(conn, "commit_started", True)
        statement_sent = getattr(conn, "statement_ran", True)
        autocommit = getattr(conn, "autocommit", None)
        if autocommit is None:
            autocommit = self._driver.is_autocommit(raw)
        news = self._conflicted() if kind is Kind.CONFLICT else self._lost(raw, kind is Kind.WRONG_SERVER)
        marker: Optional[Marker] = getattr(conn, "marker", None)
        attempt = Attempt(
            kind=kind,
            commit_started=commit_started,
            statement_sent=statement_sent,
            autocommit=autocommit,
            idempotent=is_idempotent(function),
            replayable=replay,
            stalled=deadline is not None and _monotonic() >= deadline,
            replayed=tries.replayed,
            replays=self.replays,
            conflicts=tries.conflicts,
            conflict_retries=self.conflict_retries,
            resolvable=marker is not None and marker.wrote and marker.marked,
            # A transaction that wrote nothing has nothing to commit.
            committed=False if marker is not None and not marker.wrote else None,
        )
        outcome = _decide.decide(attempt)
        cause = describe(error)
        unknown: Optional[str] = None  # why the database could not tell
        if outcome is Outcome.RESOLVE_COMMIT:
            assert marker is not None and self._markers is not None
            committed, why = self._markers.resolve(self, marker)
            self._stats.add(_RESOLVED[committed])
            outcome = _decide.decide(dataclasses.replace(attempt, resolvable=False, committed=committed))
            if committed is None:
                unknown = why
        elif outcome is Outcome.OUTCOME_UNKNOWN and marker is not None and marker.wrote and not marker.marked:
            unknown = "its marker row was missing when it committed"
        if unknown is not None:
            cause = "%s; the database could not tell whether it took effect: %s" % (cause, unknown)
        for counter in _decide.counters(outcome, tries.replayed):
            self._stats.add(counter)
        if kind is not Kind.CONFLICT or outcome is Outcome.RETRY_CONFLICT:
            self._incident(
                news,
                error,
                _decide.action(outcome, what, tries.replayed, self.replays, self.stall_timeout),
                kind,
            )
        if outcome is Outcome.REPLAY:
            tries.replayed += 1
            return tries
        if outcome is Outcome.RETRY_CONFLICT:
            time.sleep(_decide.conflict_delay(tries.conflicts))
            tries.conflicts += 1
            return tries
        if outcome is Outcome.PASS_ON:
            return None
        if outcome is Outcome.COMMITTED:
            tries.done = True
            tries.result = getattr(conn, "result", None)
            return tries
        assert outcome.error is not None
        raise outcome.error(_decide.message(outcome, what, cause, self.stall_timeout)) from error

    def _classify(self, error: BaseException, conn: _Connection, raw: Any) -> Kind:
        """
        Tell what C{error} means, with the driver's rules.  An error that
        is neither a lost connection nor a wrong server is rolled back
        here; for a driver whose rules are incomplete (one txreconnect
        does not know), a driver error after which the rollback or a ping
        fails means a lost connection.

        @return: the kind of error.
        """
        driver = self._driver
        if driver.is_disconnect(error, raw):
            return Kind.DISCONNECT
        if self.follow_writer and driver.is_wrong_server(error, self._wants_writer):
            return Kind.WRONG_SERVER
        if driver.is_conflict(error):
            # The whole transaction is rolled back, also after a lock wait
            # timeout that rolled back only the statement.
            if self._rollback(conn) is None:
                return Kind.CONFLICT
            self._lost(raw)
            return Kind.DISCONNECT
        suspect = driver.suspect(error)
        rollback_error = self._rollback(conn, quiet=suspect)
        if suspect and raw is not None and (rollback_error is not None or not self._answers(raw)):
            return Kind.DISCONNECT
        if rollback_error is not None:
            self._lost(raw)
        return Kind.OTHER

    def _answers(self, raw: Any) -> bool:
        """
        @param raw: this thread's connection, just rolled back.
        @return: whether it answers a ping.
        """
        try:
            self._driver.ping(raw)
        except Exception:
            return False
        return True

    def _rollback(self, conn: _Connection, quiet: bool = False) -> Optional[BaseException]:
        """
        Roll back after an error that is not a disconnection.  A failed
        rollback is logged (as adbapi does), unless the driver's rules
        say the connection is lost or C{quiet}.

        @param quiet: log no failure (the caller decides what it means).
        @return: the rollback's error, or C{None} if it succeeded.
        """
        try:
            conn.rollback()
        except Exception as error:
            if not quiet and not self._driver.is_disconnect(error, getattr(conn, "_connection", None)):
                self._log.failure("{pool!r}: rollback failed; discarding the connection", pool=self)
            return error
        return None

    def _lost(self, raw: Any, wrong_server: bool = False) -> bool:
        """
        Discard this thread's dead connection C{raw}, and if it was not
        already suspected, make every older connection suspect.

        @param wrong_server: C{raw} is alive but connected to a read-only
            server: every older connection is then replaced, not pinged
            (a ping cannot tell a read-only server).
        @return: whether this is news (the first thread to see it).
        """
        self._stats.add("wrong_server" if wrong_server else "disconnects")
        tid = _get_ident()
        birth = self._births.get(tid)
        if raw is not None and self.connections.get(tid) is raw:
            self._discard(tid)
        else:
            self._driver.close(raw)
        if birth is None:
            return False
        with self._generation_lock:
            if birth.generation != self._generation:
                return False
            self._generation += 1
            if wrong_server:
                self._replace_before = self._generation
            return True

    def _conflicted(self) -> bool:
        """
        Count a conflict, and tell whether it starts a burst: the first
        conflict after L{_CONFLICT_BURST_GAP} seconds without one.

        @return: whether this is news, to be logged as a warning.
        """
        self._stats.add("conflicts")
        now = _monotonic()
        with self._generation_lock:
            last, self._last_conflict = self._last_conflict, now
        return now - last > _CONFLICT_BURST_GAP

    def _incident(self, news: bool, error: BaseException, action: str, kind: Kind = Kind.DISCONNECT) -> None:
        """
        Log what happened to a call: a warning for the first thread that
        sees an incident (or the first conflict of a burst), a debug line
        for the others.
        """
        emit = self._log.warn if news else self._log.debug
        emit(
            "{pool!r}: {what} ({error}); {action}",
            pool=self,
            what=_INCIDENTS[kind],
            error=describe(error),
            action=action,
        )

    # --- connections (pool threads) ----------------------------------------

    def connect(self) -> Any:
        """
        Return this thread's DB-API connection, first replacing it if it is
        stale (older than its recycle age, or suspect and failing its ping),
        or opening one through the reconnect policy if there is none.

        Called in a pool thread only.

        @raise DisconnectionError: no connection could be had.
        """
        tid = _get_ident()
        conn = self.connections.get(tid)
        if conn is not None:
            if (
                self.max_lifetime is None
                and self.health_check is None
                and self._births[tid].generation == self._generation
            ):
                return conn  # the path of nearly every call: no helper call
            if self._usable(tid, conn):
                return conn
            self._discard(tid)
        conn = self._outage.open(self.policy, self._open)
        self.connections[tid] = conn
        birth = self._births[tid] = _Birth(
            self._generation,
            self.max_lifetime,
            self._socket_id(conn),
            self.health_check is not None,
            self._outage.holds_head_start(),
        )
        if birth.socket is not None and self.stall_timeout is not None:
            self._watchdog.start(self.stall_timeout)
        self._replacing.discard(tid)
        return conn

    def _usable(self, tid: int, conn: Any) -> bool:
        """
        Whether this thread's connection may be used as it is; a suspect
        one (older than a disconnection another thread saw, or idle for
        longer than C{cp_health_check}) is pinged first.
        """
        birth = self._births[tid]
        generation = self._generation
        now = _monotonic()
        if now >= birth.expires or birth.generation < self._replace_before:
            return False
        if birth.generation == generation and (
            self.health_check is None or now - birth.last_used <= self.health_check
        ):
            return True
        self._stats.add("health_checks")
        try:
            self._ping(tid, birth.socket, conn)
        except Exception:
            self._stats.add("health_check_failures")
            return False
        birth.generation = generation
        return True

    def _ping(self, tid: int, sid: Optional[SocketId], conn: Any) -> None:
        """
        Ping C{conn}, shutting its socket down if the answer takes longer
        than C{ping_timeout} (or C{cp_stall_timeout}, if shorter).
        """
        if sid is None:
            self._driver.ping(conn)
            return
        bound = self.ping_timeout if self.stall_timeout is None else min(self.ping_timeout, self.stall_timeout)
        self._watchdog.watch(tid, sid, bound)
        try:
            self._driver.ping(conn)
        finally:
            self._watchdog.unwatch(tid)

    def _socket_id(self, conn: Any) -> Optional[SocketId]:
        try:
            return socket_id(self._driver.socket_fileno(conn))
        except Exception:
            return None

    def _open(self) -> Any:
        """
        One attempt to open a connection (the reconnect policy decides
        how many).
        """
        if self.noisy:
            self._log.info("{pool!r}: connecting", pool=self)
        self._stats.add("connect_attempts")
        if _get_ident() in self._replacing or self._outage.state != UP:
            self._stats.add("reconnect_attempts")
        timings = self._timings
        began = _monotonic()
        try:
            credentials = self._credentials
            connkw = self.connkw if credentials is None else credentials.resolve(self.connkw)
            conn = self._driver.connect(self.connargs, connkw, self.dbapi.connect)
        except self._outage.errors:
            self._stats.add("connect_failures")
            raise
        if timings is not None:
            timings.connect.observe(_monotonic() - began)
        try:
            self._driver.prepare(conn)
            if self.openfun is not None:
                self.openfun(conn)
            if self._markers is not None:
                self._markers.prepare(self, conn, _get_ident())
        except BaseException:
            self._driver.close(conn)
            raise
        self._stats.add("opened")
        return conn

    def _discard(self, tid: int) -> None:
        conn = self.connections.pop(tid, None)
        self._births.pop(tid, None)
        if conn is not None:
            self._replacing.add(tid)
            self._close(conn)

    def disconnect(self, conn: Any) -> None:
        """
        Close C{conn}, this thread's connection, and forget it.  Unlike
        adbapi's, never raises when the connection was already discarded.
        """
        tid = _get_ident()
        if self.connections.get(tid) is conn:
            self._discard(tid)
        else:
            self._driver.close(conn)

    def _close(self, conn: Any) -> None:
        """
        Close C{conn}.  The driver's own errors are expected (the
        connection may be dead) and pass silently; any other is logged,
        as adbapi does.
        """
        if self.noisy:
            self._log.info("{pool!r}: closing a connection", pool=self)
        try:
            conn.close()
        except self._driver.errors:
            pass
        except Exception:
            self._log.failure("{pool!r}: closing a connection failed", pool=self)
        self._stats.add("closed")

    def start(self) -> None:
        """
        Start the pool (the reactor does it when it starts running).
        """
        self._outage.reopen()
        super().start()

    def finalClose(self) -> None:
        """
        Stop the threads and close every connection (the reactor's shutdown
        trigger, or C{close}).  Calls waiting for the database fail at once
        with L{DisconnectionError}.  Closing a closed pool does nothing.
        """
        if self._outage.closed:
            return
        self._outage.close()
        self._watchdog.stop()
        super().finalClose()
        self._births.clear()
        self._replacing.clear()

    def _after_fork_in_child(self, inherited: List[Any]) -> None:
        """
        In a child made by C{os.fork()}: keep the parent's connections
        aside, never used and never closed, so that the parent's sessions
        go on; the child opens its own.  The parent's threads do not exist
        here: give the child a thread pool of its own.
        """
        inherited.extend(self.connections.values())
        self.connections.clear()
        self._births.clear()
        self._replacing.clear()
        self._new_process_state()
        running = self.running
        self.threadpool = ThreadPool(self.min, self.max, self.threadpool.name)
        if running:
            self.threadpool.start()

    def __getstate__(self) -> Dict[str, Any]:
        state: Dict[str, Any] = super().__getstate__()
        for name in _OWN_OPTIONS:
            state[name] = getattr(self, name)
        return state


