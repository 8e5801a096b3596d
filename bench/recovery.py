"""
Recovery: what callers see when the database goes away and comes back.

For each database, each pool (C{adbapi.ConnectionPool} with its defaults
and with C{cp_reconnect=True}, L{ReconnectingConnectionPool} with its
defaults, and for the load tests with C{WaitForDatabase}), a pool with
C{cp_max} connections, all opened first (warmed), meets:

  - events while idle, then a burst of writes: a server restart; every
    session terminated by an administrator; an idle timeout (the server
    restarted with a 1 s idle timeout, the pool left idle for 2 s); every
    connection dropped by a L{FaultProxy} between pool and server;
  - a restart under load: callers write back to back, the server stops,
    stays down for a while, and starts again.

Every call writes one row with a unique id into a table without a unique
key, so that a write stored twice shows up as a duplicate row.  The
pool's C{connect()} calls are counted (L{CountingDBAPI}), so connect
attempts against the down server are counted exactly, per pool.

Finally, with C{cp_max=50} and 50 callers, the timeline of connect
attempts across a longer outage shows how C{WaitForDatabase} spreads
them, against C{FailFast} and adbapi's C{cp_reconnect=True}.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from twisted.enterprise import adbapi
from twisted.internet import defer

from bench._common import (
    run_sql,
    ADBAPI,
    ADBAPI_RECONNECT,
    OURS,
    OURS_WAIT,
    Contender,
    CountingDBAPI,
    Report,
    Settings,
    Target,
    clock,
    in_thread,
    make_pool,
    quantile,
    rotation,
    sleep,
    warm,
)
from bench._render import fmt_ms, markdown_table
from txreconnect.testing import FaultProxy

__all__ = ["run"]

#: how long a caller waits after a failed call before the next one (a
#: client that retries at once, but not in a tight loop)
ERROR_PAUSE = 0.02



def _idle_settings(target: Target, seconds: float) -> Dict[str, Any]:
    """
    @return: the server settings for an idle timeout of C{seconds}
        (MariaDB's is a whole number of seconds, at least 1).
    """
    if target.key == "postgres":
        return {"idle_session_timeout": "%dms" % (seconds * 1000,)}
    return {"wait_timeout": max(1, int(round(seconds)))}

#: the width of the timeline bins (calls per second), and of the
#: connect-attempt bins of the jitter measurement (seconds)
BIN = 0.2
ATTEMPT_BIN = 0.05

#: no call, load or wait of this section may take longer (seconds)
TIMEOUT = 120.0

#: (t_start, t_end, ok, id, error class name)
Record = Tuple[float, float, bool, int, str]

_ids = itertools.count(1)


def _create_table(target: Target) -> None:
    run_sql(target, [
        "DROP TABLE IF EXISTS bench_writes",
        "CREATE TABLE bench_writes (run VARCHAR(64) NOT NULL, id BIGINT NOT NULL)",
    ])


def _stored(target: Target, run: str) -> Dict[int, int]:
    """
    @return: how many times each id of C{run} is stored (blocking).
    """
    conn = target.connect()
    try:
        cursor = conn.cursor()
        cursor.execute(
            target.sql("SELECT id, count(*) FROM bench_writes WHERE run = %s GROUP BY id"), (run,)
        )
        return {int(i): int(n) for i, n in cursor.fetchall()}
    finally:
        conn.close()


#: the write of every call (C{%s} placeholders: see L{Target.sql})
INSERT = "INSERT INTO bench_writes (run, id) VALUES (%s, %s)"


def _writer(target: Target) -> Callable[..., None]:
    insert = target.sql(INSERT)

    def write(txn: Any, run: str, i: int) -> None:
        txn.execute(insert, (run, i))

    return write


@defer.inlineCallbacks
def _call(pool: adbapi.ConnectionPool, write: Callable[..., None], run: str, records: List[Record]) -> Any:
    """
    One write with a new id; its outcome is appended to C{records}.

    @return: (a Deferred firing with) whether it succeeded.
    """
    i = next(_ids)
    started = clock()
    try:
        yield pool.runInteraction(write, run, i)
    except Exception as e:
        records.append((started, clock(), False, i, type(e).__name__))
        return False
    records.append((started, clock(), True, i, ""))
    return True


def burst(pool: adbapi.ConnectionPool, write: Callable[..., None], run: str, calls: int, inflight: int) -> "defer.Deferred[List[Record]]":
    """
    Make C{calls} writes, C{inflight} at a time, back to back (no pause
    after a failure: these are the calls that meet the broken pool).
    """
    records: List[Record] = []
    left = iter(range(calls))

    @defer.inlineCallbacks
    def lane() -> Any:
        for _ in left:
            yield _call(pool, write, run, records)

    d = defer.gatherResults([lane() for _ in range(inflight)], consumeErrors=True)
    return d.addCallback(lambda _: records)


def load(
    pool: adbapi.ConnectionPool,
    write: Callable[..., None],
    run: str,
    callers: int,
    until: List[float],
    records: Optional[List[Record]] = None,
) -> "defer.Deferred[List[Record]]":
    """
    C{callers} callers write back to back until C{until[0]} (L{clock}; it
    may be moved while they run), each pausing L{ERROR_PAUSE} after a
    failed call.

    @param records: where to append the calls' records as they end (a
        new list if not given).
    """
    if records is None:
        records = []

    @defer.inlineCallbacks
    def caller() -> Any:
        while clock() < until[0]:
            ok = yield _call(pool, write, run, records)
            if not ok:
                yield sleep(ERROR_PAUSE)

    d = defer.gatherResults([caller() for _ in range(callers)], consumeErrors=True)
    return d.addCallback(lambda _: records)


_PROBE = r"""
import sys, time
driver, deadline = sys.argv[1], time.perf_counter() + float(sys.argv[2])
kwargs = eval(sys.argv[3])
pause = float(sys.argv[4])
module = __import__(driver)
seen_down = False
while time.perf_counter() < deadline:
    try:
        conn = module.connect(**kwargs)
    except Exception:
        seen_down = True
        time.sleep(pause)
        continue
    at = time.perf_counter()
    conn.close()
    if seen_down:
        print(repr(at))
        sys.exit(0)
    time.sleep(pause)
