"""
Drop-in compatibility: Twisted's own adbapi test suite
(C{twisted.test.test_adbapi.ADBAPITestBase}), run against
L{ReconnectingConnectionPool} on sqlite3 and on real PostgreSQL and
MariaDB servers.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

from twisted.test import test_adbapi
from twisted.trial import unittest

from txreconnect import ReconnectingConnectionPool
from txreconnect.testing import MariaDBServer, PostgresServer, require_driver, shared_server


class _OurPool:
    """
    Make Twisted's connector build our pool instead of adbapi's.
    """

    def makePool(self, **newkw: Any) -> ReconnectingConnectionPool:
        args, kw = self.getPoolArgs()  # type: ignore[attr-defined]
        kw = dict(kw, **newkw)
        return ReconnectingConnectionPool(*args, **kw)


class SQLite3AdbapiSuite(_OurPool, test_adbapi.SQLite3Connector, test_adbapi.ADBAPITestBase, unittest.TestCase):
    pass


class _ServerConnector(test_adbapi.DBTestConnector):
    driver = ""
    server_class: Any = None

    def can_connect(self) -> bool:
        require_driver(self.driver)
        self.server = shared_server(self, self.server_class)  # type: ignore[arg-type]
        return True

    def getPoolArgs(self) -> Tuple[Tuple[str], Dict[str, Any]]:
        kw = dict(self.server.connect_kwargs(self.driver), cp_min=1, cp_max=3)
        return (self.driver,), kw


class Psycopg2AdbapiSuite(_OurPool, _ServerConnector, test_adbapi.ADBAPITestBase, unittest.TestCase):
    TEST_PREFIX = "Psycopg2"
    driver = "psycopg2"
    server_class = PostgresServer


class PyMySQLAdbapiSuite(_OurPool, _ServerConnector, test_adbapi.ADBAPITestBase, unittest.TestCase):
    TEST_PREFIX = "PyMySQL"
    driver = "pymysql"
    server_class = MariaDBServer
    trailing_spaces_ok = False  # as Twisted's own MySQL connector says
