"""
The twistd plugin dropins: discoverable, thin, and working.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from twisted.application.service import IServiceMaker
from twisted.internet import defer, threads
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from txreconnect import _proxy_service
from txreconnect.testing import PostgresServer, require_driver, shared_server


class PluginDiscoveryTests(SynchronousTestCase):
    def test_proxyPluginIsDiscovered(self) -> None:
        names = {p.tapname for p in getPlugins(IServiceMaker)}
        self.assertIn("txreconnect-proxy", names)

    def test_installedTwistdListsThePluginWithoutError(self) -> None:
        """
        The installed package (not this checkout: twistd runs in an empty
        directory) makes C{twistd --help} list C{txreconnect-proxy}, and
        nothing is written to stderr.
        """
        empty = self.mktemp()
        os.mkdir(empty)
        result = subprocess.run(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--help"],
            cwd=empty,
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("txreconnect-proxy", result.stdout, "is txreconnect installed (pip install .)?")
        self.assertEqual(result.stderr, "")


class ProxyOptionsTests(SynchronousTestCase):
    def parse(self, *argv: str) -> _proxy_service.Options:
        options = _proxy_service.Options()
        options.parseOptions(list(argv))
        return options

    def test_connectIsRequired(self) -> None:
        error = self.assertRaises(usage.UsageError, self.parse)
        self.assertIn("--connect", str(error))

    def test_malformedConnectIsNamed(self) -> None:
        for bad in ("db", "db:", "db:port", ":5432", "db:70000"):
            error = self.assertRaises(usage.UsageError, self.parse, "--connect", bad)
            self.assertIn(repr(bad), str(error))

    def test_unknownProtocolIsNamed(self) -> None:
        error = self.assertRaises(usage.UsageError, self.parse, "-c", "db:1", "--protocol", "oracle")
        self.assertIn("oracle", str(error))

    def test_goodOptions(self) -> None:
        options = self.parse("-c", "db.example:5432", "-l", "6432", "-p", "postgresql")
        self.assertEqual(options["target"], ("db.example", 5432))
        self.assertEqual(options["listen"], 6432)


class ProxyServiceTests(TestCase):
    @defer.inlineCallbacks
    def test_serviceForwardsToTheDatabase(self) -> Any:
        psycopg2 = require_driver("psycopg2")
        server = shared_server(self, PostgresServer)
        options = _proxy_service.Options()
        options.parseOptions(["--connect", "127.0.0.1:%d" % (server.port,)])
        service = _proxy_service.makeService(options)
        service.startService()
        self.addCleanup(service.stopService)
        port = service.proxy.port  # type: ignore[attr-defined]

        def query() -> Any:
            conn = psycopg2.connect(**server.connect_kwargs("psycopg2", port=port))
            try:
                cursor = conn.cursor()
                cursor.execute("SELECT 1")
                return cursor.fetchall()
            finally:
                conn.close()

        self.assertEqual((yield threads.deferToThread(query)), [(1,)])
