"""
Tests for L{txreconnect.drivers}: how each DB-API driver's lost
connections are recognised, pinged and closed.

The exceptions are the drivers' real classes, built the way the drivers
build them (no database server is needed); the fake connections stand in
for the few attributes the rules read.
"""

from __future__ import annotations

import importlib
import os
import sqlite3
import sys
import types
from typing import TYPE_CHECKING, Any, Dict, List, Optional, cast

from twisted.logger import ILogObserver, LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from txreconnect.drivers import Driver, driver_for
from txreconnect.drivers import known_drivers
from txreconnect.drivers.mysqldb import MySQLdbDriver
from txreconnect.drivers.pg8000 import Pg8000Driver
from txreconnect.drivers.psycopg import PsycopgDriver
from txreconnect.drivers.psycopg2 import Psycopg2Driver
from txreconnect.drivers.pymysql import PyMySQLDriver
from txreconnect.drivers.sqlite3 import Sqlite3Driver
from txreconnect.testing import required


def _optional(name: str) -> Any:
    """
    Import an optional driver.

    @return: the module, or L{None} if it is not installed.
    """
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _skipWithout(module: Any, name: str) -> Optional[str]:
    """
    @return: a trial C{skip} reason if C{module} is missing outside CI,
        else L{None}: in CI (L{required}) the tests run, and fail.
    """
    if module is not None or required():
        return None
    return f"{name} is not installed (pip install 'txreconnect[test]'); in CI this fails instead"


psycopg2 = _optional("psycopg2")
psycopg = _optional("psycopg")
pymysql = _optional("pymysql")
MySQLdb = _optional("MySQLdb")
pg8000 = _optional("pg8000")
if psycopg2 is not None:
    importlib.import_module("psycopg2.errors")
if psycopg is not None:
    importlib.import_module("psycopg.errors")

if TYPE_CHECKING:
    _MixinBase = SynchronousTestCase
else:
    _MixinBase = object

# libpq's client-side messages for a lost connection, as psycopg2 and
# psycopg 3 raise them (first lines; psycopg2 adds libpq's hint lines).
LIBPQ_MESSAGES = [
    "server closed the connection unexpectedly\n"
    "\tThis probably means the server terminated abnormally\n"
    "\tbefore or while processing the request.\n",
    "terminating connection due to administrator command",
    "connection already closed",
    "could not receive data from server: Connection reset by peer",
    "could not send data to server: Broken pipe",
    "connection not open",
    "SSL SYSCALL error: EOF detected",
    "SSL SYSCALL error: Bad file descriptor",
    "SSL error: decryption failed or bad record mac",
    "SSL connection has been closed unexpectedly",
    "no connection to the server\n",
    'connection to server at "127.0.0.1", port 5432 failed: Connection refused',
    "consuming input failed: server closed the connection unexpectedly",
    "the connection is lost",
    "the connection is closed",
    "connection socket closed",
]

# SQLSTATEs after which PostgreSQL has ended the session.
DISCONNECT_SQLSTATES = [
    "08000",
    "08003",
    "08006",
    "08P01",
    "57P01",
    "57P02",
    "57P03",
    "57P05",
    "25P03",
]

# MySQL/MariaDB error numbers that mean the connection is gone.
MYSQL_DISCONNECT_CODES = {
    1053: "Server shutdown in progress",
    1927: "Connection was killed",
    2002: "Can't connect to server on '127.0.0.1' (115)",
    2003: "Can't connect to MySQL server on '127.0.0.1' ([Errno 111] Connection refused)",
    2006: "MySQL server has gone away",
    2013: "Lost connection to MySQL server during query",
    2014: "Commands out of sync; you can't run this command now",
    2045: "Can't open shared memory; client could not create request event",
    2055: "Lost connection to MySQL server at 'reading initial communication packet'",
    4031: "The client was disconnected by the server because of inactivity.",
}


def _withPgcode(exc: Any, pgcode: str) -> Any:
    """
    Give a psycopg2 exception the SQLSTATE psycopg2 sets on errors received
    from the server (C{pgcode} is read-only; psycopg2's own unpickling sets
    it through C{__setstate__}).
    """
    exc.__setstate__({"pgcode": pgcode, "pgerror": str(exc)})
    return exc


class _FakeCursor:
    """
    A DB-API cursor that records what is done with it.
    """

    def __init__(self, connection: "_FakeConnection") -> None:
        self.connection = connection
        self.closed = False

    def execute(self, sql: str) -> None:
        if self.connection.failure is not None:
            raise self.connection.failure
        self.connection.statements.append(sql)

    def fetchall(self) -> List[Any]:
        self.connection.fetches += 1
        return [(1,)]

    def close(self) -> None:
        self.closed = True
        self.connection.cursorsClosed += 1


class _FakeConnection:
    """
    A DB-API connection with the attributes the drivers' rules read.
    """

    def __init__(
        self,
        closed: Any = 0,
        broken: bool = False,
        autocommit: Any = False,
        transactionStatus: int = 0,
        failure: Optional[BaseException] = None,
    ) -> None:
        self.closed = closed
        self.broken = broken
        self.autocommit = autocommit
        self.transactionStatus = transactionStatus
        self.info = types.SimpleNamespace(transaction_status=transactionStatus)
        self.failure = failure
        self.statements: List[str] = []
        self.fetches = 0
        self.cursorsClosed = 0
        self.rollbacks = 0
        self.pings: List[Dict[str, Any]] = []

    def cursor(self) -> _FakeCursor:
        return _FakeCursor(self)

    def rollback(self) -> None:
        self.rollbacks += 1

    def close(self) -> None:
        if self.failure is not None:
            raise self.failure

    def get_transaction_status(self) -> int:
        return self.transactionStatus

    def ping(self, **kwargs: Any) -> None:
        self.pings.append(kwargs)
        if self.failure is not None:
            raise self.failure

    def get_autocommit(self) -> bool:
        if self.failure is not None:
            raise self.failure
        return bool(self.autocommit)


def _fakeDBAPI(name: str) -> types.ModuleType:
    """
    Build a DB-API module txreconnect does not know, with PEP 249's
    exception hierarchy.
    """
    module = types.ModuleType(name)

    class Error(Exception):
        pass

    class InterfaceError(Error):
        pass

    class DatabaseError(Error):
        pass

    class OperationalError(DatabaseError):
        pass

    class IntegrityError(DatabaseError):
        pass

    class ProgrammingError(DatabaseError):
        pass

    for cls in (
        Error,
        InterfaceError,
        DatabaseError,
        OperationalError,
        IntegrityError,
        ProgrammingError,
    ):
        setattr(module, cls.__name__, cls)
    return module


