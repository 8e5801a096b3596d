"""
Outage policies on real PostgreSQL and MariaDB servers: fail fast, wait for
the database, close during a wait, health checks, recycling, black holes,
fork safety, and the stats and log lines that tell what happened.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, ClassVar, Dict, List, Optional, Type

from twisted.internet import defer, reactor, task, threads
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from txreconnect import (
    DisconnectionError,
    FailFast,
    ReconnectingConnectionPool,
    WaitForDatabase,
    idempotent,
)
from txreconnect._outage import HEAD_START_LIMIT
from txreconnect.testing import (
    FaultProxy,
    MariaDBServer,
    PostgresServer,
    ThrowawayServer,
    require_driver,
    shared_server,
)
from tests.support import wait_until, warm

CP_MAX = 4


def _sleep(seconds: float) -> defer.Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)


class _OutageTestsMixin(TestCase):
    server_class: ClassVar[Type[ThrowawayServer]]
    driver_name: ClassVar[str]
    #: SQL that returns the server's id of the session
    session_id_sql: ClassVar[str]

    def setUp(self) -> None:
        self.driver = require_driver(self.driver_name)
        self.server = shared_server(self, self.server_class)
        self.events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def make_pool(self, port: Optional[int] = None, **kwargs: Any) -> ReconnectingConnectionPool:
        options = dict(self.server.connect_kwargs(self.driver_name, port=port), cp_min=1, cp_max=CP_MAX)
        options.update(kwargs)
        pool = ReconnectingConnectionPool(self.driver_name, **options)
        pool.start()
        self.addCleanup(pool.close)
        return pool

    def in_thread(self, f: Callable[..., Any], *args: Any) -> Any:
        return threads.deferToThread(f, *args)

    def logged(self, level: LogLevel, text: str) -> List[str]:
        return [
            formatEvent(e)
            for e in self.events
            if e.get("log_level") == level and text in formatEvent(e)
        ]

    # --- wait for the database -------------------------------------------

    @defer.inlineCallbacks
    def test_waitForDatabaseCallersRideOutARestart(self) -> Any:
        """
        Four callers run queries while the server is down for about 1.5 s:
        no call fails, the calls made during the outage complete once it
        is back, the first success comes within one backoff step of the
        server accepting connections, and one warning and one info line
        tell the outage's start and end.
        """
        policy = WaitForDatabase(initial_delay=0.05, factor=2, max_delay=0.5)
        pool = self.make_pool(cp_policy=policy)
        yield warm(pool)
        running = True
        calls: List[tuple] = []  # (started, finished)

        # A read, marked idempotent: a restart may cut its COMMIT, and only
        # the mark allows a replay then.
        @idempotent
        def read(txn: Any) -> float:
            txn.execute("SELECT 1")
            txn.fetchall()
            return time.monotonic()

        @defer.inlineCallbacks
        def caller() -> Any:
            while running:
                started = time.monotonic()
                finished = yield pool.runInteraction(read)
                calls.append((started, finished))

        callers = [caller() for _ in range(4)]
        yield _sleep(0.3)
        yield self.in_thread(self.server.stop)
        down = time.monotonic()
        made_while_down = [pool.runInteraction(read) for _ in range(4)]
        yield _sleep(1.5)
        # No call can succeed before the server is being started: the
        # bound that holds however slowly start() notices it is ready.
        starting = time.monotonic()
        yield self.in_thread(self.server.start)
        ready = time.monotonic()
        yield _sleep(1.0)
        running = False
        yield defer.gatherResults(callers)  # any failure fails the test
        finished_late = yield defer.gatherResults(made_while_down)

        self.assertTrue(all(finished >= starting for finished in finished_late))
        caught = [c for c in calls if c[0] < starting and c[1] > down]
        self.assertTrue(caught, "no call was in flight during the outage")
        self.assertTrue(all(finished >= starting for _, finished in caught))
        first = min(finished for _, finished in calls if finished >= starting)
        # One backoff step (max_delay) plus scheduling slack.
        self.assertLess(first - ready, policy.max_delay + 1.0)
        stats = pool.stats()
        self.assertEqual(stats["state"], "up")
        self.assertGreater(stats["seconds_waiting"], 0)
        self.assertGreater(stats["reconnect_attempts"], 0)
        self.assertEqual(len(self.logged(LogLevel.warn, "outage started")), 1)
        ended = self.logged(LogLevel.info, "outage ended after")
        self.assertEqual(len(ended), 1, ended)

    def count_inflight(self, pool: ReconnectingConnectionPool) -> List[int]:
        """
        Count the pool's connection attempts in flight.

        @return: C{[now, most]}, updated as attempts start and end.
        """
        inflight = [0, 0]
        lock = threading.Lock()
        real_open = pool._open

        def counted() -> Any:
            with lock:
                inflight[0] += 1
                inflight[1] = max(inflight)
            try:
                return real_open()
            finally:
                with lock:
                    inflight[0] -= 1

        pool._open = counted  # type: ignore[method-assign]
        return inflight

    @defer.inlineCallbacks
    def test_waitForDatabaseProbesFastWhileTheServerRefuses(self) -> Any:
        """
        While the server is stopped (its port refuses), the pool probes at
        the fast interval, one attempt at a time, and never backs off: a
        backoff of 60 s would allow a single attempt in this test.  Once
        the server starts, every waiting call succeeds.
        """
        policy = WaitForDatabase(initial_delay=60, max_delay=60, fast_probe_interval=0.005, deadline=300)
        pool = self.make_pool(cp_policy=policy)
        yield warm(pool)
        yield self.in_thread(self.server.stop)
        inflight = self.count_inflight(pool)
        pending = [pool.runQuery("SELECT 1") for _ in range(CP_MAX + 2)]
        # Each thread makes one attempt before it knows the database is
        # down, maybe at the same time as the others.
        yield self.in_thread(
            wait_until, lambda: pool.stats()["connect_failures"] >= CP_MAX + 2, 60.0, "the outage known"
        )
        inflight[1] = 0
        # Backoff would make one attempt per minute: these are fast probes.
        yield self.in_thread(
            wait_until, lambda: pool.stats()["connect_failures"] >= CP_MAX + 22, 60.0, "20 fast probes"
        )
        self.assertEqual(pool.stats()["state"], "probing")
        self.assertEqual(inflight[1], 1)
        yield self.in_thread(self.server.start)
        results = yield defer.gatherResults(pending)
        self.assertEqual([list(map(tuple, rows)) for rows in results], [[(1,)]] * (CP_MAX + 2))
        self.assertEqual(pool.stats()["state"], "up")

    @defer.inlineCallbacks
    def test_waitForDatabaseProbesAStoppedServerLessOftenAsTheOutageLasts(self) -> Any:
        """
        The pause after each refused attempt is at least
        C{fast_probe_ratio} (here a half) of the time the database has
        been down so far: over 2 s, a few tens of attempts instead of the
        thousands a fixed 1 ms would make.  The call still succeeds once
        the server is back.
        """
        ratio = 0.5
        policy = WaitForDatabase(
            initial_delay=60, max_delay=60, fast_probe_interval=0.001, fast_probe_ratio=ratio, deadline=300
        )
        pool = self.make_pool(cp_policy=policy, cp_max=1)
        yield warm(pool)
        yield self.in_thread(self.server.stop)
        attempts: List[tuple] = []
        real_open = pool._open

        def recorded() -> Any:
            began = time.monotonic()
            try:
                return real_open()
            finally:
                attempts.append((began, time.monotonic()))

        pool._open = recorded  # type: ignore[method-assign]
        pending = pool.runQuery("SELECT 1")
        yield self.in_thread(
            wait_until, lambda: attempts and time.monotonic() - attempts[0][1] >= 2.0, 60.0, "a 2 s outage"
        )
        refused = list(attempts)
        yield self.in_thread(self.server.start)
        rows = yield pending
        self.assertEqual(list(map(tuple, rows)), [(1,)])
        self.assertLess(len(refused), 40, refused)
        down_since = refused[0][1]
        for (_, ended), (began, _) in zip(refused, refused[1:]):
            self.assertGreaterEqual(began - ended, max(0.001, ratio * (ended - down_since)) - 0.002, refused)

    @defer.inlineCallbacks
    def head_start(self, call_seconds: float) -> Any:
        """
        Stop the server, queue L{CP_MAX} interactions that each sleep
        C{call_seconds}, start the server again.

        @return: (a Deferred firing with) the successful connection
            attempts, in order, as C{(began, ended, thread)}, the calls,
            by thread, as C{(began, ended)}, and when each call's result
            reached its caller in the reactor, by thread
            (C{time.monotonic}).
        """
        policy = WaitForDatabase(initial_delay=60, max_delay=60, fast_probe_interval=0.005, deadline=300)
        pool = self.make_pool(cp_policy=policy)
        yield warm(pool)
        yield self.in_thread(self.server.stop)
        opens: List[tuple] = []
        calls: Dict[int, tuple] = {}
        real_open = pool._open

        def recorded() -> Any:
            began = time.monotonic()
            conn = real_open()
            opens.append((began, time.monotonic(), threading.get_ident()))
            return conn

        def call(txn: Any) -> Any:
            began = time.monotonic()
            txn.execute("SELECT 1")
            rows = txn.fetchall()
            time.sleep(call_seconds)
            calls.setdefault(threading.get_ident(), (began, time.monotonic()))
            return threading.get_ident(), rows

        fired: Dict[int, float] = {}

        def arrived(result: Any) -> Any:
            fired.setdefault(result[0], time.monotonic())
            return result[1]

        pool._open = recorded  # type: ignore[method-assign]
        pending = [pool.runInteraction(call).addCallback(arrived) for _ in range(CP_MAX)]
        yield self.in_thread(wait_until, lambda: pool.stats()["state"] == "probing", 60.0, "the outage known")
        yield self.in_thread(self.server.start)
        results = yield defer.gatherResults(pending)
        self.assertEqual([list(map(tuple, rows)) for rows in results], [[(1,)]] * CP_MAX)
        self.assertEqual(len(opens), CP_MAX, opens)
        return sorted(opens), calls, fired

    @defer.inlineCallbacks
    def test_waitForDatabaseLetsTheProbesCallEndBeforeTheOthersConnect(self) -> Any:
        """
        When the server is back, the probe that succeeded gets it to
        itself until the call its thread runs on that connection has
        returned (here 50 ms, longer than its connect): the waiting
        threads start their connects no earlier, and then every waiting
        call succeeds.
        """
        opens, calls, _ = yield self.head_start(0.05)
        first = calls[opens[0][2]]
        for began, _, _ in opens[1:]:
            self.assertGreaterEqual(began, first[1], (opens, first))

    @defer.inlineCallbacks
    def test_waitForDatabaseDeliversTheProbesResultBeforeTheOthersConnect(self) -> Any:
        """
        The head start lasts until the probe's first call has reached its
        caller in the reactor, so the waiting threads' connects do not
        compete with that result's way there: none of them starts before
        the caller has it.
        """
        opens, _, fired = yield self.head_start(0.0)
        delivered = fired[opens[0][2]]
        for began, _, _ in opens[1:]:
            self.assertGreaterEqual(began, delivered, (opens, delivered))

    @defer.inlineCallbacks
    def test_waitForDatabaseHoldsTheOthersBackForAtMostTheHeadStartLimit(self) -> Any:
        """
        A probe's call that takes longer than L{HEAD_START_LIMIT} (here
        2 s) holds the waiting threads back for that long only.
        """
        opens, calls, _ = yield self.head_start(2.0)
        probed = opens[0][1]
        first = calls[opens[0][2]]
        for began, _, _ in opens[1:]:
            self.assertGreaterEqual(began, probed + HEAD_START_LIMIT, opens)
            self.assertLess(began, first[1], (opens, first))

    @defer.inlineCallbacks
    def test_waitForDatabaseBacksOffAfterAFailedLogin(self) -> Any:
        """
        A wrong password costs the server a login: the prober backs off
        (here: a delay of up to 0.5 s), so that over a 2 s deadline it
        makes a handful of attempts, not the hundreds that fast probing
        would, one at a time.
        """
        kwargs = self.server.connect_kwargs(self.driver_name)
        self.assertIn("password", kwargs)
        policy = WaitForDatabase(initial_delay=0.5, max_delay=0.5, fast_probe_interval=0.005, deadline=2)
        pool = self.make_pool(password="wrong-" + str(kwargs["password"]), cp_policy=policy)
        inflight = self.count_inflight(pool)
        calls = [pool.runQuery("SELECT 1") for _ in range(CP_MAX)]
        for d in calls:
            error = yield self.assertFailure(d, DisconnectionError)
            self.assertIn("gave up after waiting 2", str(error))
        attempts = pool.stats()["connect_failures"]
        # The first attempt of each thread (before the outage is known),
        # then at least one backoff step per attempt; fast probing would
        # make about 2 / 0.005 = 400.
        self.assertGreater(attempts, CP_MAX)
        self.assertLess(attempts, 60)
        self.assertLessEqual(inflight[1], CP_MAX)

    @defer.inlineCallbacks
    def test_closingDuringAWaitFailsEveryPendingCallPromptly(self) -> Any:
        """
        C{pool.close()} while calls wait for a down database returns
        promptly; every pending call fails with a clear
        L{DisconnectionError}, and no pool thread is left.
        """
        pool = self.make_pool(cp_policy=WaitForDatabase(initial_delay=0.05, max_delay=0.2))
        yield warm(pool)
        yield self.in_thread(self.server.stop)
        pending = [pool.runQuery("SELECT 1") for _ in range(CP_MAX + 2)]
        yield self.in_thread(
            wait_until, lambda: pool.stats()["state"] == "probing" and pool.stats()["seconds_waiting"] > 0,
            15.0, "calls waiting",
        )
        started = time.monotonic()
        pool.close()  # the cleanup closes it again, which does nothing
        closing = time.monotonic() - started
        self.assertLess(closing, 5.0)
        for d in pending:
            error = yield self.assertFailure(d, DisconnectionError)
            self.assertIn("closed", str(error))
        self.assertEqual([t for t in pool.threadpool.threads if t.is_alive()], [])

    # --- fail fast ------------------------------------------------------------

    @defer.inlineCallbacks
    def test_failFastWhileDownFailsAtOnceWithOneProbeAtATime(self) -> Any:
        """
        While the server is stopped, calls fail with L{DisconnectionError}
        well under a connect timeout, with at most one connection attempt
        in flight once the database is known down; after C{start()} calls
        succeed again without restarting the pool.
        """
        pool = self.make_pool(cp_policy=FailFast())
        yield warm(pool)
        inflight = self.count_inflight(pool)
        yield self.in_thread(self.server.stop)
        yield self.assertFailure(pool.runQuery("SELECT 1"), DisconnectionError)
        self.assertEqual(pool.stats()["state"], "down")
        inflight[1] = 0
        started = time.monotonic()
        results = yield defer.DeferredList(
            [pool.runQuery("SELECT 1") for _ in range(4 * CP_MAX)], consumeErrors=True
        )
        elapsed = time.monotonic() - started
        self.assertTrue(all(not ok and f.check(DisconnectionError) for ok, f in results))
        self.assertLess(elapsed, 5.0)  # the connect timeout is 10 s
        self.assertLessEqual(inflight[1], 1)
        yield self.in_thread(self.server.start)
        rows = yield pool.runQuery("SELECT 1")
        self.assertEqual(list(map(tuple, rows)), [(1,)])
        self.assertEqual(pool.stats()["state"], "up")

    # --- health checks and recycling -----------------------------------------

    @defer.inlineCallbacks
    def test_healthCheckServesAnIdlePoolAfterRestartWithoutReplay(self) -> Any:
        """
        With the health check on, an idle pool whose server restarted
        serves its next calls with no replay: each thread's ping fails and
        its connection is replaced quietly.
        """
        pool = self.make_pool(cp_health_check=0)
        yield warm(pool)
        yield self.in_thread(self.server.restart)
        for _ in range(3 * CP_MAX):
            yield pool.runQuery("SELECT 1")
        stats = pool.stats()
        self.assertEqual(stats["replays"], 0)
        self.assertEqual(stats["disconnects"], 0)
        self.assertGreaterEqual(stats["health_check_failures"], 1)

    @defer.inlineCallbacks
    def test_aConnectionJustUsedIsNeverPinged(self) -> Any:
        pool = self.make_pool(cp_health_check=60)
        for _ in range(10):
            yield pool.runQuery("SELECT 1")
        self.assertEqual(pool.stats()["health_checks"], 0)

    @defer.inlineCallbacks
    def test_connectionOlderThanMaxLifetimeIsReplacedQuietly(self) -> Any:
        pool = self.make_pool(cp_max=1, cp_max_lifetime=0.5)
        first = yield pool.runQuery(self.session_id_sql)
        yield self.in_thread(wait_until, lambda: all(
            time.monotonic() >= b.expires for b in pool._births.values()), 5.0, "expiry")
        second = yield pool.runQuery(self.session_id_sql)
        self.assertNotEqual(first, second)
        stats = pool.stats()
        self.assertEqual((stats["opened"], stats["closed"], stats["disconnects"]), (2, 1, 0))

    # --- fork ---------------------------------------------------------------

    @defer.inlineCallbacks
    def test_forkedChildOpensItsOwnConnectionsAndParentKeepsItsOwn(self) -> Any:
        """
        A child made by C{os.fork()} after the pool connected runs its
        query on a connection of its own and closes only that; the
        parent's connections keep working, untouched.
        """
        pool = self.make_pool(cp_max=2)
        yield warm(pool)
        parents = set(map(tuple, (yield self.sessions(pool))))

        def session(txn: Any) -> Any:
            txn.execute(self.session_id_sql)
            return tuple(txn.fetchall()[0])

        pid = os.fork()
        if pid == 0:  # the child
            status = 1
            try:
                mine = pool._runInteraction(session)
                pool.finalClose()
                status = 0 if (mine,) not in parents else 2
            finally:
                os._exit(status)
        _, status = yield self.in_thread(os.waitpid, pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        after = set(map(tuple, (yield self.sessions(pool))))
        self.assertEqual(after, parents)
        self.assertEqual(pool.stats()["disconnects"], 0)

    @defer.inlineCallbacks
    def sessions(self, pool: ReconnectingConnectionPool) -> Any:
        barrier = threading.Barrier(pool.max)

        def session(txn: Any) -> Any:
            txn.execute(self.session_id_sql)
            row = txn.fetchall()[0]
            barrier.wait(timeout=30)
            return row

        results = yield defer.gatherResults([pool.runInteraction(session) for _ in range(pool.max)])
        return results


class _BlackholeTestsMixin(TestCase):
    server_class: ClassVar[Type[ThrowawayServer]]
    driver_name: ClassVar[str]

    @defer.inlineCallbacks
    def test_blackholedCallEndsWithinTheStallBoundAndHealWorks(self) -> Any:
        """
        When the network path goes silent (FaultProxy C{blackhole()}), a
        call ends with L{DisconnectionError} within C{cp_stall_timeout},
        without a replay; after C{heal()} the next call succeeds.
        """
        require_driver(self.driver_name)
        server = shared_server(self, self.server_class)
        proxy = FaultProxy(server.port)
        proxy.start()
        self.addCleanup(proxy.stop)
        pool = ReconnectingConnectionPool(
            self.driver_name,
            cp_min=1,
            cp_max=1,
            cp_stall_timeout=2,
            **server.connect_kwargs(self.driver_name, port=proxy.port),
        )
        pool.start()
        self.addCleanup(pool.close)
        yield pool.runQuery("SELECT 1")
        proxy.blackhole()
        started = time.monotonic()
        error = yield self.assertFailure(pool.runQuery("SELECT 1"), DisconnectionError)
        elapsed = time.monotonic() - started
        self.assertIn("cp_stall_timeout", str(error))
        self.assertLess(elapsed, 2 + 3.0)  # the bound, plus the watchdog's tick and slack
        self.assertGreaterEqual(elapsed, 1.9)
        stats = pool.stats()
        self.assertEqual((stats["stalls"], stats["replays"]), (1, 0))
        proxy.heal()
        rows = yield pool.runQuery("SELECT 1")
        self.assertEqual(list(map(tuple, rows)), [(1,)])


class Psycopg2OutageTests(_OutageTestsMixin):
    server_class = PostgresServer
    driver_name = "psycopg2"
    session_id_sql = "SELECT pg_backend_pid()"


class PyMySQLOutageTests(_OutageTestsMixin):
    server_class = MariaDBServer
    driver_name = "pymysql"
    session_id_sql = "SELECT CONNECTION_ID()"


class Psycopg2BlackholeTests(_BlackholeTestsMixin):
    server_class = PostgresServer
    driver_name = "psycopg2"


class PsycopgBlackholeTests(_BlackholeTestsMixin):
    server_class = PostgresServer
    driver_name = "psycopg"


class PyMySQLBlackholeTests(_BlackholeTestsMixin):
    server_class = MariaDBServer
    driver_name = "pymysql"


class MySQLdbBlackholeTests(_BlackholeTestsMixin):
    server_class = MariaDBServer
    driver_name = "MySQLdb"


del _OutageTestsMixin, _BlackholeTestsMixin
