"""
C{txreconnect drill}: a realistic workload through a
L{ReconnectingConnectionPool} while faults are injected under it, then a
report and an audit of every write.

Concurrent clients read, and write rows tagged with unique ids, while the
drill kills the pool's connections, restarts the database, drops or resets
the network and cuts a connection right after a COMMIT.  At the end every
write is checked against what its client was told: a success must be
stored exactly once, a L{DisconnectionError} not at all, a
L{TransactionOutcomeUnknown} at most once.  C{--compare} runs stock
C{adbapi.ConnectionPool} beside it, through the same faults.

With no arguments the drill runs on SQLite in a temporary file; C{--spawn}
starts a throwaway PostgreSQL or MariaDB server (and restarts it), C{--url}
drills a server of yours through a fault proxy (no restarts).  The exit
status is 0 when txreconnect's audit is clean.

C{--metrics-port PORT} serves txreconnect's pool's metrics
(L{txreconnect.metrics}) at C{http://127.0.0.1:PORT/metrics} while the
drill runs, for a Prometheus or a C{curl} to watch them move through the
faults (needs C{pip install txreconnect[metrics]}).
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import traceback
from typing import Any, Dict, Generator, List, Optional, Tuple

from twisted.enterprise import adbapi
from twisted.internet import defer, task
from twisted.logger import globalLogBeginner

from txreconnect._drill import faults as _faults
from txreconnect._drill.audit import audit
from txreconnect._drill.output import Log, Screen
from txreconnect._drill.record import Record
from txreconnect._drill.report import table
from txreconnect._drill.server import SERVERS, ServerSite, drivers_of, proxied
from txreconnect._drill.site import Site
from txreconnect._drill.sqlite import SqliteSite
from txreconnect._drill.workload import Workload
from txreconnect.drivers import driver_class, known_drivers
from txreconnect.errors import ConfigurationError
from txreconnect.policy import FailFast, WaitForDatabase
from txreconnect.pool import ReconnectingConnectionPool
from txreconnect.testing import ServerNotAvailable, ThrowawayServer
from txreconnect.url import parse_url

__all__ = ["add_arguments", "run"]

_ADBAPI = "adbapi.ConnectionPool(cp_reconnect=True)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """
    Add the drill's options to C{parser}.
    """
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--spawn", choices=sorted(SERVERS),
        help="start a throwaway server of this kind (and restart it during the drill); "
        "default: SQLite in a temporary file",
    )
    where.add_argument(
        "--url", metavar="URL",
        help="drill your server, postgresql://user:pw@host:port/db or mysql://... (any URL "
        "ReconnectingConnectionPool.from_url takes, with a TCP host), through a fault proxy: "
        "no restarts; the drill's tables are dropped at the end",
    )
    parser.add_argument(
        "--driver", help="with --spawn, the DB-API driver: %s (the first is the default; with --url, "
        "the URL's scheme says)" % ("; ".join(
            "%s for %s" % (" or ".join(drivers_of(family)), spawn) for spawn, (_, family) in SERVERS.items()
        ),),
    )
    parser.add_argument(
        "--compare", action="store_true",
        help="run stock %s beside it, through the same faults" % (_ADBAPI,),
    )
    parser.add_argument("--duration", type=_positive(float), default=10.0, metavar="SECONDS",
                        help="how long the workload runs (default: 10)")
    parser.add_argument("--concurrency", type=_positive(int), default=4, metavar="N",
                        help="concurrent clients per pool (default: 4)")
    parser.add_argument("--wait", type=_positive(float), metavar="SECONDS",
                        help="give txreconnect's pool cp_policy=WaitForDatabase(deadline=SECONDS): calls "
                        "wait out an outage instead of failing fast (the default, FailFast()), and "
                        "cp_resolve_commits=True on PostgreSQL and MySQL: a lost COMMIT is resolved")
    parser.add_argument("--seed", type=int, help="repeat a fault schedule (default: a random one, shown)")
    parser.add_argument("--log", metavar="FILE", help="write the log (the pools' warnings, adbapi's "
                        "tracebacks) to FILE; by default it is only counted")
    parser.add_argument("--metrics-port", type=_port, metavar="PORT",
                        help="serve txreconnect's pool's Prometheus metrics at http://127.0.0.1:PORT/metrics "
                        "while the drill runs (needs pip install txreconnect[metrics])")


def _positive(kind: Any) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError("must be more than 0: %r" % (text,))
        return value

    return parse


def _port(text: str) -> int:
    if not (text.isdigit() and 0 < int(text) <= 65535):
        raise argparse.ArgumentTypeError("must be a TCP port (1 to 65535), not %r" % (text,))
    return int(text)


def _serve_metrics(reactor: Any, port: int) -> Any:
    """
    Serve the default C{prometheus_client} registry at
    C{http://127.0.0.1:port/metrics}.

    @return: the L{PoolCollector <txreconnect.metrics.PoolCollector>} of
        that registry, to add the pool to.
    @raise ImportError: C{prometheus_client} is not installed; the
        message says what to install.
    @raise ConfigurationError: the port cannot be listened on.
    """
    from prometheus_client.twisted import MetricsResource
    from twisted.internet.error import CannotListenError
    from twisted.web import resource, server

    from txreconnect import metrics

    root = resource.Resource()
    root.putChild(b"metrics", MetricsResource())
    try:
        reactor.listenTCP(port, server.Site(root), interface="127.0.0.1")
    except CannotListenError as error:
        raise ConfigurationError("--metrics-port %d: cannot listen on 127.0.0.1 (%s)" % (port, error.socketError))
    collector = metrics.PoolCollector()
    return collector.register()


def run(options: argparse.Namespace) -> int:
    """
    Run a drill.

    @param options: the options of L{add_arguments}.
    @return: the exit status: 0 if txreconnect's audit is clean, 1 if
        not, 2 if the drill could not run, 130 if interrupted.
    """
    from twisted.internet import reactor

    log = Log(options.log)
    globalLogBeginner.beginLoggingTo([log], redirectStandardIO=False)
    seed = options.seed if options.seed is not None else random.randrange(10000)
    server: Optional[ThrowawayServer] = None
    site: Optional[Site] = None
    try:
        driver, connect_kwargs, pool_kwargs = _where(options)
        collector = None
        if options.metrics_port is not None:
            try:
                collector = _serve_metrics(reactor, options.metrics_port)
            except ImportError as error:
                raise ImportError("--metrics-port needs prometheus_client (%s): pip install txreconnect[metrics]"
                                  % (error,))
        if options.spawn:
            server = SERVERS[options.spawn][0]()
            print("starting a throwaway %s server..." % (server.product,), flush=True)
            _start(server)
        site = _site(reactor, driver, connect_kwargs, server)
        if options.wait is not None:
            pool_kwargs["cp_policy"] = WaitForDatabase(deadline=options.wait)
            # Ask the database about a lost COMMIT too, where the driver can.
            if driver_class(driver).commit_markers:
                pool_kwargs["cp_resolve_commits"] = True
        outcome: Dict[str, int] = {}
        try:
            task.react(_main, (site, options, pool_kwargs, seed, log, outcome, collector))
        except SystemExit:
            pass
        if "code" not in outcome:
            print("\ninterrupted", flush=True)
            return 130
        return outcome["code"]
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
        return 130
    except (ImportError, ServerNotAvailable, ConfigurationError) as error:
        sys.stderr.write("txreconnect drill: %s\n" % (error,))
        return 2
    finally:
        if site is not None:
            site.destroy()
        if server is not None:
            server.destroy()


def _start(server: ThrowawayServer) -> None:
    """
    Start C{server}, holding Ctrl-C back until it is up or has failed, so
    that it is never left half made (a directory without its finalizer, an
    initialisation tool still writing into it) for L{ThrowawayServer.destroy}.

    @raise KeyboardInterrupt: Ctrl-C was pressed meanwhile.
    """
    held: List[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        server.start()
    except Exception:
        if not held:
            raise
    finally:
        signal.signal(signal.SIGINT, previous)
    if held:
        raise KeyboardInterrupt()


def _where(options: argparse.Namespace) -> Tuple[str, Dict[str, Any], Dict[str, Any]]:
    """
    @return: the driver's name, its C{connect()} keywords for a server
        given by C{--url}, and the C{cp_*} options of the URL.
    @raise ConfigurationError: a bad URL or driver.
    @raise ImportError: the driver is not installed; the message says
        what to install.
    """
    connect_kwargs: Dict[str, Any] = {}
    pool_kwargs: Dict[str, Any] = {}
    if options.url:
        if options.driver:
            examples = ["%s+%s://..." % (cls.url_schemes[0], cls.name.lower())
                        for cls in known_drivers() if proxied(cls.name) and not cls.url_default]
            raise ConfigurationError("with --url, the URL's scheme names the driver (%s), not --driver"
                                     % (", ".join(examples),))
        parsed = parse_url(options.url)
        driver, connect_kwargs, pool_kwargs = parsed.dbapi_name, dict(parsed.connect_kwargs), dict(parsed.pool_kwargs)
        known = driver_class(driver)
        host = str(connect_kwargs.get(known.keywords["host"], "")) if proxied(driver) else ""
        if not host or "/" in host or "," in host:
            raise ConfigurationError("--url must name one PostgreSQL or MySQL server by its TCP host: "
                                     "the drill puts a fault proxy in front of it")
        connect_kwargs.setdefault(known.keywords["port"], known.default_port)
    else:
        choices = drivers_of(SERVERS[options.spawn][1]) if options.spawn else [SqliteSite.driver]
        driver = options.driver or choices[0]
        if driver not in choices:
            raise ConfigurationError("--driver must be one of %s here, not %r" % (", ".join(choices), driver))
    try:
        __import__(driver)
    except ImportError as e:
        raise ImportError("the %s driver is not installed (%s); install %s"
                          % (driver, e, driver_class(driver).install_hint or driver))
    return driver, connect_kwargs, pool_kwargs


def _site(reactor: Any, driver: str, connect_kwargs: Dict[str, Any], server: Optional[ThrowawayServer]) -> Site:
    if server is not None:
        description = "a throwaway %s %s server (%s, through a fault proxy)" % (
            server.product, server.version.split("-")[0].split()[0], driver)
        return ServerSite(reactor, driver, server.connect_kwargs(driver), description, server)
    if connect_kwargs:
        keywords = driver_class(driver).keywords
        description = "%s:%s, database %s (%s, through a fault proxy)" % (
            connect_kwargs[keywords["host"]], connect_kwargs[keywords["port"]],
            connect_kwargs.get(keywords["database"], "(default)"), driver)
        return ServerSite(reactor, driver, connect_kwargs, description)
    return SqliteSite(reactor)


@defer.inlineCallbacks
def _main(
    reactor: Any,
    site: Site,
    options: argparse.Namespace,
    pool_kwargs: Dict[str, Any],
    seed: int,
    log: Log,
    outcome: Dict[str, int],
    collector: Any = None,
) -> Generator[Any, Any, None]:
    try:
        code = yield _drill(reactor, site, options, pool_kwargs, seed, log, collector)
    except Exception:
        sys.stderr.write("txreconnect drill failed:\n" + traceback.format_exc())
        code = 2
    outcome["code"] = code


@defer.inlineCallbacks
def _drill(
    reactor: Any,
    site: Site,
    options: argparse.Namespace,
    pool_kwargs: Dict[str, Any],
    seed: int,
    log: Log,
    collector: Any = None,
) -> Generator[Any, Any, int]:
    screen = Screen(sys.stdout.isatty())
    kinds = sorted(site.faults)
    screen.line("txreconnect drill on %s" % (site.description,))
    screen.line("  %g s of reads and writes by %d clients per pool; faults: %s; seed %d"
                % (options.duration, options.concurrency, ", ".join(kinds), seed))
    ours = dict(pool_kwargs, cp_policy=pool_kwargs.get("cp_policy", FailFast()))
    screen.line("  txreconnect: ReconnectingConnectionPool(%s)" % (
        ", ".join("%s=%r" % kv for kv in sorted(ours.items()) if kv[0] not in ("cp_min", "cp_max")),))
    if options.compare:
        screen.line("  adbapi: %s" % (_ADBAPI,))
    pools: List[Tuple[Any, Record, Workload]] = []
    makers: List[Tuple[str, Any, Dict[str, Any]]] = [("txreconnect", ReconnectingConnectionPool, ours)]
    if options.compare:
        makers.append(("adbapi", adbapi.ConnectionPool, {"cp_reconnect": True}))
    for label, make, extra in makers:
        target = site.add_target(label)
        yield site.create_table(target)
        kwargs = dict(extra, cp_min=1, cp_max=options.concurrency, **target.connkw)
        pool = make(site.driver, *target.connargs, **kwargs)
        if collector is not None and isinstance(pool, ReconnectingConnectionPool):
            collector.add(pool, label)
            screen.line("  metrics: http://127.0.0.1:%d/metrics (pool name %r)" % (options.metrics_port, label))
        record = Record(label)
        pools.append((pool, record, Workload(reactor, pool, target.sql, record, options.concurrency, seed)))

    start = reactor.seconds()
    phase = ["warming up"]

    def elapsed() -> str:
        return "%6.1f s" % (reactor.seconds() - start,)

    def announce(fault: _faults.Fault) -> None:
        if not fault.ended:
            phase[0] = "injecting: " + fault.kind
            return
        took = fault.ended - fault.started
        screen.line("%s  %-8s %s%s" % (elapsed(), fault.kind, fault.detail,
                                       " (took %.2f s)" % (took,) if took >= 0.05 else ""))
        phase[0] = "after " + fault.kind

    def progress() -> None:
        screen.status("%s  %-20s %s" % (elapsed(), phase[0], "   ".join(
            "%s: %d ok, %d failed" % (r.label, r.succeeded, r.failed) for _, r, _ in pools)))

    site.announce = lambda text: screen.line("%s  %s" % (elapsed(), text))
    ticker = task.LoopingCall(progress)
    if screen.live:
        ticker.start(0.2)
    clients = [workload.start() for _, _, workload in pools]
    schedule = _faults.plan(kinds, options.duration, seed)
    done = yield _faults.inject_all(reactor, schedule, start, site.inject, announce)
    phase[0] = "recovering"
    until = max(start + options.duration, reactor.seconds() + _faults.COOLDOWN)
    yield task.deferLater(reactor, until - reactor.seconds(), lambda: None)
    for _, _, workload in pools:
        workload.stop()
    yield defer.gatherResults(clients, consumeErrors=True)
    end = reactor.seconds()
    if ticker.running:
        ticker.stop()
    screen.done()

    for (pool, record, _), target in zip(pools, site.targets):
        record.stats = pool.stats() if isinstance(pool, ReconnectingConnectionPool) else None
        pool.close()
        record.audit = audit(record.writes, (yield site.stored(target)))
        if site.drop_tables:
            yield site.drop_table(target)
    yield site.stop()

    record = pools[0][1]
    screen.line()
    for line in table([record for _, record, _ in pools], done, end):
        screen.line(line)
    screen.line()
    screen.line("failed calls: those that ended between the fault and the next one.")
    screen.line("recovery: from the fault to the end of the first successful call made after it.")
    screen.line("downtime: from each failed call to the next successful one, summed.")
    screen.line(log.summary())
    verdict = record.audit
    assert verdict is not None
    screen.line("txreconnect: audit %s (%d lost, %d duplicate rows; %d stored after an error); "
                "--seed %d repeats this fault schedule" % ("clean" if verdict.clean else "NOT CLEAN", verdict.lost,
                                                           verdict.duplicate, verdict.stored_after_error, seed))
    return 0 if verdict.clean else 1

