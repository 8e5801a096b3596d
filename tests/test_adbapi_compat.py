"""
Drop-in compatibility: Twisted's own adbapi tests, run against
L{ReconnectingConnectionPool}.

  - The whole of C{twisted/test/test_adbapi.py}, as installed, with one
    import line changed: its C{ConnectionPool} is ours.  Its PostgreSQL
    (psycopg) and MySQL (MySQLdb) connectors are pointed at our throwaway
    servers instead of a database on the machine's own service.  Its
    connectors for drivers that cannot be installed on a current Python
    (pysqlite2, pyPgSQL, Firebird's kinterbasdb) are left out rather than
    skipped.  The one documented difference: where Twisted's
    C{MySQLReconnectTests} expects a call on a connection closed behind
    the pool's back to fail, ours reconnects and succeeds.
  - C{ADBAPITestBase} on the drivers Twisted's module does not cover:
    psycopg2, pg8000 and PyMySQL.
"""

from __future__ import annotations

import sys
import types
from typing import Any, Dict, Tuple, Type

from twisted.test import test_adbapi
from twisted.trial import unittest

from txreconnect import ReconnectingConnectionPool
from txreconnect.drivers import driver_class
from txreconnect.testing import MariaDBServer, PostgresServer, ThrowawayServer, require_driver, shared_server

#: the line of Twisted's module that imports adbapi's classes, and ours
#: that follows it
_ADBAPI_IMPORT = "from twisted.enterprise.adbapi import ("
_OURS = "from txreconnect import ReconnectingConnectionPool as ConnectionPool\n"

#: Twisted's connectors whose drivers cannot be installed here
_UNINSTALLABLE = ("PySQLite2", "pysqlite2", "PyPgSQL", "Firebird")

#: the throwaway server for each database family
_SERVERS: Dict[str, Type[ThrowawayServer]] = {"postgresql": PostgresServer, "mysql": MariaDBServer}


def _swapped() -> types.ModuleType:
    """
    Load C{twisted.test.test_adbapi} anew, as a module of our own, with
    L{ReconnectingConnectionPool} bound to its name C{ConnectionPool}
    right after it imports adbapi's.

    @raise RuntimeError: Twisted's module no longer imports
        C{ConnectionPool} the way this expects.
    """
    path = test_adbapi.__file__
    with open(path, encoding="utf-8") as f:
        source = f.read()
    start = source.find(_ADBAPI_IMPORT)
    end = source.find(")\n", start)
    if start < 0 or end < 0 or "ConnectionPool" not in source[start:end]:
        raise RuntimeError("%s no longer imports ConnectionPool from adbapi as expected" % (path,))
    end += len(")\n")
    module = types.ModuleType(__name__ + "_swapped")
    module.__file__ = path
    sys.modules[module.__name__] = module
    exec(compile(source[:end] + _OURS + source[end:], path, "exec"), module.__dict__)
    if module.ConnectionPool is not ReconnectingConnectionPool:
        raise RuntimeError("the swap did not take in %s" % (path,))
    return module


_twisted = _swapped()


class _OnOurServer:
    """
    Point one of Twisted's server connectors at our throwaway server for
    its driver, keeping its C{cp_*} settings.
    """

    server: ThrowawayServer

    def can_connect(self) -> bool:
        name = super().getPoolArgs()[0][0]  # type: ignore[misc]
        require_driver(name)
        self.server = shared_server(self, _SERVERS[driver_class(name).family])  # type: ignore[arg-type]
        return True

    def getPoolArgs(self) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
        args, kw = super().getPoolArgs()  # type: ignore[misc]
        settings = {key: value for key, value in kw.items() if key.startswith("cp_")}
        return args, dict(self.server.connect_kwargs(args[0]), **settings)


def _collect() -> Dict[str, type]:
    """
    @return: every test case of Twisted's module, by name, the server
        ones pointed at our servers.
    """
    cases: Dict[str, type] = {}
    for name, value in vars(_twisted).items():
        if not (isinstance(value, type) and issubclass(value, unittest.TestCase)):
            continue
        if name.startswith(_UNINSTALLABLE):
            continue
        if issubclass(value, (_twisted.PsycopgConnector, _twisted.MySQLConnector)):
            value = type(name, (_OnOurServer, value), {"__module__": __name__})
        cases[name] = value
    return cases


globals().update(_collect())


class MySQLReconnectTests(globals()["MySQLReconnectTests"]):  # type: ignore[misc]
    """
    Twisted's C{MySQLReconnectTests}, with its one documented difference:
    a call on a connection closed behind the pool's back succeeds, since
    the pool reconnects and replays it, where adbapi's fails.
    """

    def _testPool_3(self, res: Any) -> Any:
        d = self.dbpool.runQuery("select count(1) from simple")
        d.addCallback(lambda rows: self.assertEqual(int(rows[0][0]), 0))
        return d


class _OurPool:
    """
    Make Twisted's connector build our pool instead of adbapi's.
    """

    def makePool(self, **newkw: Any) -> ReconnectingConnectionPool:
        args, kw = self.getPoolArgs()  # type: ignore[attr-defined]
        kw = dict(kw, **newkw)
        return ReconnectingConnectionPool(*args, **kw)


class _ServerConnector(test_adbapi.DBTestConnector):
    driver = ""

    def can_connect(self) -> bool:
        require_driver(self.driver)
        self.server = shared_server(self, _SERVERS[driver_class(self.driver).family])  # type: ignore[arg-type]
        return True

    def getPoolArgs(self) -> Tuple[Tuple[str], Dict[str, Any]]:
        kw = dict(self.server.connect_kwargs(self.driver), cp_min=1, cp_max=3)
        return (self.driver,), kw


class Psycopg2AdbapiSuite(_OurPool, _ServerConnector, test_adbapi.ADBAPITestBase, unittest.TestCase):
    TEST_PREFIX = "Psycopg2"
    driver = "psycopg2"


class Pg8000AdbapiSuite(_OurPool, _ServerConnector, test_adbapi.ADBAPITestBase, unittest.TestCase):
    TEST_PREFIX = "Pg8000"
    driver = "pg8000"


class PyMySQLAdbapiSuite(_OurPool, _ServerConnector, test_adbapi.ADBAPITestBase, unittest.TestCase):
    TEST_PREFIX = "PyMySQL"
    driver = "pymysql"
    trailing_spaces_ok = False  # as Twisted's own MySQL connector says


class SwapTests(unittest.SynchronousTestCase):
    """
    The swapped module really runs our pool, and every test case of
    Twisted's module runs here but those of uninstallable drivers.
    """

    def test_twistedsModuleBuildsOurPool(self) -> None:
        """
        Twisted's connectors and its C{DummyConnectionPool} build
        L{ReconnectingConnectionPool}s.
        """
        self.assertIs(_twisted.ConnectionPool, ReconnectingConnectionPool)
        self.assertTrue(issubclass(_twisted.DummyConnectionPool, ReconnectingConnectionPool))

    def test_everyInstallableCaseIsCollected(self) -> None:
        """
        Both of Twisted's test bases run on sqlite3, psycopg and MySQLdb,
        beside its unit tests of the pool.
        """
        names = set(_collect())
        for prefix in ("SQLite3", "Psycopg", "MySQL"):
            for suffix in ("ADBAPITests", "ReconnectTests"):
                self.assertIn(prefix + suffix, names)
        for name in ("ConnectionPoolTests", "ConnectionTests", "TransactionTests"):
            self.assertIn(name, names)
        self.assertFalse([name for name in names if name.startswith(_UNINSTALLABLE)])