class RegistryTests(SynchronousTestCase):
    """
    L{driver_for} finds the rules by the driver module's C{__name__}.
    """

    def test_knownDriversGetTheirOwnRules(self) -> None:
        """
        Each supported driver module gets its own L{Driver} subclass, named
        after the module, holding that module.
        """
        for module, cls in [
            (psycopg2, Psycopg2Driver),
            (psycopg, PsycopgDriver),
            (pymysql, PyMySQLDriver),
            (MySQLdb, MySQLdbDriver),
            (sqlite3, Sqlite3Driver),
            (pg8000, Pg8000Driver),
        ]:
            if module is None:
                continue
            driver = driver_for(module)
            self.assertIs(type(driver), cls)
            self.assertIs(driver.module, module)
            self.assertEqual(cls.name, module.__name__)

    def test_driverIsChosenByModuleName(self) -> None:
        """
        The registry goes by C{__name__}: PyMySQL installed as C{MySQLdb}
        (C{pymysql.install_as_MySQLdb()}) still gets PyMySQL's rules.
        """
        installedAsMySQLdb = types.ModuleType("pymysql")
        self.assertIsInstance(driver_for(installedAsMySQLdb), PyMySQLDriver)
        self.assertIsInstance(driver_for(types.ModuleType("MySQLdb")), MySQLdbDriver)

    def _captureLog(self) -> List[Dict[str, Any]]:
        """
        Collect the events logged by L{txreconnect.drivers}.
        """
        events: List[Dict[str, Any]] = []

        def observer(event: Dict[str, Any]) -> None:
            if event.get("log_namespace") == "txreconnect.drivers":
                events.append(event)

        globalLogPublisher.addObserver(cast(ILogObserver, observer))
        self.addCleanup(globalLogPublisher.removeObserver, cast(ILogObserver, observer))
        return events

    def test_unknownDriverGetsGenericRulesAndOneWarning(self) -> None:
        """
        An unknown driver gets the generic L{Driver}, and one warning per
        driver name, however many pools ask.
        """
        events = self._captureLog()
        name = "fakedb_" + self.id().replace(".", "_")
        module = _fakeDBAPI(name)
        first = driver_for(module)
        second = driver_for(module)
        self.assertIs(type(first), Driver)
        self.assertIs(type(second), Driver)
        self.assertIs(first.module, module)
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["log_level"], LogLevel.warn)
        self.assertEqual(
            formatEvent(events[0]),
            f"txreconnect has no rules for driver {name!r}; using generic DB-API rules",
        )

    def test_knownDriverLogsNothing(self) -> None:
        """
        A known driver is used silently.
        """
        events = self._captureLog()
        driver_for(sqlite3)
        driver_for(types.ModuleType("psycopg2"))
        self.assertEqual(events, [])

    def test_driverModulesImportWithoutTheirDrivers(self) -> None:
        """
        Every driver module of txreconnect imports when no database driver
        is installed: none imports its driver.
        """
        drivers = [cls.name for cls in known_drivers()]
        self.assertIn("pg8000", drivers)
        ours = ["txreconnect.drivers." + name.lower() for name in drivers] + [
            "txreconnect.drivers._libpq",
            "txreconnect.drivers._mysql_protocol",
            "txreconnect.drivers._postgres",
        ]
        saved = {name: sys.modules.get(name) for name in drivers + ours}

        def restore() -> None:
            for name, module in saved.items():
                if module is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = module

        self.addCleanup(restore)
        for name in drivers:
            # A None entry makes "import name" raise ImportError.
            sys.modules[name] = None  # type: ignore[assignment]
        for name in ours:
            sys.modules.pop(name, None)
        for name in ours:
            importlib.import_module(name)


