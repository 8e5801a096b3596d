"""
L{txreconnect.metrics}: real HTTP scrapes of C{/metrics}, served by
C{prometheus_client.twisted.MetricsResource}, before, during and after a
database outage under load, parsed with C{prometheus_client}'s own
parser and checked against what the pool's C{stats()}, C{occupancy()}
and C{timings()} say at the same time; the example web service and
C{txreconnect drill --metrics-port} serving them; and the collector's
rules (names, labels, bad input) with stand-in pools.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from typing import Any, Dict, FrozenSet, Generator, List, Optional, Tuple

from twisted.internet import defer, error, reactor, task, threads, utils
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.resource import Resource
from twisted.web.server import Site

from txreconnect import ReconnectingConnectionPool
from txreconnect._stats import _COUNTERS as STATS_COUNTERS
from txreconnect.errors import ConfigurationError
from txreconnect.testing import PostgresServer, free_port, require_driver, shared_server
from tests.support import DEADLINE, unavailable, wait_until_async

try:
    from prometheus_client import CollectorRegistry
    from prometheus_client.parser import text_string_to_metric_families
    from prometheus_client.twisted import MetricsResource

    from txreconnect import metrics
except ImportError as _missing:
    raise unavailable("prometheus_client is not installed (pip install txreconnect[metrics]): %s" % (_missing,))

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: the label of every metric
POOL = metrics.POOL_LABEL

#: pool.stats() key of each counter, by its sample name
COUNTER_KEYS = {name + "_total": key for name, key, _ in metrics._COUNTERS}

#: pool.timings() key of each histogram, by its name
HISTOGRAM_KEYS = {name: key for name, key, _ in metrics._HISTOGRAMS}


class Scrape:
    """
    One scrape, as C{prometheus_client}'s parser reads it.

    @ivar text: the body.
    @ivar types: each family's type, by family name.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.types: Dict[str, str] = {}
        self._samples: Dict[Tuple[str, FrozenSet[Tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                self._samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, pool: str, **labels: str) -> float:
        """
        @return: the value of sample C{name} of C{pool} with C{labels}.
        @raise KeyError: there is no such sample.
        """
        return self._samples[(name, frozenset(dict(labels, **{POOL: pool}).items()))]

    def pools(self) -> List[str]:
        """
        @return: every pool name the scrape shows.
        """
        return sorted({dict(labels)[POOL] for _, labels in self._samples if POOL in dict(labels)})

    def state(self, pool: str) -> str:
        """
        @return: the outage state that is 1.
        """
        (state,) = [s for s in ("up", "down", "probing") if self.value("txreconnect_database_state", pool, state=s)]
        return state

    def count(self, pool: str, state: str) -> float:
        return self.value("db_client_connection_count", pool, **{metrics.STATE_LABEL: state})


def scrape(url: str) -> "defer.Deferred[Scrape]":
    """
    GET C{url} over real HTTP.

    @return: a Deferred firing with the parsed L{Scrape} (a 200 only).
    """
    agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))

    @defer.inlineCallbacks
    def get() -> Generator[Any, Any, Scrape]:
        response = yield agent.request(b"GET", url.encode("ascii"))
        body = yield readBody(response)
        if response.code != 200:
            raise AssertionError("GET %s: %d %r" % (url, response.code, body[:500]))
        return Scrape(body.decode("utf-8"))

    return get()


def serve(testcase: TestCase, registry: CollectorRegistry) -> str:
    """
    Serve C{registry} with C{MetricsResource} on a free loopback port
    until the test ends.

    @return: the URL of C{/metrics}.
    """
    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry))
    port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    return "http://127.0.0.1:%d/metrics" % (port.getHost().port,)


class Load:
    """
    Clients calling C{runQuery} one after the other until stopped.
    """

    def __init__(self, pool: ReconnectingConnectionPool, clients: int) -> None:
        self.pool = pool
        self.succeeded = 0
        self.failed = 0
        self.running = True
        self.done = defer.gatherResults([self._client() for _ in range(clients)])

    @defer.inlineCallbacks
    def _client(self) -> Generator[Any, Any, None]:
        while self.running:
            try:
                yield self.pool.runQuery("SELECT pg_sleep(0.002)")
            except Exception:
                self.failed += 1
                yield task.deferLater(reactor, 0.01, lambda: None)
            else:
                self.succeeded += 1

    def stop(self) -> "defer.Deferred[Any]":
        self.running = False
        return self.done


