"""
The throwaway servers produce real faults: each test proves one with a raw
driver connection (no pool).  Their C{connect_kwargs} and C{url()} are
spelled by the driver registry, and a pool made from a URL queries them.
"""

from __future__ import annotations

import os
import socket
from typing import Any, ClassVar, Dict, List, Optional, Type

from twisted.internet import defer
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from txreconnect import ReconnectingConnectionPool
from txreconnect.drivers import driver_class, known_drivers
from txreconnect.testing import (
    MariaDBServer,
    PgBouncer,
    PostgresCluster,
    PostgresServer,
    StandbyServer,
    ThrowawayServer,
    fixtures,
    free_port,
    private_server,
    require_driver,
    shared_server,
    started,
)
from txreconnect.testing import _process
from txreconnect.url import parse_url
from tests.support import close_quietly, wait_until


def _drivers_of(family: str) -> List[str]:
    """
    @return: the names of the drivers txreconnect knows for C{family}.
    """
    return [cls.name for cls in known_drivers() if cls.family == family]


class ConnectKwargsTests(SynchronousTestCase):
    """
    C{connect_kwargs} asks the driver registry how each driver names the
    parts of a connection target; no server needs to run.
    """

    def test_eachDriverGetsItsOwnSpelling(self) -> None:
        """
        Every known driver of a server's family gets the server's host,
        port, user, password and database in its own keywords (libpq's
        C{dbname}, the MySQL drivers' C{database}), and a port to use
        instead (a proxy's).
        """
        for server in [PostgresServer(), MariaDBServer()]:
            server.port = 40000
            names = _drivers_of(server.family)
            self.assertGreaterEqual(len(names), 2, server.family)
            for name in names:
                expected = driver_class(name).connect_kwargs(
                    host="127.0.0.1",
                    port=40001,
                    user=server.user,
                    password=server.password,
                    database=server.database,
                )
                self.assertEqual(server.connect_kwargs(name, port=40001), expected, name)
                self.assertEqual(server.connect_kwargs(name)[driver_class(name).keywords["port"]], 40000)

    def test_aDriverOfAnotherFamilyIsRefusedNamingTheRightOnes(self) -> None:
        """
        A driver of another family, or one txreconnect does not know, is a
        C{ValueError} that names the drivers of the server's family.
        """
        cases = [
            (PostgresServer(), _drivers_of("mysql")[0]),
            (MariaDBServer(), _drivers_of("postgresql")[0]),
            (PgBouncer(PostgresServer()), "sqlite3"),
            (PostgresServer(), "no_such_driver"),
        ]
        for server, name in cases:
            e = self.assertRaises(ValueError, server.connect_kwargs, name)
            for right in _drivers_of(server.family):
                self.assertIn(repr(right)[1:-1], str(e))
            self.assertIn(repr(name), str(e))

    def test_eachServerClassNamesItsFamily(self) -> None:
        """
        Each server class says which family of drivers connects to it.
        """
        self.assertEqual(
            [PostgresServer.family, StandbyServer.family, PgBouncer.family, MariaDBServer.family],
            ["postgresql", "postgresql", "postgresql", "mysql"],
        )
        self.assertRaises(ValueError, ThrowawayServer().connect_kwargs, _drivers_of("postgresql")[0])

    def test_transactionPoolingAddsTheDriversKeywords(self) -> None:
        """
        Behind PgBouncer in transaction mode each driver gets its
        C{transaction_pooling_keywords}; in session mode it does not.
        """
        server = PostgresServer()
        for name in _drivers_of("postgresql"):
            extra = dict(driver_class(name).transaction_pooling_keywords)
            plain = server.connect_kwargs(name)
            bouncer = PgBouncer(server, pool_mode="transaction")
            plain[driver_class(name).keywords["port"]] = bouncer.port
            self.assertEqual(bouncer.connect_kwargs(name), {**plain, **extra}, name)
            self.assertEqual(PgBouncer(server, pool_mode="session").connect_kwargs(name), plain, name)
        self.assertTrue(any(driver_class(name).transaction_pooling_keywords for name in _drivers_of("postgresql")))

    def test_multiHostKwargsListEveryServer(self) -> None:
        """
        A cluster's multi-host keywords list the servers' ports in order,
        in the driver's spelling.
        """
        cluster = PostgresCluster()
        cluster.primary.port, cluster.standby.port = 40000, 40001
        name = _drivers_of("postgresql")[0]
        keywords = driver_class(name).keywords
        kwargs = cluster.multi_host_kwargs(name)
        self.assertEqual(
            (kwargs[keywords["host"]], kwargs[keywords["port"]], kwargs["target_session_attrs"]),
            ("127.0.0.1,127.0.0.1", "40000,40001", "read-write"),
        )
        self.assertEqual(kwargs[keywords["database"]], cluster.primary.database)
        self.assertRaises(ValueError, cluster.multi_host_kwargs, _drivers_of("mysql")[0])