class GenericDriverTests(SynchronousTestCase):
    """
    L{Driver}: the generic DB-API rules used for unknown drivers.
    """

    def setUp(self) -> None:
        self.module = _fakeDBAPI("fakedb")
        self.driver = Driver(self.module)

    def test_operationalErrorOnClosedConnectionIsADisconnect(self) -> None:
        """
        An C{OperationalError} or C{InterfaceError} on a connection whose
        C{closed} attribute is set is a disconnect, whatever its message.
        """
        closed = _FakeConnection(closed=True)
        self.assertTrue(self.driver.is_disconnect(self.module.OperationalError("boom"), closed))
        self.assertTrue(self.driver.is_disconnect(self.module.InterfaceError("boom"), closed))

    def test_wellKnownMessagesAreDisconnects(self) -> None:
        """
        An C{OperationalError} or C{InterfaceError} whose message says the
        connection is gone is a disconnect, even on an open connection.
        """
        for message in [
            "connection already closed",
            "MySQL server has gone away",
            "Lost connection to server during query",
            "server closed the connection unexpectedly",
            "[Errno 104] Connection reset by peer",
            "[Errno 32] Broken pipe",
        ]:
            for cls in (self.module.OperationalError, self.module.InterfaceError):
                self.assertTrue(
                    self.driver.is_disconnect(cls(message), _FakeConnection()),
                    (cls, message),
                )

    def test_fragmentInsideQuotedDataIsNotADisconnect(self) -> None:
        """
        A fragment after a quote may be the user's data, and a fragment on
        a later line is not the error's own text.
        """
        open_ = _FakeConnection()
        self.assertFalse(
            self.driver.is_disconnect(
                self.module.OperationalError("no such table 'lost connection'"), open_
            )
        )
        self.assertFalse(
            self.driver.is_disconnect(
                self.module.OperationalError('bad value "broken pipe"'), open_
            )
        )
        self.assertFalse(
            self.driver.is_disconnect(
                self.module.OperationalError("timeout\nDETAIL: connection reset"), open_
            )
        )

    def test_otherErrorClassesAreNotDisconnects(self) -> None:
        """
        C{IntegrityError}, C{ProgrammingError} and errors from user code
        are never disconnects, even with a closed connection.
        """
        closed = _FakeConnection(closed=True)
        for exc in [
            self.module.IntegrityError("server has gone away"),
            self.module.ProgrammingError("connection already closed"),
            ValueError("connection already closed"),
        ]:
            self.assertFalse(self.driver.is_disconnect(exc, closed), exc)
            self.assertFalse(self.driver.is_disconnect(exc, None), exc)

    def test_unrelatedOperationalErrorIsNotADisconnect(self) -> None:
        """
        An C{OperationalError} that does not say the connection is gone, on
        an open connection (or none), is not a disconnect.
        """
        exc = self.module.OperationalError("deadlock detected")
        self.assertFalse(self.driver.is_disconnect(exc, _FakeConnection()))
        self.assertFalse(self.driver.is_disconnect(exc, None))

    def test_closedMethodIsNotAFlag(self) -> None:
        """
        A C{closed} method is not mistaken for a set flag.
        """
        connection = _FakeConnection()
        connection.closed = lambda: False
        self.assertFalse(self.driver.is_disconnect(self.module.OperationalError("x"), connection))

    def test_pingSelectsOneAndClosesTheCursor(self) -> None:
        """
        C{ping} runs C{SELECT 1}, fetches the result and closes the cursor.
        """
        connection = _FakeConnection()
        self.driver.ping(connection)
        self.assertEqual(connection.statements, ["SELECT 1"])
        self.assertEqual(connection.fetches, 1)
        self.assertEqual(connection.cursorsClosed, 1)

    def test_pingRaisesTheDriverError(self) -> None:
        """
        C{ping} on a dead connection raises the driver's error, and still
        closes the cursor.
        """
        error = self.module.OperationalError("server has gone away")
        connection = _FakeConnection(failure=error)
        raised = self.assertRaises(self.module.OperationalError, self.driver.ping, connection)
        self.assertIs(raised, error)
        self.assertEqual(connection.cursorsClosed, 1)

    def test_isAutocommitReadsTheAttribute(self) -> None:
        """
        C{is_autocommit} reads C{autocommit}, calling it if it is a method.
        """
        self.assertTrue(self.driver.is_autocommit(_FakeConnection(autocommit=True)))
        self.assertFalse(self.driver.is_autocommit(_FakeConnection(autocommit=False)))
        self.assertTrue(self.driver.is_autocommit(_FakeConnection(autocommit=lambda: 1)))
        self.assertFalse(self.driver.is_autocommit(_FakeConnection(autocommit=lambda: 0)))

    def test_isAutocommitDefaultsToTransactions(self) -> None:
        """
        Without an C{autocommit} attribute, a connection uses transactions
        (PEP 249).
        """
        self.assertFalse(self.driver.is_autocommit(object()))

    def test_isAutocommitAssumesAutocommitWhenUnreadable(self) -> None:
        """
        When C{autocommit} cannot be read, C{is_autocommit} says L{True}, so
        that a lost statement is never taken as rolled back.
        """

        def broken() -> bool:
            raise self.module.InterfaceError("connection already closed")

        self.assertTrue(self.driver.is_autocommit(_FakeConnection(autocommit=broken)))

    def test_closeSwallowsErrors(self) -> None:
        """
        C{close} on a dead connection does not raise.
        """
        connection = _FakeConnection(failure=self.module.InterfaceError("already closed"))
        self.driver.close(connection)

    def test_noConnectDefaults(self) -> None:
        """
        Keyword arguments are driver-specific: the generic rules add none.
        """
        self.assertEqual(self.driver.connect_defaults((), {"host": "db"}), {})


