"""
The pool's run loop and construction, on sqlite3: a connection class that
closes itself at a chosen moment stands in for a lost connection, so each
phase (interaction, commit, rollback, connect) can be hit exactly.
"""

from __future__ import annotations

import itertools
import os
import pickle
import sqlite3
from typing import Any, Dict, List

from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from txreconnect import (
    ConfigurationError,
    DisconnectionError,
    ReconnectPolicy,
    ReconnectingConnectionPool,
    TransactionOutcomeUnknown,
    WaitForDatabase,
    idempotent,
)


class _Flaky(sqlite3.Connection):
    """
    A sqlite3 connection that closes itself just before its next commit
    or rollback when told to, as a server that went away would.
    """

    lose_on_commit = 0
    lose_on_rollback = 0

    def commit(self) -> None:
        if _Flaky.lose_on_commit:
            _Flaky.lose_on_commit -= 1
            self.close()
        super().commit()

    def rollback(self) -> None:
        if _Flaky.lose_on_rollback:
            _Flaky.lose_on_rollback -= 1
            self.close()
        super().rollback()


class RunLoopTests(TestCase):
    def setUp(self) -> Any:
        _Flaky.lose_on_commit = _Flaky.lose_on_rollback = 0
        self.path = os.path.abspath(self.mktemp())
        self.events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.pool = self.make_pool()
        return self.pool.runOperation("CREATE TABLE items (id INTEGER PRIMARY KEY)")

    def make_pool(self, **kwargs: Any) -> ReconnectingConnectionPool:
        options: Dict[str, Any] = dict(
            factory=_Flaky, check_same_thread=False, cp_min=1, cp_max=1
        )
        options.update(kwargs)
        pool = ReconnectingConnectionPool("sqlite3", self.path, **options)
        self.addCleanup(pool.close)
        return pool

    def lose(self, txn: Any) -> None:
        """
        Close the raw connection under the interaction.
        """
        txn._connection._connection.close()

    def logged(self) -> List[str]:
        return [formatEvent(e) for e in self.events]

    @defer.inlineCallbacks
    def rows(self) -> Any:
        rows = yield self.pool.runQuery("SELECT id FROM items ORDER BY id")
        return [r[0] for r in rows]

    @defer.inlineCallbacks
    def test_lossDuringInteractionIsReplayedOnANewConnection(self) -> Any:
        attempts = itertools.count(1)

        def interaction(txn: Any) -> str:
            attempt = next(attempts)
            txn.execute("INSERT INTO items VALUES (1)")
            if attempt == 1:
                self.lose(txn)
                txn.execute("SELECT 1")
            return "ok"

        self.assertEqual((yield self.pool.runInteraction(interaction)), "ok")
        self.assertEqual(next(attempts), 3)
        self.assertEqual((yield self.rows()), [1])
        stats = self.pool.stats()
        self.assertEqual((stats["replays"], stats["disconnects"], stats["opened"]), (1, 1, 2))

    @defer.inlineCallbacks
    def test_lossWhileCommittingIsNeverReplayed(self) -> Any:
        """
        A connection lost while COMMIT is in flight gives
        L{TransactionOutcomeUnknown}, chaining the driver's error, and the
        interaction runs once.
        """
        attempts = itertools.count(1)

        def interaction(txn: Any) -> None:
            next(attempts)
            txn.execute("INSERT INTO items VALUES (2)")

        _Flaky.lose_on_commit = 1
        error = yield self.assertFailure(self.pool.runInteraction(interaction), TransactionOutcomeUnknown)
        self.assertEqual(next(attempts), 2)
        self.assertIsInstance(error, DisconnectionError)
        self.assertIsInstance(error, adbapi.ConnectionLost)
        self.assertIsInstance(error.__cause__, sqlite3.ProgrammingError)
        self.assertIn("may or may not", str(error))
        self.assertEqual(self.pool.stats()["outcome_unknown"], 1)
        # The pool works again afterwards.
        self.assertEqual((yield self.rows()), [])

    @defer.inlineCallbacks
    def test_idempotentInteractionIsReplayedAfterLossWhileCommitting(self) -> Any:
        attempts = itertools.count(1)

        @idempotent
        def interaction(txn: Any) -> None:
            next(attempts)
            txn.execute("INSERT OR IGNORE INTO items VALUES (3)")

        _Flaky.lose_on_commit = 1
        yield self.pool.runInteraction(interaction)
        self.assertEqual(next(attempts), 3)
        self.assertEqual((yield self.rows()), [3])

    @defer.inlineCallbacks
    def attempts_with_replays(self, replays: int) -> Any:
        """
        Run an interaction that always loses its connection on a pool with
        C{cp_replays=replays}; return how many times it ran.
        """
        pool = self.make_pool(cp_replays=replays)
        attempts = itertools.count(1)

        def interaction(txn: Any) -> None:
            next(attempts)
            txn.execute("SELECT 1")
            self.lose(txn)
            txn.execute("SELECT 2")

        error = yield self.assertFailure(pool.runInteraction(interaction), DisconnectionError)
        self.assertNotIsInstance(error, TransactionOutcomeUnknown)
        self.assertEqual(pool.stats()["replays"], replays)
        return next(attempts) - 1

    @defer.inlineCallbacks
    def test_cpReplaysZeroNeverReplays(self) -> Any:
        self.assertEqual((yield self.attempts_with_replays(0)), 1)

    @defer.inlineCallbacks
    def test_cpReplaysTwoReplaysTwice(self) -> Any:
        self.assertEqual((yield self.attempts_with_replays(2)), 3)

    @defer.inlineCallbacks
    def test_userErrorSurvivesARollbackThatFindsTheConnectionDead(self) -> Any:
        """
        When the rollback after a user's error finds the connection dead,
        the user's error still reaches the caller, the dead connection is
        discarded, and nothing logs "Rollback failed".
        """

        class Mine(Exception):
            pass

        def interaction(txn: Any) -> None:
            raise Mine()

        _Flaky.lose_on_rollback = 1
        yield self.assertFailure(self.pool.runInteraction(interaction), Mine)
        self.assertEqual(self.pool.stats()["disconnects"], 1)
        self.assertEqual((yield self.rows()), [])
        self.assertFalse([t for t in self.logged() if "ollback failed" in t])
        self.assertFalse([e for e in self.events if "log_failure" in e])

    @defer.inlineCallbacks
    def test_connectFailureIsADisconnectionErrorChainingTheDriverError(self) -> Any:
        pool = ReconnectingConnectionPool(
            "sqlite3", os.path.join(self.path, "no", "such", "dir"), cp_min=1, cp_max=1
        )
        self.addCleanup(pool.close)
        error = yield self.assertFailure(pool.runQuery("SELECT 1"), DisconnectionError)
        self.assertIsInstance(error.__cause__, sqlite3.OperationalError)
        self.assertIn("safe", str(error))

    @defer.inlineCallbacks
    def test_failingOpenfunClosesTheNewConnection(self) -> Any:
        opened: List[Any] = []

        def openfun(conn: Any) -> None:
            opened.append(conn)
            raise ValueError("bad session setup")

        pool = self.make_pool(cp_openfun=openfun)
        yield self.assertFailure(pool.runQuery("SELECT 1"), ValueError)
        self.assertRaises(sqlite3.ProgrammingError, opened[0].execute, "SELECT 1")

    @defer.inlineCallbacks
    def test_connectionsAreOpenedThroughPoolDbapiConnectAsAdbapiDoes(self) -> Any:
        """
        Like C{adbapi}, the pool opens connections with C{pool.dbapi.connect},
        so a C{dbapi} replaced on the pool (to count or instrument connects)
        sees every attempt, also the reconnect after a lost connection.
        """
        real = self.pool.dbapi
        attempts: List[Any] = []

        class Counting:
            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            def connect(self, *args: Any, **kwargs: Any) -> Any:
                attempts.append(args)
                return real.connect(*args, **kwargs)

        self.pool.dbapi = Counting()  # the thread's connection is open (setUp)
        attempt = itertools.count(1)

        def interaction(txn: Any) -> None:
            txn.execute("INSERT INTO items VALUES (1)")
            if next(attempt) == 1:
                self.lose(txn)
            txn.execute("SELECT 1")

        yield self.pool.runInteraction(interaction)
        self.assertEqual([(self.path,)], attempts)  # the reconnect
        self.assertEqual(self.pool.stats()["opened"], 2)

    def test_disconnectOfAnAlreadyDiscardedConnectionDoesNotRaise(self) -> None:
        """
        Unlike adbapi's, C{disconnect} of a connection that is no longer
        this thread's never raises "wrong connection for thread".
        """
        conn = sqlite3.connect(":memory:")
        self.pool.disconnect(conn)
        self.assertRaises(sqlite3.ProgrammingError, conn.execute, "SELECT 1")