class ScrapeTests(TestCase):
    """
    A real PostgreSQL server, a pool under load, its metrics served over
    HTTP by C{MetricsResource}, scraped through a stop and a start of the
    server.
    """

    timeout = 180

    def setUp(self) -> None:
        require_driver("psycopg2")
        self.server = shared_server(self, PostgresServer)
        self.registry = CollectorRegistry()
        self.url = serve(self, self.registry)
        self.scrapes: List[Scrape] = []

    def pool(self, **options: Any) -> ReconnectingConnectionPool:
        pool = ReconnectingConnectionPool("psycopg2", **dict(self.server.connect_kwargs("psycopg2"), **options))
        self.addCleanup(pool.close)
        return pool

    @defer.inlineCallbacks
    def scrape(self) -> Generator[Any, Any, Scrape]:
        scraped = yield scrape(self.url)
        self.scrapes.append(scraped)
        return scraped

    @defer.inlineCallbacks
    def consistent(self, pool: ReconnectingConnectionPool, name: str) -> Generator[Any, Any, Scrape]:
        """
        Scrape, and check that every counter and histogram lies between
        what the pool said just before and just after, and that the
        database is up in the scrape if it was both times, not up if it
        was neither time.

        @return: the scrape.
        """
        stats, timings = pool.stats(), pool.timings()
        scraped = yield self.scrape()
        after, timings_after = pool.stats(), pool.timings()
        for sample, key in COUNTER_KEYS.items():
            self.assertTrue(
                stats[key] <= scraped.value(sample, name) <= after[key],
                "%s: %r, stats() said %r then %r" % (sample, scraped.value(sample, name), stats[key], after[key]),
            )
        # Down and probing alternate too fast to be caught between two
        # reads while calls keep failing; up is not.
        self.assertIn(scraped.state(name) == "up", {stats["state"] == "up", after["state"] == "up"})
        for family, key in HISTOGRAM_KEYS.items():
            count = scraped.value(family + "_count", name)
            self.assertTrue(timings[key][3] <= count <= timings_after[key][3], (family, count))
            self.assertEqual(scraped.value(family + "_bucket", name, le="+Inf"), count)
        self.assertEqual(scraped.value("db_client_connection_max", name), pool.max)
        return scraped

    @defer.inlineCallbacks
    def test_scrapesFollowTheStatsThroughAnOutageUnderLoad(self) -> Any:
        """
        Before the outage the scrape says what C{stats()} says, the state
        is up and calls hold connections; with the server stopped, the
        state leaves up and disconnects and failed connection attempts
        are counted; once it is back, the state is up again, new
        connections were opened and timed, and when the load stops the
        gauges equal C{occupancy()}.  No scrape shows the password.
        """
        pool = self.pool(cp_min=1, cp_max=3, cp_name="orders")
        metrics.track(pool, registry=self.registry)
        load = Load(pool, 3)
        self.addCleanup(load.stop)
        yield wait_until_async(lambda: load.succeeded >= 30, DEADLINE, "calls to succeed")

        before = yield self.consistent(pool, "orders")
        self.assertEqual(before.state("orders"), "up")
        self.assertEqual(before.pools(), ["orders"])
        self.assertEqual(set(before.types), set(name[: -len("_total")] if name.endswith("_total") else name
                                                for name in metrics.METRICS))
        self.assertGreater(before.value("db_client_connection_use_time_seconds_count", "orders"), 0)
        self.assertGreater(before.value("db_client_connection_wait_time_seconds_count", "orders"), 0)
        self.assertGreaterEqual(before.value("db_client_connection_create_time_seconds_count", "orders"), 1)

        def busy(scraped: Scrape) -> bool:
            used = scraped.count("orders", "used")
            self.assertLessEqual(used + scraped.count("orders", "idle"), 3)
            return used >= 1

        yield wait_until_async(lambda: self.scrape().addCallback(busy), DEADLINE, "a scrape to see a call running")

        yield threads.deferToThread(self.server.stop)

        def down(scraped: Scrape) -> bool:
            return (scraped.state("orders") != "up"
                    and scraped.value("txreconnect_disconnects_total", "orders")
                    > before.value("txreconnect_disconnects_total", "orders")
                    and scraped.value("txreconnect_connect_failures_total", "orders") > 0)

        yield wait_until_async(lambda: self.scrape().addCallback(down), 60, "a scrape to show the outage")
        during = yield self.consistent(pool, "orders")
        self.assertNotEqual(during.state("orders"), "up")
        self.assertGreater(during.value("txreconnect_reconnect_attempts_total", "orders"), 0)

        yield threads.deferToThread(self.server.start)
        succeeded = load.succeeded

        def back(scraped: Scrape) -> bool:
            return scraped.state("orders") == "up" and load.succeeded > succeeded + 10

        yield wait_until_async(lambda: self.scrape().addCallback(back), 60, "a scrape to show the database back")
        yield load.stop()

        after = yield self.consistent(pool, "orders")
        for name in ("txreconnect_connections_opened_total", "db_client_connection_create_time_seconds_count",
                     "db_client_connection_use_time_seconds_count", "db_client_connection_wait_time_seconds_count"):
            self.assertGreater(after.value(name, "orders"), before.value(name, "orders"), name)
        self.assertGreater(after.value("db_client_connection_use_time_seconds_sum", "orders"), 0)

        # A pool thread counts as working until it is back among the
        # waiting ones, a moment after its call's result is delivered.
        yield wait_until_async(lambda: pool.occupancy()["used"] == 0, DEADLINE, "the pool threads to be idle")
        occupancy = pool.occupancy()
        quiet = yield self.scrape()
        self.assertEqual(pool.occupancy(), occupancy)
        self.assertEqual(
            (quiet.count("orders", "idle"), quiet.count("orders", "used"),
             quiet.value("db_client_connection_pending_requests", "orders")),
            (occupancy["idle"], occupancy["used"], occupancy["waiting"]),
        )
        self.assertEqual(occupancy["used"], 0)
        for each in self.scrapes:
            self.assertNotIn(self.server.password, each.text)

    @defer.inlineCallbacks
    def test_onePoolPerLabel(self) -> Any:
        """
        Two pools in one registry: each has its own samples, the one
        without C{cp_name} labelled C{host:port/database}; a third pool
        under a name in use is refused; a closed and forgotten pool
        leaves the scrape.
        """
        named = self.pool(cp_min=1, cp_max=2, cp_name="billing")
        unnamed = self.pool(cp_min=1, cp_max=4)
        collector = metrics.track(named, registry=self.registry)
        self.assertIs(metrics.track(unnamed, registry=self.registry), collector)
        where = "127.0.0.1:%d/%s" % (self.server.port, self.server.database)
        yield named.runQuery("SELECT 1")
        yield unnamed.runQuery("SELECT 1")
        scraped = yield self.scrape()
        self.assertEqual(scraped.pools(), sorted(["billing", where]))
        self.assertEqual(scraped.value("db_client_connection_max", "billing"), 2)
        self.assertEqual(scraped.value("db_client_connection_max", where), 4)
        self.assertEqual(scraped.value("txreconnect_connections_opened_total", where), unnamed.stats()["opened"])
        same = self.pool(cp_min=1, cp_max=1, cp_name="billing")
        problem = self.assertRaises(ConfigurationError, metrics.track, same, registry=self.registry)
        self.assertIn("two pools named 'billing'", str(problem))
        unnamed.close()
        collector.remove(unnamed)
        scraped = yield self.scrape()
        self.assertEqual(scraped.pools(), ["billing"])
        self.assertNotIn(self.server.password, scraped.text)