class Psycopg2Tests(SynchronousTestCase):
    """
    L{Psycopg2Driver}.
    """

    skip = _skipWithout(psycopg2, "psycopg2")

    def setUp(self) -> None:
        self.driver = Psycopg2Driver(psycopg2)

    def test_libpqMessagesAreDisconnects(self) -> None:
        """
        psycopg2's and libpq's client-side messages for a lost connection
        are disconnects, without a SQLSTATE and without a connection.
        """
        for message in LIBPQ_MESSAGES:
            self.assertTrue(
                self.driver.is_disconnect(psycopg2.OperationalError(message), None), message
            )
        self.assertTrue(
            self.driver.is_disconnect(psycopg2.InterfaceError("connection already closed"), None)
        )

    def test_plainDatabaseErrorWithSSLMessageIsADisconnect(self) -> None:
        """
        psycopg2 raises errors without a SQLSTATE as plain C{DatabaseError}:
        their message counts.
        """
        exc = psycopg2.DatabaseError("SSL SYSCALL error: EOF detected\n")
        self.assertTrue(self.driver.is_disconnect(exc, _FakeConnection()))

    def test_closedFlagIsADisconnect(self) -> None:
        """
        Any psycopg2 error on a connection whose C{closed} is nonzero (2:
        broken) is a disconnect.
        """
        for exc in [
            psycopg2.OperationalError("x"),
            psycopg2.InterfaceError("cursor already closed"),
            psycopg2.DatabaseError("error with no message from the libpq"),
        ]:
            self.assertTrue(self.driver.is_disconnect(exc, _FakeConnection(closed=2)), exc)
            self.assertTrue(self.driver.is_disconnect(exc, _FakeConnection(closed=1)), exc)

    def test_closedCursorOnOpenConnectionIsNotADisconnect(self) -> None:
        """
        "cursor already closed" on an open connection means the application
        closed the cursor: the connection is fine.
        """
        exc = psycopg2.InterfaceError("cursor already closed")
        self.assertFalse(self.driver.is_disconnect(exc, _FakeConnection(closed=0)))

    def test_disconnectSQLStatesAreDisconnects(self) -> None:
        """
        Errors from the server with a SQLSTATE of class 08 or one of 57P01,
        57P02, 57P03, 57P05, 25P03 are disconnects.
        """
        for sqlstate in DISCONNECT_SQLSTATES:
            exc = _withPgcode(psycopg2.OperationalError("FATAL"), sqlstate)
            self.assertTrue(self.driver.is_disconnect(exc, _FakeConnection()), sqlstate)

    def test_disconnectClassesWithoutPgcodeAreDisconnects(self) -> None:
        """
        A C{psycopg2.errors} class of a disconnect SQLSTATE built directly
        has no C{pgcode}; its class still counts.
        """
        exc = psycopg2.errors.lookup("57P01")("terminating connection due to administrator command")
        self.assertIsNone(exc.pgcode)
        self.assertTrue(self.driver.is_disconnect(exc, _FakeConnection()))
        for sqlstate in DISCONNECT_SQLSTATES:
            exc = psycopg2.errors.lookup(sqlstate)("FATAL")
            self.assertTrue(self.driver.is_disconnect(exc, _FakeConnection()), sqlstate)

    def test_otherSQLStatesAreNotDisconnectsWhateverTheMessage(self) -> None:
        """
        When the server gave a SQLSTATE, only the SQLSTATE counts: its text
        may quote user data.
        """
        for exc in [
            _withPgcode(psycopg2.OperationalError("terminating connection"), "57014"),
            _withPgcode(psycopg2.errors.QueryCanceled("canceling statement: server closed the connection"), "57014"),
            _withPgcode(psycopg2.errors.RaiseException("terminating connection (user RAISE)"), "P0001"),
        ]:
            self.assertFalse(self.driver.is_disconnect(exc, _FakeConnection()), exc)

    def test_uniqueViolationQuotingAFragmentIsNotADisconnect(self) -> None:
        """
        A unique violation on the value 'server closed the connection
        unexpectedly' is not a disconnect, with or without its SQLSTATE.
        """
        message = (
            'duplicate key value violates unique constraint "t_pkey"\n'
            "DETAIL:  Key (x)=(server closed the connection unexpectedly) already exists.\n"
        )
        self.assertFalse(
            self.driver.is_disconnect(_withPgcode(psycopg2.errors.UniqueViolation(message), "23505"), _FakeConnection())
        )
        self.assertFalse(self.driver.is_disconnect(psycopg2.IntegrityError(message), _FakeConnection()))
        self.assertFalse(
            self.driver.is_disconnect(
                psycopg2.IntegrityError("server closed the connection unexpectedly"), _FakeConnection()
            )
        )

    def test_fragmentAfterQuoteIsNotADisconnect(self) -> None:
        """
        A fragment after a quote on the first line is taken as user data.
        """
        exc = psycopg2.OperationalError('could not open "terminating connection"')
        self.assertFalse(self.driver.is_disconnect(exc, _FakeConnection()))

    def test_programmingAndDataErrorsAreNotDisconnects(self) -> None:
        """
        C{ProgrammingError}, C{DataError} and C{InternalError} never count
        by their message.
        """
        for cls in (psycopg2.ProgrammingError, psycopg2.DataError, psycopg2.InternalError):
            exc = cls("server closed the connection unexpectedly")
            self.assertFalse(self.driver.is_disconnect(exc, _FakeConnection()), cls)

    def test_userErrorIsNotADisconnect(self) -> None:
        """
        An exception from user code is not a disconnect, even on a closed
        connection.
        """
        self.assertFalse(
            self.driver.is_disconnect(ValueError("connection already closed"), _FakeConnection(closed=2))
        )

    def test_pingRollsBackTheTransactionItOpened(self) -> None:
        """
        On an idle connection outside autocommit, C{ping} runs C{SELECT 1},
        then rolls back the transaction psycopg2 opened for it.
        """
        connection = _FakeConnection(autocommit=False, transactionStatus=0)
        self.driver.ping(connection)
        self.assertEqual(connection.statements, ["SELECT 1"])
        self.assertEqual(connection.rollbacks, 1)

    def test_pingLeavesTransactionsAlone(self) -> None:
        """
        C{ping} rolls nothing back in autocommit mode or inside a
        transaction that was already open.
        """
        for connection in [
            _FakeConnection(autocommit=True, transactionStatus=0),
            _FakeConnection(autocommit=False, transactionStatus=2),
        ]:
            self.driver.ping(connection)
            self.assertEqual(connection.statements, ["SELECT 1"])
            self.assertEqual(connection.rollbacks, 0)

    def test_pingRaisesOnADeadConnection(self) -> None:
        """
        C{ping} raises psycopg2's error on a dead connection.
        """
        error = psycopg2.OperationalError("server closed the connection unexpectedly")
        self.assertRaises(psycopg2.OperationalError, self.driver.ping, _FakeConnection(failure=error))

    def test_isAutocommitReadsTheAttribute(self) -> None:
        """
        C{is_autocommit} is psycopg2's C{autocommit} attribute.
        """
        self.assertTrue(self.driver.is_autocommit(_FakeConnection(autocommit=True)))
        self.assertFalse(self.driver.is_autocommit(_FakeConnection(autocommit=False)))

    def test_closeSwallowsErrors(self) -> None:
        """
        C{close} does not raise, even if the connection does.
        """
        self.driver.close(_FakeConnection(failure=psycopg2.InterfaceError("connection already closed")))


class LibpqConnectDefaultsTests(SynchronousTestCase):
    """
    C{connect_defaults} of L{Psycopg2Driver} and L{PsycopgDriver}.
    """

    skip = None if psycopg2 or psycopg else "neither psycopg2 nor psycopg is installed"

    expected = {
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        "connect_timeout": 10,
        # libpq 12+ (both drivers' wheels bundle a newer one)
        "tcp_user_timeout": 30000,
    }

    def setUp(self) -> None:
        environ = dict(os.environ)
        environ.pop("PGCONNECT_TIMEOUT", None)
        self.patch(os, "environ", environ)
        self.drivers = [
            (cls(module), keyword)
            for cls, module, keyword in [
                (Psycopg2Driver, psycopg2, "dsn"),
                (PsycopgDriver, psycopg, "conninfo"),
            ]
            if module is not None
        ]

    def test_keepalivesAndConnectTimeoutAreAdded(self) -> None:
        """
        TCP keepalives, a connect timeout and a TCP user timeout are added
        by default.
        """
        for driver, _ in self.drivers:
            self.assertEqual(driver.connect_defaults((), {"host": "db"}), self.expected)

    def test_userKeywordsAreNeverOverridden(self) -> None:
        """
        A parameter the user gave as a keyword is not added.
        """
        for driver, _ in self.drivers:
            defaults = driver.connect_defaults((), {"keepalives": 0, "connect_timeout": 3})
            self.assertNotIn("keepalives", defaults)
            self.assertNotIn("connect_timeout", defaults)
            self.assertEqual(defaults["keepalives_idle"], 30)

    def test_connectionStringParametersAreNeverOverridden(self) -> None:
        """
        A parameter given in the connection string (key=value or URI) is
        not added.
        """
        for driver, keyword in self.drivers:
            for dsn in [
                "host=db keepalives_idle=5 connect_timeout=2",
                "postgresql://u@db/app?keepalives_idle=5&connect_timeout=2",
            ]:
                defaults = driver.connect_defaults((), {keyword: dsn})
                self.assertNotIn("keepalives_idle", defaults, (keyword, dsn))
                self.assertNotIn("connect_timeout", defaults, (keyword, dsn))
                self.assertEqual(defaults["keepalives"], 1)

    def test_positionalConnectionStringIsRead(self) -> None:
        """
        A positional connection string counts as given, for psycopg 3 too.
        """
        for driver, _ in self.drivers:
            defaults = driver.connect_defaults(("host=db keepalives=0",), {})
            self.assertNotIn("keepalives", defaults)
            self.assertEqual(defaults["connect_timeout"], 10)

    def test_environmentConnectTimeoutIsNeverOverridden(self) -> None:
        """
        libpq's C{PGCONNECT_TIMEOUT} is the user's choice too.
        """
        os.environ["PGCONNECT_TIMEOUT"] = "4"
        for driver, _ in self.drivers:
            self.assertNotIn("connect_timeout", driver.connect_defaults((), {}))

    def test_unparsableConnectionStringGetsNothing(self) -> None:
        """
        Nothing is added to a connection string that cannot be parsed:
        C{connect()} will say what is wrong with it.
        """
        for driver, keyword in self.drivers:
            self.assertEqual(driver.connect_defaults((), {keyword: "garbage"}), {})


