"""
Recovery at the speed of a connect: in wait mode, how long after the
server accepts connections again does the first call succeed?

For each database, a pool with C{WaitForDatabase} under load (callers
writing back to back) meets a series of restarts.  The moment the server
accepts connections again is measured outside the pool and outside this
process: a probe process connects every millisecond (PyMySQL with
C{ssl_disabled=True}, so that its own connect is quick), and the start
of its first attempt that succeeded after the stop is the moment (the
attempt before it was refused about a millisecond earlier); that
attempt's handshake is not counted.  Against it:

  - I{before}: C{WaitForDatabase(fast_probe_interval=None)} (backoff with
    full jitter after every failure) and a C{pool.dbapi} replaced by a
    pass-through wrapper, so that PyMySQL builds its TLS context on every
    connect, as before issue 14;
  - I{after}: C{WaitForDatabase()} with its defaults.

In restarts of its own after the pools', with no pool connected (the
table as large as in the pools' last restarts), a L{RawClient} process
(the pool's driver and keywords, no pool) tries to connect, INSERT and
COMMIT every millisecond: the best any client could do on this server
and machine, which a fresh server's first sessions slow down for
everyone.  (Not beside the pool's restarts: on two cores, the pool's
reconnecting threads and the raw client would slow each other's
connects, each by whoever came first.)  The I{connect floor} is the
median time of a plain successful connect made as each pool makes them
(the same driver and keywords) on a warm server; the I{first connect}
is the raw client's connect to the fresh server; and the connect
attempts per second against the stopped server are the pool's own
C{connect_attempts} between the stop and the start.
"""

from __future__ import annotations

import json
import subprocess
import sys
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
from bench.recovery import INSERT, TIMEOUT, _create_table, _probe, _reactor, _writer, load
from txreconnect import ReconnectingConnectionPool, WaitForDatabase

__all__ = ["RawClient", "run", "section"]

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


_RAW_CLIENT = r"""
import json, sys, time
from txreconnect.drivers import driver_for
name, timeout, connkw, pause, insert, run = sys.argv[1:7]
connkw, pause = eval(connkw), float(pause)
module = __import__(name)
driver = driver_for(module)
print("ready", flush=True)
sys.stdin.readline()
deadline = time.perf_counter() + float(timeout)
seen_down = False
attempts = 0
i = 0
error = None
while time.perf_counter() < deadline:
    conn = None
    try:
        attempts += 1
        began = time.perf_counter()
        conn = driver.connect((), dict(connkw))
        session = time.perf_counter()
        driver.prepare(conn)
        if seen_down:
            i += 1
            cursor = conn.cursor()
            cursor.execute(insert, (run, i))
            inserted = time.perf_counter()
            conn.commit()
            done = time.perf_counter()
            print(json.dumps({"began": began, "session": session, "inserted": inserted, "done": done, "attempts": attempts}))
            sys.exit(0)
    except module.Error as e:
        seen_down, error = True, e
    if conn is not None:
        driver.close(conn)
    time.sleep(pause)
sys.exit("no success in time; the last error: %r" % (error,))
"""


