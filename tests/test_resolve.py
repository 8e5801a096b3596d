"""
Commit resolution (C{cp_resolve_commits}) on real servers, through a
L{FaultProxy}: a COMMIT whose reply was lost is resolved by asking the
database, never guessed.
"""

from __future__ import annotations

import io
from typing import Any, ClassVar, Dict, List, Type

from twisted.internet import defer, reactor, threads
from twisted.trial.unittest import TestCase

from txreconnect import ConfigurationError, ReconnectingConnectionPool, TransactionOutcomeUnknown, WaitForDatabase
from txreconnect import _resolve
from txreconnect._resolve import TABLE
from txreconnect.testing import (
    FaultProxy,
    MariaDBServer,
    PostgresServer,
    ThrowawayServer,
    require_driver,
    shared_server,
)
from tests.support import DEADLINE, started_pool, wait_until_async


def create_items(txn: Any) -> None:
    """
    (Re)create the table C{items} that the tests write.
    """
    txn.execute("DROP TABLE IF EXISTS items")
    txn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, note VARCHAR(100))")


class _ResolveTestsMixin(TestCase):
    server_class: ClassVar[Type[ThrowawayServer]]
    driver_name: ClassVar[str]
    #: whether a transaction that wrote nothing leaves no marker
    knows_read_only: ClassVar[bool] = True
    #: whether the driver sends COMMIT for a transaction that ran nothing
    sends_empty_commit: ClassVar[bool] = False

    def setUp(self) -> Any:
        self.driver = require_driver(self.driver_name)
        self.server = shared_server(self, self.server_class)
        self.proxy = FaultProxy(self.server.port)
        self.proxy.start()
        self.addCleanup(self.proxy.stop)
        self.pool = self.make_pool(port=self.proxy.port, cp_resolve_commits=True)
        self.direct = self.make_pool()
        return self.direct.runInteraction(create_items)


    def make_pool(self, port: Any = None, **kwargs: Any) -> ReconnectingConnectionPool:
        return started_pool(self, self.driver_name, self.server.connect_kwargs(self.driver_name, port=port), **kwargs)

    @defer.inlineCallbacks
    def count_rows(self, where: str = "") -> Any:
        rows = yield self.direct.runQuery("SELECT count(*) FROM items " + where)
        return rows[0][0]

    def writer(self, runs: List[int], row: int) -> Any:
        def write(txn: Any) -> str:
            runs.append(row)
            txn.execute("INSERT INTO items VALUES (%d, 'once')" % (row,))
            return "stored %d" % (row,)

        return write

    @defer.inlineCallbacks
    def test_commitCutAfterTheServerCommittedSucceeds(self) -> Any:
        """
        The connection is cut after COMMIT reached the server: the pool
        asks, learns it committed, and the caller gets the interaction's
        result; it ran once and the row exists once.
        """
        yield self.pool.runQuery("SELECT 1")
        runs: List[int] = []
        cut = self.proxy.cut_after_commit()
        result = yield self.pool.runInteraction(self.writer(runs, 42))
        self.assertTrue((yield cut))
        self.assertEqual(result, "stored 42")
        self.assertEqual(runs, [42])
        self.assertEqual((yield self.count_rows("WHERE id = 42")), 1)
        stats = self.pool.stats()
        self.assertEqual((stats["resolved_committed"], stats["outcome_unknown"], stats["replays"]), (1, 0, 0))

    @defer.inlineCallbacks
    def test_commitCutBeforeItReachedTheServerIsReplayed(self) -> Any:
        """
        The COMMIT never reached the server: the pool asks, learns it did
        not commit (and never will: its session ended), and replays the
        interaction; the row exists once.
        """
        yield self.pool.runQuery("SELECT 1")
        runs: List[int] = []
        cut = self.proxy.cut_before_commit()
        result = yield self.pool.runInteraction(self.writer(runs, 43))
        yield cut
        self.assertEqual(result, "stored 43")
        self.assertEqual(runs, [43, 43])
        self.assertEqual((yield self.count_rows("WHERE id = 43")), 1)
        stats = self.pool.stats()
        self.assertEqual((stats["resolved_aborted"], stats["replays"], stats["outcome_unknown"]), (1, 1, 0))

    @defer.inlineCallbacks
    def test_readOnlyTransactionNeedsNoResolving(self) -> Any:
        """
        A transaction that wrote nothing has nothing to commit: its COMMIT
        cut is simply replayed, without asking (on PostgreSQL, which tells
        a transaction that wrote; MySQL marks every transaction).
        """
        yield self.pool.runQuery("SELECT 1")
        cut = self.proxy.cut_after_commit()
        rows = yield self.pool.runQuery("SELECT count(*) FROM items")
        self.assertTrue((yield cut))
        self.assertEqual(rows[0][0], 0)
        stats = self.pool.stats()
        self.assertEqual(stats["outcome_unknown"], 0)
        if self.knows_read_only:
            self.assertEqual((stats["resolved_committed"], stats["resolved_aborted"], stats["replays"]), (0, 0, 1))
        else:
            self.assertEqual(stats["resolved_committed"], 1)

    @defer.inlineCallbacks
    def test_aTransactionThatRanNoStatementNeedsNoMarkerAndNoResolving(self) -> Any:
        """
        An interaction that ran no statement sets no marker (no extra
        round trip), and if its COMMIT is cut (drivers that send one even
        then), it is replayed without asking.
        """
        yield self.pool.runQuery("SELECT 1")
        marker = "SELECT n FROM %s WHERE id LIKE %%s" % (TABLE,)
        before = yield self.direct.runQuery(marker, (self.pool._markers.token + ":%",))
        cut = self.proxy.cut_after_commit()
        result = yield self.pool.runInteraction(lambda txn: "nothing")
        self.assertEqual(result, "nothing")
        self.assertEqual(cut.called, self.sends_empty_commit)
        if not cut.called:
            cut.addErrback(lambda failure: failure.trap(defer.CancelledError))
            cut.cancel()
        self.assertEqual((yield self.direct.runQuery(marker, (self.pool._markers.token + ":%",))), before)
        stats = self.pool.stats()
        self.assertEqual((stats["resolved_committed"], stats["resolved_aborted"], stats["outcome_unknown"]), (0, 0, 0))
        self.assertEqual(stats["replays"], 1 if self.sends_empty_commit else 0)

    @defer.inlineCallbacks
    def test_aFunctionThatCommittedBeforeItsConnectionWasLostNeverSucceeds(self) -> Any:
        """
        A C{runWithConnection} function that committed once, then lost its
        connection before its last COMMIT, is not resolved as a success
        from its first COMMIT's marker: the caller gets
        L{TransactionOutcomeUnknown}.
        """
        yield self.pool.runQuery("SELECT 1")

        def work(conn: Any) -> None:
            cursor = conn.cursor()
            cursor.execute("INSERT INTO items VALUES (46, 'first')")
            conn.commit()
            threads.blockingCallFromThread(reactor, self.proxy.drop)
            cursor = conn.cursor()
            cursor.execute("INSERT INTO items VALUES (47, 'second')")

        yield self.assertFailure(self.pool.runWithConnection(work), TransactionOutcomeUnknown)
        self.assertEqual((yield self.count_rows("WHERE id = 46")), 1)
        self.assertEqual((yield self.count_rows("WHERE id = 47")), 0)
        self.assertEqual(self.pool.stats()["resolved_committed"], 0)

    @defer.inlineCallbacks
    def test_withoutResolutionTheOutcomeStaysUnknown(self) -> Any:
        """
        Without C{cp_resolve_commits}, a commit cut is
        L{TransactionOutcomeUnknown}, as before, and no marker table is
        needed.
        """
        pool = self.make_pool(port=self.proxy.port)
        yield pool.runQuery("SELECT 1")
        cut = self.proxy.cut_after_commit()
        yield self.assertFailure(pool.runInteraction(self.writer([], 44)), TransactionOutcomeUnknown)
        self.assertTrue((yield cut))
        self.assertEqual((yield self.count_rows("WHERE id = 44")), 1)

    @defer.inlineCallbacks
    def test_aMissingMarkerRowLeavesTheOutcomeUnknownNeverReplayed(self) -> Any:
        """
        If the marker row is deleted under a live connection, a write
        whose COMMIT is then cut cannot be resolved (the reconnect puts a
        fresh row back, which says nothing of it): the caller gets
        L{TransactionOutcomeUnknown}, and the write, which committed, is
        not replayed.
        """
        yield self.pool.runQuery("SELECT 1")
        yield self.direct.runOperation("DELETE FROM %s" % (TABLE,))
        runs: List[int] = []
        cut = self.proxy.cut_after_commit()
        error = yield self.assertFailure(self.pool.runInteraction(self.writer(runs, 48)), TransactionOutcomeUnknown)
        self.assertIn("the database could not tell whether it took effect: its marker row was missing when it committed", str(error))
        self.assertTrue((yield cut))
        self.assertEqual(runs, [48])
        self.assertEqual((yield self.count_rows("WHERE id = 48")), 1)
        self.assertEqual((self.pool.stats()["replays"], self.pool.stats()["resolved_aborted"]), (0, 0))

    @defer.inlineCallbacks
    def test_failingFastADatabaseThatTurnsThePoolAwayLeavesTheOutcomeUnknown(self) -> Any:
        """
        With C{FailFast} (the default), a database that refuses the new
        connection to ask on leaves the outcome unknown: the caller gets
        L{TransactionOutcomeUnknown} saying why, and the write, which
        committed, is not replayed.
        """
        yield self.pool.runQuery("SELECT 1")
        self.proxy.refuse(3600)
        self.addCleanup(self.proxy.refuse, 0)
        runs: List[int] = []
        cut = self.proxy.cut_after_commit()
        error = yield self.assertFailure(self.pool.runInteraction(self.writer(runs, 51)), TransactionOutcomeUnknown)
        self.assertTrue((yield cut))
        self.assertIn("the database could not tell whether it took effect: no new connection to ask on", str(error))
        self.assertEqual(runs, [51])
        self.assertEqual((yield self.count_rows("WHERE id = 51")), 1)
        self.assertEqual((self.pool.stats()["resolve_failed"], self.pool.stats()["replays"]), (1, 0))

    @defer.inlineCallbacks
    def test_waitingForTheDatabaseThePoolAsksOnceItIsBack(self) -> Any:
        """
        With C{WaitForDatabase}, a database that turns the pool away when
        it wants to ask is waited for: once it is back, the pool asks and
        the caller gets the interaction's result.
        """
        pool = self.make_pool(port=self.proxy.port, cp_resolve_commits=True, cp_policy=WaitForDatabase(deadline=30))
        yield pool.runQuery("SELECT 1")
        back = self.proxy.refuse(1.0)
        cut = self.proxy.cut_after_commit()
        result = yield pool.runInteraction(self.writer([], 52))
        self.assertTrue(back.called)
        self.assertTrue((yield cut))
        self.assertEqual(result, "stored 52")
        self.assertEqual((yield self.count_rows("WHERE id = 52")), 1)
        self.assertEqual((pool.stats()["resolved_committed"], pool.stats()["outcome_unknown"]), (1, 0))

    @defer.inlineCallbacks
    def test_eachNewConnectionMakesSureOfItsMarkerRow(self) -> Any:
        """
        A new connection puts its thread's marker row back if it is
        missing (it may reach a server the row had not reached), so the
        next lost COMMIT is resolved again.
        """
        yield self.pool.runQuery("SELECT 1")
        yield self.direct.runOperation("DELETE FROM %s" % (TABLE,))
        yield self.proxy.drop()
        yield self.pool.runQuery("SELECT 1")
        cut = self.proxy.cut_after_commit()
        result = yield self.pool.runInteraction(self.writer([], 49))
        self.assertTrue((yield cut))
        self.assertEqual(result, "stored 49")
        self.assertEqual(self.pool.stats()["resolved_committed"], 1)

    @defer.inlineCallbacks
    def test_eachPoolThreadHasOneMarkerRow(self) -> Any:
        """
        The marker table holds one row per pool thread that connected.
        """
        yield self.pool.runInteraction(self.writer([], 45))
        rows = yield self.direct.runQuery(
            "SELECT count(*) FROM %s WHERE id LIKE %%s" % (TABLE,), (self.pool._markers.token + ":%",)
        )
        self.assertEqual(rows[0][0], 1)