class URLTests(SynchronousTestCase):
    """
    C{url()} gives a DATABASE_URL that L{parse_url} reads back into the
    same driver and keywords; no server needs to run.
    """

    def test_theDefaultSchemeIsTheFamily(self) -> None:
        """
        Without a driver the scheme is the family, and the password is
        percent-encoded.
        """
        server = PostgresServer(password="p@ss:/w?rd#%+ é")
        server.port = 40000
        self.assertEqual(
            server.url(),
            "postgresql://txreconnect:p%40ss%3A%2Fw%3Frd%23%25%2B%20%C3%A9@127.0.0.1:40000/txreconnect",
        )
        self.assertEqual(MariaDBServer().url(port=40001), "mysql://txreconnect:s3cret-pw%21@127.0.0.1:40001/txreconnect")

    def test_aDriverIsNamedInLowerCase(self) -> None:
        """
        With a driver the scheme is C{family+driver}, the driver's name in
        lower case.
        """
        self.assertTrue(MariaDBServer().url("MySQLdb").startswith("mysql+mysqldb://txreconnect:"))
        self.assertTrue(PostgresServer().url("psycopg").startswith("postgresql+psycopg://txreconnect:"))

    def test_urlsRoundTripThroughParseUrl(self) -> None:
        """
        L{parse_url} reads each URL back as C{connect_kwargs} of its
        driver (the family's default one for a bare scheme), the password
        and the database included.
        """
        for server in [PostgresServer(password="it's a \\ p@ss/%"), MariaDBServer(database="my db")]:
            server.port = 40000
            default = [cls.name for cls in known_drivers() if cls.family == server.family and cls.url_default]
            for name in [None, *_drivers_of(server.family)]:
                parsed = parse_url(server.url(name))
                self.assertEqual(parsed.dbapi_name, name or default[0])
                self.assertEqual(parsed.connect_kwargs, server.connect_kwargs(parsed.dbapi_name), name)

    def test_aDriverOfAnotherFamilyIsRefused(self) -> None:
        """
        As for C{connect_kwargs}, a driver of another family or an unknown
        one is a C{ValueError}; so is any URL of a server of no family.
        """
        self.assertRaises(ValueError, PostgresServer().url, _drivers_of("mysql")[0])
        self.assertRaises(ValueError, MariaDBServer().url, "no_such_driver")
        self.assertRaises(ValueError, ThrowawayServer().url)


class FromURLTests(TestCase):
    """
    A pool made from a server's C{url()} queries it.
    """

    @defer.inlineCallbacks
    def test_aPoolFromTheURLQueriesTheServer(self) -> Any:
        """
        C{ReconnectingConnectionPool.from_url(server.url(driver))} works
        for every driver of both servers, and for the bare scheme.
        """
        for server_class in [PostgresServer, MariaDBServer]:
            server = shared_server(self, server_class)
            for name in [None, *_drivers_of(server.family)]:
                url = server.url(name)
                require_driver(parse_url(url).dbapi_name)
                pool = ReconnectingConnectionPool.from_url(url, cp_min=1, cp_max=1)
                pool.start()
                try:
                    rows = yield pool.runQuery("SELECT 1")
                finally:
                    pool.close()
                self.assertEqual([tuple(row) for row in rows], [(1,)], name)


