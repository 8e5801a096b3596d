"""
ReconnectingConnectionPool against real PostgreSQL (psycopg2, psycopg 3,
pg8000) and MariaDB (PyMySQL, mysqlclient) servers, with real faults.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, ClassVar, Dict, List, Tuple, Type

from twisted.enterprise import adbapi
from twisted.internet import defer, threads
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from txreconnect import (
    DisconnectionError,
    ReconnectingConnectionPool,
    TransactionOutcomeUnknown,
    idempotent,
)
from txreconnect.testing import (
    FaultProxy,
    MariaDBServer,
    PostgresServer,
    ThrowawayServer,
    private_server,
    require_driver,
    shared_server,
)
from tests.support import wait_until, warm

CP_MAX = 4


class _PoolTestsMixin(TestCase):
    """
    The pool's behaviour, common to every driver; subclasses name the
    server and the driver.
    """

    server_class: ClassVar[Type[ThrowawayServer]]
    driver_name: ClassVar[str]
    idle_setting: ClassVar[Dict[str, Any]]
    text_type: ClassVar[str] = "VARCHAR(100)"

    def setUp(self) -> Any:
        self.driver = require_driver(self.driver_name)
        self.server = shared_server(self, self.server_class)
        self.events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.pool = self.make_pool()
        return self.pool.runInteraction(self._create_table)

    def _create_table(self, txn: Any) -> None:
        txn.execute("DROP TABLE IF EXISTS items")
        txn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, note %s)" % (self.text_type,))

    def make_pool(
        self, server: ThrowawayServer | None = None, port: int | None = None, **kwargs: Any
    ) -> ReconnectingConnectionPool:
        server = server or self.server
        options = dict(server.connect_kwargs(self.driver_name, port=port), cp_min=1, cp_max=CP_MAX)
        options.update(kwargs)
        pool = ReconnectingConnectionPool(self.driver_name, **options)
        pool.start()
        self.addCleanup(pool.close)
        return pool

    #: puts a raw connection of this driver in autocommit mode
    autocommit_openfun: ClassVar[Callable[[Any], None]]
    #: whether the driver lets a reset socket's OSError escape as it is
    #: (pg8000 1.31.5+, from the first read of a reply)
    raises_bare_os_errors: ClassVar[bool] = False

    def lost_errors(self) -> Tuple[type, ...]:
        """
        @return: the exceptions a lost connection shows up as, which the
            pool's errors chain: the driver's, and for a driver that lets
            them escape, a bare L{OSError}.
        """
        return (self.driver.Error, OSError) if self.raises_bare_os_errors else (self.driver.Error,)

    # --- helpers --------------------------------------------------------------

    @defer.inlineCallbacks
    def warm(self, pool: ReconnectingConnectionPool) -> Any:
        """
        Make every one of the pool's C{cp_max} threads open its connection.
        """
        yield warm(pool)
        self.assertEqual(len(pool.connections), pool.max)

    def everything_succeeds(self, pool: ReconnectingConnectionPool, count: int) -> Any:
        """
        Run C{count} concurrent queries; fail if any fails.
        """
        return defer.gatherResults(
            [pool.runQuery("SELECT %d" % (i,)) for i in range(count)], consumeErrors=True
        ).addCallback(lambda results: self.assertEqual(len(results), count))

    def pool_through_proxy(self, **kwargs: Any) -> Tuple[FaultProxy, ReconnectingConnectionPool]:
        """
        A L{FaultProxy} in front of the server, and a pool connected
        through it.
        """
        proxy = FaultProxy(self.server.port)
        proxy.start()
        self.addCleanup(proxy.stop)
        return proxy, self.make_pool(port=proxy.port, **kwargs)

    def in_thread(self, f: Callable[..., Any], *args: Any) -> Any:
        return threads.deferToThread(f, *args)

    def logged(self) -> List[str]:
        return [formatEvent(e) for e in self.events]

    def assertQuietAboutDisconnections(self) -> None:
        """
        The log has no "Rollback failed", no traceback, and no password.
        """
        texts = self.logged()
        self.assertFalse([t for t in texts if "Rollback failed" in t or "close failed" in t], texts)
        self.assertFalse([e for e in self.events if "log_failure" in e], texts)
        self.assertFalse([t for t in texts if self.server.password in t], texts)

    @defer.inlineCallbacks
    def count_rows(self, where: str = "") -> Any:
        rows = yield self.pool.runQuery("SELECT count(*) FROM items " + where)
        return rows[0][0]

    # --- reconnecting and replaying --------------------------------------

    @defer.inlineCallbacks
    def _survives(self, fault: Callable[[], Any], pool: ReconnectingConnectionPool | None = None) -> Any:
        pool = pool or self.pool
        yield self.warm(pool)
        yield fault()
        yield self.everything_succeeds(pool, 3 * CP_MAX)
        self.assertGreaterEqual(pool.stats()["disconnects"], 1)
        self.assertQuietAboutDisconnections()

    def test_everyInteractionSucceedsAfterServerRestart(self) -> Any:
        """
        A warmed pool whose server restarted serves 3 * cp_max concurrent
        interactions without an error.
        """
        return self._survives(lambda: self.in_thread(self.server.restart))

    def test_everyInteractionSucceedsAfterServerKill(self) -> Any:
        """
        The same after the server was killed (SIGKILL) and started again.
        """

        def crash() -> None:
            self.server.kill()
            self.server.start()

        return self._survives(lambda: self.in_thread(crash))

    def test_everyInteractionSucceedsAfterSessionsAreTerminated(self) -> Any:
        """
        The same after an administrator terminated every session.
        """
        return self._survives(lambda: self.in_thread(self.server.terminate_sessions))

    def test_everyInteractionSucceedsAfterIdleTimeout(self) -> Any:
        """
        The same after the server ended the idle sessions itself
        (C{idle_session_timeout}, C{wait_timeout}).
        """
        server = private_server(self, self.server_class, **self.idle_setting)
        pool = self.make_pool(server)

        def idle_out() -> Any:
            return self.in_thread(
                wait_until, lambda: server.client_connections() == 0, 15.0, "idle sessions ended"
            )

        return self._survives(idle_out, pool)

    def test_everyInteractionSucceedsAfterProxyDrop(self) -> Any:
        """
        The same when the network closes every connection (FIN).
        """
        proxy, pool = self.pool_through_proxy()
        return self._survives(proxy.drop, pool)

    def test_everyInteractionSucceedsAfterProxyReset(self) -> Any:
        """
        The same when the network resets every connection (RST).
        """
        proxy, pool = self.pool_through_proxy()
        return self._survives(proxy.reset, pool)

    @defer.inlineCallbacks
    def test_commitCutGivesTransactionOutcomeUnknownAndTheRowExistsOnce(self) -> Any:
        """
        When the connection is cut after the client sent COMMIT, the caller
        gets L{TransactionOutcomeUnknown}; the interaction ran once, and the
        row the server committed is there exactly once.
        """
        proxy, pool = self.pool_through_proxy(cp_max=1)
        yield pool.runQuery("SELECT 1")
        attempts = itertools.count(1)

        def write(txn: Any) -> None:
            next(attempts)
            txn.execute("INSERT INTO items VALUES (42, 'committed once')")

        cut = proxy.cut_after_commit()
        error = yield self.assertFailure(pool.runInteraction(write), TransactionOutcomeUnknown)
        self.assertTrue((yield cut))
        self.assertIsInstance(error.__cause__, self.lost_errors())
        self.assertIn("may or may not", str(error))
        self.assertEqual(next(attempts), 2)
        self.assertEqual((yield self.count_rows("WHERE id = 42")), 1)
        self.assertEqual(pool.stats()["outcome_unknown"], 1)
        # The pool goes on working through the proxy.
        self.assertEqual(list(map(tuple, (yield pool.runQuery("SELECT count(*) FROM items")))), [(1,)])
        self.assertQuietAboutDisconnections()

    @defer.inlineCallbacks
    def test_oneRestartCostsOneReplayNotOnePerThread(self) -> Any:
        """
        After a restart, the first interaction replays; the other threads
        check their connection before use and replace it quietly.
        """
        yield self.warm(self.pool)
        yield self.in_thread(self.server.restart)
        for i in range(3 * CP_MAX):
            yield self.pool.runQuery("SELECT 1")
        stats = self.pool.stats()
        self.assertEqual(stats["replays"], 1)
        self.assertEqual(stats["health_check_failures"], CP_MAX - 1)

    @defer.inlineCallbacks
    def test_disconnectOnEveryAttemptGivesDisconnectionErrorAfterOneReplay(self) -> Any:
        """
        If every attempt loses its connection, the caller gets
        L{DisconnectionError} (chaining the driver's error) after exactly
        one replay.
        """
        attempts = itertools.count(1)

        def doomed(txn: Any) -> None:
            next(attempts)
            txn.execute("SELECT 1")
            self.server.terminate_sessions()
            txn.execute("SELECT 2")

        error = yield self.assertFailure(self.pool.runInteraction(doomed), DisconnectionError)
        self.assertEqual(next(attempts), 3)
        self.assertNotIsInstance(error, TransactionOutcomeUnknown)
        self.assertIsInstance(error, adbapi.ConnectionLost)
        self.assertIsInstance(error.__cause__, self.lost_errors())
        self.assertIn("safe", str(error))
        self.assertEqual(self.pool.stats()["replays"], 1)
        self.assertEqual(self.pool.stats()["replays_failed"], 1)
        self.assertQuietAboutDisconnections()

    @defer.inlineCallbacks
    def test_replayRunsTheInteractionAgainOnAFreshTransaction(self) -> Any:
        """
        An interaction that lost its connection once is run again, on a
        new Transaction, and its result is delivered; what the lost
        attempt wrote was rolled back by the server.
        """
        transactions: List[Any] = []

        def once_doomed(txn: Any) -> str:
            transactions.append(txn)
            txn.execute("INSERT INTO items VALUES (1, 'x')")
            if len(transactions) == 1:
                self.server.terminate_sessions()
                txn.execute("SELECT 1")
            return "done"

        result = yield self.pool.runInteraction(once_doomed)
        self.assertEqual(result, "done")
        self.assertEqual(len(transactions), 2)
        self.assertIsNot(transactions[0], transactions[1])
        self.assertEqual((yield self.count_rows()), 1)
        self.assertEqual(
            sum(1 for t in self.logged() if "lost the database connection" in t and "replaying" in t), 1
        )

    @defer.inlineCallbacks
    def test_autocommitAfterAStatementIsNeverReplayed(self) -> Any:
        """
        In autocommit mode, an interaction whose connection is lost after a
        statement ran gets L{TransactionOutcomeUnknown}, and runs once.
        """
        pool = self.make_pool(cp_openfun=self.autocommit_openfun)
        attempts = itertools.count(1)

        def write_then_lose(txn: Any) -> None:
            next(attempts)
            txn.execute("INSERT INTO items VALUES (7, 'autocommitted')")
            self.server.terminate_sessions()
            txn.execute("SELECT 1")

        error = yield self.assertFailure(pool.runInteraction(write_then_lose), TransactionOutcomeUnknown)
        self.assertIsInstance(error.__cause__, self.lost_errors())
        self.assertEqual(next(attempts), 2)
        self.assertEqual((yield self.count_rows()), 1)
        self.assertEqual(pool.stats()["outcome_unknown"], 1)

    @defer.inlineCallbacks
    def test_idempotentInteractionIsReplayedEvenInAutocommit(self) -> Any:
        """
        An interaction marked L{idempotent} is replayed even when its
        outcome was unknown.
        """
        pool = self.make_pool(cp_openfun=self.autocommit_openfun)
        attempts = itertools.count(1)

        @idempotent
        def write_then_lose_once(txn: Any) -> None:
            attempt = next(attempts)
            txn.execute("DELETE FROM items WHERE id = 8")
            txn.execute("INSERT INTO items VALUES (8, 'once')")
            if attempt == 1:
                self.server.terminate_sessions()
                txn.execute("SELECT 1")

        yield pool.runInteraction(write_then_lose_once)
        self.assertEqual(next(attempts), 3)
        self.assertEqual((yield self.count_rows()), 1)

    # --- errors that are not disconnections --------------------------------

    @defer.inlineCallbacks
    def test_integrityErrorPassesThroughUnchangedAfterOneExecution(self) -> Any:
        """
        An IntegrityError is rolled back and reaches the caller unchanged,
        after exactly one execution.
        """
        yield self.pool.runOperation("INSERT INTO items VALUES (1, 'first')")
        attempts = itertools.count(1)

        def duplicate(txn: Any) -> None:
            next(attempts)
            txn.execute("INSERT INTO items VALUES (2, 'second')")
            txn.execute("INSERT INTO items VALUES (1, 'duplicate')")

        yield self.assertFailure(self.pool.runInteraction(duplicate), self.driver.IntegrityError)
        self.assertEqual(next(attempts), 2)
        self.assertEqual((yield self.count_rows()), 1)
        self.assertEqual(self.pool.stats()["disconnects"], 0)

    @defer.inlineCallbacks
    def test_userExceptionPassesThroughUnchangedAfterOneExecution(self) -> Any:
        """
        An exception raised by the interaction itself is rolled back and
        reaches the caller unchanged, after exactly one execution.
        """
        attempts = itertools.count(1)

        class Oops(Exception):
            pass

        def fails(txn: Any) -> None:
            next(attempts)
            txn.execute("INSERT INTO items VALUES (3, 'rolled back')")
            raise Oops("mine")

        error = yield self.assertFailure(self.pool.runInteraction(fails), Oops)
        self.assertEqual(str(error), "mine")
        self.assertEqual(next(attempts), 2)
        self.assertEqual((yield self.count_rows()), 0)

    @defer.inlineCallbacks
    def test_syntaxErrorPassesThroughUnchanged(self) -> Any:
        """
        A syntax error reaches the caller as the driver's own error.
        """
        yield self.assertFailure(self.pool.runQuery("SELEKT 1"), self.driver.ProgrammingError)
        self.assertEqual(self.pool.stats()["disconnects"], 0)

    # --- runWithConnection -----------------------------------------------

    @defer.inlineCallbacks
    def test_runWithConnectionIsNotReplayedAfterRestartAndTheNextCallWorks(self) -> Any:
        """
        C{runWithConnection} after a restart fails with
        L{DisconnectionError} without running the function again; the
        next call works.
        """
        yield self.warm(self.pool)
        yield self.in_thread(self.server.restart)
        calls = itertools.count(1)

        def use(conn: Any) -> Any:
            next(calls)
            cursor = conn.cursor()
            cursor.execute("SELECT 1")
            return cursor.fetchall()

        failures = 0
        for _ in range(CP_MAX):
            try:
                yield self.pool.runWithConnection(use)
            except DisconnectionError:
                failures += 1
        self.assertEqual(failures, 1)
        self.assertEqual(next(calls), CP_MAX + 1)
        self.assertEqual(self.pool.stats()["replays"], 0)
        self.assertQuietAboutDisconnections()

    @defer.inlineCallbacks
    def test_runWithConnectionReplaysAnIdempotentFunction(self) -> Any:
        """
        A function marked L{idempotent} is replayed by
        C{runWithConnection}.
        """
        calls = itertools.count(1)

        @idempotent
        def use(conn: Any) -> Any:
            if next(calls) == 1:
                self.server.terminate_sessions()
            cursor = conn.cursor()
            cursor.execute("SELECT 1")
            return cursor.fetchall()[0][0]

        self.assertEqual((yield self.pool.runWithConnection(use)), 1)
        self.assertEqual(next(calls), 3)

    # --- no leaks ------------------------------------------------------------

    @defer.inlineCallbacks
    def test_fiftyFaultCyclesLeaveAtMostCpMaxConnectionsAndEveryThread(self) -> Any:
        """
        After 50 fault cycles the server sees at most cp_max connections
        from the pool, and the pool still has its threads.
        """
        for cycle in range(50):
            yield self.in_thread(self.server.terminate_sessions)
            yield self.everything_succeeds(self.pool, CP_MAX)
        connections = yield self.in_thread(self.server.client_connections)
        self.assertLessEqual(connections, CP_MAX)
        self.assertLessEqual(len(self.pool.threadpool.threads), CP_MAX)
        stats = self.pool.stats()
        self.assertLessEqual(stats["opened"] - stats["closed"], CP_MAX)
        self.assertQuietAboutDisconnections()


def _autocommit_attribute(conn: Any) -> None:
    conn.autocommit = True


def _autocommit_method(conn: Any) -> None:
    conn.autocommit(True)


class Psycopg2PoolTests(_PoolTestsMixin):
    server_class = PostgresServer
    driver_name = "psycopg2"
    idle_setting = {"idle_session_timeout": "1s"}
    autocommit_openfun = staticmethod(_autocommit_attribute)


class PsycopgPoolTests(_PoolTestsMixin):
    server_class = PostgresServer
    driver_name = "psycopg"
    idle_setting = {"idle_session_timeout": "1s"}
    autocommit_openfun = staticmethod(_autocommit_attribute)


class Pg8000PoolTests(_PoolTestsMixin):
    server_class = PostgresServer
    driver_name = "pg8000"
    raises_bare_os_errors = True
    idle_setting = {"idle_session_timeout": "1s"}
    autocommit_openfun = staticmethod(_autocommit_attribute)


class PyMySQLPoolTests(_PoolTestsMixin):
    server_class = MariaDBServer
    driver_name = "pymysql"
    idle_setting = {"wait_timeout": 1}
    autocommit_openfun = staticmethod(_autocommit_method)


class MySQLdbPoolTests(_PoolTestsMixin):
    server_class = MariaDBServer
    driver_name = "MySQLdb"
    idle_setting = {"wait_timeout": 1}
    autocommit_openfun = staticmethod(_autocommit_method)


del _PoolTestsMixin