class _PostgresResolve(_ResolveTestsMixin):
    server_class = PostgresServer


class _MariaDBResolve(_ResolveTestsMixin):
    server_class = MariaDBServer
    knows_read_only = False
    sends_empty_commit = True


class Psycopg2ResolveTests(_PostgresResolve):
    driver_name = "psycopg2"


class PsycopgResolveTests(_PostgresResolve):
    driver_name = "psycopg"


class Pg8000ResolveTests(_PostgresResolve):
    driver_name = "pg8000"
    sends_empty_commit = True


class PyMySQLResolveTests(_MariaDBResolve):
    driver_name = "pymysql"


class MySQLdbResolveTests(_MariaDBResolve):
    driver_name = "MySQLdb"


class CursorMethodTests(TestCase):
    """
    A statement sent through a cursor method other than C{execute}
    (psycopg2's C{copy_from}, reached through the transaction) counts as
    one: its lost COMMIT is never taken for that of a transaction that
    ran nothing, which would be replayed.
    """

    def setUp(self) -> Any:
        require_driver("psycopg2")
        self.server = shared_server(self, PostgresServer)
        self.proxy = FaultProxy(self.server.port)
        self.proxy.start()
        self.addCleanup(self.proxy.stop)
        self.direct = started_pool(self, "psycopg2", self.server.connect_kwargs("psycopg2"))
        return self.direct.runInteraction(create_items)

    @defer.inlineCallbacks
    def cut_a_copy(self, **kwargs: Any) -> Any:
        """
        Run an interaction that only copies a row into C{items}, with its
        COMMIT cut after it reached the server.

        @return: a Deferred firing with the pool, the call's Deferred (in
            a list) and how many times the interaction ran.
        """
        pool = started_pool(self, "psycopg2", self.server.connect_kwargs("psycopg2", port=self.proxy.port), **kwargs)
        yield pool.runQuery("SELECT 1")
        runs: List[int] = []

        def copy(txn: Any) -> str:
            runs.append(1)
            txn.copy_from(io.StringIO("53\tcopied\n"), "items")
            return "copied"

        cut = self.proxy.cut_after_commit()
        call = pool.runInteraction(copy)
        yield defer.DeferredList([call], consumeErrors=False)
        self.assertTrue((yield cut))
        rows = yield self.direct.runQuery("SELECT count(*) FROM items WHERE id = 53")
        self.assertEqual(rows[0][0], 1)
        return pool, [call], runs

    @defer.inlineCallbacks
    def test_aCopyWhoseCommitIsCutIsNotReplayed(self) -> Any:
        """
        Without resolution the caller gets L{TransactionOutcomeUnknown},
        and the copy, which committed, ran once.
        """
        pool, [call], runs = yield self.cut_a_copy()
        yield self.assertFailure(call, TransactionOutcomeUnknown)
        self.assertEqual((runs, pool.stats()["replays"]), ([1], 0))

    @defer.inlineCallbacks
    def test_aCopyWhoseCommitIsCutIsResolved(self) -> Any:
        """
        With resolution the copy left its marker, and the caller gets the
        interaction's result.
        """
        pool, [call], runs = yield self.cut_a_copy(cp_resolve_commits=True)
        self.assertEqual((yield call), "copied")
        self.assertEqual((runs, pool.stats()["resolved_committed"]), ([1], 1))


