"""
Unit tests of the drivers' host selection and of how they classify a write
refused by a read-only server (the real servers are in test_failover).
"""

from __future__ import annotations

import types
from typing import Any, Dict, List

from twisted.trial.unittest import SynchronousTestCase

from txreconnect import ConfigurationError
from txreconnect.drivers import Driver, driver_for
from txreconnect.drivers._mysql_protocol import MySQLProtocolDriver

from tests.test_drivers import _fakeDBAPI, _skipWithout, _withPgcode, psycopg, psycopg2, pymysql


class _Server:
    """
    What a fake MySQL server at one address does: refuse connections, or
    accept them, read-only or not.
    """

    def __init__(self, up: bool = True, read_only: bool = False, wsrep_ready: Any = None) -> None:
        self.up = up
        self.read_only = read_only
        #: a Galera node's wsrep_ready (None: not a Galera node)
        self.wsrep_ready = wsrep_ready


class _FakeMySQLConnection:
    def __init__(self, server: _Server) -> None:
        self.server = server
        self.closed = False
        self.rollbacks = 0
        self.executed: List[str] = []

    def cursor(self) -> "_FakeMySQLConnection":
        return self

    def execute(self, sql: str) -> None:
        self.executed.append(sql)

    def fetchone(self) -> Any:
        ready = self.server.wsrep_ready
        if self.executed[-1].startswith("SHOW GLOBAL VARIABLES LIKE 'wsrep_on'"):
            # MariaDB's packages know the variable, off outside a cluster.
            return ("wsrep_on", "OFF" if ready is None else "ON")
        if self.executed[-1].startswith("SHOW GLOBAL STATUS LIKE 'wsrep_ready'"):
            return ("wsrep_ready", "OFF" if ready is None else ready)
        return (1 if self.server.read_only else 0, 0)

    def rollback(self) -> None:
        self.rollbacks += 1

    def close(self) -> None:
        self.closed = True


def _fakeMySQL(servers: Dict[Any, _Server]) -> types.ModuleType:
    """
    A DB-API module whose C{connect(host=, port=)} reaches C{servers}, by
    C{(host, port)}; every call is recorded in C{module.calls}.
    """
    module = _fakeDBAPI("fakemysql")
    calls: List[Dict[str, Any]] = []
    opened: List[_FakeMySQLConnection] = []

    def connect(*args: Any, **kwargs: Any) -> _FakeMySQLConnection:
        calls.append(kwargs)
        server = servers.get((kwargs.get("host"), kwargs.get("port")))
        if server is None or not server.up:
            raise module.OperationalError(2003, "Can't connect to MySQL server on %r" % (kwargs.get("host"),))
        conn = _FakeMySQLConnection(server)
        opened.append(conn)
        return conn

    module.connect = connect  # type: ignore[attr-defined]
    module.calls = calls  # type: ignore[attr-defined]
    module.opened = opened  # type: ignore[attr-defined]
    return module


