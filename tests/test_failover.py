"""
Beyond one server: the pool follows the writer when a server turns
read-only, through host lists (MariaDB: the pool's own; PostgreSQL:
libpq's multi-host targets), under continuous writes, with an audit of
what was stored.
"""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar, Dict, List, Set

from twisted.internet import defer, threads
from twisted.trial.unittest import TestCase

from txreconnect import DisconnectionError, ReconnectingConnectionPool, WaitForDatabase, WrongServerError
from txreconnect.testing import MariaDBServer, PostgresCluster, private_server, require_driver, started
from tests.support import warm
from tests.writeload import WriteLoad

#: how long writes may take to resume on the new writer (seconds)
RESUME_BOUND = 20.0


class _MariaDBFailoverMixin(TestCase):
    """
    Two independent MariaDB servers; the pool lists both and asks for a
    writable one.  The first is switched to C{read_only} while the pool
    writes.
    """

    driver_name: ClassVar[str]

    def setUp(self) -> None:
        self.driver = require_driver(self.driver_name)
        self.servers = [private_server(self, MariaDBServer), private_server(self, MariaDBServer)]
        for server in self.servers:
            server.admin_sql("CREATE TABLE `%s`.items (id INTEGER PRIMARY KEY)" % (server.database,))

    def make_pool(self, servers: List[MariaDBServer], **kwargs: Any) -> ReconnectingConnectionPool:
        first = servers[0].connect_kwargs(self.driver_name)
        options: Dict[str, Any] = dict(
            first,
            host=",".join("127.0.0.1" for _ in servers),
            port=",".join(str(s.port) for s in servers),
            cp_min=1,
            cp_max=4,
        )
        options.update(kwargs)
        pool = ReconnectingConnectionPool(self.driver_name, **options)
        pool.start()
        self.addCleanup(pool.close)
        return pool

    def ids(self, server: MariaDBServer) -> Set[int]:
        out = server.admin_sql("SELECT id FROM `%s`.items" % (server.database,))
        return {int(line) for line in out.split()}

    def read_only(self, server: MariaDBServer) -> "defer.Deferred[Any]":
        return threads.deferToThread(server.admin_sql, "SET GLOBAL read_only = 1")

    @defer.inlineCallbacks
    def test_poolMovesToTheSecondServerWhenTheFirstTurnsReadOnly(self) -> Any:
        """
        Writes that the first server refuses (error 1290) are replayed on
        the second; afterwards no id is stored twice, every acknowledged
        write is on one of the servers, and a call that failed failed
        with L{WrongServerError} and stored nothing.
        """
        first, second = self.servers
        pool = self.make_pool(self.servers, target_session_attrs="read-write")
        yield warm(pool)
        load = WriteLoad(pool, callers=4)
        load.start()
        try:
            yield load.wait_for_acks(50, RESUME_BOUND, "writes on the first server")
            yield self.read_only(first)
            switched = time.monotonic()
            took = yield load.wait_for_acks(50, RESUME_BOUND, "writes resuming on the second server")
        finally:
            yield load.stop()
        on_first, on_second = self.ids(first), self.ids(second)
        # A transaction whose COMMIT the first server refused is not
        # replayed (COMMIT was sent): its caller gets WrongServerError,
        # and nothing of it was stored.
        self.assertEqual(set(load.failure_types()) - {"WrongServerError"}, set(), load.failure_types())
        self.assertEqual({id for id, _ in load.failed} & (on_first | on_second), set())
        self.assertEqual(on_first & on_second, set(), "ids stored on both servers")
        self.assertEqual(set(load.acked) - (on_first | on_second), set(), "acknowledged writes lost")
        self.assertTrue(load.acked_since(switched) & on_second, "no write reached the second server")
        self.assertLess(took, RESUME_BOUND)
        stats = pool.stats()
        self.assertGreater(stats["wrong_server"], 0)
        self.assertLessEqual(stats["wrong_server"], pool.max)  # one per connection at most

    @defer.inlineCallbacks
    def test_readOnlyRefusalPassesUnchangedWhenFollowingTheWriterIsOff(self) -> Any:
        """
        With C{cp_follow_writer=False}, error 1290 reaches the caller as
        the driver raised it, and nothing is replayed.
        """
        first = self.servers[0]
        pool = self.make_pool([first], target_session_attrs="read-write", cp_follow_writer=False)
        yield pool.runOperation("INSERT INTO items (id) VALUES (1)")
        yield self.read_only(first)
        failure = yield self.assertFailure(
            pool.runOperation("INSERT INTO items (id) VALUES (2)"), self.driver.OperationalError
        )
        self.assertEqual(failure.args[0], 1290)
        self.assertEqual(pool.stats()["replays"], 0)

    @defer.inlineCallbacks
    def test_withNoWritableServerTheCallerGetsAClearError(self) -> Any:
        """
        When the only listed server turns read-only, a write fails with a
        L{DisconnectionError} that says no writable server could be used;
        waiting for the database, the call waits until a writer is back.
        """
        first = self.servers[0]
        pool = self.make_pool([first], target_session_attrs="read-write")
        yield pool.runOperation("INSERT INTO items (id) VALUES (1)")
        yield self.read_only(first)
        failure = yield self.assertFailure(
            pool.runOperation("INSERT INTO items (id) VALUES (2)"), DisconnectionError
        )
        self.assertIn("no writable server", str(failure))
        self.assertNotIn(first.password, str(failure))
        waiting = self.make_pool([first], target_session_attrs="read-write", cp_policy=WaitForDatabase(deadline=60))
        pending = waiting.runOperation("INSERT INTO items (id) VALUES (3)")
        yield threads.deferToThread(first.admin_sql, "SET GLOBAL read_only = 0")
        yield pending
        self.assertEqual(self.ids(first), {1, 3})


    @defer.inlineCallbacks
    def commit_after_turning(self, pool: ReconnectingConnectionPool, server: Any) -> Any:
        """
        Start an interaction that inserts row 7 on C{server}, then turn
        C{server} read-only before the interaction commits.

        @return: (a Deferred firing with) a list holding the interaction's
            Deferred.
        """
        inserted, switched = threading.Event(), threading.Event()

        def write_then_wait(txn: Any) -> None:
            txn.execute("INSERT INTO items (id) VALUES (7)")
            inserted.set()
            if not switched.wait(30):
                raise AssertionError("the server was not switched to read-only")

        pending = pool.runInteraction(write_then_wait)
        self.assertTrue((yield threads.deferToThread(inserted.wait, 30)), "the insert did not run")
        yield self.read_only(server)
        switched.set()
        return [pending]

    @defer.inlineCallbacks
    def test_refusedCommitIsNotReplayedAndStoresNothing(self) -> Any:
        """
        A transaction whose COMMIT the server refuses because it turned
        read-only meanwhile is not replayed, although a writer is listed:
        COMMIT was sent.  The caller gets L{WrongServerError}, and the row
        is on neither server.
        """
        first, second = self.servers
        pool = self.make_pool(self.servers, target_session_attrs="read-write", cp_max=1)
        [pending] = yield self.commit_after_turning(pool, first)
        failure = yield self.assertFailure(pending, WrongServerError)
        self.assertIn("refused to commit", str(failure))
        self.assertIsInstance(failure.__cause__, self.driver.Error)
        self.assertEqual((self.ids(first), self.ids(second)), (set(), set()))
        self.assertEqual(pool.stats()["replays"], 0)
        yield pool.runOperation("INSERT INTO items (id) VALUES (8)")
        self.assertEqual(self.ids(second), {8})

    @defer.inlineCallbacks
    def test_refusedCommitWithResolutionIsReplayedOnTheWriter(self) -> Any:
        """
        With C{cp_resolve_commits}, the same transaction succeeds: its
        marker, the last statement before COMMIT, is refused first, so
        COMMIT is never sent and the interaction is replayed on the
        writer.  The row is stored once, on the writer.
        """
        first, second = self.servers
        pool = self.make_pool(
            self.servers, target_session_attrs="read-write", cp_max=1, cp_resolve_commits=True
        )
        [pending] = yield self.commit_after_turning(pool, first)
        yield pending
        self.assertEqual((self.ids(first), self.ids(second)), (set(), {7}))
        self.assertEqual((pool.stats()["replays"], pool.stats()["outcome_unknown"]), (1, 0))