class _InProgressMixin(TestCase):
    """
    A COMMIT still in progress when its client is gone: the server's
    commits wait for a replica that never answers, so that the old session
    keeps its transaction, and its locks, after the proxy has reset its
    connection.  The pool's locking read of the marker waits for it, with
    a bound (1 s here), then ends that session.
    """

    server_class: ClassVar[Type[ThrowawayServer]]
    #: the server settings that make a COMMIT wait for a replica
    settings: ClassVar[Dict[str, Any]]
    driver_name: ClassVar[str]

    def setUp(self) -> Any:
        self.driver = require_driver(self.driver_name)
        self.server = shared_server(self, self.server_class, **self.settings)
        self.proxy = FaultProxy(self.server.port)
        self.proxy.start()
        self.addCleanup(self.proxy.stop)
        self.patch(_resolve, "LOCK_WAIT", 1.0)
        self.direct = started_pool(self, self.driver_name, self.server.connect_kwargs(self.driver_name))
        self.pool = started_pool(
            self, self.driver_name, self.server.connect_kwargs(self.driver_name, port=self.proxy.port),
            cp_resolve_commits=True,
        )
        return self.direct.runInteraction(create_items)

    def hold_commits(self) -> None:
        """
        From now on, make the COMMITs that ask for it wait for a replica.
        """

    def write(self, txn: Any) -> str:
        """
        The interaction: insert row 50, with a COMMIT that waits.
        """
        txn.execute("INSERT INTO items VALUES (50, 'held')")
        return "stored 50"

    def waiting_for_a_replica(self) -> List[str]:
        """
        @return: the server's ids of the sessions whose COMMIT waits for a
            replica.
        """
        raise NotImplementedError()

    @defer.inlineCallbacks
    def lose_a_commit_in_progress(self) -> Any:
        """
        Start a write whose COMMIT waits for a replica, and reset its
        connection once it does.

        @return: a Deferred that fires with the write's Deferred (in a
            list, so that its result is not waited for).
        """
        yield self.pool.runQuery("SELECT 1")
        yield threads.deferToThread(self.hold_commits)
        call = self.pool.runInteraction(self.write)
        yield wait_until_async(
            lambda: threads.deferToThread(self.waiting_for_a_replica).addCallback(bool),
            DEADLINE,
            "the COMMIT to wait for a replica",
        )
        yield self.proxy.reset()
        return [call]

    @defer.inlineCallbacks
    def test_aCommitStillInProgressIsWaitedForThenItsSessionEnded(self) -> Any:
        """
        The old session still holds its transaction open, waiting for a
        replica: the pool's read waits for it, then ends the session,
        whose transaction is then committed (PostgreSQL: it had committed
        locally; MariaDB: it was in the binary log); the caller gets the
        interaction's result, and the row exists once.
        """
        [call] = yield self.lose_a_commit_in_progress()
        result = yield call
        self.assertEqual(result, "stored 50")
        self.assertEqual(self.waiting_for_a_replica(), [])
        rows = yield self.direct.runQuery("SELECT count(*) FROM items WHERE id = 50")
        self.assertEqual(rows[0][0], 1)
        stats = self.pool.stats()
        self.assertEqual((stats["resolved_committed"], stats["outcome_unknown"], stats["replays"]), (1, 0, 0))

    @defer.inlineCallbacks
    def test_aSessionThatCannotBeEndedLeavesTheOutcomeUnknownWithTheReason(self) -> Any:
        """
        Where the old session cannot be ended, the pool waits for it twice
        (with the bound), then gives up: the caller gets
        L{TransactionOutcomeUnknown}, whose message says why.
        """
        self.patch(type(self.pool._driver), "_end_session", lambda driver, connection, session: None)
        [call] = yield self.lose_a_commit_in_progress()
        error = yield self.assertFailure(call, TransactionOutcomeUnknown)
        self.assertIn(
            "the database could not tell whether it took effect: its session still held its transaction open"
            " after 2 s",
            str(error),
        )
        self.assertEqual(len(self.waiting_for_a_replica()), 1)
        self.assertEqual((self.pool.stats()["resolve_failed"], self.pool.stats()["replays"]), (1, 0))