class FreePortTests(SynchronousTestCase):
    """
    L{free_port} names a port that a server can bind, and that no outgoing
    connection can take before it does.
    """

    def test_thePortIsOutsideTheEphemeralRange(self) -> None:
        """
        The kernel gives outgoing connections their local port from its
        ephemeral range (Linux names it in C{_EPHEMERAL_RANGE}; a port it
        picks for a C{bind} to port 0 is one of them); the ports
        L{free_port} names are all outside it, and free.
        """
        self.assertEqual(_process._EPHEMERAL_RANGE, "/proc/sys/net/ipv4/ip_local_port_range")
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("20000\t60999\n")
        self.patch(_process, "_EPHEMERAL_RANGE", path)
        ephemeral = range(20000, 61000)
        for _ in range(200):
            port = free_port()
            self.assertNotIn(port, ephemeral)
            self.assertGreaterEqual(port, 10000)
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))

    def test_aPortSomethingIsBoundToIsNotNamed(self) -> None:
        """
        A port that a socket holds, even one that does not listen (an
        outgoing connection's), is not named, even when it is the only
        one outside the ephemeral range: the kernel picks instead.
        """
        held = socket.socket()
        self.addCleanup(held.close)
        held.bind(("127.0.0.1", 0))
        taken = held.getsockname()[1]
        self.patch(_process, "_outside_ephemeral_range", lambda: [range(taken, taken + 1)])
        self.patch(_process, "_ENOUGH_PORTS", 1)
        self.assertNotIn(taken, {free_port() for _ in range(5)})

    def test_withoutAKnownEphemeralRangeTheKernelPicks(self) -> None:
        """
        Where the ephemeral range is unknown (not Linux) or leaves too few
        ports outside it, the kernel picks a free port.
        """
        self.patch(_process, "_EPHEMERAL_RANGE", os.path.join(self.mktemp(), "missing"))
        port = free_port()
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


class RequireDriverTests(SynchronousTestCase):
    """
    L{require_driver} says what to install for a missing driver.
    """

    def setUp(self) -> None:
        def missing(name: str) -> Any:
            raise ImportError("No module named %r" % (name,))

        self.patch(fixtures.importlib, "import_module", missing)
        self.patch(fixtures, "required", lambda: False)

    def test_aMissingDriverNamesItsInstallHint(self) -> None:
        """
        The hint comes from the driver's L{Driver} class (the standard
        library's sqlite3 has none: the message names the module).
        """
        for cls in known_drivers():
            e = self.assertRaises(SkipTest, require_driver, cls.name)
            self.assertIn("install %s" % (cls.install_hint or cls.name,), str(e))
        self.assertTrue(all(cls.install_hint for cls in known_drivers() if cls.family != "sqlite"))

    def test_twistarIsNoDriverButHasAHint(self) -> None:
        """
        twistar, which is no DB-API driver, has a hint of its own.
        """
        e = self.assertRaises(SkipTest, require_driver, "twistar")
        self.assertIn("txreconnect[twistar]", str(e))