class PsycopgTests(SynchronousTestCase):
    """
    L{PsycopgDriver} (psycopg 3).
    """

    skip = _skipWithout(psycopg, "psycopg")

    def setUp(self) -> None:
        self.driver = PsycopgDriver(psycopg)

    def test_sessionEndingErrorsAreDisconnects(self) -> None:
        """
        The server's FATAL errors that end the session (which psycopg 3
        reports with their SQLSTATE) are disconnects.
        """
        for sqlstate in DISCONNECT_SQLSTATES:
            exc = psycopg.errors.lookup(sqlstate)("terminating connection")
            self.assertEqual(exc.sqlstate, sqlstate)
            self.assertTrue(self.driver.is_disconnect(exc, None), sqlstate)

    def test_brokenOrClosedConnectionIsADisconnect(self) -> None:
        """
        Any psycopg error on a C{broken} or C{closed} connection is a
        disconnect.
        """
        exc = psycopg.OperationalError("x")
        for connection in [
            _FakeConnection(closed=True, broken=True),
            _FakeConnection(closed=True, broken=False),
            _FakeConnection(closed=False, broken=True),
        ]:
            self.assertTrue(self.driver.is_disconnect(exc, connection))
        self.assertFalse(self.driver.is_disconnect(exc, _FakeConnection(closed=False)))

    def test_clientMessagesAreDisconnects(self) -> None:
        """
        Errors raised by psycopg or libpq without a SQLSTATE count by their
        message.
        """
        for message in LIBPQ_MESSAGES:
            exc = psycopg.OperationalError(message)
            self.assertIsNone(exc.sqlstate)
            self.assertTrue(self.driver.is_disconnect(exc, None), message)

    def test_otherSQLStatesAreNotDisconnects(self) -> None:
        """
        A server error with another SQLSTATE is not a disconnect, whatever
        its message.
        """
        open_ = _FakeConnection(closed=False, broken=False)
        for exc in [
            psycopg.errors.UniqueViolation(
                'duplicate key value violates unique constraint "t_pkey"\n'
                "DETAIL:  Key (x)=(server closed the connection unexpectedly) already exists."
            ),
            psycopg.errors.QueryCanceled("terminating connection"),
            psycopg.errors.SyntaxError("the connection is lost"),
        ]:
            self.assertFalse(self.driver.is_disconnect(exc, open_), exc)

    def test_userErrorIsNotADisconnect(self) -> None:
        """
        An exception from user code is not a disconnect.
        """
        self.assertFalse(self.driver.is_disconnect(ValueError("the connection is lost"), None))

    def test_pingRollsBackTheTransactionItOpened(self) -> None:
        """
        On an idle connection outside autocommit, C{ping} rolls back the
        transaction its C{SELECT 1} opened; in autocommit it does not.
        """
        idle = _FakeConnection(autocommit=False, transactionStatus=0)
        self.driver.ping(idle)
        self.assertEqual((idle.statements, idle.rollbacks), (["SELECT 1"], 1))
        autocommit = _FakeConnection(autocommit=True, transactionStatus=0)
        self.driver.ping(autocommit)
        self.assertEqual((autocommit.statements, autocommit.rollbacks), (["SELECT 1"], 0))


class MySQLDriverTestsMixin(_MixinBase):
    """
    Rules PyMySQL and mysqlclient share, for C{self.module} and
    C{self.driver}.
    """

    module: Any
    driver: Driver

    def test_disconnectCodesAreDisconnects(self) -> None:
        """
        An C{OperationalError} or C{InterfaceError} with one of the error
        numbers for a lost connection is a disconnect.
        """
        for code, message in MYSQL_DISCONNECT_CODES.items():
            for cls in (self.module.OperationalError, self.module.InterfaceError):
                self.assertTrue(self.driver.is_disconnect(cls(code, message), None), (cls, code))

    def test_commandsOutOfSyncAsProgrammingErrorIsADisconnect(self) -> None:
        """
        mysqlclient raises CR_COMMANDS_OUT_OF_SYNC (2014) as
        C{ProgrammingError}.
        """
        exc = self.module.ProgrammingError(2014, "Commands out of sync; you can't run this command now")
        self.assertTrue(self.driver.is_disconnect(exc, None))

    def test_otherCodesAreNotDisconnects(self) -> None:
        """
        Errors about the query, the data or a lock are not disconnects,
        even when they quote a fragment of a disconnect message.
        """
        for exc in [
            self.module.OperationalError(1317, "Query execution was interrupted"),
            self.module.OperationalError(1205, "Lock wait timeout exceeded; try restarting transaction"),
            self.module.OperationalError(1213, "Deadlock found when trying to get lock"),
            self.module.IntegrityError(1062, "Duplicate entry 'server has gone away' for key 'PRIMARY'"),
            self.module.IntegrityError(1062, "Duplicate entry 'Already closed' for key 'PRIMARY'"),
            self.module.ProgrammingError(1064, "You have an error in your SQL syntax near 'Lost connection'"),
            self.module.DataError(1406, "Data too long for column 'connection was killed'"),
            self.module.IntegrityError(2006, "signalled by a trigger"),
        ]:
            self.assertFalse(self.driver.is_disconnect(exc, None), exc)

    def test_galeraNodeNotReadyIsTheWrongServer(self) -> None:
        """
        Error 1047 (a Galera node outside the primary component refuses
        every statement) is the wrong server whether or not a writer is
        asked for; it is not a disconnect.
        """
        refused = self.module.OperationalError(1047, "WSREP has not yet prepared node for application use")
        self.assertTrue(self.driver.is_wrong_server(refused, False))
        self.assertTrue(self.driver.is_wrong_server(refused, True))
        self.assertFalse(self.driver.is_disconnect(refused, None))

    def test_galeraReplicationFailureAtCommitIsADisconnect(self) -> None:
        """
        Error 1180 from Galera (replicating COMMIT failed: the outcome is
        unknown, as after a lost connection) is a disconnect; a storage
        engine's 1180 is not.
        """
        for message in [
            "Error while appending streaming replication fragment(provider status: Operation not permitted)",
            "Error while appending streaming replication fragment",
        ]:
            self.assertTrue(self.driver.is_disconnect(self.module.OperationalError(1180, message), None), message)
        engine = self.module.OperationalError(1180, 'Got error 1 "Operation not permitted" during COMMIT')
        self.assertFalse(self.driver.is_disconnect(engine, None))

    def test_closedConnectionInterfaceErrorIsADisconnect(self) -> None:
        """
        C{InterfaceError(0, '')}, the error for using a closed connection,
        is a disconnect, as is its older single-string form.
        """
        self.assertTrue(self.driver.is_disconnect(self.module.InterfaceError(0, ""), None))
        self.assertTrue(self.driver.is_disconnect(self.module.InterfaceError("(0, '')"), None))

    def test_userErrorIsNotADisconnect(self) -> None:
        """
        An exception from user code is not a disconnect.
        """
        self.assertFalse(self.driver.is_disconnect(ValueError(2006, "MySQL server has gone away"), None))

    def test_isAutocommitAsksTheConnection(self) -> None:
        """
        C{is_autocommit} is C{get_autocommit()}, and L{True} when that
        cannot be read.
        """
        self.assertTrue(self.driver.is_autocommit(_FakeConnection(autocommit=True)))
        self.assertFalse(self.driver.is_autocommit(_FakeConnection(autocommit=False)))
        dead = _FakeConnection(failure=self.module.OperationalError(2006, ""))
        self.assertTrue(self.driver.is_autocommit(dead))

    def test_connectTimeoutIsAddedButNeverOverridden(self) -> None:
        """
        A 10 s connect timeout is added unless given; no read or write
        timeout is.
        """
        self.assertEqual(self.driver.connect_defaults((), {"host": "db"}), {"connect_timeout": 10})
        self.assertEqual(self.driver.connect_defaults((), {"connect_timeout": 2}), {})