class _PostgresInProgress(_InProgressMixin):
    """
    C{synchronous_standby_names} names a standby that does not exist; only
    the test's write asks to wait for it (C{SET LOCAL synchronous_commit}),
    the others commit locally.
    """

    server_class = PostgresServer
    settings = {"synchronous_standby_names": "ghost", "synchronous_commit": "local"}

    def write(self, txn: Any) -> str:
        txn.execute("SET LOCAL synchronous_commit TO on")
        return super().write(txn)

    def waiting_for_a_replica(self) -> List[str]:
        return self.server.admin_sql("SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep'").split()


class _MariaDBInProgress(_InProgressMixin):
    """
    Semi-synchronous replication with no replica, turned on once the test
    has set up: a COMMIT waits for a replica's acknowledgement after it is
    in the binary log and before InnoDB commits (C{AFTER_SYNC}), holding
    its locks.
    """

    server_class = MariaDBServer
    settings = {
        "log-bin": "binlog",
        "server-id": 1,
        "rpl-semi-sync-master-wait-point": "AFTER_SYNC",
        "rpl-semi-sync-master-timeout": 600000,
    }

    def hold_commits(self) -> None:
        self.addCleanup(self.server.admin_sql, "SET GLOBAL rpl_semi_sync_master_enabled = OFF")
        self.server.admin_sql("SET GLOBAL rpl_semi_sync_master_enabled = ON")

    def waiting_for_a_replica(self) -> List[str]:
        return self.server.admin_sql(
            "SELECT id FROM information_schema.processlist WHERE state LIKE 'Waiting for semi-sync ACK%'"
        ).split()