class ConstructionTests(TestCase):
    def make(self, *args: Any, **kwargs: Any) -> ReconnectingConnectionPool:
        pool = ReconnectingConnectionPool(*args, **kwargs)
        self.addCleanup(pool.close)
        return pool

    def test_isAnAdbapiConnectionPoolWithTheRealDriverModule(self) -> None:
        pool = self.make("sqlite3", ":memory:", cp_min=1, cp_max=2)
        self.assertIsInstance(pool, adbapi.ConnectionPool)
        self.assertIs(pool.dbapi, sqlite3)
        self.assertEqual((pool.min, pool.max, pool.replays), (1, 2, 1))
        self.assertEqual(pool.connargs, (":memory:",))
        self.assertNotIn("cp_replays", pool.connkw)

    def test_unknownPoolOptionIsAConfigurationError(self) -> None:
        error = self.assertRaises(
            ConfigurationError, ReconnectingConnectionPool, "sqlite3", ":memory:", cp_replay=2
        )
        self.assertIn("cp_replay", str(error))
        self.assertIn("cp_replays", str(error))

    def test_invalidReplaysIsAConfigurationError(self) -> None:
        for bad in (-1, "1", 1.5, True):
            error = self.assertRaises(
                ConfigurationError, ReconnectingConnectionPool, "sqlite3", ":memory:", cp_replays=bad
            )
            self.assertIn("cp_replays", str(error))

    def test_reprNeverShowsThePassword(self) -> None:
        pool = self.make(
            "pymysql", host="db.example", port=3306, user="app", password="hunter2", database="shop"
        )
        text = repr(pool)
        self.assertNotIn("hunter2", text)
        self.assertIn("db.example", text)
        self.assertIn("pymysql", text)

    def test_picklingKeepsTheSettings(self) -> None:
        pool = self.make("sqlite3", ":memory:", cp_min=1, cp_max=2, cp_replays=3)
        copy = pickle.loads(pickle.dumps(pool))
        self.addCleanup(copy.close)
        self.assertIsInstance(copy, ReconnectingConnectionPool)
        self.assertEqual((copy.min, copy.max, copy.replays), (1, 2, 3))

    def test_invalidOptionValuesAreConfigurationErrorsNamingTheOption(self) -> None:
        for keyword, bad in [
            ("cp_policy", "fail fast"),
            ("cp_health_check", -1),
            ("cp_max_lifetime", 0),
            ("cp_stall_timeout", "300"),
            ("cp_conflict_retries", -1),
            ("cp_conflict_retries", 1.5),
        ]:
            error = self.assertRaises(
                ConfigurationError, ReconnectingConnectionPool, "sqlite3", ":memory:", **{keyword: bad}
            )
            self.assertIn(keyword, str(error))

    def test_optionsAreSetAndOffCanBeChosen(self) -> None:
        policy = WaitForDatabase(deadline=30)
        pool = self.make(
            "sqlite3", ":memory:", cp_policy=policy, cp_health_check=0, cp_max_lifetime=600,
            cp_stall_timeout=None,
        )
        self.assertIs(pool.policy, policy)
        self.assertEqual((pool.health_check, pool.max_lifetime, pool.stall_timeout), (0, 600, None))
        self.assertEqual(pool.stats()["state"], "up")