class PyMySQLTests(MySQLDriverTestsMixin, SynchronousTestCase):
    """
    L{PyMySQLDriver}.
    """

    skip = _skipWithout(pymysql, "pymysql")

    def setUp(self) -> None:
        self.module = pymysql
        self.driver = PyMySQLDriver(pymysql)

    def test_pymysqlServerGoneAwayIsADisconnect(self) -> None:
        """
        The error PyMySQL raises when writing to a dead socket is a
        disconnect.
        """
        exc = pymysql.err.OperationalError(
            2006, "MySQL server has gone away (ConnectionResetError(104, 'Connection reset by peer'))"
        )
        self.assertTrue(self.driver.is_disconnect(exc, None))

    def test_alreadyClosedIsADisconnect(self) -> None:
        """
        C{Error('Already closed')}, raised by C{ping()} and C{close()} on a
        closed connection, is a disconnect; the same words in the server's
        text are not.
        """
        self.assertTrue(self.driver.is_disconnect(pymysql.err.Error("Already closed"), None))
        self.assertFalse(
            self.driver.is_disconnect(pymysql.err.InternalError(1105, "Already closed"), None)
        )

    def test_anyErrorOnAConnectionThatIsNotOpenIsADisconnect(self) -> None:
        """
        PyMySQL drops its socket on any I/O error: any of its errors on a
        connection that is not C{open} is a disconnect.
        """
        connection = pymysql.connections.Connection(defer_connect=True)
        self.assertFalse(connection.open)
        exc = pymysql.err.InternalError(1105, "whatever")
        self.assertTrue(self.driver.is_disconnect(exc, connection))
        self.assertFalse(self.driver.is_disconnect(exc, types.SimpleNamespace(open=True)))

    def test_pingNeverReconnects(self) -> None:
        """
        C{ping} asks PyMySQL not to reconnect.
        """
        connection = _FakeConnection()
        self.driver.ping(connection)
        self.assertEqual(connection.pings, [{"reconnect": False}])

    def test_pingOnAClosedConnectionRaisesADisconnect(self) -> None:
        """
        C{ping} on a real PyMySQL connection that is not connected raises
        an error that is a disconnect.
        """
        connection = pymysql.connections.Connection(defer_connect=True)
        exc = self.assertRaises(pymysql.err.Error, self.driver.ping, connection)
        self.assertTrue(self.driver.is_disconnect(exc, connection))
        self.assertTrue(self.driver.is_disconnect(exc, None))

    def test_closeTwiceDoesNotRaise(self) -> None:
        """
        PyMySQL raises C{Error('Already closed')} on a second C{close()};
        the driver's C{close} does not.
        """
        connection = pymysql.connections.Connection(defer_connect=True)
        self.driver.close(connection)
        self.assertRaises(pymysql.err.Error, connection.close)
        self.driver.close(connection)


class MySQLdbTests(MySQLDriverTestsMixin, SynchronousTestCase):
    """
    L{MySQLdbDriver} (mysqlclient).
    """

    skip = _skipWithout(MySQLdb, "MySQLdb")

    def setUp(self) -> None:
        self.module = MySQLdb
        self.driver = MySQLdbDriver(MySQLdb)

    def test_errorOnClosedHandleIsADisconnect(self) -> None:
        """
        mysqlclient reports any use of a closed handle as
        C{OperationalError(2006, '')}.
        """
        self.assertTrue(self.driver.is_disconnect(MySQLdb.OperationalError(2006, ""), None))

    def test_closedFlagIsADisconnect(self) -> None:
        """
        Any mysqlclient error on a connection whose C{closed} is set is a
        disconnect.
        """
        exc = MySQLdb.InternalError(1105, "whatever")
        self.assertTrue(self.driver.is_disconnect(exc, _FakeConnection(closed=1)))
        self.assertFalse(self.driver.is_disconnect(exc, _FakeConnection(closed=0)))

    def test_pingPassesNoReconnectArgument(self) -> None:
        """
        C{ping} calls C{ping()} with no argument, which mysqlclient 2.2
        takes as I{do not reconnect}.
        """
        connection = _FakeConnection()
        self.driver.ping(connection)
        self.assertEqual(connection.pings, [{}])

    def test_closeSwallowsErrors(self) -> None:
        """
        mysqlclient's C{close()} on a closed connection raises
        C{OperationalError(2006, '')}; the driver's C{close} does not.
        """
        self.driver.close(_FakeConnection(failure=MySQLdb.OperationalError(2006, "")))