class Psycopg2InProgressTests(_PostgresInProgress):
    driver_name = "psycopg2"


class PsycopgInProgressTests(_PostgresInProgress):
    driver_name = "psycopg"


class Pg8000InProgressTests(_PostgresInProgress):
    driver_name = "pg8000"


class PyMySQLInProgressTests(_MariaDBInProgress):
    driver_name = "pymysql"


class MySQLdbInProgressTests(_MariaDBInProgress):
    driver_name = "MySQLdb"


class OptionTests(TestCase):
    def test_aDriverWithoutMarkersIsAConfigurationError(self) -> None:
        """
        sqlite3 (and any driver txreconnect does not know) cannot resolve
        commits: asking for it is a L{ConfigurationError} naming the
        option.
        """
        error = self.assertRaises(
            ConfigurationError, ReconnectingConnectionPool, "sqlite3", ":memory:", cp_resolve_commits=True
        )
        self.assertIn("cp_resolve_commits", str(error))

    def test_theOptionIsAFlag(self) -> None:
        error = self.assertRaises(
            ConfigurationError, ReconnectingConnectionPool, "sqlite3", ":memory:", cp_resolve_commits="yes"
        )
        self.assertIn("cp_resolve_commits", str(error))


del _ResolveTestsMixin, _PostgresResolve, _MariaDBResolve, _InProgressMixin, _PostgresInProgress, _MariaDBInProgress