sys.exit(1)
"""


def _probe(target: Target, timeout: float, pause: float = 0.002) -> "defer.Deferred[float]":
    """
    Start a process that connects (outside any pool, and outside this
    process, so that neither our GIL nor our reactor delays it) every
    C{pause} seconds (2 ms), waits for the server to refuse, then for it
    to accept again.

    @return: a Deferred firing with the L{clock} time (CLOCK_MONOTONIC,
        the same in every process) of the first session accepted after
        the server was seen down.
    """
    _, kwargs = target.connect_args()
    process = subprocess.Popen(
        [sys.executable, "-c", _PROBE, target.driver, str(timeout), repr(kwargs), str(pause)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )

    def wait() -> float:
        try:
            out, _ = process.communicate(timeout=timeout + 10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
        if process.returncode != 0:
            raise RuntimeError("%s did not accept connections again in time" % (target.label,))
        return float(out)

    return in_thread(wait)


def _checked(target: Target, run: str, records: Sequence[Record]) -> "defer.Deferred[Dict[str, int]]":
    """
    @return: duplicate rows (ids stored more than once) and acknowledged
        writes that are missing, and failed calls whose row was stored.
    """

    def check(stored: Dict[int, int]) -> Dict[str, int]:
        acked = {r[3] for r in records if r[2]}
        failed = {r[3] for r in records if not r[2]}
        return {
            "duplicate_rows": sum(n - 1 for n in stored.values() if n > 1),
            "acked_missing": len(acked - set(stored)),
            "failed_but_stored": len(failed & set(stored)),
        }

    return in_thread(_stored, target, run).addCallback(check)


def _latencies(records: Sequence[Record]) -> Dict[str, float]:
    times = [r[1] - r[0] for r in records]
    return {"p50": quantile(times, 0.5), "p99": quantile(times, 0.99)}


def _error_summary(errors: Dict[str, int]) -> str:
    """
    @return: e.g. C{"DisconnectionError 50, TransactionOutcomeUnknown 1"}.
    """
    return ", ".join("%s %d" % (name, n) for name, n in sorted(errors.items(), key=lambda kv: -kv[1])) or "—"


def _errors(records: Sequence[Record]) -> Dict[str, int]:
    found: Dict[str, int] = {}
    for r in records:
        if not r[2]:
            found[r[4]] = found.get(r[4], 0) + 1
    return found


# --- events while idle --------------------------------------------------------


@defer.inlineCallbacks
def _idle_event(
    settings: Settings, target: Target, event: str, contender: Contender, round_: int
) -> Any:
    """
    Warm a pool, inject C{event} while it is idle, then make a burst of
    writes.

    @return: the raw numbers of this run.
    """
    server = target.server
    assert server is not None
    proxy: Optional[FaultProxy] = None
    if event == "proxy_drop":
        proxy = FaultProxy(server.port)
        proxy.start()
    run = "%s-%s-%s-%d" % (target.key, event, contender.key, round_)
    write = _writer(target)
    pool = make_pool(contender, target, settings.recovery_cp_max, port=proxy.port if proxy else None, count=True)
    try:
        yield warm(pool)
        counter: CountingDBAPI = pool.dbapi
        before = len(counter.attempts)
        if event == "restart":
            yield in_thread(server.restart)
        elif event == "terminate":
            yield in_thread(server.terminate_sessions)
        elif event == "idle_timeout":
            yield sleep(settings.idle_for)
        elif event == "proxy_drop":
            assert proxy is not None
            yield proxy.drop()
        ready = clock()
        records = yield burst(pool, write, run, settings.burst_calls, settings.recovery_cp_max).addTimeout(
            TIMEOUT, _reactor()
        )
        connects = len(counter.attempts) - before
    finally:
        pool.close()
        if proxy is not None:
            yield proxy.stop()
    checked = yield _checked(target, run, records)
    successes = sorted(r[1] for r in records if r[2])
    return {
        "calls": len(records),
        "failed": sum(1 for r in records if not r[2]),
        "errors": _errors(records),
        "first_success": successes[0] - ready if successes else None,
        "latencies": [r[1] - r[0] for r in records],
        "connects": connects,
        **checked,
    }


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def _histogram(times: Sequence[float], width: float) -> Dict[str, Any]:
    """
    @return: how many of C{times} fall in each C{width}-wide bin, from
        the first bin that holds one to the last.
    """
    if not times:
        return {"width": width, "start": 0.0, "counts": []}
    first = int(min(times) // width)
    counts = [0] * (int(max(times) // width) - first + 1)
    for t in times:
        counts[int(t // width) - first] += 1
    return {"width": width, "start": first * width, "counts": counts}


def _first_success_cell(firsts: List[float], runs: int) -> str:
    """
    @param firsts: the time to the first success of each run that had one.
    @param runs: how many runs there were.
    """
    if not firsts:
        return "never"
    if len(firsts) < runs:
        return "%s (%d of %d runs)" % (fmt_ms(quantile(firsts, 0.5)), len(firsts), runs)
    return fmt_ms(quantile(firsts, 0.5))


def _merged(counts: Iterable[Dict[str, int]]) -> Dict[str, int]:
    total: Dict[str, int] = {}
    for count in counts:
        for key, n in count.items():
            total[key] = total.get(key, 0) + n
    return total


EVENTS = {
    "restart": "server restart",
    "terminate": "sessions terminated",
    "idle_timeout": "idle timeout",
    "proxy_drop": "proxy drops connections",
}


@defer.inlineCallbacks
def idle_events(report: Report, settings: Settings, targets: Sequence[Target]) -> Any:
    contenders = [ADBAPI, ADBAPI_RECONNECT, OURS]
    rows = []
    raw: Dict[str, Any] = {}
    for target in targets:
        server = target.server
        assert server is not None
        for event, label in EVENTS.items():
            if event == "idle_timeout":
                idle = _idle_settings(target, settings.idle_timeout)
                server.settings.update(idle)
                yield in_thread(server.restart)
            try:
                results: Dict[str, List[Dict[str, Any]]] = {c.key: [] for c in contenders}
                for r in range(settings.event_rounds):
                    for c in rotation(contenders, r):
                        result = yield _idle_event(settings, target, event, c, r)
                        results[c.key].append(result)
            finally:
                if event == "idle_timeout":
                    for key in idle:
                        server.settings.pop(key, None)
                    yield in_thread(server.restart)
            for c in contenders:
                runs = results[c.key]
                calls = sum(x["calls"] for x in runs)
                failed = sum(x["failed"] for x in runs)
                firsts = [x["first_success"] for x in runs if x["first_success"] is not None]
                latencies = [t for x in runs for t in x["latencies"]]
                rows.append(
                    [
                        target.label,
                        label,
                        c.label,
                        "%d / %d" % (failed, calls),
                        sum(x["duplicate_rows"] for x in runs),
                        _first_success_cell(firsts, len(runs)),
                        fmt_ms(quantile(latencies, 0.5)),
                        fmt_ms(quantile(latencies, 0.99)),
                        "%.1f" % (sum(x["connects"] for x in runs) / len(runs)),
                        _error_summary(_merged(x["errors"] for x in runs)),
                    ]
                )
                raw.setdefault(target.key, {}).setdefault(event, {})[c.key] = [
                    {k: v for k, v in x.items() if k != "latencies"}
                    | {"p50": quantile(x["latencies"], 0.5), "p99": quantile(x["latencies"], 0.99)}
                    for x in runs
                ]
            print("  %s %s: done" % (target.key, event), flush=True)
    report.add(
        "#### Events while idle, then a burst of writes\n\n"
        "A pool with cp_max=%d, every connection open; the event happens "
        "while it is idle; then %d writes, %d at a time (%d rounds per pool, "
        "in rotating order; counts are totals, times are medians over "
        "rounds; p50/p99 over every call of the bursts). *First success* "
        "counts from the moment the server accepts connections again (the "
        "restart returned; for the other events, the burst's start). "
        "*Connects* per run, by the pool's own `connect()` calls.\n\n"
        % (settings.recovery_cp_max, settings.burst_calls, settings.recovery_cp_max, settings.event_rounds)
        + markdown_table(
            [
                "database",
                "event",
                "pool",
                "failed calls",
                "duplicate rows",
                "first success after",
                "p50",
                "p99",
                "connects",
                "errors callers got",
            ],
            rows,
        )
    )
    report.data["idle_events"] = raw


# --- restart under load ---------------------------------------------------------


@defer.inlineCallbacks
def _under_load(
    target: Target,
    contender: Contender,
    cp_max: int,
    callers: int,
    before: float,
    outage: float,
    after: float,
    tag: str,
) -> Any:
    """
    C{callers} write back to back; after C{before} seconds the server
    stops, stays down C{outage} seconds, starts; the load goes on
    C{after} seconds more.

    @return: the raw numbers, times relative to the stop.
    """
    server = target.server
    assert server is not None
    run = "%s-%s-%s" % (target.key, tag, contender.key)
    write = _writer(target)
    pool = make_pool(contender, target, cp_max, count=True)
    try:
        yield warm(pool)
        counter: CountingDBAPI = pool.dbapi
        warm_attempts = len(counter.attempts)
        # The load ends `after` seconds after the server is back (at the
        # latest TIMEOUT from now).
        until = [clock() + TIMEOUT]
        running = load(pool, write, run, callers, until)
        yield sleep(before)
        accepting = _probe(target, TIMEOUT / 2)
        stop_at = clock()
        yield in_thread(server.stop)
        down_at = clock()
        yield sleep(outage)
        start_at = clock()
        yield in_thread(server.start)
        probed = yield accepting
        # The server accepts again at the first session anyone got: the
        # probe's, or the pool's own if it was quicker.
        back_at = min([probed] + [t for t in counter.successes if t > down_at])
        until[0] = back_at + after
        records = yield running.addTimeout(TIMEOUT, _reactor())
        end_at = until[0]
    finally:
        pool.close()
    checked = yield _checked(target, run, records)
    ok_after = sorted(r[1] for r in records if r[2] and r[1] > down_at)
    incident = [r for r in records if stop_at <= r[0] <= back_at + 1.0]
    attempts = [t - stop_at for t in counter.attempts[warm_attempts:]]
    down_for = back_at - down_at
    # Timeline, relative to the stop, in BIN-wide bins.
    first_bin = -int(before / BIN)
    last_bin = int((end_at - stop_at) / BIN) + 1
    bins = list(range(first_bin, last_bin))

    def per_second(times: List[float]) -> List[float]:
        counts = dict.fromkeys(bins, 0)
        for t in times:
            b = int((t - stop_at) // BIN)
            if b in counts:
                counts[b] += 1
        return [counts[b] / BIN for b in bins]

    return {
        "calls": len(records),
        "failed": sum(1 for r in records if not r[2]),
        "failed_after_back": sum(1 for r in records if not r[2] and r[0] > back_at),
        "errors": _errors(records),
        "first_success_after_back": ok_after[0] - back_at if ok_after else None,
        "incident_p50": _latencies(incident)["p50"],
        "incident_p99": _latencies(incident)["p99"],
        "incident_calls": len(incident),
        "connects_while_down": sum(1 for t in counter.attempts if down_at <= t < back_at),
        "connects_per_second_while_down": sum(1 for t in counter.attempts if down_at <= t < back_at) / down_for,
        "down": [down_at - stop_at, back_at - stop_at],
        "start_returned": start_at - stop_at,
        "timeline": {
            "bin": BIN,
            "t": [b * BIN for b in bins],
            "ok_per_s": per_second([r[1] for r in records if r[2]]),
            "failed_per_s": per_second([r[1] for r in records if not r[2]]),
            "connects_per_s": per_second(counter.attempts[warm_attempts:]),
        },
        "attempts": attempts,
        **checked,
    }


@defer.inlineCallbacks
def restart_under_load(report: Report, settings: Settings, targets: Sequence[Target]) -> Any:
    contenders = [ADBAPI, ADBAPI_RECONNECT, OURS, OURS_WAIT]
    rows = []
    raw: Dict[str, Any] = {}
    for target in targets:
        for c in contenders:
            result = yield _under_load(
                target,
                c,
                settings.recovery_cp_max,
                settings.callers,
                settings.load_before,
                settings.outage,
                settings.load_after,
                "load",
            )
            result.pop("attempts")
            raw.setdefault(target.key, {})[c.key] = result
            rows.append(
                [
                    target.label,
                    c.label,
                    "%d / %d" % (result["failed"], result["calls"]),
                    result["failed_after_back"],
                    result["duplicate_rows"],
                    fmt_ms(result["first_success_after_back"]) if result["first_success_after_back"] is not None else "never",
                    fmt_ms(result["incident_p50"]),
                    fmt_ms(result["incident_p99"]),
                    "%.0f" % result["connects_per_second_while_down"],
                    _error_summary(result["errors"]),
                ]
            )
            print("  %s load %s: done" % (target.key, c.key), flush=True)
    report.add(
        "#### Restart under load\n\n"
        "%d callers write back to back (each waits %d ms after a failed "
        "call) on a pool with cp_max=%d; after %g s the server stops, "
        "stays down %g s, and starts again; the load goes on %g s after "
        "it is back. *After back*: failed calls started after the server "
        "accepted connections again. *First success* counts from that "
        "moment: the first session anyone opened, this pool or another "
        "process that connects every 2 ms. "
        "Latency over "
        "the calls started between the stop and 1 s after the server was "
        "back. *Connects/s while down*: the pool's `connect()` calls while "
        "the server was down.\n\n"
        % (
            settings.callers,
            ERROR_PAUSE * 1000,
            settings.recovery_cp_max,
            settings.load_before,
            settings.outage,
            settings.load_after,
        )
        + markdown_table(
            [
                "database",
                "pool",
                "failed calls",
                "after back",
                "duplicate rows",
                "first success after back",
                "p50",
                "p99",
                "connects/s while down",
                "errors callers got",
            ],
            rows,
        )
    )
    report.data["restart_under_load"] = raw
    report.data["load_settings"] = {
        "callers": settings.callers,
        "cp_max": settings.recovery_cp_max,
        "outage": settings.outage,
        "error_pause": ERROR_PAUSE,
    }


@defer.inlineCallbacks
def jitter(report: Report, settings: Settings, target: Target) -> Any:
    """
    cp_max=50, 50 callers, a longer outage: when does each pool try to
    connect?
    """
    contenders = [OURS_WAIT, OURS, ADBAPI_RECONNECT]
    raw: Dict[str, Any] = {}
    rows = []
    for c in contenders:
        result = yield _under_load(
            target,
            c,
            settings.jitter_cp_max,
            settings.jitter_cp_max,
            settings.load_before,
            settings.jitter_outage,
            settings.load_after / 2,
            "jitter",
        )
        down_at, back_at = result["down"]
        attempts = sorted(result["attempts"])
        at_stop = [t for t in attempts if 0 <= t < down_at + 0.25]
        while_down = [t for t in attempts if down_at + 0.25 <= t < back_at]
        after = [t for t in attempts if t >= back_at]
        bins: Dict[int, int] = {}
        for t in while_down:
            bins[int(t // ATTEMPT_BIN)] = bins.get(int(t // ATTEMPT_BIN), 0) + 1
        gaps = [b - a for a, b in zip(while_down, while_down[1:])]
        rows.append(
            [
                target.label,
                c.label,
                len(at_stop),
                len(while_down),
                "%.0f" % (len(while_down) / max(1e-9, back_at - down_at - 0.25)),
                max(bins.values()) if bins else 0,
                fmt_ms(quantile(gaps, 0.5)) if gaps else "—",
                len(after),
                fmt_ms(after[-1] - after[0]) if len(after) > 1 else "—",
                "%d / %d" % (result["failed"], result["calls"]),
                _error_summary(result["errors"]),
            ]
        )
        raw[c.key] = {
            "down": result["down"],
            # Every attempt when there are few; always the counts per bin.
            "attempts": [round(t, 4) for t in attempts] if len(attempts) <= 500 else None,
            "attempt_bins": _histogram(attempts, ATTEMPT_BIN),
            "attempts_total": len(attempts),
            "failed": result["failed"],
            "calls": result["calls"],
            "errors": result["errors"],
            "timeline": result["timeline"],
        }
        print("  jitter %s: done" % (c.key,), flush=True)
    report.add(
        "#### Connect attempts with cp_max=%d and %d callers across a %g s outage\n\n"
        "When each pool calls `connect()`: in the first 250 ms after the "
        "stop (every thread meets the lost connection at once), while the "
        "server stays down (the rate, the most in any 50 ms, and the "
        "median gap between attempts), and once it is back (how many, and "
        "over how long). The timeline is in `reconnect_jitter.png`.\n\n"
        % (settings.jitter_cp_max, settings.jitter_cp_max, settings.jitter_outage)
        + markdown_table(
            [
                "database",
                "pool",
                "attempts at the stop",
                "attempts while down",
                "per s",
                "max per 50 ms",
                "median gap",
                "attempts once back",
                "spread over",
                "failed calls",
                "errors callers got",
            ],
            rows,
        )
    )
    report.data["jitter"] = {"target": target.key, "cp_max": settings.jitter_cp_max, "pools": raw}


@defer.inlineCallbacks
def run(settings: Settings, targets: Sequence[Target]) -> Any:
    """
    @return: (a Deferred firing with) the section's L{Report}.
    """
    report = Report("recovery")
    report.add("### Recovery")
    servers = [t for t in targets if t.server is not None and t.key in settings.recovery_databases]
    for target in servers:
        yield in_thread(_create_table, target)
    yield idle_events(report, settings, servers)
    yield restart_under_load(report, settings, servers)
    postgres = [t for t in servers if t.key == "postgres"]
    if postgres:
        yield jitter(report, settings, postgres[0])
    from bench import first_success  # it builds on this module

    yield first_success.run(report, settings, servers)
    report.data["error_pause"] = ERROR_PAUSE
    return report
