"""
The C{txreconnect} command.

C{txreconnect drill [options]} runs a workload through a
L{ReconnectingConnectionPool} while faults are injected under it, and
audits every write (L{txreconnect.drill}).

C{txreconnect smoke [postgres|mariadb]} starts a throwaway server, then
connects stock C{adbapi.ConnectionPool} and L{ReconnectingConnectionPool}
to it in turn, runs a few interactions across a server restart, and says
what happened at each step.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, List, Optional, Sequence, TextIO

from twisted.enterprise import adbapi
from twisted.internet import defer, task, threads
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from txreconnect import drill
from txreconnect._drill.server import SERVERS, drivers_of
from txreconnect.pool import ReconnectingConnectionPool
from txreconnect.testing import ThrowawayServer


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@defer.inlineCallbacks
def _across_restart(server: ThrowawayServer, driver: str, pool_class: Callable[..., adbapi.ConnectionPool]) -> Any:
    name = "%s.%s" % (pool_class.__module__, pool_class.__name__)
    pool = pool_class(driver, cp_min=1, cp_max=2, **server.connect_kwargs(driver))
    _say("\n%s(%r, cp_max=2):" % (name, driver))
    try:
        yield pool.runOperation("DROP TABLE IF EXISTS smoke")
        yield pool.runOperation("CREATE TABLE smoke (id INTEGER PRIMARY KEY, note VARCHAR(40))")
        yield pool.runOperation("INSERT INTO smoke VALUES (1, 'before restart')")
        rows = yield pool.runQuery("SELECT id, note FROM smoke")
        _say("  runQuery -> %r" % (list(map(tuple, rows)),))
        yield threads.deferToThread(server.restart)
        _say("  restarted the server: every pooled connection is now dead")
        for attempt in (1, 2, 3):
            try:
                rows = yield pool.runQuery("SELECT count(*) FROM smoke")
            except Exception as e:
                _say("  runQuery after restart #%d -> %s" % (attempt, _first_line(e)))
            else:
                _say("  runQuery after restart #%d -> %r" % (attempt, list(map(tuple, rows))))
    finally:
        pool.close()
    stats = getattr(pool, "stats", None)
    if stats is not None:
        _say("  stats: %s" % (", ".join("%s=%g" % kv for kv in sorted(stats().items()) if kv[1]),))


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return "%s: %s" % (type(error).__name__, lines[0] if lines else "")


@defer.inlineCallbacks
def _smoke(reactor: Any, which: str) -> Any:
    factory, family = SERVERS[which]
    driver = drivers_of(family)[0]
    server = factory()
    try:
        yield threads.deferToThread(server.start)
        _say("started %r" % (server,))
        yield _across_restart(server, driver, adbapi.ConnectionPool)
        yield _across_restart(server, driver, ReconnectingConnectionPool)
    finally:
        server.destroy()
        _say("\ndestroyed the server (no process or directory left)")


def main(argv: Optional[Sequence[str]] = None) -> None:
    """
    Entry point of the C{txreconnect} console script.

    @param argv: the arguments, without the program name (default:
        C{sys.argv[1:]}).
    """
    parser = argparse.ArgumentParser(prog="txreconnect", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    drill_parser = commands.add_parser(
        "drill",
        help="run a workload while faults are injected, then audit every write",
        description="Run reads and writes through a ReconnectingConnectionPool while faults are "
        "injected under it (killed sessions, restarts, dropped and reset connections, a COMMIT "
        "cut), then report what the clients saw and audit every write.",
    )
    drill.add_arguments(drill_parser)
    smoke = commands.add_parser("smoke", help="run a pool against a throwaway server, across a restart")
    smoke.add_argument("server", nargs="?", choices=sorted(SERVERS), default="postgres")
    args = parser.parse_args(argv)
    if args.command == "drill":
        raise SystemExit(drill.run(args))
    _log_warnings_to(sys.stderr)
    task.react(_smoke, (args.server,))


def _log_warnings_to(stream: TextIO) -> None:
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(stream), [predicate])],
        redirectStandardIO=False,
    )


__all__: List[str] = []
