"""
Rotating credentials: a password (or C{cp_credentials}) given as a
callable, called for every new connection, and C{pool.drain()}; on real
PostgreSQL and MariaDB servers whose application password is changed
while the pool runs.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar, Dict, List, Type

from twisted.internet import defer, threads
from twisted.logger import globalLogPublisher, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase

from txreconnect import (
    ConfigurationError,
    DisconnectionError,
    ReconnectingConnectionPool,
    WaitForDatabase,
)
from txreconnect._credentials import Credentials, CredentialsFailed
from txreconnect.testing import MariaDBServer, PostgresServer, ThrowawayServer, private_server, require_driver
from tests.support import started_pool
from tests.writeload import WriteLoad

#: writes acknowledged before and after each step
ACKS = 30
#: how long writes may take to resume (seconds)
RESUME = 60.0


class _Secret:
    """
    The current password, as a vault would hand it out; counts its calls.
    """

    #: what C{fail_with} holds when the secret is handed out as it should
    HEALTHY: Any = object()

    def __init__(self, value: str) -> None:
        self.value = value
        self.calls = 0
        #: raised if an exception, else returned instead of the password
        self.fail_with: Any = self.HEALTHY
        self._lock = threading.Lock()

    def __call__(self) -> Any:
        with self._lock:
            self.calls += 1
        if isinstance(self.fail_with, BaseException):
            raise self.fail_with
        if self.fail_with is not self.HEALTHY:
            return self.fail_with
        return self.value


class _LogCapture:
    """
    Every log event's text, while installed.
    """

    def __init__(self, testcase: TestCase) -> None:
        self.lines: List[str] = []
        globalLogPublisher.addObserver(self)
        testcase.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event: Dict[str, Any]) -> None:
        self.lines.append(formatEvent(event) or "")
        failure = event.get("log_failure")
        if failure is not None:
            self.lines.append(failure.getTraceback())


class _RotationMixin(TestCase):
    server_class: ClassVar[Type[ThrowawayServer]]
    driver_name: ClassVar[str]

    def setUp(self) -> Any:
        self.driver = require_driver(self.driver_name)
        self.server = private_server(self, self.server_class)
        self.log = _LogCapture(self)
        self.old = self.server.password
        self.secret = _Secret(self.old)
        kwargs = dict(self.server.connect_kwargs(self.driver_name))
        kwargs["password"] = self.secret
        self.pool = ReconnectingConnectionPool(
            self.driver_name,
            cp_min=1,
            cp_max=3,
            cp_policy=WaitForDatabase(deadline=60),
            cp_resolve_commits=True,
            **kwargs,
        )
        self.pool.start()
        self.addCleanup(self.pool.close)
        return threads.deferToThread(self.create_table)

    def create_table(self) -> None:
        if self.server.family == "postgresql":
            self.server.admin_sql(  # type: ignore[call-arg]
                'CREATE TABLE items (id INTEGER PRIMARY KEY); ALTER TABLE items OWNER TO "%s"' % (self.server.user,),
                database=self.server.database,
            )
        else:
            self.server.admin_sql("CREATE TABLE `%s`.items (id INTEGER PRIMARY KEY)" % (self.server.database,))

    def change_password(self, new: str) -> None:
        if self.server.family == "postgresql":
            self.server.admin_sql("ALTER ROLE \"%s\" PASSWORD '%s'" % (self.server.user, new))
        else:
            self.server.admin_sql("ALTER USER '%s'@'%%' IDENTIFIED BY '%s'" % (self.server.user, new))

    def assertNowhere(self, secret: str, *more: Any) -> None:
        """
        C{secret} appears in no log line (nor traceback), in the pool's
        repr, nor in C{more}.
        """
        self.assertEqual([line for line in self.log.lines if secret in line], [])
        self.assertNotIn(secret, repr(self.pool))
        for thing in more:
            self.assertNotIn(secret, str(thing))

    @defer.inlineCallbacks
    def test_aPasswordChangedUnderLoadIsPickedUpByDrainAndByARestart(self) -> Any:
        """
        Three callers write (waiting for the database, resolving lost
        COMMITs) while the role's password changes: the
        callable hands out the new one, C{drain()} replaces every
        connection (each new one authenticates with the new password,
        the only one the server takes), then a restart makes every thread
        reconnect with it again.  No call fails, and the old password is
        in no log line, repr or error.
        """
        load = WriteLoad(self.pool, callers=3)
        load.start()
        try:
            yield load.wait_for_acks(ACKS, RESUME, "writes before the rotation")
            new = "rotated-" + self.old[::-1]
            yield threads.deferToThread(self.change_password, new)
            self.secret.value = new
            opened = self.pool.stats()["opened"]
            self.pool.drain()
            yield load.wait_for_acks(ACKS, RESUME, "writes after the drain")
            # Every thread that wrote since has a new connection.
            self.assertGreaterEqual(self.pool.stats()["opened"] - opened, 1)
            yield threads.deferToThread(self.server.restart)
            yield load.wait_for_acks(ACKS, RESUME, "writes after the restart")
        finally:
            yield load.stop()
        self.assertEqual(load.failure_types(), {})
        # The restart refused connections for a moment; no attempt was
        # refused for its password.
        refusals = [
            line for line in self.log.lines if "password authentication failed" in line or "Access denied" in line
        ]
        self.assertEqual(refusals, [])
        # Every connection open now was made with the new password.
        born = {birth.generation for birth in self.pool._births.values()}
        self.assertTrue(all(g >= self.pool._replace_before for g in born), born)
        self.assertNowhere(self.old)
        self.assertNowhere(new)

    @defer.inlineCallbacks
    def test_theOldPasswordIsRefusedAndNeverShown(self) -> Any:
        """
        After the change, a connection made with the old password is
        refused (the rotation is real); the pool's error for it, while
        the callable still hands out the old one, does not show it.
        """
        yield self.pool.runQuery("SELECT 1")
        yield threads.deferToThread(self.change_password, "brand-new-pw")
        self.pool.drain()
        quick = ReconnectingConnectionPool(
            self.driver_name, cp_min=1, cp_max=1, **dict(self.server.connect_kwargs(self.driver_name), password=self.secret)
        )
        quick.start()
        self.addCleanup(quick.close)
        failure = yield self.assertFailure(quick.runQuery("SELECT 1"), DisconnectionError)
        self.assertNowhere(self.old, failure, failure.__cause__)


class PostgresRotationTests(_RotationMixin):
    server_class = PostgresServer
    driver_name = "psycopg2"


class MariaDBRotationTests(_RotationMixin):
    server_class = MariaDBServer
    driver_name = "pymysql"


del _RotationMixin


class CallableFailureTests(TestCase):
    """
    A credentials callable that raises or returns garbage is a failed
    connection attempt: it never takes the pool down, and the pool
    recovers when the callable does.
    """

    def setUp(self) -> None:
        self.driver = require_driver("psycopg2")
        self.server = private_server(self, PostgresServer)
        self.log = _LogCapture(self)
        self.secret = _Secret(self.server.password)

    def make_pool(self, **kwargs: Any) -> ReconnectingConnectionPool:
        return started_pool(self, "psycopg2", self.server.connect_kwargs("psycopg2"), **kwargs)

    @defer.inlineCallbacks
    def test_raisingOrGarbageFailsFastThenRecovers(self) -> Any:
        """
        Failing fast, a callable that raises or returns something other
        than text fails the call with L{DisconnectionError} naming the
        callable (not its message or value); once it hands out the
        password again, the next call succeeds.
        """
        pool = self.make_pool(password=self.secret)
        for bad, what in [
            (RuntimeError("vault said: token hunter2 expired"), "raised RuntimeError"),
            (None, "returned a NoneType"),
            (12345, "returned a int"),
        ]:
            self.secret.fail_with = bad
            failure = yield self.assertFailure(pool.runQuery("SELECT 1"), DisconnectionError)
            self.assertIn("the password callable " + what, str(failure))
            self.assertNotIn("hunter2", str(failure))
            pool.drain()
        self.secret.fail_with = _Secret.HEALTHY
        self.assertEqual((yield pool.runQuery("SELECT 1")), [(1,)])
        self.assertEqual([line for line in self.log.lines if "hunter2" in line], [])

    @defer.inlineCallbacks
    def test_waitingForTheDatabaseWaitsForTheCallable(self) -> Any:
        """
        Waiting for the database, a call waits while C{cp_credentials}
        fails, and completes once it answers; the failures were connect
        failures of an outage, which ended.
        """
        answers: List[Any] = [RuntimeError("vault down")] * 2 + [
            {"user": self.server.user, "password": self.server.password}
        ]

        def credentials() -> Any:
            answer = answers.pop(0) if len(answers) > 1 else answers[0]
            if isinstance(answer, BaseException):
                raise answer
            return answer

        kwargs = dict(self.server.connect_kwargs("psycopg2"))
        kwargs.pop("password")
        kwargs["user"] = "nobody"
        pool = self.make_pool(
            cp_credentials=credentials,
            cp_policy=WaitForDatabase(initial_delay=0.01, max_delay=0.05, deadline=30),
            **{k: v for k, v in kwargs.items()},
        )
        self.assertEqual((yield pool.runQuery("SELECT current_user")), [(self.server.user,)])
        stats = pool.stats()
        self.assertEqual((stats["connect_failures"], stats["state"]), (2, "up"))


class CredentialsUnitTests(SynchronousTestCase):
    def test_cpCredentialsMustBeCallable(self) -> None:
        """
        A C{cp_credentials} that is not callable is a
        L{ConfigurationError} naming it, at construction.
        """
        error = self.assertRaises(
            ConfigurationError, ReconnectingConnectionPool, "sqlite3", ":memory:", cp_credentials={"password": "x"}
        )
        self.assertIn("cp_credentials", str(error))
        self.assertNotIn("'x'", str(error))

    def test_onlySecretKeywordsAreCalled(self) -> None:
        """
        Only the driver's secret keywords are taken for callables; other
        keywords (a C{conv} mapping, a factory) pass as given.
        """
        factory = object
        creds = Credentials.find({"password": lambda: "pw", "factory": factory}, ("password",), None)
        assert creds is not None
        self.assertEqual(creds.resolve({"password": None, "factory": factory}), {"password": "pw", "factory": factory})
        self.assertIsNone(Credentials.find({"password": "static", "factory": factory}, ("password",), None))

    def test_cpCredentialsLaysKeywordsOverTheStaticOnes(self) -> None:
        """
        C{cp_credentials}' keywords win over the static ones; a mapping
        with a key that is not text is garbage.
        """
        creds = Credentials.find({"user": "a"}, ("password",), lambda: {"user": "b", "password": "t"})
        assert creds is not None
        self.assertEqual(creds.resolve({"user": "a", "host": "h"}), {"user": "b", "password": "t", "host": "h"})
        bad = Credentials.find({}, ("password",), lambda: {1: "x"})
        assert bad is not None
        error = self.assertRaises(CredentialsFailed, bad.resolve, {})
        self.assertIn("cp_credentials returned a dict", str(error))