class PyMySQLFailoverTests(_MariaDBFailoverMixin):
    driver_name = "pymysql"


class MySQLdbFailoverTests(_MariaDBFailoverMixin):
    driver_name = "MySQLdb"


del _MariaDBFailoverMixin


class _PostgresFailoverMixin(TestCase):
    """
    A primary and a streaming standby; the pool writes through libpq's
    multi-host target while the standby takes over.
    """

    driver_name: ClassVar[str]

    def setUp(self) -> None:
        self.driver = require_driver(self.driver_name)
        self.cluster = started(self, PostgresCluster(synchronous=True))
        primary = self.cluster.primary
        primary.admin_sql(
            'CREATE TABLE items (id INTEGER PRIMARY KEY); ALTER TABLE items OWNER TO "%s"' % (primary.user,),
            database=primary.database,
        )

    def make_pool(self, target_session_attrs: Any = "read-write", servers: Any = None, **kwargs: Any) -> ReconnectingConnectionPool:
        options: Dict[str, Any] = dict(
            self.cluster.multi_host_kwargs(self.driver_name, target_session_attrs, servers), cp_min=1, cp_max=4
        )
        options.update(kwargs)
        pool = ReconnectingConnectionPool(self.driver_name, **options)
        pool.start()
        self.addCleanup(pool.close)
        return pool

    def ids(self, server: Any) -> Set[int]:
        out = server.admin_sql("SELECT id FROM items", database=server.database)
        return {int(line) for line in out.split()}

    def in_thread(self, f: Any, *args: Any) -> "defer.Deferred[Any]":
        return threads.deferToThread(f, *args)

    @defer.inlineCallbacks
    def test_writesFollowAFailoverUnderLoadWithNothingLostOrDoubled(self) -> Any:
        """
        Continuous writes through C{host=primary,standby
        target_session_attrs=read-write}, waiting for the database: the
        primary is killed and the standby promoted.  Writes resume on the
        new primary within L{RESUME_BOUND} seconds of the promotion,
        without restarting the pool; with synchronous replication every
        acknowledged write is on the new primary; no id is stored twice;
        only calls whose COMMIT was in flight fail, with
        L{TransactionOutcomeUnknown}.
        """
        pool = self.make_pool(cp_policy=WaitForDatabase(deadline=120))
        yield warm(pool)
        load = WriteLoad(pool, callers=4)
        load.start()
        try:
            yield load.wait_for_acks(100, RESUME_BOUND, "writes on the primary")
            yield self.in_thread(self.cluster.kill_primary)
            yield self.in_thread(self.cluster.promote)
            promoted = time.monotonic()
            took = yield load.wait_for_acks(100, RESUME_BOUND, "writes resuming on the new primary")
        finally:
            yield load.stop()
        stored = self.ids(self.cluster.standby)
        self.assertEqual(set(load.acked) - stored, set(), "acknowledged writes missing on the new primary")
        self.assertTrue(load.acked_since(promoted), "no write after the promotion")
        self.assertEqual(set(load.failure_types()) - {"TransactionOutcomeUnknown"}, set(), load.failure_types())
        count = self.cluster.standby.admin_sql("SELECT count(*), count(DISTINCT id) FROM items", database=self.cluster.standby.database).split()
        self.assertEqual(count[0], count[1])
        self.assertLess(took, RESUME_BOUND)

    @defer.inlineCallbacks
    def test_oldPrimaryBackReadOnlyGetsTheWrongServerTreatment(self) -> Any:
        """
        The old primary turns read-only under its sessions and the standby
        is promoted.  A pool that lists both with
        C{target_session_attrs=read-write} meets SQLSTATE 25006, replaces
        its connections without failing a call and writes on the new
        primary; a pool pinned to the old primary's address gets
        L{WrongServerError}, with the refusal chained.
        """
        primary, standby = self.cluster.primary, self.cluster.standby
        listed = self.make_pool()
        pinned = self.make_pool(target_session_attrs=None, servers=[primary])
        yield warm(listed)
        yield warm(pinned)
        yield listed.runOperation("INSERT INTO items (id) VALUES (1)")
        yield pinned.runOperation("INSERT INTO items (id) VALUES (2)")
        yield self.in_thread(self.cluster.make_asynchronous)
        yield self.in_thread(self.cluster.make_read_only, primary)
        yield self.in_thread(self.cluster.promote)
        yield defer.gatherResults(
            [listed.runOperation("INSERT INTO items (id) VALUES (%s)", (i,)) for i in range(10, 30)],
            consumeErrors=True,
        )
        self.assertEqual(self.ids(standby) - {1, 2}, set(range(10, 30)))
        stats = listed.stats()
        self.assertGreater(stats["wrong_server"], 0)
        self.assertLessEqual(stats["wrong_server"], listed.max)
        failure = yield self.assertFailure(pinned.runOperation("INSERT INTO items (id) VALUES (3)"), WrongServerError)
        self.assertIn("read-only", str(failure))
        self.assertEqual(self.cluster_sqlstate(failure.__cause__), "25006")
        self.assertNotIn(primary.password, str(failure))

    def cluster_sqlstate(self, error: Any) -> Any:
        return getattr(error, "pgcode", None) or getattr(error, "sqlstate", None)

    @defer.inlineCallbacks
    def test_restartedOldPrimaryReadOnlyFailsPinnedWritesClearly(self) -> Any:
        """
        After a crash and failover, the old primary comes back read-only:
        a pool pinned to its address reconnects, meets 25006 again on the
        replay and gets L{WrongServerError}; the multi-host pool goes on
        writing on the new primary.
        """
        primary = self.cluster.primary
        listed = self.make_pool(cp_policy=WaitForDatabase(deadline=60))
        pinned = self.make_pool(target_session_attrs=None, servers=[primary])
        yield warm(listed)
        yield warm(pinned)
        yield self.in_thread(self.cluster.kill_primary)
        yield self.in_thread(self.cluster.promote)
        yield self.in_thread(self.cluster.restart_old_primary_read_only)
        yield listed.runOperation("INSERT INTO items (id) VALUES (5)")
        failure = yield self.assertFailure(pinned.runOperation("INSERT INTO items (id) VALUES (6)"), WrongServerError)
        self.assertEqual(self.cluster_sqlstate(failure.__cause__), "25006")
        self.assertEqual(pinned.stats()["replays"], 1)
        self.assertIn(5, self.ids(self.cluster.standby))
        self.assertNotIn(6, self.ids(primary) | self.ids(self.cluster.standby))


class Psycopg2FailoverTests(_PostgresFailoverMixin):
    driver_name = "psycopg2"


class PsycopgFailoverTests(_PostgresFailoverMixin):
    driver_name = "psycopg"


del _PostgresFailoverMixin