class MySQLHostSelectionTests(SynchronousTestCase):
    """
    L{MySQLProtocolDriver.connect}: the pool's host list for drivers that
    take one host.
    """

    def driver(self, servers: Dict[Any, _Server]) -> MySQLProtocolDriver:
        return MySQLProtocolDriver(_fakeMySQL(servers))

    def test_singleHostIsPassedOnAsGiven(self) -> None:
        """
        One host and port reach C{connect()} unchanged, with no
        read-only check and no other round trip (not even a rollback):
        the new connection's first statement is the caller's.
        """
        driver = self.driver({("db", 3307): _Server(read_only=True)})
        conn = driver.connect((), {"host": "db", "port": 3307, "user": "app"})
        self.assertEqual(driver.module.calls, [{"host": "db", "port": 3307, "user": "app"}])
        self.assertEqual((conn.executed, conn.rollbacks), ([], 0))

    def test_hostsAreTriedInOrderUntilOneAnswers(self) -> None:
        """
        A comma-separated host list is tried in order; a server that
        refuses the connection is skipped.
        """
        driver = self.driver({("b", 3307): _Server()})
        conn = driver.connect((), {"host": "a,b", "port": "3306,3307", "user": "app"})
        self.assertEqual(conn.server, driver.module.opened[0].server)
        self.assertEqual(
            [(c["host"], c["port"]) for c in driver.module.calls], [("a", 3306), ("b", 3307)]
        )
        self.assertEqual(driver.module.calls[1]["user"], "app")

    def test_everyHostIsOpenedThroughTheGivenConnectFunction(self) -> None:
        """
        Given the pool's C{dbapi.connect}, every host is opened through it
        rather than through the module's own C{connect()}.
        """
        driver = self.driver({("b", 3307): _Server()})
        through: List[Any] = []

        def dbapi_connect(*args: Any, **kwargs: Any) -> Any:
            through.append(kwargs["host"])
            return driver.module.connect(*args, **kwargs)

        driver.connect((), {"host": "a,b", "port": "3306,3307"}, dbapi_connect)
        self.assertEqual(through, ["a", "b"])

    def test_listsAndOnePortForAllHostsAreAccepted(self) -> None:
        """
        C{host} may be a list, and one port serves every host.
        """
        driver = self.driver({("b", 3310): _Server()})
        driver.connect((), {"host": ["a", "b"], "port": 3310})
        self.assertEqual([(c["host"], c["port"]) for c in driver.module.calls], [("a", 3310), ("b", 3310)])

    def test_emptyPortEntryMeansTheDefaultPort(self) -> None:
        """
        An empty entry in the port list (a URL's host written without a
        port) passes no C{port}, so the driver uses its default.
        """
        driver = self.driver({("a", None): _Server()})
        driver.connect((), {"host": "a,b", "port": ",3307"})
        self.assertEqual(driver.module.calls, [{"host": "a"}])

    def test_readWriteTargetSkipsAReadOnlyServerAndClosesIt(self) -> None:
        """
        With C{target_session_attrs="read-write"}, a server whose
        C{@@read_only} or C{@@innodb_read_only} is on is skipped, and the
        connection to it closed; the keyword never reaches the driver.
        """
        ro, rw = _Server(read_only=True), _Server()
        driver = self.driver({("a", 3306): ro, ("b", 3306): rw})
        conn = driver.connect((), {"host": "a,b", "port": 3306, "target_session_attrs": "read-write"})
        self.assertIs(conn.server, rw)
        first = driver.module.opened[0]
        self.assertTrue(first.closed)
        self.assertTrue(any("@@global.read_only" in sql for sql in first.executed), first.executed)
        self.assertTrue(all("target_session_attrs" not in c for c in driver.module.calls))

    def test_aGaleraNodeThatIsNotReadyIsSkipped(self) -> None:
        """
        With a host list, a Galera node whose C{wsrep_ready} is not C{ON}
        (outside the primary component, or joining) is skipped and its
        connection closed, whether or not a writer is asked for; a server
        without Galera (no such status variable) and a ready node are
        taken.  C{wsrep_ready} may come back as bytes.
        """
        for target in ({}, {"target_session_attrs": "read-write"}):
            isolated, ready = _Server(wsrep_ready="OFF"), _Server(wsrep_ready=b"ON")
            driver = self.driver({("a", 3306): isolated, ("b", 3306): ready, ("c", 3306): _Server()})
            conn = driver.connect((), dict(host="a,b,c", port=3306, **target))
            self.assertIs(conn.server, ready, target)
            self.assertTrue(driver.module.opened[0].closed)
            plain = self.driver({("c", 3306): _Server()}).connect((), dict(host="a,c", port=3306, **target))
            self.assertIsNone(plain.server.wsrep_ready)

    def test_aSingleGaleraNodeIsNotAskedWhetherItIsReady(self) -> None:
        """
        With one host there is no other to choose: it is not asked (its
        own error 1047 tells, statement by statement).
        """
        driver = self.driver({("a", 3306): _Server(wsrep_ready="OFF")})
        conn = driver.connect((), {"host": "a", "port": 3306})
        self.assertEqual(conn.executed, [])

    def test_noUsableServerRaisesAnErrorNamingEachOne(self) -> None:
        """
        When no server will do, the driver's C{OperationalError} (2003,
        a disconnect code) says why each one was skipped.
        """
        driver = self.driver({("a", 3306): _Server(read_only=True)})
        with self.assertRaises(driver.module.OperationalError) as caught:
            driver.connect((), {"host": "a,b", "port": 3306, "target_session_attrs": "read-write"})
        code, message = caught.exception.args
        self.assertEqual(code, 2003)
        self.assertIn("no writable server", message)
        self.assertIn("a:3306: read-only", message)
        self.assertIn("b:3306: Can't connect", message)
        self.assertTrue(driver.is_disconnect(caught.exception, None))

    def test_singleHostReadOnlyWithReadWriteTargetIsRefused(self) -> None:
        """
        A single read-only host is refused when a writer is asked for.
        """
        driver = self.driver({("a", 3306): _Server(read_only=True)})
        self.assertRaises(
            driver.module.OperationalError,
            driver.connect,
            (),
            {"host": "a", "port": 3306, "target_session_attrs": "read-write"},
        )

    def test_malformedHostListsAreConfigurationErrors(self) -> None:
        """
        An unknown target, a port that is not a number, an empty host or
        a port list that does not match the hosts name the problem.
        """
        driver = self.driver({})
        for kwargs, fragment in [
            ({"host": "a", "target_session_attrs": "standby"}, "target_session_attrs='standby'"),
            ({"host": "a,b", "port": "3306,x"}, "'x' is not a number"),
            ({"host": "a,,b"}, "host list"),
            ({"host": "a,b,c", "port": "1,2"}, "3 hosts, 2 ports"),
        ]:
            with self.assertRaises(ConfigurationError) as caught:
                driver.connect((), dict(kwargs))
            self.assertIn(fragment, str(caught.exception))

    def test_wantsWriterReadsTargetSessionAttrs(self) -> None:
        driver = self.driver({})
        self.assertTrue(driver.wants_writer((), {"target_session_attrs": "read-write"}))
        self.assertFalse(driver.wants_writer((), {"target_session_attrs": "any"}))
        self.assertFalse(driver.wants_writer((), {}))