class Sqlite3Tests(SynchronousTestCase):
    """
    L{Sqlite3Driver}.
    """

    def setUp(self) -> None:
        self.driver = Sqlite3Driver(sqlite3)

    def _closed(self) -> sqlite3.Connection:
        """
        @return: a closed in-memory connection.
        """
        connection = sqlite3.connect(":memory:")
        connection.close()
        return connection

    def test_closedDatabaseIsADisconnect(self) -> None:
        """
        The error for using a closed connection is a disconnect.
        """
        connection = self._closed()
        exc = self.assertRaises(sqlite3.ProgrammingError, connection.execute, "select 1")
        self.assertTrue(self.driver.is_disconnect(exc, connection))
        self.assertTrue(self.driver.is_disconnect(exc, None))

    def test_otherErrorsAreNotDisconnects(self) -> None:
        """
        Other sqlite3 errors, a closed cursor included, are not disconnects.
        """
        connection = sqlite3.connect(":memory:")
        self.addCleanup(connection.close)
        cursor = connection.cursor()
        cursor.close()
        closedCursor = self.assertRaises(sqlite3.ProgrammingError, cursor.execute, "select 1")
        syntax = self.assertRaises(sqlite3.OperationalError, connection.execute, "selec 1")
        for exc in [
            closedCursor,
            syntax,
            sqlite3.OperationalError("database is locked"),
            ValueError("Cannot operate on a closed database."),
        ]:
            self.assertFalse(self.driver.is_disconnect(exc, connection), exc)

    def test_pingOnOpenConnection(self) -> None:
        """
        C{ping} succeeds on an open connection.
        """
        connection = sqlite3.connect(":memory:")
        self.addCleanup(connection.close)
        self.driver.ping(connection)

    def test_pingOnClosedConnectionRaisesADisconnect(self) -> None:
        """
        C{ping} on a closed connection raises an error that is a disconnect.
        """
        connection = self._closed()
        exc = self.assertRaises(sqlite3.ProgrammingError, self.driver.ping, connection)
        self.assertTrue(self.driver.is_disconnect(exc, connection))

    def test_closeTwiceDoesNotRaise(self) -> None:
        """
        C{close} on a closed connection does not raise.
        """
        connection = sqlite3.connect(":memory:")
        self.driver.close(connection)
        self.driver.close(connection)

    def test_isAutocommitFollowsIsolationLevel(self) -> None:
        """
        In legacy transaction control, a connection is in autocommit mode
        when its C{isolation_level} is L{None}.
        """
        autocommit = sqlite3.connect(":memory:", isolation_level=None)
        self.addCleanup(autocommit.close)
        deferred = sqlite3.connect(":memory:")
        self.addCleanup(deferred.close)
        self.assertTrue(self.driver.is_autocommit(autocommit))
        self.assertFalse(self.driver.is_autocommit(deferred))

    def test_isAutocommitReadsTheAutocommitAttribute(self) -> None:
        """
        Python 3.12's C{autocommit} attribute decides when it is C{True} or
        C{False}; its legacy value defers to C{isolation_level}.
        """
        self.assertTrue(self.driver.is_autocommit(types.SimpleNamespace(autocommit=True, isolation_level="")))
        self.assertFalse(self.driver.is_autocommit(types.SimpleNamespace(autocommit=False, isolation_level=None)))
        self.assertTrue(self.driver.is_autocommit(types.SimpleNamespace(autocommit=-1, isolation_level=None)))
        self.assertFalse(self.driver.is_autocommit(types.SimpleNamespace(autocommit=-1, isolation_level="")))

    def test_isAutocommitOnClosedConnection(self) -> None:
        """
        A closed connection cannot say: C{is_autocommit} answers L{True}.
        """
        self.assertTrue(self.driver.is_autocommit(self._closed()))

    def test_noConnectDefaults(self) -> None:
        """
        sqlite3 has no socket: nothing is added to C{connect()}.
        """
        self.assertEqual(self.driver.connect_defaults((), {"database": ":memory:"}), {})


class StallTimeoutDefaultsTests(SynchronousTestCase):
    """
    The pool's stall bound does not become PyMySQL's socket timeouts: they
    put every read through poll() and cost up to a fifth of the throughput
    with 10 calls in flight (bench/results/overhead.md); the pool's
    watchdog bounds a stalled call instead.
    """

    skip = _skipWithout(pymysql, "pymysql")

    def test_pymysqlGetsOnlyAConnectTimeout(self) -> None:
        self.assertEqual(PyMySQLDriver(pymysql).connect_defaults((), {}, 60.0), {"connect_timeout": 10})

    def test_pymysqlUserConnectTimeoutWins(self) -> None:
        self.assertEqual(PyMySQLDriver(pymysql).connect_defaults((), {"connect_timeout": 3}, 60.0), {})


def _raise_in(module_name: str, error: BaseException) -> BaseException:
    """
    @return: C{error}, raised and caught in a frame whose module is
        C{module_name}, as a driver's own code would raise it.
    """
    namespace: Dict[str, Any] = {"__name__": module_name, "error": error}
    exec(compile("def boom():\n    raise error\n", module_name.replace(".", "/") + ".py", "exec"), namespace)
    try:
        namespace["boom"]()
    except BaseException as caught:
        return caught
    raise AssertionError("not raised")


class _FakePg8000Connection:
    """
    The attributes of a pg8000 connection the rules read.
    """

    def __init__(self, usock: Any = None, autocommit: bool = False) -> None:
        self._usock = usock
        self.autocommit = autocommit
        self.simple: List[str] = []

    def execute_simple(self, sql: str) -> None:
        self.simple.append(sql)