class RawClient:
    """
    The best any client could do: a process with the pool's driver and
    keywords but no pool that, once told to L{go} (the server stopped),
    connects every millisecond until the server has refused once, then
    until a connect, the pool's INSERT and a COMMIT all succeed (a
    failure anywhere: again 1 ms later).  Outside this process, so that
    neither our GIL nor our reactor delays it.
    """

    def __init__(self, target: Target, connkw: Dict[str, Any], run: str, timeout: float) -> None:
        """
        Start the process (it imports its modules, then waits for L{go}).

        @param connkw: the pool's C{connect()} keywords.
        @param run: the C{run} column of its row.
        @param timeout: how long it may try after L{go}.
        """
        self._timeout = timeout
        self._process = subprocess.Popen(
            [sys.executable, "-c", _RAW_CLIENT, target.driver, str(timeout), repr(connkw), "0.001", target.sql(INSERT), run],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._label = target.label

    def ready(self) -> "defer.Deferred[Any]":
        """
        @return: a Deferred that fires once the process waits for L{go}.
        """
        stdout = self._process.stdout
        assert stdout is not None
        return in_thread(stdout.readline)

    def go(self) -> "defer.Deferred[Dict[str, float]]":
        """
        Start trying (the server was stopped).

        @return: a Deferred firing with the L{clock} times of the
            successful attempt's start, session, INSERT and COMMIT
            (C{began}, C{session}, C{inserted}, C{done}) and the attempts
            made.
        """
        process = self._process
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()

        def wait() -> Dict[str, float]:
            try:
                out, err = process.communicate(timeout=self._timeout + 10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                raise
            if process.returncode != 0:
                raise RuntimeError("the raw client on %s never succeeded: %s" % (self._label, err[-2000:]))
            return dict(json.loads(out))

        return in_thread(wait)


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
        server accepted connections again (C{firsts}) and the attempts
        per second while it was stopped; the floor; failed calls.
    """
    server = target.server
    assert server is not None
    run = "%s-first-%s" % (target.key, contender.key)
    pool: Any = make_pool(contender, target, settings.recovery_cp_max)
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
            accepting = _probe(target, TIMEOUT / 2, _quick_probe_kwargs(target), 0.001, attempt_start=True)
            yield in_thread(server.stop)
            down_at = clock()
            # Calls that end from now on are appended after this: the
            # wait below reads only those (reading every record, well over
            # 100,000 by the last restarts, every 10 ms would hold the GIL
            # for milliseconds at a time, and delay the pool's threads).
            since = len(records)
            stopped_attempts = pool.stats()["connect_attempts"]
            yield sleep(settings.outage)
            start_at = clock()
            rates.append((pool.stats()["connect_attempts"] - stopped_attempts) / (start_at - down_at))
            # Not server.start: its check that the server answers (a
            # client process spawned from this one) would compete with the
            # pool just as it reconnects; that check comes after.
            server.launch()
            back_at = yield accepting
            # Wait for the pool's first success (the load's records are
            # read when it ends: a shared list, appended in the reactor).
            deadline = clock() + TIMEOUT
            while clock() < deadline and not any(r[2] and r[1] > down_at for r in records[since:]):
                yield sleep(0.01)
            ok = sorted(r[1] for r in records[since:] if r[2] and r[1] > down_at)
            if ok:
                firsts.append(ok[0] - back_at)
            yield in_thread(server.wait_started)
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
def _raw_series(settings: Settings, target: Target, restarts: int) -> Any:
    """
    A L{RawClient} through C{restarts} restarts, with no pool connected.

    @return: per restart, the raw client's session, INSERT and COMMIT
        (C{session}, C{inserted}, C{done}), in seconds after the server
        accepted connections again.
    """
    server = target.server
    assert server is not None
    # The keywords a pool connects with (its defaults added), then no pool.
    pool: Any = make_pool(AFTER, target, settings.recovery_cp_max)
    connkw = dict(pool.connkw)
    pool.close()
    raws: List[Dict[str, float]] = []
    for i in range(restarts):
        accepting = _probe(target, TIMEOUT / 2, _quick_probe_kwargs(target), 0.001, attempt_start=True)
        client = RawClient(target, connkw, "%s-raw-%d" % (target.key, i), TIMEOUT / 2)
        yield client.ready()
        yield in_thread(server.stop)
        raw_done = client.go()
        yield sleep(settings.outage)
        server.launch()
        probed = yield accepting
        raw = yield raw_done
        yield in_thread(server.wait_started)
        # The server accepts from the earliest start of a connect attempt
        # that succeeded (the probe's or the raw client's).
        back_at = min(probed, raw["began"])
        raws.append({key: raw[key] - back_at for key in ("session", "inserted", "done")})
        yield sleep(settings.load_after)
    return raws


def _row(target: Target, contender: Contender, result: Dict[str, Any], raws: List[Dict[str, float]]) -> List[Any]:
    """
    @return: the table's row for one pool's series.
    """
    firsts = result["firsts"]
    raw = [r["done"] for r in raws]
    first_connect = [r["session"] for r in raws]
    restarts = result["restarts"]

    def ms(values: List[float], q: float) -> str:
        return fmt_ms(quantile(values, q)) if values else "—"

    return [
        target.label,
        contender.label,
        "%d / %d" % (len(firsts), restarts),
        ms(firsts, 0.5) if firsts else "never",
        ms(firsts, 1) if firsts else "never",
        ms(raw, 0.5),
        ms(raw, 1),
        fmt_ms(quantile(firsts, 0.5) - quantile(raw, 0.5)) if firsts and raw else "—",
        ms(first_connect, 0.5),
        fmt_ms(result["floor"]),
        fmt_ms(quantile(firsts, 0.5) - result["floor"]) if firsts else "—",
        fmt_ms(quantile(firsts, 1) - result["floor"]) if firsts else "—",
        "%.0f" % (quantile(result["rates"], 0.5),),
        "%d / %d" % (result["failed"], result["calls"]),
    ]


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
        results = []
        for contender in (BEFORE, AFTER):
            results.append((contender, (yield _series(settings, target, contender, restarts))))
            print("  %s first success %s: done" % (target.key, contender.key), flush=True)
        # After the pools: the raw client then restarts a server that has
        # seen as much (its table as large) as the pools' last restarts did.
        raws = yield _raw_series(settings, target, restarts)
        raw[target.key] = {"raw_client": raws}
        for contender, result in results:
            raw[target.key][contender.key] = result
            rows.append(_row(target, contender, result, raws))
    report.add(
        "#### First success after a restart, in wait mode\n\n"
        "%d callers write back to back on a pool with cp_max=%d and "
        "`WaitForDatabase`; the server restarts %d times (down %g s each "
        "time). *First success*: from the moment the server accepts "
        "connections again (the start of the first connect attempt that "
        "succeeded, of a process that tries every millisecond; the one "
        "before it was refused) to the end of the pool's first "
        "successful call, median and worst over the restarts. *Raw "
        "client*: the same for the best any client could do, in %d "
        "restarts of its own after the pools', with no pool connected: a process with the "
        "pool's driver and keywords but no pool that tries to connect, "
        "INSERT and COMMIT every millisecond; *pool − raw client*: the "
        "difference of the medians; *first connect*: the raw client's "
        "connect to the fresh server (median). *Connect floor*: the "
        "median time of a plain successful connect made as the pool "
        "makes them, on a warm server. *Attempts/s*: the "
        "pool's connect attempts per second while the server was stopped "
        "(median over the restarts).\n\n"
        % (settings.callers, settings.recovery_cp_max, restarts, settings.outage, restarts)
        + markdown_table(
            [
                "database",
                "pool",
                "restarts with a success",
                "first success: median",
                "worst",
                "raw client: median",
                "worst",
                "pool − raw client",
                "first connect",
                "connect floor",
                "median − floor",
                "worst − floor",
                "attempts/s while stopped",
                "failed calls",
            ],
            rows,
        )
    )
    report.data["first_success"] = raw


@defer.inlineCallbacks
def section(settings: Settings, targets: Sequence[Target]) -> Any:
    """
    This measurement alone (C{python -m bench --only first_success}).

    @return: (a Deferred firing with) the section's L{Report}.
    """
    report = Report("first_success")
    report.add("### Recovery at the speed of a connect")
    servers = [t for t in targets if t.server is not None and t.key in settings.recovery_databases]
    yield run(report, settings, servers)
    return report
