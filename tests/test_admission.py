"""
Back-pressure (C{cp_max_waiting}, C{cp_wait_timeout}), the pool's
occupancy and its timings, on a real PostgreSQL server: a call beyond the
bound fails at once, a call that waits past its deadline fails then, and
neither ever reaches the database.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, List

from twisted.internet import defer, reactor, task, threads
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from txreconnect import (
    ConfigurationError,
    PoolOverloaded,
    ReconnectingConnectionPool,
    WaitForDatabase,
    idempotent,
    parse_url,
)
from txreconnect.testing import PostgresServer, private_server, require_driver, shared_server
from tests.support import wait_until_async

#: how long a blocked interaction waits for its release at most (seconds)
HOLD = 30.0


def _pool(testcase: TestCase, server: PostgresServer, **kwargs: Any) -> ReconnectingConnectionPool:
    """
    A started psycopg2 pool of two threads on C{server}, closed by the
    test's cleanup.

    @param kwargs: pool options overriding those.
    """
    options: Dict[str, Any] = dict(server.connect_kwargs("psycopg2"), cp_min=1, cp_max=2)
    options.update(kwargs)
    pool = ReconnectingConnectionPool("psycopg2", **options)
    pool.start()
    testcase.addCleanup(pool.close)
    return pool


class _Blocker:
    """
    Interactions that hold their pool thread until released, and a record
    of every interaction that ran.
    """

    def __init__(self) -> None:
        self.release = threading.Event()
        self.ran: List[Any] = []
        self.holding = 0
        self._lock = threading.Lock()

    def hold(self, txn: Any, tag: Any) -> Any:
        with self._lock:
            self.holding += 1
        self.ran.append(tag)
        txn.execute("SELECT 1")
        if not self.release.wait(HOLD):
            raise AssertionError("never released")
        return tag

    def run(self, txn: Any, tag: Any) -> Any:
        self.ran.append(tag)
        txn.execute("SELECT 1")
        return tag


class AdmissionTests(TestCase):
    def setUp(self) -> None:
        self.driver = require_driver("psycopg2")
        self.server = shared_server(self, PostgresServer)
        self.blocker = _Blocker()
        self.addCleanup(self.blocker.release.set)

    def make_pool(self, **kwargs: Any) -> ReconnectingConnectionPool:
        return _pool(self, self.server, **kwargs)

    @defer.inlineCallbacks
    def fill(self, pool: ReconnectingConnectionPool) -> Any:
        """
        Occupy every thread of C{pool} with a held interaction.

        @return: (a Deferred firing with) their Deferreds.
        """
        held = [pool.runInteraction(self.blocker.hold, "held-%d" % (i,)) for i in range(pool.max)]
        yield wait_until_async(lambda: self.blocker.holding == pool.max, HOLD, "every thread held")
        return held

    @defer.inlineCallbacks
    def test_aCallBeyondTheBoundFailsAtOnceAndNeverRuns(self) -> Any:
        """
        With every thread busy and C{cp_max_waiting} calls waiting, the
        next call fails at once (its Deferred has failed when it is
        returned) with L{PoolOverloaded}, saying that nothing was sent;
        the waiting calls run once threads are free; the refused one
        never does.
        """
        pool = self.make_pool(cp_max_waiting=3)
        held = yield self.fill(pool)
        waiting = [pool.runInteraction(self.blocker.run, "waiting-%d" % (i,)) for i in range(3)]
        self.assertEqual(pool.occupancy()["waiting"], 3)
        refused = pool.runInteraction(self.blocker.run, "refused")
        self.assertTrue(refused.called)
        failure = yield self.assertFailure(refused, PoolOverloaded)
        self.assertIn("nothing was sent", str(failure))
        self.assertIn("cp_max_waiting=3", str(failure))
        self.blocker.release.set()
        results = yield defer.gatherResults(held + waiting)
        self.assertEqual(sorted(results)[-3:], ["waiting-0", "waiting-1", "waiting-2"])
        self.assertNotIn("refused", self.blocker.ran)
        self.assertEqual((pool.stats()["rejected"], pool.occupancy()["waiting"]), (1, 0))
        self.assertEqual(pool.stats()["state"], "up")

    @defer.inlineCallbacks
    def test_aCallThatWaitsPastItsDeadlineFailsThenAndNeverRuns(self) -> Any:
        """
        With C{cp_wait_timeout}, a call still waiting for a thread at its
        deadline fails then with L{PoolOverloaded}, while the threads are
        still busy; it never runs, even after they are free.  It is no
        outage.
        """
        pool = self.make_pool(cp_wait_timeout=0.5)
        held = yield self.fill(pool)
        late = pool.runInteraction(self.blocker.run, "late")
        failure = yield self.assertFailure(late, PoolOverloaded)
        self.assertIn("cp_wait_timeout", str(failure))
        self.assertFalse(self.blocker.release.is_set())
        self.blocker.release.set()
        yield defer.gatherResults(held)
        self.assertEqual((yield pool.runInteraction(self.blocker.run, "after")), "after")
        self.assertNotIn("late", self.blocker.ran)
        stats = pool.stats()
        self.assertEqual((stats["wait_timeouts"], stats["state"], stats["disconnects"]), (1, "up", 0))

    @defer.inlineCallbacks
    def test_aWaitingCallCanBeCancelledAndNeverRuns(self) -> Any:
        """
        Cancelling the Deferred of a call that waits for a thread takes it
        off the queue: it never runs, and it no longer counts as waiting.
        """
        pool = self.make_pool(cp_max_waiting=5)
        held = yield self.fill(pool)
        waiting = pool.runWithConnection(lambda conn: self.blocker.ran.append("cancelled"))
        self.assertEqual(pool.occupancy()["waiting"], 1)
        waiting.cancel()
        yield self.assertFailure(waiting, defer.CancelledError)
        self.assertEqual(pool.occupancy()["waiting"], 0)
        self.blocker.release.set()
        yield defer.gatherResults(held)
        yield pool.runQuery("SELECT 1")
        self.assertNotIn("cancelled", self.blocker.ran)

    @defer.inlineCallbacks
    def test_occupancyAndTimingsFollowTheCalls(self) -> Any:
        """
        C{occupancy()} counts connections, used threads and waiting calls;
        after C{enable_timings()}, C{timings()} counts each call's wait and
        use, and each new connection.
        """
        pool = self.make_pool()
        self.assertEqual(pool.timings(), {})
        pool.enable_timings()
        held = yield self.fill(pool)
        waiting = pool.runInteraction(self.blocker.run, "waiting")
        occupancy = pool.occupancy()
        self.assertEqual(
            {key: occupancy[key] for key in ("max", "connections", "used", "idle", "waiting")},
            {"max": 2, "connections": 2, "used": 2, "idle": 0, "waiting": 1},
        )
        self.blocker.release.set()
        yield defer.gatherResults(held + [waiting])
        timings = pool.timings()
        self.assertEqual(timings["wait"][3], 3)
        self.assertEqual(timings["use"][3], 3)
        self.assertEqual(timings["connect"][3], 2)
        bounds, counts, total, count = timings["use"]
        self.assertEqual((len(counts), sum(counts)), (len(bounds) + 1, count))
        self.assertGreater(total, 0)

    def test_invalidValuesAreConfigurationErrorsNamingTheOption(self) -> None:
        """
        C{cp_max_waiting} must be an integer >= 1 (or C{None}),
        C{cp_wait_timeout} a number of seconds > 0 (or C{None}), in
        keywords and in URLs.
        """
        for name, value in [
            ("cp_max_waiting", 0),
            ("cp_max_waiting", -1),
            ("cp_max_waiting", "10"),
            ("cp_max_waiting", True),
            ("cp_wait_timeout", 0),
            ("cp_wait_timeout", -1),
            ("cp_wait_timeout", "1"),
        ]:
            error = self.assertRaises(
                ConfigurationError, ReconnectingConnectionPool, "sqlite3", ":memory:", **{name: value}
            )
            self.assertIn(name, str(error))
        for query in ["cp_max_waiting=0", "cp_max_waiting=x", "cp_wait_timeout=0", "cp_wait_timeout=-2"]:
            error = self.assertRaises(ConfigurationError, parse_url, "postgresql://db/app?" + query)
            self.assertIn(query.split("=")[0], str(error))
        parsed = parse_url("postgresql://db/app?cp_max_waiting=20&cp_wait_timeout=1.5")
        self.assertEqual((parsed.pool_kwargs["cp_max_waiting"], parsed.pool_kwargs["cp_wait_timeout"]), (20, 1.5))


class _Offered:
    """
    Calls offered at a fixed rate, with what became of each.
    """

    def __init__(self, pool: ReconnectingConnectionPool, interaction: Any, rate: float) -> None:
        self.pool = pool
        self.interaction = interaction
        self.rate = rate
        self.succeeded: List[float] = []
        self.rejected = 0
        self.timed_out: List[float] = []
        self.other: List[Failure] = []
        self.max_waiting = 0
        self.pending: List["defer.Deferred[Any]"] = []
        self._loop = task.LoopingCall(self.offer)

    def offer(self) -> None:
        self.max_waiting = max(self.max_waiting, self.pool.occupancy()["waiting"])
        began = time.monotonic()
        d = self.pool.runInteraction(self.interaction)
        if d.called:
            # Refused at once: it failed before this returned.
            d.addErrback(self.refused)
            return
        d.addCallbacks(lambda _: self.succeeded.append(time.monotonic() - began), self.failed, errbackArgs=(began,))
        self.pending.append(d)

    def refused(self, failure: Failure) -> None:
        if failure.check(PoolOverloaded):
            self.rejected += 1
        else:
            self.other.append(failure)

    def failed(self, failure: Failure, began: float) -> None:
        if failure.check(PoolOverloaded):
            self.timed_out.append(time.monotonic() - began)
        else:
            self.other.append(failure)

    def start(self) -> None:
        self._loop.start(1.0 / self.rate)

    def stop(self) -> "defer.Deferred[Any]":
        self._loop.stop()
        return defer.DeferredList(self.pending)


class OverloadTests(TestCase):
    """
    Callers offering three times what the database serves, and an outage
    under load: the bound and the deadlines hold.
    """

    def setUp(self) -> None:
        self.driver = require_driver("psycopg2")


    @defer.inlineCallbacks
    def test_threeTimesTheCapacityForTenSecondsKeepsTheBoundAndTheDeadline(self) -> Any:
        """
        Two threads serve 40 calls a second (each sleeps 50 ms in the
        database); 120 a second are offered for ten seconds, with
        C{cp_max_waiting=10} and C{cp_wait_timeout=1}.  No more than 10
        calls ever wait; every call succeeds, fails at once, or fails at
        its deadline with L{PoolOverloaded}; successes took no longer
        than the deadline plus their own work; the server never sees more
        than two sessions of the pool.
        """
        server = shared_server(self, PostgresServer)
        pool = _pool(self, server, cp_max_waiting=10, cp_wait_timeout=1.0)

        def work(txn: Any) -> None:
            txn.execute("SELECT pg_sleep(0.05)")

        offered = _Offered(pool, work, 120)
        sessions: List[int] = []
        watch = task.LoopingCall(lambda: threads.deferToThread(server.client_connections).addCallback(sessions.append))
        offered.start()
        watch.start(0.5)
        yield task.deferLater(reactor, 10.0, lambda: None)
        watch.stop()
        yield offered.stop()
        self.assertEqual(offered.other, [])
        self.assertLessEqual(offered.max_waiting, 10)
        self.assertGreater(offered.rejected, 0)
        self.assertGreater(len(offered.succeeded), 100)
        self.assertLessEqual(max(offered.succeeded), 1.0 + 1.0, "a success waited past its deadline")
        self.assertTrue(all(t >= 1.0 for t in offered.timed_out), offered.timed_out)
        self.assertLessEqual(max(sessions), 2, sessions)
        stats = pool.stats()
        self.assertEqual((stats["rejected"], stats["wait_timeouts"]), (offered.rejected, len(offered.timed_out)))
        self.assertEqual((stats["state"], stats["disconnects"]), ("up", 0))

    @defer.inlineCallbacks
    def test_anOutageUnderLoadKeepsTheBoundAndCallsWithinTheirDeadlineComplete(self) -> Any:
        """
        Waiting for the database through a 5 s outage, with 20 calls a
        second offered, C{cp_max_waiting=10} and C{cp_wait_timeout=8}: the
        queue holds at the bound (calls beyond it fail at once), and the
        calls that were still within their deadline when the server came
        back complete.
        """
        server = private_server(self, PostgresServer)
        pool = _pool(self, server, cp_max_waiting=10, cp_wait_timeout=8.0, cp_policy=WaitForDatabase(deadline=60))
        yield pool.runQuery("SELECT 1")

        @idempotent
        def work(txn: Any) -> None:
            # Safe to run again: a stop with its COMMIT in flight replays
            # it, so that only the queue's bound decides what fails.
            txn.execute("SELECT 1")

        offered = _Offered(pool, work, 20)
        offered.start()
        yield task.deferLater(reactor, 1.0, lambda: None)
        yield threads.deferToThread(server.stop)
        before = len(offered.succeeded)
        yield task.deferLater(reactor, 5.0, lambda: None)
        during = len(offered.succeeded) - before
        waiting_at_restart = pool.occupancy()["waiting"]
        yield threads.deferToThread(server.start)
        yield task.deferLater(reactor, 2.0, lambda: None)
        yield offered.stop()
        self.assertEqual(offered.other, [])
        self.assertEqual(during, 0)
        self.assertLessEqual(offered.max_waiting, 10)
        self.assertEqual(waiting_at_restart, 10)
        self.assertGreater(offered.rejected, 0)
        # The waiting calls, and those held by the threads that wait for
        # the database, completed once it was back.
        self.assertGreaterEqual(len(offered.succeeded) - before, 10)
        self.assertEqual(pool.stats()["state"], "up")


