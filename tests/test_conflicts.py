"""
Conflicts on real servers: a transaction that the server rolled back
because it conflicted with another (a deadlock, a serialization failure,
a lock wait timeout) is run again with C{cp_conflict_retries}, and
reaches the caller unchanged without it, as with adbapi.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar, Dict, List, Type

from twisted.internet import defer
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from txreconnect import DisconnectionError, ReconnectingConnectionPool
from txreconnect import pool as pool_module
from txreconnect.testing import MariaDBServer, PostgresServer, ThrowawayServer, require_driver, shared_server

#: how long the two halves of a conflict wait for each other
WAIT = 20.0


class _ConflictTestsMixin(TestCase):
    server_class: ClassVar[Type[ThrowawayServer]]
    driver_name: ClassVar[str]

    def setUp(self) -> Any:
        require_driver(self.driver_name)
        self.server = shared_server(self, self.server_class)
        setup = self.make_pool()
        return setup.runInteraction(self._create_tables)

    def _create_tables(self, txn: Any) -> None:
        for table in ("accounts", "doctors", "notes"):
            txn.execute("DROP TABLE IF EXISTS %s" % (table,))
        txn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
        txn.execute("INSERT INTO accounts VALUES (1, 0), (2, 0)")
        txn.execute("CREATE TABLE doctors (id INTEGER PRIMARY KEY, on_call BOOLEAN NOT NULL)")
        txn.execute("INSERT INTO doctors VALUES (1, TRUE), (2, TRUE)")
        txn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY)")

    def make_pool(self, **kwargs: Any) -> ReconnectingConnectionPool:
        options = dict(self.server.connect_kwargs(self.driver_name), cp_min=1, cp_max=4)
        options.update(kwargs)
        pool = ReconnectingConnectionPool(self.driver_name, **options)
        pool.start()
        self.addCleanup(pool.close)
        return pool

    def deadlock(self, pool: ReconnectingConnectionPool) -> "defer.Deferred[List[Any]]":
        """
        Two interactions that lock rows 1 and 2 in opposite orders, each
        waiting (on its first run) until the other holds its first lock:
        the server picks one as the deadlock's victim.
        """
        both_locked = threading.Barrier(2)
        runs: Dict[str, int] = {"a": 0, "b": 0}

        def transfer(txn: Any, name: str, first: int, second: int) -> str:
            runs[name] += 1
            txn.execute("UPDATE accounts SET v = v + 1 WHERE id = %s", (first,))
            if runs[name] == 1:
                both_locked.wait(timeout=WAIT)
            txn.execute("UPDATE accounts SET v = v + 1 WHERE id = %s", (second,))
            return name

        return defer.DeferredList(
            [pool.runInteraction(transfer, "a", 1, 2), pool.runInteraction(transfer, "b", 2, 1)],
            consumeErrors=True,
        )

    @defer.inlineCallbacks
    def balances(self, pool: ReconnectingConnectionPool) -> Any:
        rows = yield pool.runQuery("SELECT id, v FROM accounts ORDER BY id")
        return [tuple(row) for row in rows]

    @defer.inlineCallbacks
    def test_deadlockedInteractionsBothCompleteWithConflictRetries(self) -> Any:
        """
        With C{cp_conflict_retries=3}, the deadlock's victim is rolled back
        and run again once the other has committed: both calls succeed,
        and each row was updated by each call exactly once.
        """
        pool = self.make_pool(cp_conflict_retries=3)
        results = yield self.deadlock(pool)
        self.assertEqual([ok for ok, _ in results], [True, True], results)
        self.assertEqual((yield self.balances(pool)), [(1, 2), (2, 2)])
        stats = pool.stats()
        self.assertGreaterEqual(stats["conflicts"], 1)
        self.assertGreaterEqual(stats["conflict_retries"], 1)
        self.assertEqual((stats["disconnects"], stats["replays"]), (0, 0))

    @defer.inlineCallbacks
    def test_aBurstOfConflictsIsLoggedOnce(self) -> Any:
        """
        Conflicts close together are one burst, logged as one warning
        (each is counted in the stats); a conflict after a quiet spell
        (L{_CONFLICT_BURST_GAP}) starts a new burst, logged again.
        """
        warnings: List[Dict[str, Any]] = []

        def observe(event: Dict[str, Any]) -> None:
            if event.get("log_level") == LogLevel.warn and event.get("log_namespace", "").startswith("txreconnect"):
                warnings.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        pool = self.make_pool(cp_conflict_retries=3)
        for _ in range(3):
            results = yield self.deadlock(pool)
            self.assertEqual([ok for ok, _ in results], [True, True], results)
        self.assertGreaterEqual(pool.stats()["conflicts"], 3)
        self.assertEqual(len(warnings), 1, [formatEvent(event) for event in warnings])
        self.patch(pool_module, "_CONFLICT_BURST_GAP", 0.0)
        yield self.deadlock(pool)
        self.assertEqual(len(warnings), 2, [formatEvent(event) for event in warnings])

    @defer.inlineCallbacks
    def test_withoutConflictRetriesTheDriversDeadlockErrorReachesTheCaller(self) -> Any:
        """
        With the default C{cp_conflict_retries=0}, the victim's caller gets
        the driver's own error, as with adbapi; the other call succeeds.
        """
        pool = self.make_pool()
        results = yield self.deadlock(pool)
        failures = [value for ok, value in results if not ok]
        self.assertEqual(len(failures), 1, results)
        error = failures[0].value
        self.assertIsInstance(error, pool.dbapi.Error)
        self.assertNotIsInstance(error, DisconnectionError)
        self.assertTrue(pool._driver.is_conflict(error), repr(error))
        self.assertEqual(sorted(v for _, v in (yield self.balances(pool))), [1, 1])
        self.assertEqual(pool.stats()["conflict_retries"], 0)


class _PostgresConflictTests(_ConflictTestsMixin):
    server_class = PostgresServer

    def write_skew(self, pool: ReconnectingConnectionPool) -> "defer.Deferred[List[Any]]":
        """
        Two SERIALIZABLE interactions that each take a doctor off call if
        two are on call, each reading before the other writes (on their
        first run): one of them gets a serialization failure.
        """
        both_read = threading.Barrier(2)
        runs: Dict[int, int] = {1: 0, 2: 0}

        def go_off_call(txn: Any, me: int) -> bool:
            runs[me] += 1
            txn.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
            txn.execute("SELECT count(*) FROM doctors WHERE on_call")
            (on_call,) = txn.fetchall()[0]
            if runs[me] == 1:
                both_read.wait(timeout=WAIT)
            if on_call < 2:
                return False
            txn.execute("UPDATE doctors SET on_call = FALSE WHERE id = %s", (me,))
            return True

        return defer.DeferredList(
            [pool.runInteraction(go_off_call, 1), pool.runInteraction(go_off_call, 2)], consumeErrors=True
        )

    @defer.inlineCallbacks
    def test_serializableWriteSkewCompletesWithConflictRetries(self) -> Any:
        """
        With C{cp_conflict_retries=3}, the transaction that fails to
        serialize runs again, sees the other's write and leaves its doctor
        on call: both calls succeed, and one doctor stays on call.
        """
        pool = self.make_pool(cp_conflict_retries=3)
        results = yield self.write_skew(pool)
        self.assertEqual([ok for ok, _ in results], [True, True], results)
        self.assertEqual(sorted(value for _, value in results), [False, True])
        rows = yield pool.runQuery("SELECT count(*) FROM doctors WHERE on_call")
        self.assertEqual(rows[0][0], 1)
        self.assertGreaterEqual(pool.stats()["conflict_retries"], 1)

    @defer.inlineCallbacks
    def test_withoutConflictRetriesTheSerializationFailureReachesTheCaller(self) -> Any:
        """
        With the default, one caller gets the driver's serialization
        failure (SQLSTATE 40001).
        """
        pool = self.make_pool()
        results = yield self.write_skew(pool)
        failures = [value for ok, value in results if not ok]
        self.assertEqual(len(failures), 1, results)
        self.assertIsInstance(failures[0].value, pool.dbapi.Error)
        self.assertTrue(pool._driver.is_conflict(failures[0].value), repr(failures[0].value))


class _MariaDBConflictTests(_ConflictTestsMixin):
    server_class = MariaDBServer

    def lock_wait(self, pool: ReconnectingConnectionPool) -> "defer.Deferred[List[Any]]":
        """
        One interaction holds row 1's lock until the other has timed out
        once waiting for it (C{innodb_lock_wait_timeout=1}); the waiter
        wrote a note first, which the timeout alone does not roll back.
        """
        locked = threading.Event()
        release = threading.Event()
        runs = [0]

        def hold(txn: Any) -> None:
            txn.execute("UPDATE accounts SET v = v + 1 WHERE id = 1")
            locked.set()
            release.wait(timeout=WAIT)

        def wait_for_lock(txn: Any) -> None:
            runs[0] += 1
            if not locked.wait(timeout=WAIT):
                raise RuntimeError("the lock was never taken")
            if runs[0] > 1:
                release.set()
            txn.execute("SET SESSION innodb_lock_wait_timeout = 1")
            txn.execute("INSERT INTO notes VALUES (7)")
            txn.execute("UPDATE accounts SET v = v + 10 WHERE id = 1")

        holder = pool.runInteraction(hold)
        waiter = pool.runInteraction(wait_for_lock)
        waiter.addBoth(lambda result: (release.set(), result)[1])
        return defer.DeferredList([holder, waiter], consumeErrors=True)

    @defer.inlineCallbacks
    def test_lockWaitTimeoutIsRetriedAfterRollingBackTheWholeTransaction(self) -> Any:
        """
        With C{cp_conflict_retries=3}, the waiter's lock wait timeout
        (1205) is retried after the pool rolled back its whole
        transaction: the note it wrote before exists once, and both
        updates are in.
        """
        pool = self.make_pool(cp_conflict_retries=3)
        results = yield self.lock_wait(pool)
        self.assertEqual([ok for ok, _ in results], [True, True], results)
        rows = yield pool.runQuery("SELECT count(*) FROM notes WHERE id = 7")
        self.assertEqual(rows[0][0], 1)
        self.assertEqual((yield self.balances(pool))[0], (1, 11))

    @defer.inlineCallbacks
    def test_withoutConflictRetriesTheLockWaitTimeoutReachesTheCaller(self) -> Any:
        """
        With the default, the waiter gets the driver's 1205, and its note
        is rolled back with the rest of its transaction.
        """
        pool = self.make_pool()
        results = yield self.lock_wait(pool)
        self.assertEqual([ok for ok, _ in results][0], True)
        failure = results[1][1]
        self.assertIsInstance(failure.value, pool.dbapi.Error)
        self.assertEqual(failure.value.args[0], 1205)
        rows = yield pool.runQuery("SELECT count(*) FROM notes")
        self.assertEqual(rows[0][0], 0)


class Psycopg2ConflictTests(_PostgresConflictTests):
    driver_name = "psycopg2"


class PsycopgConflictTests(_PostgresConflictTests):
    driver_name = "psycopg"


class Pg8000ConflictTests(_PostgresConflictTests):
    driver_name = "pg8000"


class PyMySQLConflictTests(_MariaDBConflictTests):
    driver_name = "pymysql"


class MySQLdbConflictTests(_MariaDBConflictTests):
    driver_name = "MySQLdb"


del _ConflictTestsMixin, _PostgresConflictTests, _MariaDBConflictTests
