"""
Fast probing while a failure is cheap for the server: the pure delay
arithmetic of the policies, each driver's verdict on what a failed
connect cost, and the outage state's pacing with fake connects (one
attempt in flight, backoff only after costly failures).  The same on real
servers is in C{tests/test_outage.py}.
"""

from __future__ import annotations

import importlib
import os
import socket
import tempfile
import threading
import time
from typing import Any, Callable, List, Optional, Tuple

from twisted.trial.unittest import SynchronousTestCase

from txreconnect import ConfigurationError, DisconnectionError, FailFast, ReconnectPolicy, WaitForDatabase
from txreconnect._outage import DOWN, UP, Outage
from txreconnect._stats import Stats
from txreconnect.drivers import Driver, driver_for
from txreconnect.drivers._base import failed_cheaply
from txreconnect.testing._process import free_port
from tests.support import unavailable


def _module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        raise unavailable("%s is not installed (pip install txreconnect[test])" % (name,))


class RetryDelayTests(SynchronousTestCase):
    """
    L{ReconnectPolicy.retry_delay}: the pause after a failed attempt and
    the backoff steps taken, from the attempt's cost alone.
    """

    def test_table(self) -> None:
        """
        A cheap failure pauses C{fast_probe_interval} and leaves the
        backoff where it is; a costly one pauses C{delay(steps)} (full
        jitter under the exponential ceiling) and moves it one step on.
        """
        fast = WaitForDatabase(initial_delay=0.1, factor=2, max_delay=1, fast_probe_interval=0.005)
        off = WaitForDatabase(initial_delay=0.1, factor=2, max_delay=1, fast_probe_interval=None)
        for policy, steps, cheap, low, high, after in [
            (fast, 0, True, 0.005, 0.005, 0),
            (fast, 3, True, 0.005, 0.005, 3),
            (fast, 0, False, 0.0, 0.1, 1),
            (fast, 2, False, 0.0, 0.4, 3),
            (fast, 30, False, 0.0, 1.0, 31),
            (off, 0, True, 0.0, 0.1, 1),
            (off, 2, True, 0.0, 0.4, 3),
            (off, 2, False, 0.0, 0.4, 3),
            (FailFast(), 0, True, 0.0, 0.0, 1),
            (FailFast(), 5, False, 0.0, 0.0, 6),
        ]:
            for _ in range(50):
                pause, steps_after = policy.retry_delay(steps, cheap)
                self.assertTrue(low <= pause <= high + 1e-9, (policy, steps, cheap, pause))
                self.assertEqual(steps_after, after, (policy, steps, cheap))

    def test_aPolicyOfOnesOwnWithoutFastProbingBacksOffAfterEveryFailure(self) -> None:
        """
        A L{ReconnectPolicy} subclass that only answers C{delay} is asked
        for C{delay(0)}, C{delay(1)}, ... whatever the failures cost.
        """
        asked: List[int] = []

        class Mine(ReconnectPolicy):
            waits = True

            def delay(self, failures: int) -> float:
                asked.append(failures)
                return 0.5

        steps = 0
        for cheap in (True, False, True, True):
            pause, steps = Mine().retry_delay(steps, cheap)
            self.assertEqual(pause, 0.5)
        self.assertEqual(asked, [0, 1, 2, 3])

    def test_thePauseAfterACheapFailureGrowsWithTheOutageUpToMaxDelay(self) -> None:
        """
        After a cheap failure, L{WaitForDatabase} pauses the larger of
        C{fast_probe_interval} and C{fast_probe_ratio} of the time the
        database has been down, never more than C{max_delay}; the backoff
        does not move.  A costly failure's pause does not depend on it.
        """
        policy = WaitForDatabase(initial_delay=0.1, max_delay=2, fast_probe_interval=0.001, fast_probe_ratio=0.01)
        for down_for, pause in [(0.0, 0.001), (0.05, 0.001), (0.5, 0.005), (10, 0.1), (150, 1.5), (3600, 2.0)]:
            got, steps = policy.retry_delay(4, True, down_for)
            self.assertAlmostEqual(got, pause, msg=down_for)
            self.assertEqual(steps, 4)
        for _ in range(50):
            pause, steps = policy.retry_delay(0, False, 3600)
            self.assertTrue(0 <= pause <= 0.1, pause)
            self.assertEqual(steps, 1)
        fixed = WaitForDatabase(fast_probe_interval=0.005, fast_probe_ratio=0)
        self.assertEqual(fixed.retry_delay(0, True, 3600), (0.005, 0))

    def test_aPolicyOfOnesOwnIgnoresHowLongTheDatabaseHasBeenDown(self) -> None:
        """
        L{ReconnectPolicy.retry_delay} pauses C{fast_probe_interval} after
        a cheap failure, however long the outage.
        """

        class Mine(ReconnectPolicy):
            waits = True
            fast_probe_interval = 0.002

        self.assertEqual(Mine().retry_delay(0, True, 3600), (0.002, 0))

    def test_defaultsAndRepr(self) -> None:
        policy = WaitForDatabase()
        self.assertEqual((policy.fast_probe_interval, policy.fast_probe_ratio), (0.001, 0.001))
        self.assertIn("fast_probe_interval=0.001, fast_probe_ratio=0.001", repr(policy))
        self.assertIsNone(FailFast().fast_probe_interval)

    def test_badFastProbeIntervalIsAConfigurationErrorNamingIt(self) -> None:
        for bad in (0, -0.005, "5ms", True, float("nan")):
            error = self.assertRaises(ConfigurationError, WaitForDatabase, fast_probe_interval=bad)
            self.assertIn("fast_probe_interval", str(error))

    def test_badFastProbeRatioIsAConfigurationErrorNamingIt(self) -> None:
        for bad in (-0.1, 1.5, "0.001", None, True, float("nan"), float("inf")):
            error = self.assertRaises(ConfigurationError, WaitForDatabase, fast_probe_ratio=bad)
            self.assertIn("fast_probe_ratio", str(error))