class WaitForDatabaseTests(TestCase):
    def test_delaysHaveFullJitterUnderAnExponentialCeiling(self) -> None:
        policy = WaitForDatabase(initial_delay=0.1, factor=2, max_delay=1)
        for failures, ceiling in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (30, 1.0)]:
            delays = [policy.delay(failures) for _ in range(200)]
            self.assertTrue(all(0 <= d <= ceiling + 1e-9 for d in delays), (failures, max(delays)))
            self.assertLess(min(delays), ceiling / 2)

    def test_badSettingsAreConfigurationErrors(self) -> None:
        for kwargs in [
            {"initial_delay": 0},
            {"factor": 0.5},
            {"max_delay": -1},
            {"deadline": 0},
            {"factor": "2"},
        ]:
            error = self.assertRaises(ConfigurationError, WaitForDatabase, **kwargs)
            self.assertIn(list(kwargs)[0], str(error))


class _CountingPolicy(ReconnectPolicy):
    """
    A policy of the user's own, through the public contract only: it
    waits, briefly, and records each delay it was asked for.
    """

    waits = True
    deadline = 0.5

    def __init__(self) -> None:
        self.asked: List[int] = []

    def delay(self, failures: int) -> float:
        self.asked.append(failures)
        return 0.01


class CustomPolicyTests(TestCase):
    def test_aPolicyOfOnesOwnOnlyDecidesDelays(self) -> None:
        """
        A L{ReconnectPolicy} subclass that sets C{waits} and C{deadline}
        and answers C{delay} paces the attempts against a database that
        cannot be reached, until its deadline ends the call with
        L{DisconnectionError}.
        """
        policy = _CountingPolicy()
        missing = os.path.join(self.mktemp(), "no", "such.db")
        pool = ReconnectingConnectionPool("sqlite3", missing, cp_min=1, cp_max=1, cp_policy=policy)
        pool.start()
        self.addCleanup(pool.close)
        d = self.assertFailure(pool.runQuery("SELECT 1"), DisconnectionError)

        def check(error: DisconnectionError) -> None:
            self.assertIn("gave up after waiting 0.5 s", str(error))
            self.assertGreater(len(policy.asked), 2)
            self.assertEqual(policy.asked, list(range(len(policy.asked))))
            self.assertEqual(pool.stats()["connect_failures"], len(policy.asked))

        return d.addCallback(check)
