"""
The twistd plugin dropins: discoverable, thin, and working: the fault
proxy obeys its control API (in-process and under a real twistd), and the
example web service keeps serving through a database restart.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any, Dict, List, Optional, Tuple, TypeVar

from twisted.application.service import IServiceMaker
from twisted.internet import defer, threads
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from txreconnect import _proxy_service
from txreconnect.drivers import driver_class, driver_for, known_drivers
from txreconnect.examples import webservice
from txreconnect.testing import PostgresServer, free_port, require_driver, shared_server
from tests.support import close_quietly, wait_until, wait_until_async

#: twistd, run as the installed package sees it (from an empty directory)
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def http(method: str, url: str, timeout: float = 10.0) -> Tuple[int, Dict[str, str], Any]:
    """
    A blocking HTTP request (call it in a thread from a reactor test).

    @return: the status code, the headers and the decoded JSON body.
    """
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, dict(e.headers), json.loads(e.read())


class PluginDiscoveryTests(SynchronousTestCase):
    def test_proxyPluginIsDiscovered(self) -> None:
        names = {p.tapname for p in getPlugins(IServiceMaker)}
        self.assertIn("txreconnect-proxy", names)
        self.assertIn("txreconnect-example-web", names)

    def test_installedTwistdListsThePluginWithoutError(self) -> None:
        """
        The installed package (not this checkout: twistd runs in an empty
        directory) makes C{twistd --help} list C{txreconnect-proxy}, and
        nothing is written to stderr.
        """
        empty = self.mktemp()
        os.mkdir(empty)
        result = subprocess.run(
            TWISTD + ["--help"],
            cwd=empty,
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("txreconnect-proxy", result.stdout, "is txreconnect installed (pip install .)?")
        self.assertIn("txreconnect-example-web", result.stdout)
        self.assertEqual(result.stderr, "")


_O = TypeVar("_O", bound=usage.Options)


def parsed(options: _O, argv: Tuple[str, ...]) -> _O:
    """
    @return: C{options}, having parsed C{argv}.
    """
    options.parseOptions(list(argv))
    return options


class ProxyOptionsTests(SynchronousTestCase):
    def parse(self, *argv: str) -> _proxy_service.Options:
        return parsed(_proxy_service.Options(), argv)

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
        self.assertIsNone(options["control_endpoint"])

    def test_malformedListenIsNamed(self) -> None:
        for bad in ("x", "70000", "-1"):
            error = self.assertRaises(usage.UsageError, self.parse, "-c", "db:1", "--listen", bad)
            self.assertIn("--listen", str(error))
            self.assertIn(repr(bad), str(error))

    def test_malformedControlIsNamed(self) -> None:
        for bad in ("70000", "0", "nonsense:1", "tcp:port", "tcp:7000:colour=blue"):
            error = self.assertRaises(usage.UsageError, self.parse, "-c", "db:1", "--control", bad)
            self.assertIn("--control", str(error))
            self.assertIn(repr(bad), str(error))

    def test_controlAndListenDiffer(self) -> None:
        error = self.assertRaises(
            usage.UsageError, self.parse, "-c", "db:1", "--listen", "7000", "--control", "7000"
        )
        self.assertIn("--control", str(error))

    def test_controlEndpoints(self) -> None:
        """
        A bare port and an endpoint description both give an endpoint.
        """
        for control in ("7000", "tcp:7000:interface=127.0.0.1", "unix:/tmp/proxy.sock"):
            self.assertIsNotNone(self.parse("-c", "db:1", "--control", control)["control_endpoint"])


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


class ProxyControlTests(TestCase):
    """
    The control API of an in-process L{FaultProxyService}: its answers,
    errors included.  (L{TwistdProxyTests} drives the faults for real.)
    """

    def setUp(self) -> None:
        self.control_port = free_port()
        options = _proxy_service.Options()
        options.parseOptions(["--connect", "127.0.0.1:%d" % (free_port(),), "--control", str(self.control_port)])
        self.service = _proxy_service.makeService(options)
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def call(self, method: str, path: str) -> "defer.Deferred[Tuple[int, Dict[str, str], Any]]":
        url = "http://127.0.0.1:%d%s" % (self.control_port, path)
        return threads.deferToThread(http, method, url)

    @defer.inlineCallbacks
    def test_statusDescribesTheProxy(self) -> Any:
        code, headers, body = yield self.call("GET", "/status")
        self.assertEqual(code, 200)
        self.assertEqual(headers["Content-Type"], "application/json")
        status = body["status"]
        self.assertEqual(status["listen"], {"host": "127.0.0.1", "port": self.service.proxy.port})  # type: ignore[attr-defined]
        self.assertEqual(status["target"]["host"], "127.0.0.1")
        self.assertEqual(
            {k: status[k] for k in ("connections", "blackholed", "refusing", "cut_armed", "cut", "cuts", "protocol")},
            {
                "connections": 0, "blackholed": False, "refusing": False,
                "cut_armed": False, "cut": None, "cuts": 0, "protocol": None,
            },
        )

    @defer.inlineCallbacks
    def test_unknownPathListsThePaths(self) -> Any:
        code, _, body = yield self.call("GET", "/nope")
        self.assertEqual(code, 404)
        self.assertIn("POST /drop", body["error"])
        self.assertIn("GET /status", body["error"])

    @defer.inlineCallbacks
    def test_wrongMethodSaysWhichIsAllowed(self) -> Any:
        code, headers, body = yield self.call("GET", "/drop")
        self.assertEqual((code, headers["Allow"]), (405, "POST"))
        self.assertIn("POST", body["error"])
        code, headers, _ = yield self.call("POST", "/status")
        self.assertEqual((code, headers["Allow"]), (405, "GET, HEAD"))

    @defer.inlineCallbacks
    def test_blackholeAndHeal(self) -> Any:
        _, _, body = yield self.call("POST", "/blackhole")
        self.assertTrue(body["status"]["blackholed"])
        self.assertTrue(self.service.proxy.blackholed)  # type: ignore[attr-defined]
        _, _, body = yield self.call("POST", "/heal/")
        self.assertFalse(body["status"]["blackholed"])

    @defer.inlineCallbacks
    def test_refuseNeedsValidSeconds(self) -> Any:
        code, _, body = yield self.call("POST", "/refuse")
        self.assertEqual(code, 400)
        self.assertIn("seconds", body["error"])
        for bad in ("abc", "-1", "nan", "inf"):
            code, _, body = yield self.call("POST", "/refuse?seconds=" + bad)
            self.assertEqual(code, 400)
            self.assertIn(repr(bad), body["error"])
        self.assertFalse(self.service.proxy.refusing)  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_refuseOpensAndZeroEndsTheWindow(self) -> Any:
        _, _, body = yield self.call("POST", "/refuse?seconds=60")
        self.assertEqual(body["refusing_for"], 60)
        self.assertTrue(body["status"]["refusing"])
        _, _, body = yield self.call("POST", "/refuse?seconds=0")
        self.assertFalse(body["status"]["refusing"])

    @defer.inlineCallbacks
    def test_cutAfterCommitArmsOnce(self) -> Any:
        code, _, body = yield self.call("POST", "/cut-after-commit")
        self.assertEqual((code, body["armed"], body["status"]["cut_armed"]), (200, True, True))
        code, _, body = yield self.call("POST", "/cut-after-commit")
        self.assertEqual(code, 409)
        self.assertIn("/disarm", body["error"])
        _, _, body = yield self.call("POST", "/disarm")
        self.assertEqual((body["disarmed"], body["status"]["cut_armed"]), (True, False))
        _, _, body = yield self.call("POST", "/disarm")
        self.assertFalse(body["disarmed"])

    @defer.inlineCallbacks
    def test_cutBeforeCommitArmsOnceForEitherKind(self) -> Any:
        """
        C{/cut-before-commit} arms the proxy's C{cut_before_commit}; while
        it is armed, neither kind of cut can be armed (409); C{/disarm}
        cancels it.
        """
        proxy = self.service.proxy  # type: ignore[attr-defined]
        code, _, body = yield self.call("POST", "/cut-before-commit")
        self.assertEqual((code, body["armed"], body["status"]["cut"]), (200, True, "before-commit"))
        self.assertEqual(proxy.armed, "before-commit")
        for path in ("/cut-before-commit", "/cut-after-commit"):
            code, _, body = yield self.call("POST", path)
            self.assertEqual(code, 409)
            self.assertIn("/cut-before-commit is already armed", body["error"])
        _, _, body = yield self.call("POST", "/disarm")
        self.assertEqual((body["disarmed"], body["status"]["cut_armed"], body["status"]["cut"]), (True, False, None))
        self.assertIsNone(proxy.armed)


class TwistdProxyTests(SynchronousTestCase):
    """
    C{twistd -n txreconnect-proxy}, the installed plugin in a subprocess,
    obeys its control API while a real psycopg2 client goes through it.
    """

    def setUp(self) -> None:
        self.psycopg2 = require_driver("psycopg2")
        self.server = shared_server(self, PostgresServer)
        self.proxy_port = free_port()
        self.control = "http://127.0.0.1:%d" % (free_port(),)
        self.log = os.path.abspath(self.mktemp())
        self.process = self.twistd(
            "txreconnect-proxy",
            "--connect", "127.0.0.1:%d" % (self.server.port,),
            "--listen", str(self.proxy_port),
            "--control", self.control.rpartition(":")[2],
        )
        self.wait_ready()

    def twistd(self, *argv: str) -> "subprocess.Popen[bytes]":
        """
        Start twistd in the foreground from an empty directory (so the
        installed package is used), its output in C{self.log}; a cleanup
        stops it.
        """
        empty = self.mktemp()
        os.mkdir(empty)
        with open(self.log, "wb") as log:
            process = subprocess.Popen(
                TWISTD + ["-n", "--pidfile=", *argv], cwd=empty, stdout=log, stderr=subprocess.STDOUT
            )
        self.addCleanup(self.stop, process)
        return process

    def stop(self, process: "subprocess.Popen[bytes]") -> Optional[int]:
        """
        SIGTERM, then wait with a deadline; SIGKILL as the last resort.

        @return: the exit status.
        """
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=20)
        return process.returncode

    def output(self) -> str:
        with open(self.log, encoding="utf-8", errors="replace") as log:
            return log.read()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """
        Poll the control API until it answers with the proxy listening.
        """

        def ready() -> bool:
            if self.process.poll() is not None:
                self.fail("twistd exited with %s:\n%s" % (self.process.returncode, self.output()))
            code, _, body = http("GET", self.control + "/status", timeout=2)
            return bool(code == 200 and body["status"]["listen"]["port"] == self.proxy_port)

        wait_until(
            ready,
            timeout,
            "twistd's control API to answer",
            interval=0.05,
            detail=lambda: "twistd's output:\n" + self.output(),
            retry_on=(OSError, ValueError),
        )

    def status(self) -> Dict[str, Any]:
        code, _, body = http("GET", self.control + "/status")
        self.assertEqual(code, 200, body)
        result: Dict[str, Any] = body["status"]
        return result

    def post(self, path: str) -> Dict[str, Any]:
        code, _, body = http("POST", self.control + path)
        self.assertEqual(code, 200, body)
        result: Dict[str, Any] = body
        return result

    def connect(self) -> Any:
        conn = self.psycopg2.connect(**self.server.connect_kwargs("psycopg2", port=self.proxy_port))
        self.addCleanup(close_quietly, conn)
        return conn

    def query(self, conn: Any) -> List[Any]:
        cursor = conn.cursor()
        cursor.execute("SELECT 1")
        rows: List[Any] = cursor.fetchall()
        return rows

    def assertDisconnect(self, conn: Any, call: Any, *args: Any) -> None:
        error = self.assertRaises(self.psycopg2.Error, call, *args)
        self.assertTrue(driver_for(self.psycopg2).is_disconnect(error, conn), repr(error))

    def test_dropThenBlackholeAndHeal(self) -> None:
        conn = self.connect()
        self.assertEqual(self.query(conn), [(1,)])
        self.assertEqual(self.status()["connections"], 1)

        answer = self.post("/drop")
        self.assertEqual((answer["dropped"], answer["status"]["connections"]), (1, 0))
        self.assertDisconnect(conn, self.query, conn)
        conn = self.connect()
        self.assertEqual(self.query(conn), [(1,)])

        self.assertTrue(self.post("/blackhole")["status"]["blackholed"])
        self.assertTrue(self.status()["blackholed"])
        self.assertFalse(self.post("/heal")["status"]["blackholed"])
        # The connection opened before the black hole resumes.
        self.assertEqual(self.query(conn), [(1,)])

        # A clean shutdown: twistd ends by re-raising the SIGTERM it got.
        self.assertIn(self.stop(self.process), (0, -signal.SIGTERM))
        self.assertIn("Server Shut Down.", self.output())
        self.assertNotIn("Traceback", self.output())

    def test_refuseThenCutAfterCommit(self) -> None:
        self.assertTrue(self.post("/refuse?seconds=120")["status"]["refusing"])
        self.assertRaises(self.psycopg2.OperationalError, self.connect)
        self.assertFalse(self.post("/refuse?seconds=0")["status"]["refusing"])
        conn = self.connect()
        self.assertEqual(self.query(conn), [(1,)])

        self.assertTrue(self.post("/cut-after-commit")["status"]["cut_armed"])
        self.assertDisconnect(conn, conn.commit)
        wait_until(lambda: self.status()["cuts"] == 1, what="the cut is counted")
        self.assertFalse(self.status()["cut_armed"])

    def test_controlPortTakenStopsTwistd(self) -> None:
        """
        A control port that cannot be listened on makes twistd exit at
        once with the reason, rather than run a proxy nobody can control.
        """
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            self.log = os.path.abspath(self.mktemp())
            process = self.twistd(
                "txreconnect-proxy", "--connect", "127.0.0.1:%d" % (self.server.port,), "--control", str(port)
            )
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.fail("twistd kept running without its control port:\n" + self.output())
        self.assertNotEqual(process.returncode, 0)
        self.assertIn("CannotListenError", self.output())


class ExampleWebOptionsTests(SynchronousTestCase):
    def parse(self, *argv: str) -> webservice.Options:
        return parsed(webservice.Options(), argv)

    def test_defaults(self) -> None:
        self.patch(os, "environ", {webservice.PASSWORD_ENV: "s3cret"})
        options = self.parse("--db-port", "6543", "--db-name", "app", "--db-user", "web")
        self.assertEqual(options["listen"], "tcp:8080:interface=127.0.0.1")
        driver, connkw = options["pool"]
        self.assertEqual(driver, "psycopg2")
        self.assertEqual(
            connkw,
            {"host": "127.0.0.1", "port": 6543, "dbname": "app", "user": "web", "password": "s3cret",
             "cp_min": 1, "cp_max": 4, "cp_name": "txreconnect-example-web"},
        )

    def test_driverChoicesAreTheKnownServerDrivers(self) -> None:
        """
        C{--driver} takes every driver txreconnect knows for a database
        server, and its help lists them; SQLite's driver is not one.
        """
        servers = {cls.name for cls in known_drivers() if cls.family in ("postgresql", "mysql")}
        self.assertEqual(set(webservice.DRIVERS), servers)
        self.assertGreaterEqual(servers, {"psycopg2", "psycopg", "pymysql", "MySQLdb"})
        self.assertNotIn("sqlite3", webservice.DRIVERS)
        shown = " ".join(str(webservice.Options()).split())
        for name in servers:
            self.assertIn(name, shown)
        error = self.assertRaises(usage.UsageError, self.parse, "--driver", "sqlite3")
        self.assertIn("--driver", str(error))

    def test_eachDriverGetsItsOwnPortAndKeywords(self) -> None:
        """
        Each driver (of those installed) gets its own default port and
        its own C{connect()} keyword for the database name: C{dbname} for
        libpq, C{database} for PyMySQL.
        """
        self.patch(os, "environ", {})
        tried = []
        for name in webservice.DRIVERS:
            try:
                require_driver(name)
            except Exception:
                continue
            known = driver_class(name)
            options = self.parse("--driver", name, "--db-name", "shop", "--db-user", "web")
            driver, connkw = options["pool"]
            self.assertEqual(driver, name)
            self.assertEqual(connkw[known.keywords["port"]], known.default_port)
            self.assertEqual(connkw[known.keywords["database"]], "shop")
            self.assertEqual(connkw[known.keywords["user"]], "web")
            tried.append(name)
        self.assertTrue(tried, "no server driver is installed")
        if "pymysql" in tried:
            connkw = self.parse("--driver", "pymysql", "--db-name", "shop")["pool"][1]
            self.assertEqual((connkw["port"], connkw["database"]), (3306, "shop"))
            self.assertNotIn("password", connkw)

    def test_badOptionsAreNamed(self) -> None:
        for argv, name in [
            (("--driver", "oracle"), "--driver"),
            (("--db-port", "x"), "--db-port"),
            (("--db-port", "0"), "--db-port"),
            (("--pool-size", "0"), "--pool-size"),
            (("--listen", "nonsense:80"), "--listen"),
        ]:
            error = self.assertRaises(usage.UsageError, self.parse, *argv)
            self.assertIn(name, str(error))
            self.assertIn(repr(argv[1]), str(error))


class ExampleWebServiceTests(TestCase):
    """
    The example web service, in-process, against a real PostgreSQL server.
    """

    def setUp(self) -> None:
        require_driver("psycopg2")
        self.server = shared_server(self, PostgresServer)
        self.port = free_port()
        self.service = webservice.WebService(
            "tcp:%d:interface=127.0.0.1" % (self.port,),
            "psycopg2",
            cp_min=1,
            cp_max=2,
            **self.server.connect_kwargs("psycopg2"),
        )
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def get(self, path: str = "/") -> "defer.Deferred[Tuple[int, Dict[str, str], Any]]":
        return threads.deferToThread(http, "GET", "http://127.0.0.1:%d%s" % (self.port, path), 30)

    @defer.inlineCallbacks
    def test_keepsServingThroughARestart(self) -> Any:
        code, _, body = yield self.get()
        self.assertEqual((code, body["pool"]), (200, "up"), body)
        self.assertIn("database_time", body)
        yield threads.deferToThread(self.server.restart)
        code, _, after = yield self.get()
        self.assertEqual(code, 200, after)
        self.assertNotEqual(after["database_time"], body["database_time"])
        _, _, stats = yield self.get("/stats")
        self.assertGreaterEqual(stats["disconnects"], 1)

    @defer.inlineCallbacks
    def test_databaseDownIs503ThenBack(self) -> Any:
        yield self.get()
        yield threads.deferToThread(self.server.stop)
        code, headers, body = yield self.get()
        self.assertEqual((code, headers.get("Retry-After")), (503, "1"), body)
        self.assertIn("unavailable", body["error"])
        yield threads.deferToThread(self.server.start)
        yield wait_until_async(
            lambda: self.get().addCallback(lambda response: response[0] == 200),
            30,
            "the service to answer 200 again",
            interval=0.1,
        )

    @defer.inlineCallbacks
    def test_otherErrorsAre500AndLogged(self) -> Any:
        resource = self.service.site.resource
        self.patch(resource, "query", "SELECT no_such_column")
        code, _, body = yield self.get()
        self.assertEqual((code, body), (500, {"error": "internal error"}))
        self.assertEqual(len(self.flushLoggedErrors(self.server_error())), 1)

    def server_error(self) -> type:
        error: type = require_driver("psycopg2").ProgrammingError
        return error

    @defer.inlineCallbacks
    def test_unknownPathIs404(self) -> Any:
        code, _, body = yield self.get("/nope")
        self.assertEqual(code, 404, body)
