"""
The throwaway servers produce real faults: each test proves one with a raw
driver connection (no pool).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, Dict, Optional, Type

from twisted.trial.unittest import SynchronousTestCase

from txreconnect.testing import (
    MariaDBServer,
    PostgresServer,
    ThrowawayServer,
    private_server,
    require_driver,
    shared_server,
)
from tests.support import close_quietly, wait_until


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


class MariaDBServerTests(_ServerFaultsMixin):
    server_class = MariaDBServer
    driver_name = "pymysql"
    other_driver_name = "MySQLdb"
    idle_setting = {"wait_timeout": 1}


del _ServerFaultsMixin