# --- what a failed connect cost, per driver --------------------------------------


def _refused(driver: Driver, **kwargs: Any) -> BaseException:
    """
    @return: the error of a real attempt through C{driver.connect} to a
        port where nothing listens (or a missing Unix socket).
    """
    try:
        conn = driver.connect((), kwargs)
    except Exception as error:
        return error
    conn.close()
    raise AssertionError("connected to %r" % (kwargs,))


class ClassificationTests(SynchronousTestCase):
    """
    C{Driver.connect_failure_is_cheap}, and the verdict that
    C{Driver.connect} leaves on the error (L{failed_cheaply}).
    """

    def test_realRefusalsAreCheapForEveryKnownServerDriver(self) -> None:
        port = free_port()
        # A short path: Unix socket paths are at most 107 bytes.
        missing = tempfile.mkdtemp(prefix="txr")
        self.addCleanup(os.rmdir, missing)
        cases: List[Tuple[str, dict]] = [
            ("psycopg2", dict(host="127.0.0.1", port=port, user="x", dbname="x", connect_timeout=5)),
            ("psycopg2", dict(host=missing, port=port, user="x", dbname="x")),
            ("psycopg", dict(host="127.0.0.1", port=port, user="x", dbname="x", connect_timeout=5)),
            ("pg8000", dict(host="127.0.0.1", port=port, user="x", database="x")),
            ("pymysql", dict(host="127.0.0.1", port=port, user="x", connect_timeout=5)),
            ("pymysql", dict(unix_socket=os.path.join(missing, "mysqld.sock"), user="x")),
            ("MySQLdb", dict(unix_socket=os.path.join(missing, "mysqld.sock"), user="x")),
        ]
        checked = 0
        for name, kwargs in cases:
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            driver = driver_for(module)
            error = _refused(driver, **kwargs)
            self.assertTrue(driver.connect_failure_is_cheap(error), (name, kwargs, error))
            self.assertTrue(failed_cheaply(error), (name, kwargs, error))
            checked += 1
        if not checked:
            raise unavailable("no server driver is installed (pip install txreconnect[test])")

    def test_mysqlclientOverTcpIsCostly(self) -> None:
        """
        mysqlclient built on MariaDB Connector/C reports a refused TCP
        connection as errno 115 (C{EINPROGRESS}, its non-blocking
        connect's), which does not tell a refusal from other failures:
        costly.
        """
        driver = driver_for(_module("MySQLdb"))
        error = _refused(driver, host="127.0.0.1", port=free_port(), user="x", connect_timeout=5)
        self.assertFalse(failed_cheaply(error), error)

    def test_libpqReasons(self) -> None:
        driver = driver_for(_module("psycopg2"))
        error = _module("psycopg2").OperationalError
        refused = 'connection to server at "127.0.0.1", port 5432 failed: Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?\n'
        for message, cheap in [
            (refused, True),
            (refused + refused.replace("127.0.0.1", "::1"), True),
            ('could not connect to server: No such file or directory\n\tIs the server running locally and accepting\n\tconnections on Unix domain socket "/tmp/.s.PGSQL.5432"?\n', True),
            ('connection to server at "127.0.0.1", port 5432 failed: FATAL:  the database system is starting up\n', True),
            ("FATAL:  the database system is shutting down\n", True),
            ('connection to server at "h", port 5432 failed: FATAL:  the database system is not yet accepting connections\nDETAIL:  Consistent recovery state has not been yet reached.\n', True),
            ('connection to server at "h", port 5432 failed: FATAL:  the database system is not accepting connections\nDETAIL:  Hot standby mode is disabled.\n', False),
            ('connection to server at "127.0.0.1", port 5432 failed: FATAL:  password authentication failed for user "app"\n', False),
            ('connection to server at "127.0.0.1", port 5432 failed: FATAL:  sorry, too many clients already\n', False),
            ('connection to server at "10.0.0.1", port 5432 failed: timeout expired\n', False),
            ('connection to server at "10.0.0.1", port 5432 failed: No route to host\n', False),
            (refused + 'connection to server at "b", port 5432 failed: FATAL:  password authentication failed for user "app"\n', False),
            ("", False),
            ("something new", False),
        ]:
            self.assertEqual(driver.connect_failure_is_cheap(error(message)), cheap, message)

    def test_psycopgMultipleAttempts(self) -> None:
        driver = driver_for(_module("psycopg"))
        error = _module("psycopg").OperationalError
        refused = "- host: 'localhost', port: '5432', hostaddr: '%s': connection failed: connection to server at \"%s\", port 5432 failed: Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?"
        both = "Multiple connection attempts failed. All failures were:\n" + refused % ("::1", "::1") + "\n" + refused % ("127.0.0.1", "127.0.0.1")
        self.assertTrue(driver.connect_failure_is_cheap(error(both)))
        one_costly = both + "\n- host: 'b', port: '5432', hostaddr: '10.0.0.2': connection failed: FATAL:  too many connections for role \"app\""
        self.assertFalse(driver.connect_failure_is_cheap(error(one_costly)))

    def test_pg8000SqlstateAndMessage(self) -> None:
        module = _module("pg8000")
        driver = driver_for(module)
        for fields, cheap in [
            ({"S": "FATAL", "C": "57P03", "M": "the database system is starting up"}, True),
            ({"S": "FATAL", "C": "57P03", "M": "the database system is shutting down"}, True),
            ({"S": "FATAL", "C": "57P03", "M": "the database system is not accepting connections"}, False),
            ({"S": "FATAL", "C": "28P01", "M": 'password authentication failed for user "app"'}, False),
            ({"S": "FATAL", "C": "53300", "M": "sorry, too many clients already"}, False),
        ]:
            self.assertEqual(driver.connect_failure_is_cheap(module.DatabaseError(fields)), cheap, fields)

    def test_mysqlCodes(self) -> None:
        module = _module("pymysql")
        driver = driver_for(module)
        OperationalError = module.err.OperationalError

        def raised_from(cause: BaseException, code: int, message: str) -> BaseException:
            try:
                try:
                    raise cause
                except OSError:
                    raise OperationalError(code, message)
            except OperationalError as error:
                return error

        for error, cheap in [
            (raised_from(ConnectionRefusedError(111, "Connection refused"), 2003, "Can't connect ([Errno 111] Connection refused)"), True),
            (raised_from(FileNotFoundError(2, "No such file or directory"), 2003, "Can't connect ([Errno 2] No such file or directory)"), True),
            (raised_from(socket.timeout("timed out"), 2003, "Can't connect (timed out)"), False),
            (raised_from(ConnectionRefusedError(111, "Connection refused"), 1045, "Access denied"), False),
            (OperationalError(2003, "Can't connect to MySQL server on '127.0.0.1' (%d)" % (111 if os.uname().sysname == "Linux" else 61,)), True),
            (OperationalError(2002, "Can't connect to local server through socket '/x' (2)"), True),
            (OperationalError(2003, "Can't connect to MySQL server on '10.0.0.1' (110)"), False),
            (OperationalError(1040, "Too many connections"), False),
            (OperationalError(1045, "Access denied for user 'app'@'localhost' (using password: YES)"), False),
            (OperationalError(1129, "Host is blocked because of many connection errors"), False),
            (OperationalError(2003, "no server could be used: a:3306: refused; b:3306: refused"), False),
        ]:
            self.assertEqual(driver.connect_failure_is_cheap(error), cheap, error)

    def test_genericDriver(self) -> None:
        """
        A driver txreconnect does not know: only a refused connection in
        the error's chain is cheap.
        """
        driver = Driver(_FakeModule([]))
        try:
            try:
                raise ConnectionRefusedError(111, "Connection refused")
            except OSError:
                raise _FakeModule.Error("could not connect")
        except _FakeModule.Error as error:
            self.assertTrue(driver.connect_failure_is_cheap(error))
        self.assertFalse(driver.connect_failure_is_cheap(_FakeModule.Error("password authentication failed")))
        self.assertFalse(driver.connect_failure_is_cheap(_FakeModule.Error("connection refused")))

    def test_connectMarksTheErrorAndRaisesItUnchanged(self) -> None:
        cheap, costly = _cheap(), _FakeModule.Error("access denied")
        driver = Driver(_FakeModule([cheap, costly]))
        for expected, verdict in ((cheap, True), (costly, False)):
            error = self.assertRaises(_FakeModule.Error, driver.connect, (), {})
            self.assertIs(error, expected)
            self.assertIs(failed_cheaply(error), verdict)
        self.assertFalse(failed_cheaply(_FakeModule.Error("never through a driver")))

    def test_aClassifierThatRaisesCountsAsCostly(self) -> None:
        class Broken(Driver):
            def connect_failure_is_cheap(self, exc: BaseException) -> bool:
                raise RuntimeError("bug")

        error = self.assertRaises(_FakeModule.Error, Broken(_FakeModule([_cheap()])).connect, (), {})
        self.assertFalse(failed_cheaply(error))


