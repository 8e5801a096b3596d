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

from txreconnect import ReconnectingConnectionPool, WaitForDatabase, WrongServerError
from txreconnect.testing import MariaDBServer, private_server, require_driver
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

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.driver = require_driver(self.driver_name)
        self.servers = [private_server(self, MariaDBServer), private_server(self, MariaDBServer)]
        for server in self.servers:
            server.admin_sql("CREATE TABLE `%s`.items (id INTEGER PRIMARY KEY)" % (server.database,))
        yield None

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
        from txreconnect import DisconnectionError

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
    def test_refusedCommitIsNotReplayedAndStoresNothing(self) -> Any:
        """
        A transaction whose COMMIT the server refuses because it turned
        read-only meanwhile is not replayed, although a writer is listed:
        COMMIT was sent.  The caller gets L{WrongServerError}, and the row
        is on neither server.
        """
        first, second = self.servers
        pool = self.make_pool(self.servers, target_session_attrs="read-write", cp_max=1)
        inserted, switched = threading.Event(), threading.Event()

        def write_then_wait(txn: Any) -> None:
            txn.execute("INSERT INTO items (id) VALUES (7)")
            inserted.set()
            if not switched.wait(30):
                raise AssertionError("the server was not switched to read-only")

        pending = pool.runInteraction(write_then_wait)
        self.assertTrue((yield threads.deferToThread(inserted.wait, 30)), "the insert did not run")
        yield self.read_only(first)
        switched.set()
        failure = yield self.assertFailure(pending, WrongServerError)
        self.assertIn("refused to commit", str(failure))
        self.assertIsInstance(failure.__cause__, self.driver.Error)
        self.assertEqual((self.ids(first), self.ids(second)), (set(), set()))
        self.assertEqual(pool.stats()["replays"], 0)
        yield pool.runOperation("INSERT INTO items (id) VALUES (8)")
        self.assertEqual(self.ids(second), {8})


class PyMySQLFailoverTests(_MariaDBFailoverMixin):
    driver_name = "pymysql"


class MySQLdbFailoverTests(_MariaDBFailoverMixin):
    driver_name = "MySQLdb"


del _MariaDBFailoverMixin