class Pg8000Tests(SynchronousTestCase):
    """
    L{Pg8000Driver}: pg8000's real exception classes, built as pg8000
    builds them (C{core.py}, C{legacy.py} of pg8000 1.31).
    """

    skip = _skipWithout(pg8000, "pg8000")

    def setUp(self) -> None:
        self.driver = driver_for(pg8000)
        self.open = _FakePg8000Connection(usock=types.SimpleNamespace(fileno=lambda: 7))

    def server_error(self, cls: Any, sqlstate: str, message: str) -> BaseException:
        return cast(BaseException, cls({"S": "ERROR", "V": "ERROR", "C": sqlstate, "M": message}))

    def test_networkErrorIsADisconnect(self) -> None:
        """
        pg8000's one word for a lost connection, and its words for a
        closed one or a failed connect, are disconnects.
        """
        for message in [
            "network error",
            "network error on read",
            "connection is closed",
            "communication error",
            "Can't create a connection to host 127.0.0.1 and port 1 (timeout is 10 and source_address is None).",
        ]:
            self.assertTrue(self.driver.is_disconnect(pg8000.InterfaceError(message), self.open), message)

    def test_sessionEndingSQLStatesAreDisconnectsAndOthersAreNot(self) -> None:
        """
        The SQLSTATE in the server's fields decides, never the text.
        """
        self.assertTrue(self.driver.is_disconnect(self.server_error(pg8000.ProgrammingError, "57P03", "x"), self.open))
        self.assertTrue(self.driver.is_disconnect(self.server_error(pg8000.DatabaseError, "08006", "x"), self.open))
        for cls, sqlstate in [(pg8000.IntegrityError, "23505"), (pg8000.ProgrammingError, "42P01")]:
            error = self.server_error(cls, sqlstate, 'relation "network error" does not exist')
            self.assertFalse(self.driver.is_disconnect(error, self.open), sqlstate)

    def test_closedConnectionIsADisconnect(self) -> None:
        """
        After C{close()}, C{_usock} is L{None}: any error is a disconnect.
        """
        closed = _FakePg8000Connection(usock=None)
        self.assertTrue(self.driver.is_disconnect(self.server_error(pg8000.ProgrammingError, "42601", "x"), closed))

    def test_bareOSErrorFromInsidePg8000IsADisconnect(self) -> None:
        """
        A reset or timeout that escapes pg8000's C{_read} as a bare
        L{OSError} is a disconnect; the same error from the user's own
        code is not.
        """
        for error in [ConnectionResetError(104, "Connection reset by peer"), TimeoutError("timed out")]:
            self.assertTrue(self.driver.is_disconnect(_raise_in("pg8000.core", error), self.open), error)
        mine = _raise_in("myapp.storage", FileNotFoundError(2, "No such file"))
        self.assertFalse(self.driver.is_disconnect(mine, self.open))

    def test_readOnlyRefusalIsTheWrongServer(self) -> None:
        """
        SQLSTATE 25006 is a write refused by a read-only server.
        """
        refused = self.server_error(pg8000.ProgrammingError, "25006", "cannot execute INSERT in a read-only transaction")
        self.assertTrue(self.driver.is_wrong_server(refused, False))
        self.assertFalse(self.driver.is_wrong_server(self.server_error(pg8000.ProgrammingError, "42601", "x"), False))

    def test_pingIsOneSimpleQuery(self) -> None:
        """
        The ping is one C{execute_simple("SELECT 1")}: no BEGIN.
        """
        self.driver.ping(self.open)
        self.assertEqual(self.open.simple, ["SELECT 1"])

    def test_socketIsUsock(self) -> None:
        """
        The watchdog's socket is C{_usock}; a closed connection has none.
        """
        self.assertEqual(self.driver.socket_fileno(self.open), 7)
        self.assertIsNone(self.driver.socket_fileno(_FakePg8000Connection(usock=None)))

    def test_rulesAreCompleteAndKeywordsArePg8000s(self) -> None:
        """
        pg8000 is known: no ping after each of its errors; its database
        keyword is C{database}, and no libpq parameter is added.
        """
        self.assertFalse(self.driver.suspect(pg8000.ProgrammingError("x")))
        self.assertEqual(Pg8000Driver.connect_kwargs(database="shop", host="db"), {"database": "shop", "host": "db"})
        self.assertEqual(self.driver.connect_defaults((), {"host": "db"}), {})

    def test_connectAddsATimeoutAndWrapsABareOSError(self) -> None:
        """
        C{connect} passes a 10 s C{timeout} unless given, and takes it off
        the socket once connected; a bare L{OSError} becomes pg8000's
        C{InterfaceError}.
        """
        calls: List[Dict[str, Any]] = []
        timeouts: List[Any] = []
        sock = types.SimpleNamespace(settimeout=timeouts.append)

        def opener(*args: Any, **kwargs: Any) -> Any:
            calls.append(kwargs)
            return _FakePg8000Connection(usock=sock)

        self.driver.connect((), {"user": "app"}, opener)
        self.driver.connect((), {"user": "app", "timeout": 3}, opener)
        self.assertEqual([c.get("timeout") for c in calls], [10.0, 3])
        self.assertEqual(timeouts, [None])

        def resets(*args: Any, **kwargs: Any) -> Any:
            raise ConnectionResetError(104, "Connection reset by peer")

        error = self.assertRaises(pg8000.InterfaceError, self.driver.connect, (), {"user": "app"}, resets)
        self.assertIsInstance(error.__cause__, ConnectionResetError)


class ConflictRuleTests(SynchronousTestCase):
    """
    C{is_conflict}: the errors after which the server rolled the
    transaction back because of a conflict, on each driver's real
    exception classes.
    """

    def test_postgresqlSerializationFailureAndDeadlock(self) -> None:
        """
        SQLSTATEs 40001 and 40P01 are conflicts, wherever each driver keeps
        the SQLSTATE; 23505 (a unique violation) is not.
        """
        checked = 0
        if psycopg2 is not None:
            driver = driver_for(psycopg2)
            for sqlstate, expected in [("40001", True), ("40P01", True), ("23505", False)]:
                error = _withPgcode(psycopg2.OperationalError("x"), sqlstate)
                self.assertEqual(driver.is_conflict(error), expected, sqlstate)
            checked += 1
        if psycopg is not None:
            driver = driver_for(psycopg)
            self.assertTrue(driver.is_conflict(psycopg.errors.DeadlockDetected("x")))
            self.assertFalse(driver.is_conflict(psycopg.errors.UniqueViolation("x")))
            checked += 1
        if pg8000 is not None:
            driver = driver_for(pg8000)
            self.assertTrue(driver.is_conflict(pg8000.DatabaseError({"C": "40001", "M": "could not serialize"})))
            self.assertFalse(driver.is_conflict(pg8000.InterfaceError("network error")))
            checked += 1
        if not required():
            return
        self.assertEqual(checked, 3)

    def test_mysqlDeadlockAndLockWaitTimeout(self) -> None:
        """
        Errors 1213 and 1205 are conflicts; 1062 (duplicate key) is not.
        """
        for module in (pymysql, MySQLdb):
            if module is None:
                continue
            driver = driver_for(module)
            self.assertTrue(driver.is_conflict(module.OperationalError(1213, "Deadlock found")))
            self.assertTrue(driver.is_conflict(module.OperationalError(1205, "Lock wait timeout exceeded")))
            self.assertFalse(driver.is_conflict(module.IntegrityError(1062, "Duplicate entry")))

    def test_genericAndSqliteKnowNoConflicts(self) -> None:
        """
        DB-API has no standard error code: unknown drivers and sqlite3
        never retry a conflict.
        """
        self.assertFalse(driver_for(sqlite3).is_conflict(sqlite3.OperationalError("database is locked")))
        self.assertFalse(Driver(_fakeDBAPI("fakedb_conflicts")).is_conflict(RuntimeError("deadlock")))