class _ServerFaultsMixin(SynchronousTestCase):
    """
    Tests common to both servers; subclasses name the server and drivers.
    """

    server_class: ClassVar[Type[ThrowawayServer]]
    driver_name: ClassVar[str]
    other_driver_name: ClassVar[str]
    idle_setting: ClassVar[Dict[str, Any]]

    def setUp(self) -> None:
        self.driver = require_driver(self.driver_name)
        self.server = shared_server(self, self.server_class)

    def connect(self, server: Optional[ThrowawayServer] = None, driver: Any = None) -> Any:
        server = server or self.server
        driver = driver or self.driver
        conn = driver.connect(**server.connect_kwargs(driver.__name__))
        self.addCleanup(close_quietly, conn)
        return conn

    def query(self, conn: Any) -> Any:
        cursor = conn.cursor()
        cursor.execute("SELECT 1")
        value = cursor.fetchall()[0][0]
        conn.commit()  # as adbapi does: the session is idle, not in a transaction
        return value

    def assertDisconnected(self, conn: Any) -> None:
        self.assertRaises(
            (self.driver.OperationalError, self.driver.InterfaceError), self.query, conn
        )

    def test_serverAnswersWithPasswordAuthentication(self) -> None:
        """
        The server runs on its own port, not a default one, and the test
        user logs in with its password.
        """
        self.assertNotIn(self.server.port, (5432, 3306))
        self.assertEqual(self.query(self.connect()), 1)
        self.assertTrue(self.server.version)

    def test_wrongPasswordIsRefused(self) -> None:
        """
        Over TCP the password is really checked.
        """
        kwargs = self.server.connect_kwargs(self.driver_name)
        kwargs["password"] = "wrong"
        self.assertRaises(self.driver.OperationalError, self.driver.connect, **kwargs)

    def test_otherDriverConnects(self) -> None:
        """
        C{connect_kwargs} also suits the server's other driver.
        """
        other = require_driver(self.other_driver_name)
        self.assertEqual(self.query(self.connect(driver=other)), 1)

    def test_restartBreaksAnOpenConnection(self) -> None:
        """
        After C{restart()} a connection opened before fails with the
        driver's disconnect error, and a new one works.
        """
        conn = self.connect()
        self.query(conn)
        self.server.restart()
        self.assertDisconnected(conn)
        self.assertEqual(self.query(self.connect()), 1)

    def test_terminateSessionsBreaksEveryClientConnection(self) -> None:
        """
        C{terminate_sessions()} ends every client session.
        """
        wait_until(lambda: self.server.client_connections() == 0, what="no clients")
        conns = [self.connect() for _ in range(3)]
        for conn in conns:
            self.query(conn)
        self.assertEqual(self.server.terminate_sessions(), 3)
        for conn in conns:
            self.assertDisconnected(conn)

    def test_killThenStartRecovers(self) -> None:
        """
        C{kill()} kills the server as a crash would; C{start()} brings it
        back on the same port.
        """
        conn = self.connect()
        self.query(conn)
        port = self.server.port
        self.server.kill()
        self.assertFalse(self.server.running)
        self.assertDisconnected(conn)
        self.server.start()
        self.assertEqual(self.server.port, port)
        self.assertEqual(self.query(self.connect()), 1)

    def test_launchStartsAStoppedServerWithoutWaitingForIt(self) -> None:
        """
        C{launch()} starts a stopped server's process and returns before
        checking that it answers, so that clients can meet it as it comes
        up; C{wait_started()} waits until it does.  Neither is for a
        server that never ran (C{start()} sets it up) or one that runs.
        """
        self.server.stop()
        self.server.launch()
        self.assertTrue(self.server.running)
        self.assertRaises(RuntimeError, self.server.launch)
        self.server.wait_started()
        self.assertEqual(self.query(self.connect()), 1)
        never = self.server_class()
        self.addCleanup(never.destroy)
        error = self.assertRaises(RuntimeError, never.launch)
        self.assertIn("start()", str(error))

    def test_clientConnectionsCountsOpenConnections(self) -> None:
        """
        C{client_connections()} counts the clients, not the controller.
        """
        wait_until(lambda: self.server.client_connections() == 0, what="no clients")
        conns = [self.connect() for _ in range(4)]
        self.assertEqual(self.server.client_connections(), 4)
        for conn in conns:
            conn.close()
        wait_until(lambda: self.server.client_connections() == 0, what="clients gone")

    def test_idleTimeoutKillsAnIdleConnection(self) -> None:
        """
        A server started with a short idle timeout ends an idle session.
        """
        server = private_server(self, self.server_class, **self.idle_setting)
        conn = self.connect(server)
        self.query(conn)
        wait_until(lambda: server.client_connections() == 0, what="idle session ended")
        self.assertDisconnected(conn)

    def test_oddNamesAndPasswordsAreQuoted(self) -> None:
        """
        A database, user and password with quotes, backquotes, a backslash
        and spaces are made as given, and the user logs in with them.
        """
        server = started(
            self,
            self.server_class(database='my "odd" `db`', user="o'brien \\ \"x\"", password="it's a \\ `pw`"),
        )
        self.assertEqual(self.query(self.connect(server)), 1)
        conn = self.driver.connect(**parse_url(server.url(self.driver_name)).connect_kwargs)
        self.addCleanup(close_quietly, conn)
        self.assertEqual(self.query(conn), 1)

    def test_withBlockStartsTheServerAndDestroysItEvenOnError(self) -> None:
        """
        C{with server_class() as server:} starts the server; leaving the
        block destroys it (process and directory), even when the block
        raised, and the exception goes on.
        """

        class Boom(Exception):
            pass

        seen: List[Any] = []
        with self.assertRaises(Boom):
            with self.server_class() as server:
                self.addCleanup(server.destroy)  # should the test fail
                seen += [server.running, server.directory, server._process]
                self.assertEqual(self.query(self.connect(server)), 1)
                raise Boom()
        running, directory, process = seen
        self.assertTrue(running)
        self.assertFalse(os.path.exists(directory))
        self.assertIsNot(process.poll(), None)
        self.assertFalse(server.running)

    def test_aURLReachesTheServer(self) -> None:
        """
        The keywords L{parse_url} reads from C{url(driver)} connect to the
        server, the password percent-encoded.
        """
        for driver in [self.driver, require_driver(self.other_driver_name)]:
            kwargs = parse_url(self.server.url(driver.__name__)).connect_kwargs
            conn = driver.connect(**kwargs)
            self.addCleanup(close_quietly, conn)
            self.assertEqual(self.query(conn), 1)

    def test_destroyLeavesNoProcessOrDirectory(self) -> None:
        """
        C{destroy()} kills the process and removes the directory.
        """
        server = private_server(self, self.server_class)
        directory = server.directory
        process = server._process
        assert process is not None
        server.destroy()
        self.assertFalse(os.path.exists(directory))
        self.assertIsNot(process.poll(), None)
        self.assertRaises(ProcessLookupError, os.killpg, process.pid, 0)


