"""
The pool behind PgBouncer, in session and transaction pooling modes:
PgBouncer restarts, C{RECONNECT} and C{KILL} under continuous writes.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Dict, Set

from twisted.internet import defer, threads
from twisted.trial.unittest import TestCase

from txreconnect import FailFast, ReconnectingConnectionPool, WaitForDatabase, idempotent
from txreconnect.testing import PgBouncer, PostgresServer, require_driver, shared_server, started
from tests.support import warm
from tests.writeload import WriteLoad

#: how long writes may take to resume after an event (seconds)
RESUME_BOUND = 20.0

CP_MAX = 4


@idempotent
def _insert_once(txn: Any, id: int) -> None:
    """
    Store C{id}, or nothing if it is there: safe to replay even when the
    connection died while COMMIT was in flight.
    """
    txn.execute("INSERT INTO bounced (id) VALUES (%s) ON CONFLICT (id) DO NOTHING", (id,))


class _PgBouncerMixin(TestCase):
    """
    Continuous writes through PgBouncer while it restarts, reconnects its
    server connections and kills its clients; subclasses name the driver
    and the pooling mode.
    """

    driver_name: ClassVar[str]
    pool_mode: ClassVar[str]

    def setUp(self) -> None:
        self.driver = require_driver(self.driver_name)
        self.server = shared_server(self, PostgresServer)
        self.server.admin_sql(
            "DROP TABLE IF EXISTS bounced; CREATE TABLE bounced (id INTEGER PRIMARY KEY); "
            'ALTER TABLE bounced OWNER TO "%s"' % (self.server.user,),
            database=self.server.database,
        )
        self.bouncer = started(self, PgBouncer(self.server, pool_mode=self.pool_mode))

    def make_pool(self, **kwargs: Any) -> ReconnectingConnectionPool:
        options: Dict[str, Any] = dict(self.bouncer.connect_kwargs(self.driver_name), cp_min=1, cp_max=CP_MAX)
        options.update(kwargs)
        pool = ReconnectingConnectionPool(self.driver_name, **options)
        pool.start()
        self.addCleanup(pool.close)
        return pool

    def stored(self) -> Set[int]:
        out = self.server.admin_sql("SELECT id FROM bounced", database=self.server.database)
        return {int(line) for line in out.split()}

    def events(self) -> Dict[str, Callable[[], None]]:
        return {
            "restart": self.bouncer.restart,
            "RECONNECT": self.bouncer.reconnect,
            "KILL": self.bouncer.kill_database,
        }

    @defer.inlineCallbacks
    def run_events(self, pool: ReconnectingConnectionPool, load: WriteLoad) -> Any:
        """
        Run each event under C{load}, waiting for writes to resume after
        each.

        @return: (a Deferred firing with) what each event cost, by event:
            its C{replays}, C{failures} (calls that failed),
            C{outcome_unknown} (of those, calls lost while COMMIT was in
            flight) and C{disconnects} (lost connections the pool saw),
            counted once every thread has used its connection after it.
        """
        cost: Dict[str, Dict[str, int]] = {}
        counted = ("replays", "outcome_unknown", "disconnects")
        load.start()
        try:
            yield load.wait_for_acks(30, RESUME_BOUND, "writes before the events")
            for name, event in self.events().items():
                before, failures = pool.stats(), len(load.failed)
                yield threads.deferToThread(event)
                yield load.wait_for_acks(30, RESUME_BOUND, "writes resuming after %s" % (name,))
                # Writes resume on whichever threads are free, so a thread
                # may not have met its broken connection yet; use every
                # thread once, so that what this event broke is counted
                # here and not under the next event.
                yield warm(pool)
                after = pool.stats()
                cost[name] = {key: after[key] - before[key] for key in counted}
                cost[name]["failures"] = len(load.failed) - failures
        finally:
            yield load.stop()
        return cost

    def assertAudited(self, load: WriteLoad) -> None:
        """
        Every acknowledged write is stored; nothing is stored twice (the
        primary key would have failed the second insert).
        """
        stored = self.stored()
        self.assertEqual(set(load.acked) - stored, set(), "acknowledged writes missing")
        self.assertNotIn("IntegrityError", load.failure_types())
        self.assertNotIn("UniqueViolation", load.failure_types())

    @defer.inlineCallbacks
    def test_waitingForTheDatabaseNoCallFails(self) -> Any:
        """
        Waiting for the database, with writes that are safe to replay
        (C{@idempotent}), a PgBouncer restart, C{RECONNECT} and C{KILL}
        fail no call, and cost at most one replay per connection each.
        """
        pool = self.make_pool(cp_policy=WaitForDatabase(deadline=60))
        yield warm(pool)
        load = WriteLoad(pool, callers=CP_MAX, insert=lambda pool, id: pool.runInteraction(_insert_once, id))
        cost = yield self.run_events(pool, load)
        self.assertEqual(load.failure_types(), {})
        for name, spent in cost.items():
            self.assertLessEqual(spent["replays"], CP_MAX, (name, cost))
        self.assertEqual(cost["RECONNECT"]["replays"], 0, cost)
        self.assertAudited(load)

    @defer.inlineCallbacks
    def test_waitingForTheDatabasePlainWritesFailOnlyWithUnknownOutcome(self) -> Any:
        """
        Waiting for the database, with plain inserts (not safe to replay
        once COMMIT was sent): the only calls that may fail are those
        whose COMMIT was in flight, with L{TransactionOutcomeUnknown};
        their rows are stored at most once.
        """
        pool = self.make_pool(cp_policy=WaitForDatabase(deadline=60))
        yield warm(pool)
        load = WriteLoad(pool, callers=CP_MAX, table="bounced")
        cost = yield self.run_events(pool, load)
        self.assertEqual(set(load.failure_types()) - {"TransactionOutcomeUnknown"}, set(), load.failure_types())
        self.assertEqual((cost["RECONNECT"]["replays"], cost["RECONNECT"]["failures"]), (0, 0), cost)
        self.assertAudited(load)

    @defer.inlineCallbacks
    def test_failingFastEachEventCostsAtMostOneReplayPerConnection(self) -> Any:
        """
        Failing fast, each event costs at most one replay per connection;
        C{RECONNECT} costs nothing; nothing is lost or doubled.  C{KILL}
        closes every connection while PgBouncer keeps serving new ones,
        so every call it breaks is replayed unless its COMMIT was in flight
        (then it fails with L{TransactionOutcomeUnknown}): no call fails
        for want of a connection.
        """
        pool = self.make_pool(cp_policy=FailFast())
        yield warm(pool)
        load = WriteLoad(pool, callers=CP_MAX, table="bounced")
        cost = yield self.run_events(pool, load)
        for name, spent in cost.items():
            self.assertLessEqual(spent["replays"], CP_MAX, (name, cost))
        # Whether a broken call is replayed or was in COMMIT depends on
        # where each caller was at the KILL: only their sum is certain.
        self.assertGreater(cost["KILL"]["disconnects"], 0, cost)
        self.assertEqual(cost["KILL"]["failures"], cost["KILL"]["outcome_unknown"], cost)
        self.assertEqual((cost["RECONNECT"]["replays"], cost["RECONNECT"]["failures"]), (0, 0), cost)
        self.assertEqual(
            set(load.failure_types()) - {"DisconnectionError", "TransactionOutcomeUnknown"},
            set(),
            load.failure_types(),
        )
        self.assertAudited(load)

    @defer.inlineCallbacks
    def test_aCallOnAConnectionKilledWhileIdleIsReplayed(self) -> Any:
        """
        After C{KILL} while the pool is idle, failing fast, the next call
        finds its connection closed and is replayed once on a new one.
        """
        pool = self.make_pool(cp_policy=FailFast())
        yield warm(pool)
        yield threads.deferToThread(self.bouncer.kill_database)
        yield pool.runOperation("INSERT INTO bounced (id) VALUES (1)")
        self.assertEqual(self.stored(), {1})
        stats = pool.stats()
        self.assertEqual((stats["disconnects"], stats["replays"]), (1, 1), stats)

    @defer.inlineCallbacks
    def test_databaseRestartBehindPgBouncerIsReplayed(self) -> Any:
        """
        The PostgreSQL server behind PgBouncer restarts while the pool is
        idle: the next writes all succeed (in session pooling, each
        connection's first one is replayed: psycopg 3 may report the lost
        server connection as an C{InternalError} that only the
        connection's closed flag tells apart).
        """
        pool = self.make_pool(cp_policy=WaitForDatabase(deadline=60))
        yield warm(pool)
        yield threads.deferToThread(self.server.restart)
        yield defer.gatherResults(
            [pool.runOperation("INSERT INTO bounced (id) VALUES (%s)", (i,)) for i in range(20)],
            consumeErrors=True,
        )
        self.assertEqual(self.stored(), set(range(20)))
        self.assertLessEqual(pool.stats()["replays"], CP_MAX)


class Psycopg2SessionPoolingTests(_PgBouncerMixin):
    driver_name = "psycopg2"
    pool_mode = "session"


class Psycopg2TransactionPoolingTests(_PgBouncerMixin):
    driver_name = "psycopg2"
    pool_mode = "transaction"


class PsycopgSessionPoolingTests(_PgBouncerMixin):
    driver_name = "psycopg"
    pool_mode = "session"


class PsycopgTransactionPoolingTests(_PgBouncerMixin):
    driver_name = "psycopg"
    pool_mode = "transaction"


del _PgBouncerMixin
