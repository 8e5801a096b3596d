"""
The C{txreconnect} command.

C{txreconnect smoke [postgres|mariadb]} starts a throwaway server, connects
a pool to it, runs a few interactions across a server restart, and says
what happened at each step.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from twisted.enterprise import adbapi
from twisted.internet import defer, task, threads

from txreconnect.testing import MariaDBServer, PostgresServer, ThrowawayServer

_SERVERS: Dict[str, Tuple[Callable[[], ThrowawayServer], str]] = {
    "postgres": (PostgresServer, "psycopg2"),
    "mariadb": (MariaDBServer, "pymysql"),
}


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _pool_class() -> Callable[..., adbapi.ConnectionPool]:
    return adbapi.ConnectionPool


@defer.inlineCallbacks
def _smoke(reactor: Any, which: str) -> Any:
    factory, driver = _SERVERS[which]
    server = factory()
    try:
        yield threads.deferToThread(server.start)
        _say("started %r" % (server,))
        pool_class = _pool_class()
        pool = pool_class(driver, cp_min=1, cp_max=2, **server.connect_kwargs(driver))
        _say("opened %s.%s(%r, cp_max=2)" % (pool_class.__module__, pool_class.__name__, driver))
        try:
            yield pool.runOperation("CREATE TABLE smoke (id INTEGER PRIMARY KEY, note VARCHAR(40))")
            yield pool.runOperation("INSERT INTO smoke VALUES (1, 'before restart')")
            rows = yield pool.runQuery("SELECT id, note FROM smoke")
            _say("runQuery -> %r" % (list(map(tuple, rows)),))
            yield threads.deferToThread(server.restart)
            _say("restarted the server: every pooled connection is now dead")
            for attempt in (1, 2):
                try:
                    rows = yield pool.runQuery("SELECT count(*) FROM smoke")
                except Exception as e:
                    _say("runQuery after restart #%d -> %s: %s" % (attempt, type(e).__name__, str(e).strip().splitlines()[0]))
                else:
                    _say("runQuery after restart #%d -> %r" % (attempt, list(map(tuple, rows))))
        finally:
            pool.close()
            _say("closed the pool")
    finally:
        server.destroy()
        _say("destroyed the server (no process or directory left)")


def main(argv: Optional[Sequence[str]] = None) -> None:
    """
    Entry point of the C{txreconnect} console script.

    @param argv: the arguments, without the program name (default:
        C{sys.argv[1:]}).
    """
    parser = argparse.ArgumentParser(prog="txreconnect", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    smoke = commands.add_parser("smoke", help="run a pool against a throwaway server, across a restart")
    smoke.add_argument("server", nargs="?", choices=sorted(_SERVERS), default="postgres")
    args = parser.parse_args(argv)
    task.react(_smoke, (args.server,))


__all__: List[str] = []