class ExampleWebServiceTests(TestCase):
    """
    The example web service serves C{/metrics} beside C{/} and C{/stats}.
    """

    timeout = 120

    @defer.inlineCallbacks
    def test_metricsMoveThroughARestart(self) -> Any:
        """
        A request after a restart of the database is answered (the pool
        replays it), and C{/metrics} counts the disconnect that
        C{/stats} counts.  Stopping the service stops exporting the pool.
        """
        from txreconnect.examples import webservice

        require_driver("psycopg2")
        server = shared_server(self, PostgresServer)
        port = free_port()
        registry = CollectorRegistry()
        service = webservice.WebService("tcp:%d:interface=127.0.0.1" % (port,), "psycopg2", registry=registry,
                                        cp_min=1, cp_max=2, cp_name="clock", **server.connect_kwargs("psycopg2"))
        service.startService()
        self.addCleanup(service.stopService)
        url = "http://127.0.0.1:%d/metrics" % (port,)
        agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))

        @defer.inlineCallbacks
        def get(path: bytes) -> Generator[Any, Any, int]:
            response = yield agent.request(b"GET", b"http://127.0.0.1:%d%s" % (port, path))
            yield readBody(response)
            return int(response.code)

        self.assertEqual((yield get(b"/")), 200)
        before = yield scrape(url)
        self.assertEqual(before.state("clock"), "up")
        self.assertEqual(before.value("txreconnect_disconnects_total", "clock"), 0)
        yield threads.deferToThread(server.restart)
        self.assertEqual((yield get(b"/")), 200)
        after = yield scrape(url)
        self.assertEqual(after.value("txreconnect_disconnects_total", "clock"), service.pool.stats()["disconnects"])
        self.assertGreaterEqual(after.value("txreconnect_disconnects_total", "clock"), 1)
        self.assertGreaterEqual(after.value("txreconnect_replays_total", "clock"), 1)
        self.assertEqual((yield get(b"/nope")), 404)
        self.assertNotIn(server.password, after.text)
        yield service.stopService()
        self.assertEqual(list(registry.collect())[0].samples, [])