# --- the outage's pacing, with fake connects ------------------------------------------


class _FakeModule:
    """
    A DB-API module whose C{connect()} raises the errors of a script, in
    order, then returns connections.
    """

    class Error(Exception):
        pass

    def __init__(self, script: List[BaseException], hold: float = 0.0) -> None:
        self.script = list(script)
        self.hold = hold
        self.lock = threading.Lock()
        self.inflight = 0
        self.most_inflight_failing = 0
        self.attempts = 0

    def connect(self, *args: Any, **kwargs: Any) -> object:
        with self.lock:
            self.attempts += 1
            self.inflight += 1
            error = self.script.pop(0) if self.script else None
            if error is not None:
                self.most_inflight_failing = max(self.most_inflight_failing, self.inflight)
        try:
            if self.hold:
                time.sleep(self.hold)
            if error is not None:
                raise error
            return object()
        finally:
            with self.lock:
                self.inflight -= 1


def _cheap() -> BaseException:
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError:
            raise _FakeModule.Error("could not connect: refused")
    except _FakeModule.Error as error:
        return error


class _Recording(WaitForDatabase):
    """
    L{WaitForDatabase} whose backoff steps are recorded and short.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.asked: List[int] = []

    def delay(self, failures: int) -> float:
        self.asked.append(failures)
        return 0.001


class OutagePacingTests(SynchronousTestCase):
    def outage(self, script: List[BaseException], hold: float = 0.0) -> Tuple[Outage, Callable[[], Any], _FakeModule]:
        module = _FakeModule(script, hold)
        driver = Driver(module)
        outage = Outage(lambda: "<fake pool>", Stats(), driver.errors)
        return outage, lambda: driver.connect((), {}), module

    def test_cheapFailuresNeverMoveTheBackoff(self) -> None:
        """
        While every failure is cheap the prober retries at the fast
        interval: the policy's backoff is never asked for.
        """
        outage, connect, module = self.outage([_cheap() for _ in range(20)])
        policy = _Recording(initial_delay=60, fast_probe_interval=0.001, deadline=60)
        self.assertIsNotNone(outage.open(policy, connect))
        self.assertEqual((module.attempts, policy.asked, outage.state), (21, [], UP))

    def test_costlyFailuresBackOffAndCheapOnesInBetweenDoNot(self) -> None:
        script = [_FakeModule.Error("access denied") for _ in range(3)]
        script[1:1] = [_cheap(), _cheap()]
        outage, connect, module = self.outage(script)
        policy = _Recording(fast_probe_interval=0.001, deadline=60)
        outage.open(policy, connect)
        self.assertEqual((module.attempts, policy.asked), (6, [0, 1, 2]))

    def test_theProberIsToldHowLongTheDatabaseHasBeenDown(self) -> None:
        """
        Each pause is asked for with the time since the outage's first
        failed attempt, so it can grow with the outage.
        """

        class Told(WaitForDatabase):
            def __init__(self) -> None:
                super().__init__(fast_probe_interval=0.001, fast_probe_ratio=0, deadline=60)
                self.told: List[float] = []

            def retry_delay(self, steps: int, cheap: bool, down_for: float = 0.0) -> Tuple[float, int]:
                self.told.append(down_for)
                return super().retry_delay(steps, cheap, down_for)

        outage, connect, module = self.outage([_cheap() for _ in range(30)])
        policy = Told()
        started = time.monotonic()
        outage.open(policy, connect)
        self.assertEqual(len(policy.told), 30)
        self.assertEqual(policy.told, sorted(policy.told))
        # 29 pauses of at least 1 ms each lie between the first answer and the last.
        self.assertGreaterEqual(policy.told[-1] - policy.told[0], 0.029)
        self.assertLessEqual(policy.told[-1], time.monotonic() - started)

    def test_withoutFastProbingEveryFailureBacksOff(self) -> None:
        outage, connect, module = self.outage([_cheap() for _ in range(4)])
        policy = _Recording(fast_probe_interval=None, deadline=60)
        outage.open(policy, connect)
        self.assertEqual(policy.asked, [0, 1, 2, 3])

    def test_oneAttemptInFlightWhileDown(self) -> None:
        """
        Threads waiting for a down database make one attempt at a time,
        however cheap and quick the failures are; all get a connection
        once one attempt succeeds.
        """
        outage, connect, module = self.outage([_cheap()] + [_cheap() for _ in range(60)], hold=0.001)
        self.assertRaises(DisconnectionError, outage.open, FailFast(), connect)
        self.assertEqual(outage.state, DOWN)
        policy = WaitForDatabase(fast_probe_interval=0.001, deadline=60)
        got: List[Optional[object]] = []
        threads = [threading.Thread(target=lambda: got.append(outage.open(policy, connect))) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        self.assertEqual(len(got), 6)
        self.assertEqual(module.most_inflight_failing, 1)
        self.assertEqual(module.attempts, 61 + 6)
        self.assertEqual(outage.state, UP)