class GenericWrongServerTests(SynchronousTestCase):
    """
    A driver txreconnect does not know never reports a wrong server.
    """

    def test_unknownDriverNeverReportsAWrongServer(self) -> None:
        module = _fakeDBAPI("unknowndb")
        driver = Driver(module)
        self.assertFalse(driver.is_wrong_server(module.OperationalError("read-only"), True))
        self.assertFalse(driver.wants_writer((), {"target_session_attrs": "read-write"}))


class Psycopg2WrongServerTests(SynchronousTestCase):
    """
    psycopg2: SQLSTATE 25006 is the wrong server.
    """

    skip = _skipWithout(psycopg2, "psycopg2")

    def setUp(self) -> None:
        self.driver = driver_for(psycopg2)

    def test_readOnlySQLTransactionIsTheWrongServer(self) -> None:
        """
        SQLSTATE 25006 counts whether or not a writer was asked for, and
        is not a disconnect.
        """
        exc = _withPgcode(
            psycopg2.errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction"), "25006"
        )
        self.assertTrue(self.driver.is_wrong_server(exc, False))
        self.assertTrue(self.driver.is_wrong_server(exc, True))
        self.assertFalse(self.driver.is_disconnect(exc, None))

    def test_otherErrorsAreNotTheWrongServer(self) -> None:
        for exc in [
            _withPgcode(psycopg2.errors.UniqueViolation("read-only"), "23505"),
            psycopg2.OperationalError("server is read-only"),
            ValueError("25006"),
        ]:
            self.assertFalse(self.driver.is_wrong_server(exc, True), exc)

    def test_wantsWriterReadsKeywordsAndConnectionString(self) -> None:
        """
        C{target_session_attrs} asks for a writer as a keyword or in the
        connection string, with C{read-write} or C{primary}.
        """
        self.assertTrue(self.driver.wants_writer((), {"target_session_attrs": "read-write"}))
        self.assertTrue(self.driver.wants_writer((), {"target_session_attrs": "primary"}))
        self.assertFalse(self.driver.wants_writer((), {"target_session_attrs": "any"}))
        self.assertTrue(self.driver.wants_writer(("host=a,b target_session_attrs=read-write",), {}))
        self.assertTrue(self.driver.wants_writer((), {"dsn": "postgresql://a,b/db?target_session_attrs=primary"}))
        self.assertFalse(self.driver.wants_writer(("host=a",), {}))


class PsycopgWrongServerTests(SynchronousTestCase):
    """
    psycopg 3: SQLSTATE 25006 is the wrong server.
    """

    skip = _skipWithout(psycopg, "psycopg")

    def test_readOnlySQLTransactionIsTheWrongServer(self) -> None:
        driver = driver_for(psycopg)
        exc = psycopg.errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction")
        self.assertTrue(driver.is_wrong_server(exc, False))
        self.assertFalse(driver.is_wrong_server(psycopg.errors.UniqueViolation("x"), False))
        self.assertTrue(driver.wants_writer((), {"conninfo": "host=a,b target_session_attrs=read-write"}))


class PyMySQLWrongServerTests(SynchronousTestCase):
    """
    PyMySQL: errors 1290 (read-only) and 1836 are the wrong server when a
    writer was asked for.
    """

    skip = _skipWithout(pymysql, "pymysql")

    def setUp(self) -> None:
        self.driver = driver_for(pymysql)

    def test_readOnlyRefusalsAreTheWrongServerWhenAWriterIsWanted(self) -> None:
        refusals = [
            pymysql.err.OperationalError(
                1290, "The MariaDB server is running with the --read-only option so it cannot execute this statement"
            ),
            pymysql.err.InternalError(1836, "Running in read-only mode"),
        ]
        for exc in refusals:
            self.assertTrue(self.driver.is_wrong_server(exc, True), exc)
            self.assertFalse(self.driver.is_wrong_server(exc, False), exc)
            self.assertFalse(self.driver.is_disconnect(exc, None), exc)

    def test_otherOptionsPreventingAStatementAreNotTheWrongServer(self) -> None:
        exc = pymysql.err.OperationalError(
            1290, "The MariaDB server is running with the --secure-file-priv option so it cannot execute this statement"
        )
        self.assertFalse(self.driver.is_wrong_server(exc, True))
        self.assertFalse(self.driver.is_wrong_server(ValueError(1836, "read-only"), True))