class DrillTests(TestCase):
    """
    C{txreconnect drill --metrics-port}, run as a user runs it.
    """

    timeout = 120

    def drill(self, *args: str) -> "defer.Deferred[Tuple[bytes, bytes, int]]":
        code = "from txreconnect._cli import main; main(%r)" % (["drill", *args],)
        return utils.getProcessOutputAndValue(
            sys.executable, ["-c", code], env=dict(os.environ, PYTHONPATH=_ROOT), path=_ROOT
        )

    @defer.inlineCallbacks
    def test_metricsServedWhileTheDrillRuns(self) -> Any:
        """
        While the drill injects its faults on SQLite, C{/metrics} answers
        in the format C{prometheus_client} parses, and the disconnects
        and replays it counts go up.
        """
        port = free_port()
        running = self.drill("--duration", "6", "--seed", "7", "--metrics-port", str(port))
        url = "http://127.0.0.1:%d/metrics" % (port,)
        seen: List[Scrape] = []

        def moved() -> "defer.Deferred[bool]":
            def check(scraped: Scrape) -> bool:
                seen.append(scraped)
                # KeyError: served before the pool is made
                return scraped.value("txreconnect_disconnects_total", "txreconnect") >= 1

            return scrape(url).addCallback(check)

        try:
            yield wait_until_async(moved, 90, "the drill's metrics to count a disconnect",
                                   retry_on=(error.ConnectionRefusedError, KeyError), interval=0.2)
        finally:
            out, err, status = yield running
        output = (out + err).decode("utf-8", "replace")
        self.assertEqual(status, 0, output)
        self.assertIn("metrics: http://127.0.0.1:%d/metrics" % (port,), output)
        self.assertEqual(seen[-1].pools(), ["txreconnect"])
        self.assertIn(seen[-1].state("txreconnect"), ("up", "down", "probing"))
        self.assertGreaterEqual(seen[-1].value("txreconnect_replays_total", "txreconnect"), 1)

    @defer.inlineCallbacks
    def test_badMetricsPortIsRefused(self) -> Any:
        """
        A C{--metrics-port} that is not a port, or one already taken, ends
        the drill at once with status 2, naming the option.
        """
        for value in ("0", "70000", "http"):
            out, err, status = yield self.drill("--metrics-port", value)
            output = (out + err).decode("utf-8", "replace")
            self.assertEqual(status, 2, output)
            self.assertIn("--metrics-port", output)
            self.assertNotIn("Traceback", output)
        taken = reactor.listenTCP(0, Site(Resource()), interface="127.0.0.1")
        self.addCleanup(taken.stopListening)
        out, err, status = yield self.drill("--duration", "2", "--metrics-port", str(taken.getHost().port))
        output = (out + err).decode("utf-8", "replace")
        self.assertEqual(status, 2, output)
        self.assertIn("--metrics-port %d: cannot listen" % (taken.getHost().port,), output)
        self.assertNotIn("Traceback", output)


