"""
The benchmark command::

    .venv/bin/python -m bench [--smoke] [--only overhead|resolve_cost|recovery|first_success|resources|overload] [--out DIR]

It starts its own throwaway PostgreSQL and MariaDB servers (on free
loopback ports, in temporary directories), runs the sections, prints
markdown tables, and writes them with the raw numbers (JSON) and the
pictures (PNG) into C{bench/results/} (with C{--smoke}: only into
C{--out}, if given).  The servers are destroyed at the end, also on an
error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from typing import Any, List, Optional, Sequence

from twisted.internet import defer, task
from twisted.logger import globalLogBeginner, jsonFileLogObserver

from bench import first_success, overhead, overload, plot, recovery, resolve_cost, resources
from bench._common import Report, Settings, Target, machine_line
from bench._render import json_safe, markdown_file
from txreconnect.testing import MariaDBServer, PostgresServer, ServerNotAvailable, required

__all__ = ["main"]

SECTIONS = ("overhead", "resolve_cost", "recovery", "resources", "overload")

#: sections that only run when asked for (C{--only}): a part of another
#: section, measured alone
PARTS = ("first_success",)

#: where the results go by default
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


#: The benchmark's MariaDB neither saves its buffer pool's page list at
#: shutdown nor loads it back at startup (InnoDB's default does both).  The
#: load runs in the background after the server accepts connections again
#: and slows its first queries, for any client, by as much as the pages
#: the last run happened to touch: it would measure InnoDB's warm-up after
#: each restart, not the clients (README, "Recovery at the speed of a
#: connect").
_MARIADB_SETTINGS = {
    "innodb-buffer-pool-dump-at-shutdown": "OFF",
    "innodb-buffer-pool-load-at-startup": "OFF",
}


def _targets(wanted: Sequence[str]) -> List[Target]:
    """
    Start the servers (in this, the main, thread: a server started here is
    killed by the kernel if this process dies without cleaning up).

    A server that is not installed is skipped with a message, except in
    CI (C{CI=true} or C{TXRECONNECT_REQUIRE_ALL=1}), where it is an error.
    """
    targets: List[Target] = []
    for key, server_class, driver, settings in (
        ("postgres", PostgresServer, "psycopg2", {}),
        ("mariadb", MariaDBServer, "pymysql", _MARIADB_SETTINGS),
    ):
        if key not in wanted:
            continue
        server = server_class(settings=settings)
        targets.append(Target(key, "", driver, server))
        try:
            __import__(driver)
            server.start()
        except (ServerNotAvailable, ImportError) as e:
            targets.pop()
            server.destroy()
            if required():
                raise
            print("skipped %s: %s" % (key, e), flush=True)
            continue
        major = server.version.split()[0].split("-")[0]
        targets[-1].label = "%s %s (%s)" % (server.product, major, driver)
    if "sqlite" in wanted:
        targets.append(Target("sqlite", "SQLite :memory: (sqlite3)", "sqlite3"))
    return targets


def _write(out: str, report: Report, header: str) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, report.name + ".md"), "w") as f:
        f.write(markdown_file(header, report.markdown))
    with open(os.path.join(out, report.name + ".json"), "w") as f:
        json.dump(json_safe({"machine": header, **report.data}), f, indent=1, sort_keys=True)
        f.write("\n")


@defer.inlineCallbacks
def _run(reactor: Any, args: argparse.Namespace, settings: Settings, targets: List[Target], header: str) -> Any:
    sections = {
        "overhead": overhead.run,
        "resolve_cost": resolve_cost.run,
        "recovery": recovery.run,
        "first_success": first_success.section,
        "resources": resources.run,
        "overload": overload.run,
    }
    for name in args.only or SECTIONS:
        started = time.monotonic()
        print("\n## %s\n" % (name,), flush=True)
        try:
            report = yield sections[name](settings, targets)
        except BaseException:
            # task.react would only log it, and the log goes nowhere.
            traceback.print_exc()
            raise
        print("(%s took %.0f s)" % (name, time.monotonic() - started), flush=True)
        if args.out:
            _write(args.out, report, header)
            for path in plot.draw(report, args.out):
                print("wrote %s" % (os.path.relpath(path),), flush=True)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """
    Parse the arguments, start the servers, run the sections and destroy
    the servers, whatever happens.
    """
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark ReconnectingConnectionPool against adbapi.ConnectionPool, side by side, "
        "on throwaway PostgreSQL and MariaDB servers and sqlite3.",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny counts: check that it runs (numbers meaningless)")
    parser.add_argument("--only", action="append", choices=SECTIONS + PARTS, help="run only this section (repeatable; first_success: that part of recovery alone)")
    parser.add_argument(
        "--out",
        default=None,
        help="write markdown, JSON and PNG here (default: bench/results, or nowhere with --smoke)",
    )
    parser.add_argument("--log", default=None, help="write the pools' log events (JSON lines) to this file")
    args = parser.parse_args(argv)
    if args.out is None and not args.smoke:
        args.out = RESULTS
    settings = Settings.smoke_test() if args.smoke else Settings.full()

    # Begin logging at once: otherwise Twisted keeps every event in memory
    # (which would show in the resources section) and prints errors, such
    # as adbapi's "Rollback failed" tracebacks, on stderr.
    observers: List[Any] = [jsonFileLogObserver(open(args.log, "a"))] if args.log else [lambda event: None]
    globalLogBeginner.beginLoggingTo(observers, discardBuffer=True, redirectStandardIO=False)

    started = time.monotonic()
    targets: List[Target] = []
    status = 1
    try:
        targets = _targets(("postgres", "mariadb", "sqlite"))
        header = "Measured %s%s." % (machine_line(targets), " (SMOKE: tiny counts, numbers meaningless)" if args.smoke else "")
        print(header, flush=True)
        try:
            task.react(_run, (args, settings, targets, header))
        except SystemExit as e:
            status = e.code if isinstance(e.code, int) else 1
    except BaseException:
        traceback.print_exc()
        status = 1
    finally:
        for target in targets:
            if target.server is not None:
                target.server.destroy()
    print("\nbench: %s in %.0f s; servers destroyed" % ("done" if status == 0 else "FAILED", time.monotonic() - started), flush=True)
    sys.exit(status)