class PostgresServerTests(_ServerFaultsMixin):
    server_class = PostgresServer
    driver_name = "psycopg2"
    other_driver_name = "psycopg"
    idle_setting = {"idle_session_timeout": "1s"}

    def test_withBlockDestroysAServerThatCannotStart(self) -> None:
        """
        A server that cannot start (here: an unknown setting) is destroyed
        by entering the C{with} block, which raises and never runs.
        """
        server = PostgresServer(settings={"no_such_setting": "1"})
        self.addCleanup(server.destroy)
        e = self.assertRaises(RuntimeError, server.__enter__)
        self.assertIn("no_such_setting", str(e))
        self.assertIs(server._directory, None)
        self.assertFalse(server.running)

    def test_nothingWaitsForTheDisk(self) -> None:
        """
        A throwaway server is fast rather than durable: it never syncs to
        the disk, and writes no full pages to guard against a torn write.
        """
        cursor = self.connect().cursor()
        settings = {}
        for name in ("fsync", "full_page_writes"):
            cursor.execute("SHOW " + name)
            settings[name] = cursor.fetchall()[0][0]
        self.assertEqual(settings, {"fsync": "off", "full_page_writes": "off"})


class MariaDBServerTests(_ServerFaultsMixin):
    server_class = MariaDBServer
    driver_name = "pymysql"
    other_driver_name = "MySQLdb"
    idle_setting = {"wait_timeout": 1}

    def test_nothingWaitsForTheDisk(self) -> None:
        """
        A throwaway server is fast rather than durable: InnoDB never syncs
        to the disk, writes its log through the kernel's cache, keeps no
        doublewrite buffer, and a COMMIT does not wait for the log.  (Its
        default, writes past the kernel's cache that are then synced,
        stalled the first sessions after a restart by 10 to 70 ms.)
        """
        cursor = self.connect().cursor()
        cursor.execute(
            "SELECT @@innodb_flush_method, @@innodb_log_file_buffering,"
            " @@innodb_doublewrite, @@innodb_flush_log_at_trx_commit"
        )
        self.assertEqual(tuple(cursor.fetchall()[0]), ("nosync", 1, 0, 0))


del _ServerFaultsMixin