class FakePool:
    """
    What L{metrics.PoolCollector} reads of a pool, with set answers.
    """

    dbapiName = "psycopg2"

    def __init__(self, name: Optional[str] = None, **connkw: Any) -> None:
        self.name = name
        self.connkw = connkw
        self.timed = False
        self.counters: Dict[str, Any] = dict.fromkeys(STATS_COUNTERS, 0)
        self.counters["state"] = "up"
        self.seats = {"max": 4, "connections": 2, "used": 1, "idle": 1, "waiting": 0}
        self.histograms: Dict[str, Any] = {}

    def stats(self) -> Dict[str, Any]:
        return dict(self.counters)

    def occupancy(self) -> Dict[str, int]:
        return dict(self.seats)

    def enable_timings(self) -> None:
        self.timed = True

    def timings(self) -> Dict[str, Any]:
        return dict(self.histograms)

    def __repr__(self) -> str:
        return "<FakePool %s>" % (self.name,)


def collected(collector: metrics.PoolCollector) -> Scrape:
    """
    @return: C{collector}'s metrics, written and parsed as a scrape would.
    """
    from prometheus_client import generate_latest

    registry = CollectorRegistry()
    collector.register(registry)
    return Scrape(generate_latest(registry).decode("utf-8"))


class CollectorTests(SynchronousTestCase):
    """
    The collector's names and rules, with stand-in pools.
    """

    def test_everyStatsCounterHasAMetric(self) -> None:
        """
        Each counter of C{stats()} is exported, under one name each.
        """
        self.assertEqual(sorted(COUNTER_KEYS.values()), sorted(STATS_COUNTERS))
        self.assertEqual(len(set(COUNTER_KEYS)), len(STATS_COUNTERS))

    def test_histogramBucketsAreCumulative(self) -> None:
        """
        The pool's per-bucket counts become Prometheus's cumulative
        buckets, +Inf last and equal to the count.
        """
        pool = FakePool("p")
        collector = metrics.PoolCollector()
        collector.add(pool)
        self.assertTrue(pool.timed)
        pool.histograms = {"wait": ((0.1, 1.0), [2, 3, 1], 4.5, 6)}
        scraped = collected(collector)
        name = "db_client_connection_wait_time_seconds"
        self.assertEqual(scraped.types[name], "histogram")
        self.assertEqual([scraped.value(name + "_bucket", "p", le=le) for le in ("0.1", "1.0", "+Inf")], [2, 5, 6])
        self.assertEqual((scraped.value(name + "_sum", "p"), scraped.value(name + "_count", "p")), (4.5, 6))
        self.assertRaises(KeyError, scraped.value, "db_client_connection_use_time_seconds_count", "p")

    def test_gaugesAndStateSet(self) -> None:
        pool = FakePool("p")
        pool.counters.update(state="probing", disconnects=3, seconds_waiting=1.5)
        pool.seats.update(used=3, idle=0, waiting=7)
        collector = metrics.PoolCollector()
        collector.add(pool)
        scraped = collected(collector)
        self.assertEqual(scraped.state("p"), "probing")
        self.assertEqual(scraped.value("txreconnect_disconnects_total", "p"), 3)
        self.assertEqual(scraped.value("txreconnect_database_wait_seconds_total", "p"), 1.5)
        self.assertEqual((scraped.count("p", "used"), scraped.count("p", "idle")), (3, 0))
        self.assertEqual(scraped.value("db_client_connection_pending_requests", "p"), 7)
        self.assertEqual(scraped.types["txreconnect_disconnects"], "counter")
        self.assertEqual(scraped.types["db_client_connection_count"], "gauge")

    def test_defaultNameIsHostPortDatabase(self) -> None:
        """
        A pool without C{cp_name} is named C{host:port/database}, or by
        its driver without these; C{name=} overrides both.
        """
        collector = metrics.PoolCollector()
        pools = [FakePool(host="db", port=5432, dbname="shop", password="hunter22"), FakePool(), FakePool("x")]
        self.assertEqual(collector.add(pools[0]), "db:5432/shop")
        self.assertEqual(collector.add(pools[1]), "psycopg2")
        self.assertEqual(collector.add(pools[2], name="given"), "given")
        self.assertEqual(collector.names(), ["db:5432/shop", "given", "psycopg2"])

    def test_aNameShowingThePasswordIsRefused(self) -> None:
        """
        A label that would contain the pool's password is refused, and
        the error does not show it either.
        """
        pool = FakePool("app-hunter22", password="hunter22")
        problem = self.assertRaises(ConfigurationError, metrics.PoolCollector().add, pool)
        self.assertIn("password", str(problem))
        self.assertNotIn("hunter22", str(problem))
        problem = self.assertRaises(ConfigurationError, metrics.PoolCollector().add,
                                    FakePool(host="hunter22.example", password="hunter22"))
        self.assertNotIn("hunter22", str(problem))

    def test_badInputIsAConfigurationError(self) -> None:
        """
        Each mistake is refused, saying which.
        """
        from twisted.enterprise import adbapi

        collector = metrics.PoolCollector()
        stock = adbapi.ConnectionPool("sqlite3", ":memory:", cp_min=1, cp_max=1)
        self.addCleanup(stock.close)
        for pool, name, why in [
            (stock, None, "ConnectionPool has no stats()"),
            (object(), None, "object has no stats()"),
            (FakePool("p"), "", "non-empty string, not ''"),
            (FakePool("p"), 7, "non-empty string, not 7"),
        ]:
            problem = self.assertRaises(ConfigurationError, collector.add, pool, name)
            self.assertIn(why, str(problem))
        pool = FakePool("same")
        collector.add(pool)
        self.assertEqual(collector.add(pool), "same")
        self.assertIn("already exported under the name 'same'",
                      str(self.assertRaises(ConfigurationError, collector.add, pool, "other")))
        self.assertIn("two pools named 'same'",
                      str(self.assertRaises(ConfigurationError, collector.add, FakePool("same"))))
        self.assertIn("not exported", str(self.assertRaises(ConfigurationError, collector.remove, FakePool("q"))))
        registry = CollectorRegistry()
        collector.register(registry)
        self.assertIn("already exports txreconnect's metrics",
                      str(self.assertRaises(ConfigurationError, metrics.PoolCollector().register, registry)))

    def test_aCollectedPoolLeaves(self) -> None:
        """
        Pools are held weakly: once a pool is garbage, its name is free.
        """
        collector = metrics.PoolCollector()
        collector.add(FakePool("gone"))
        gc.collect()
        self.assertEqual(collector.names(), [])
        collector.add(FakePool("gone"))

    def test_txreconnectImportsWithoutPrometheusClient(self) -> None:
        """
        C{prometheus_client} is optional: C{import txreconnect} works
        without it, and C{txreconnect.metrics} says what to install.
        """
        code = (
            "import sys; sys.modules['prometheus_client'] = None\n"
            "import txreconnect\n"
            "try:\n    import txreconnect.metrics\n"
            "except ImportError as e:\n    print(e)\n"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=_ROOT,
                              env=dict(os.environ, PYTHONPATH=_ROOT), timeout=60)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("pip install txreconnect[metrics]", done.stdout)
