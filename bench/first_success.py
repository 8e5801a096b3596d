"""
Recovery at the speed of a connect: in wait mode, how long after the
server accepts connections again does the first call succeed?

For each database, a pool with C{WaitForDatabase} under load (callers
writing back to back) meets a series of restarts.  The moment the server
accepts connections again is measured outside the pool and outside this
process: a probe process that connects every millisecond (PyMySQL with
C{ssl_disabled=True}, so that its own connect is quick) and reports when
its first session after the stop opened; the pool's own first success
counts too, if it came first.  Against it:

  - I{before}: C{WaitForDatabase(fast_probe_interval=None)} (backoff with
    full jitter after every failure) and a C{pool.dbapi} replaced by a
    pass-through wrapper, so that PyMySQL builds its TLS context on every
    connect, as before issue 14;
  - I{after}: C{WaitForDatabase()} with its defaults.

The I{connect floor} is the median time of a plain successful connect
made as each pool makes them (the same driver and keywords), and the
connect attempts per second against the stopped server are the pool's
own C{connect_attempts} between the stop and the start.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

from twisted.internet import defer

from bench._common import (
    Contender,
    CountingDBAPI,
    Report,
    Settings,
    Target,
    clock,
    in_thread,
    make_pool,
    quantile,
    sleep,
    warm,
)
from bench._render import fmt_ms, markdown_table
from bench.recovery import TIMEOUT, _create_table, _probe, _reactor, _writer, load
from txreconnect import ReconnectingConnectionPool, WaitForDatabase

__all__ = ["run"]

#: a deadline, so that nothing in the benchmark can wait for ever
_DEADLINE = 60

BEFORE = Contender(
    "before",
    "before: WaitForDatabase(fast_probe_interval=None), a TLS context per connect",
    ReconnectingConnectionPool,
    {"cp_policy": WaitForDatabase(deadline=_DEADLINE, fast_probe_interval=None)},
)
AFTER = Contender(
    "after",
    "after: WaitForDatabase() (defaults)",
    ReconnectingConnectionPool,
    {"cp_policy": WaitForDatabase(deadline=_DEADLINE)},
)

#: how many plain connects measure the floor
_FLOOR_CONNECTS = 30


def _floor(pool: Any, n: int) -> float:
    """
    @return: the median seconds of C{n} successful connects made as
        C{pool} makes them (its driver, its keywords, its C{dbapi}).
    """
    times = []
    for _ in range(n):
        started = clock()
        conn = pool._driver.connect(pool.connargs, dict(pool.connkw), pool.dbapi.connect)
        times.append(clock() - started)
        conn.close()
    return quantile(times, 0.5)


def _quick_probe_kwargs(target: Target) -> Dict[str, Any]:
    """
    @return: keywords that make the probe's own connect quick (it only
        tells when the server accepts sessions).
    """
    return {"ssl_disabled": True} if target.driver == "pymysql" else {}


@defer.inlineCallbacks
def _series(settings: Settings, target: Target, contender: Contender, restarts: int) -> Any:
    """
    One pool under load through C{restarts} restarts.

    @return: the raw numbers: per restart, the first success after the
        server accepted connections again and the attempts per second
        while it was stopped; the floor; failed calls.
    """
    server = target.server
    assert server is not None
    run = "%s-first-%s" % (target.key, contender.key)
    pool = make_pool(contender, target, settings.recovery_cp_max)
    if contender is BEFORE:
        # A wrapper: PyMySQL's own connect, called as a replaced dbapi is.
        pool.dbapi = CountingDBAPI(pool.dbapi)
    firsts: List[float] = []
    rates: List[float] = []
    try:
        yield warm(pool)
        floor = yield in_thread(_floor, pool, 3 if settings.smoke else _FLOOR_CONNECTS)
        until = [clock() + TIMEOUT * restarts]
        records: List[Any] = []
        running = load(pool, _writer(target), run, settings.callers, until, records)
        for _ in range(restarts):
            yield sleep(settings.load_before)
            accepting = _probe(target, TIMEOUT / 2, _quick_probe_kwargs(target), 0.001)
            yield in_thread(server.stop)
            down_at = clock()
            stopped_attempts = pool.stats()["connect_attempts"]
            yield sleep(settings.outage)
            start_at = clock()
            rates.append((pool.stats()["connect_attempts"] - stopped_attempts) / (start_at - down_at))
            yield in_thread(server.start)
            probed = yield accepting
            # Wait for the pool's first success (the load's records are
            # read when it ends: a shared list, appended in the reactor).
            deadline = clock() + TIMEOUT
            while clock() < deadline and not any(r[2] and r[1] > down_at for r in records):
                yield sleep(0.01)
            ok = sorted(r[1] for r in records if r[2] and r[1] > down_at)
            if ok:
                back_at = min(probed, ok[0])
                firsts.append(ok[0] - back_at)
            yield sleep(settings.load_after)
        until[0] = clock()
        yield running.addTimeout(TIMEOUT, _reactor())
    finally:
        pool.close()
    return {
        "firsts": firsts,
        "rates": rates,
        "floor": floor,
        "calls": len(records),
        "failed": sum(1 for r in records if not r[2]),
        "restarts": restarts,
    }


@defer.inlineCallbacks
def run(report: Report, settings: Settings, targets: Sequence[Target]) -> Any:
    """
    Add the table to C{report} (and the raw numbers to its data).
    """
    restarts = 1 if settings.smoke else 20
    rows = []
    raw: Dict[str, Any] = {}
    for target in targets:
        yield in_thread(_create_table, target)
        for contender in (BEFORE, AFTER):
            result = yield _series(settings, target, contender, restarts)
            raw.setdefault(target.key, {})[contender.key] = result
            firsts = result["firsts"]
            rows.append(
                [
                    target.label,
                    contender.label,
                    "%d / %d" % (len(firsts), restarts),
                    fmt_ms(quantile(firsts, 0.5)) if firsts else "never",
                    fmt_ms(max(firsts)) if firsts else "never",
                    fmt_ms(result["floor"]),
                    fmt_ms(quantile(firsts, 0.5) - result["floor"]) if firsts else "—",
                    "%.0f" % (quantile(result["rates"], 0.5),),
                    "%d / %d" % (result["failed"], result["calls"]),
                ]
            )
            print("  %s first success %s: done" % (target.key, contender.key), flush=True)
    report.add(
        "#### First success after a restart, in wait mode\n\n"
        "%d callers write back to back on a pool with cp_max=%d and "
        "`WaitForDatabase`; the server restarts %d times (down %g s each "
        "time). *First success*: from the moment the server accepts "
        "sessions again (a process that connects every millisecond, or "
        "the pool itself if it was first) to the pool's first successful "
        "call, median and worst over the restarts. *Connect floor*: the "
        "median time of a plain successful connect made as the pool "
        "makes them. *Attempts/s*: the pool's connect attempts per second "
        "while the server was stopped (median over the restarts).\n\n"
        % (settings.callers, settings.recovery_cp_max, restarts, settings.outage)
        + markdown_table(
            [
                "database",
                "pool",
                "restarts with a success",
                "first success: median",
                "worst",
                "connect floor",
                "median − floor",
                "attempts/s while stopped",
                "failed calls",
            ],
            rows,
        )
    )
    report.data["first_success"] = raw
