"""
Steady-state overhead: what the pool costs when nothing goes wrong.

  - Throughput of C{runQuery("SELECT 1")} and of a three-statement
    C{runInteraction} with 1, 4 and C{cp_max} calls in flight, for
    C{adbapi.ConnectionPool} and L{ReconnectingConnectionPool} with its
    defaults, with C{cp_health_check=0} (a ping on every checkout) and
    with C{cp_stall_timeout=None} (no watchdog, no PyMySQL socket
    timeouts).  The pools take turns in short windows, in a rotating
    order, in the same process: each round gives one ratio per pool, and
    the tables show the median ratio and its spread over the rounds, and
    the difference in this process's CPU time per call (which other
    programs on the machine disturb far less than the wall clock).
  - The pool's own cost per interaction, in microseconds: direct
    C{pool._runInteraction} calls in one thread (no reactor, no thread
    pool) on sqlite3 C{:memory:} and on PostgreSQL, and the public API
    (reactor, thread pool, Deferred) on sqlite3 with C{cp_max=1}.
  - Where the extra time goes: a cProfile of the direct calls, listing
    txreconnect's functions by their own time.
"""

from __future__ import annotations

import cProfile
import gc
import io
import os
import pstats
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from twisted.enterprise import adbapi
from twisted.internet import defer

from bench._cpus import one_cpu
from bench.instructions import run_in_thread
from bench._common import (
    run_sql,
    ADBAPI,
    ADBAPI_CONTROL,
    OURS,
    OURS_HC0,
    OURS_NO_WATCHDOG,
    Contender,
    Report,
    Settings,
    Target,
    clock,
    fmt_ratio,
    in_thread,
    make_pool,
    markdown_table,
    rotation,
    spread,
)

__all__ = ["run"]

#: the goal: ours/adbapi throughput at least this, in every scenario
GOAL_RATIO = 0.98

#: rows in bench_kv
KEYS = 64

Call = Callable[[adbapi.ConnectionPool, int], "defer.Deferred[Any]"]


def _setup_sql(target: Target) -> List[str]:
    return [
        "DROP TABLE IF EXISTS bench_kv",
        "CREATE TABLE bench_kv (k INTEGER PRIMARY KEY, v BIGINT NOT NULL)",
    ] + [target.sql("INSERT INTO bench_kv (k, v) VALUES (%d, 0)" % (k,)) for k in range(KEYS)]


def _create_table(target: Target) -> None:
    """
    Create and fill C{bench_kv} on a server (blocking).
    """
    run_sql(target, _setup_sql(target))


def _sqlite_openfun(target: Target) -> Callable[[Any], None]:
    """
    sqlite3 C{:memory:} gives each connection a database of its own:
    fill it as the pool opens it.
    """

    def openfun(conn: Any) -> None:
        cursor = conn.cursor()
        for statement in _setup_sql(target):
            cursor.execute(statement)
        conn.commit()

    return openfun


def workloads(target: Target) -> Dict[str, Tuple[str, Call, Callable[..., Any]]]:
    """
    @return: by key, the workload's label, how to make one call through
        the public API (given the pool and the caller's lane), and the
        interaction function with its arguments for direct calls.
    """
    select_v = target.sql("SELECT v FROM bench_kv WHERE k = %s")
    update_v = target.sql("UPDATE bench_kv SET v = v + 1 WHERE k = %s")

    def three(txn: Any, key: int) -> None:
        txn.execute(select_v, (key,))
        txn.fetchall()
        txn.execute(update_v, (key,))
        txn.execute("SELECT 1")
        txn.fetchall()

    def query(pool: adbapi.ConnectionPool, lane: int) -> "defer.Deferred[Any]":
        return pool.runQuery("SELECT 1")

    def interaction(pool: adbapi.ConnectionPool, lane: int) -> "defer.Deferred[Any]":
        return pool.runInteraction(three, lane % KEYS)

    return {
        "select1": ('runQuery("SELECT 1")', query, lambda pool: (pool._runQuery, "SELECT 1")),
        "txn3": ("runInteraction: SELECT, UPDATE, SELECT", interaction, lambda pool: (three, 1)),
    }


class Window:
    """
    One measurement window of one pool.

    @ivar rate: calls completed per second (wall clock).
    @ivar cpu: this process's CPU seconds per call (every thread: the
        reactor, the pool's threads): the client side's cost, which other
        processes on the machine disturb far less than the wall clock.
    """

    __slots__ = ("rate", "cpu")

    def __init__(self, rate: float, cpu: float) -> None:
        self.rate = rate
        self.cpu = cpu


@defer.inlineCallbacks
def window(pool: adbapi.ConnectionPool, call: Call, inflight: int, seconds: float) -> Any:
    """
    Keep C{inflight} calls in flight for C{seconds}.

    @return: (a Deferred firing with) a L{Window}.
    """
    done = [0]
    cpu = time.process_time()
    started = clock()
    end = started + seconds

    @defer.inlineCallbacks
    def lane(i: int) -> Any:
        while clock() < end:
            yield call(pool, i)
            done[0] += 1

    yield defer.gatherResults([lane(i) for i in range(inflight)], consumeErrors=True)
    calls = max(1, done[0])
    return Window(calls / (clock() - started), (time.process_time() - cpu) / calls)


@defer.inlineCallbacks
def _rounds(
    pools: Dict[str, adbapi.ConnectionPool],
    contenders: Sequence[Contender],
    call: Call,
    inflight: int,
    rounds: int,
    seconds: float,
) -> Any:
    """
    Measure every pool once per round, in rotating order.

    @return: (a Deferred firing with) the L{Window}s of each pool, by key.
    """
    found: Dict[str, List[Window]] = {c.key: [] for c in contenders}
    for r in range(rounds):
        for c in rotation(contenders, r):
            gc.collect()
            found[c.key].append((yield window(pools[c.key], call, inflight, seconds)))
    return found


def _paired(found: Dict[str, List[Window]], key: str, base: str) -> Dict[str, Dict[str, float]]:
    """
    @return: the spread of C{key}'s throughput ratio to C{base}'s, and of
        its CPU microseconds per call minus C{base}'s, round by round.
    """
    return {
        "ratio": spread([a.rate / b.rate for a, b in zip(found[key], found[base])]),
        "cpu_us": spread([(a.cpu - b.cpu) * 1e6 for a, b in zip(found[key], found[base])]),
    }


@defer.inlineCallbacks
def throughput(
    report: Report,
    settings: Settings,
    targets: Sequence[Target],
    cpu: Optional[int],
) -> Any:
    """
    The throughput tables: every target, workload and number of calls in
    flight; pools alternate in rounds.

    @param cpu: the one CPU that this process and the servers run on, or
        L{None} if they were not pinned.
    """
    contenders = [ADBAPI, OURS, OURS_HC0, ADBAPI_CONTROL]
    rows = []
    health_rows = []
    raw: List[Dict[str, Any]] = []
    for target in targets:
        extra: Dict[str, Any] = {}
        if target.server is None:
            extra["cp_openfun"] = _sqlite_openfun(target)
        else:
            yield in_thread(_create_table, target)
        pools = {
            c.key: make_pool(c, target, settings.cp_max, cp_min=settings.cp_max, **extra) for c in contenders
        }
        try:
            for key, (label, call, _) in workloads(target).items():
                # Warm up: every thread opens its connection, caches settle.
                for c in contenders:
                    yield window(pools[c.key], call, settings.cp_max, settings.window)
                for inflight in settings.inflight:
                    found = yield _rounds(pools, contenders, call, inflight, settings.rounds, settings.window)
                    ours = _paired(found, OURS.key, ADBAPI.key)
                    hc0 = _paired(found, OURS_HC0.key, OURS.key)
                    control = _paired(found, ADBAPI_CONTROL.key, ADBAPI.key)
                    base = spread([w.rate for w in found[ADBAPI.key]])
                    rows.append(
                        [
                            target.label,
                            label,
                            inflight,
                            "{:,.0f}".format(base["median"]),
                            "**%.3f**" % ours["ratio"]["median"],
                            "%.3f–%.3f" % (ours["ratio"]["ci_low"], ours["ratio"]["ci_high"]),
                            "%.3f–%.3f" % (ours["ratio"]["q1"], ours["ratio"]["q3"]),
                            _us(ours["cpu_us"]),
                            "%.3f (%.3f–%.3f)"
                            % (control["ratio"]["median"], control["ratio"]["ci_low"], control["ratio"]["ci_high"]),
                        ]
                    )
                    health_rows.append(
                        [
                            target.label,
                            label,
                            inflight,
                            "%.3f (%.3f–%.3f)" % (hc0["ratio"]["median"], hc0["ratio"]["q1"], hc0["ratio"]["q3"]),
                            _us(hc0["cpu_us"]),
                        ]
                    )
                    raw.append(
                        {
                            "target": target.key,
                            "workload": key,
                            "inflight": inflight,
                            "calls_per_second": {k: [w.rate for w in v] for k, v in found.items()},
                            "cpu_seconds_per_call": {k: [w.cpu for w in v] for k, v in found.items()},
                            "ours_vs_adbapi": ours,
                            "health_check_0_vs_ours": hc0,
                            "control_vs_adbapi": control,
                        }
                    )
                    print(
                        "  %s %s x%d: adbapi %.0f/s, ours/adbapi %s, control %s, CPU %+.1f µs/call; hc0/ours %s"
                        % (
                            target.key,
                            key,
                            inflight,
                            base["median"],
                            fmt_ratio(ours["ratio"]),
                            fmt_ratio(control["ratio"]),
                            ours["cpu_us"]["median"],
                            fmt_ratio(hc0["ratio"]),
                        ),
                        flush=True,
                    )
        finally:
            for pool in pools.values():
                pool.close()
    report.add(
        "#### Throughput, ours / adbapi (higher is better; 1.000 = the same)\n\n"
        "cp_max=%d for every pool; %d rounds of %g s per pool, in rotating "
        "order, in one process, %s; the ratio of calls per second round by "
        "round, then its median, the median's 95%% confidence interval "
        "(distribution-free) and the interquartile range of the rounds. "
        "*CPU* is this process's CPU time per call (all threads), ours minus "
        "adbapi's, median and IQR over rounds: it is what other programs "
        "on the machine disturb least. The last column is the control: a "
        "second adbapi pool measured in the same rounds, against the first. "
        "Both are the same code, so its distance from 1.000 is how finely "
        "this machine tells two pools apart.\n\n"
        % (settings.cp_max, settings.rounds, settings.window, _placement(cpu))
        + markdown_table(
            [
                "database (driver)",
                "workload",
                "in flight",
                "adbapi calls/s",
                "ours / adbapi",
                "95% CI",
                "IQR of rounds",
                "CPU µs/call, ours − adbapi",
                "control: adbapi / adbapi (95% CI)",
            ],
            rows,
        )
    )
    report.add(
        "#### The cost of `cp_health_check=0` (a ping before every call)\n\n"
        "Measured in the same rounds: ReconnectingConnectionPool with "
        "`cp_health_check=0` against ReconnectingConnectionPool with its "
        "defaults (health checks off).\n\n"
        + markdown_table(
            ["database (driver)", "workload", "in flight", "throughput, hc=0 / default (IQR)", "CPU µs/call, hc=0 − default"],
            health_rows,
        )
    )
    report.data["throughput"] = raw
    return raw


def _placement(cpu: Optional[int]) -> str:
    if cpu is None:
        return "its threads and the servers' placed by the scheduler (not pinned)"
    return (
        "its threads and the servers' all on CPU %d of %d (see `bench/_cpus.py`: across CPUs, "
        "where the scheduler puts the threads moves a pool's throughput more than the pools differ)"
        % (cpu, os.cpu_count() or 0)
    )


def _us(s: Dict[str, float]) -> str:
    return "%+.1f (%+.1f…%+.1f)" % (s["median"], s["q1"], s["q3"])


def _direct(pool: adbapi.ConnectionPool, make: Callable[..., Any], calls: int) -> Window:
    """
    Run C{calls} interactions through C{pool._runInteraction} in this
    thread, as a pool thread would, without the reactor or the thread
    pool.
    """
    fn, *args = make(pool)
    run = pool._runInteraction
    cpu = time.process_time()
    started = clock()
    for _ in range(calls):
        run(fn, *args)
    return Window(calls / (clock() - started), (time.process_time() - cpu) / calls)


@defer.inlineCallbacks
def per_call_cost(report: Report, settings: Settings, targets: Sequence[Target]) -> Any:
    """
    The pool's own cost per interaction, in microseconds: ours minus
    adbapi's, paired round by round.
    """
    rows = []
    raw: List[Dict[str, Any]] = []
    for target in targets:
        sqlite = target.server is None
        contenders = [ADBAPI, OURS, OURS_HC0] + ([] if sqlite else [OURS_NO_WATCHDOG])
        extra: Dict[str, Any] = {}
        if sqlite:
            extra["cp_openfun"] = _sqlite_openfun(target)
        else:
            yield in_thread(_create_table, target)
        calls = settings.direct_calls if sqlite else max(1, settings.direct_calls // 20)
        # The direct calls run in this thread (the reactor's), each pool
        # with a connection of its own for this thread.
        pools = {c.key: make_pool(c, target, 1, cp_min=1, **extra) for c in contenders}
        try:
            for key, (label, _, make) in workloads(target).items():
                found: Dict[str, List[Window]] = {c.key: [] for c in contenders}
                for c in contenders:
                    _direct(pools[c.key], make, max(1, calls // 10))  # warm up
                for r in range(settings.direct_rounds):
                    for c in rotation(contenders, r):
                        gc.collect()
                        found[c.key].append(_direct(pools[c.key], make, calls))
                rows.append(_cost_row(target, "direct `_runInteraction`, one thread", label, found, contenders))
                raw.append(_cost_raw(target, "direct", key, found))
        finally:
            for pool in pools.values():
                pool.close()
        if not sqlite:
            continue
        # The same through the public API: reactor, thread pool, Deferred.
        contenders = [ADBAPI, OURS, OURS_HC0]
        pools = {c.key: make_pool(c, target, 1, cp_min=1, **extra) for c in contenders}
        try:
            for key, (label, call, _) in workloads(target).items():
                for c in contenders:
                    yield window(pools[c.key], call, 1, settings.window)
                found = yield _rounds(pools, contenders, call, 1, settings.rounds, settings.window)
                rows.append(_cost_row(target, "public API, cp_max=1, 1 in flight", label, found, contenders))
                raw.append(_cost_raw(target, "api", key, found))
        finally:
            for pool in pools.values():
                pool.close()
    report.add(
        "#### The pool's own cost per interaction (µs per call; lower is better)\n\n"
        "Each pool's difference from adbapi's, paired round by round "
        "(median, with the interquartile range), in wall-clock "
        "time and in this process's CPU time. Direct calls run "
        "`pool._runInteraction` in one thread: no reactor, no thread pool, "
        "so only the pools' own code differs. The public API adds the "
        "reactor, the thread pool and a Deferred per call (cp_max=1, one "
        "call in flight), placed as in the throughput table. `cp_stall_timeout=None` turns the stall watchdog "
        "off (sqlite3 has no socket, so it is never armed there). Direct "
        "calls: %d rounds; public API: %d rounds of %g s per pool.\n\n"
        % (settings.direct_rounds, settings.rounds, settings.window)
        + markdown_table(
            [
                "database",
                "path",
                "workload",
                "adbapi µs",
                "ours − adbapi",
                "ours − adbapi, CPU",
                "cp_health_check=0 − adbapi",
                "cp_stall_timeout=None − adbapi",
            ],
            rows,
        )
    )
    report.data["per_call"] = raw
    return raw


def _cost_raw(target: Target, path: str, workload: str, found: Dict[str, List[Window]]) -> Dict[str, Any]:
    return {
        "target": target.key,
        "path": path,
        "workload": workload,
        "wall_seconds_per_call": {k: [1 / w.rate for w in v] for k, v in found.items()},
        "cpu_seconds_per_call": {k: [w.cpu for w in v] for k, v in found.items()},
    }


def _cost_row(
    target: Target,
    path: str,
    label: str,
    found: Dict[str, List[Window]],
    contenders: Sequence[Contender],
) -> List[Any]:
    base = found[ADBAPI.key]

    def diff(c: Contender, cpu: bool = False) -> str:
        if c not in contenders:
            return "—"
        if cpu:
            return _us(spread([(o.cpu - a.cpu) * 1e6 for o, a in zip(found[c.key], base)]))
        return _us(spread([(1 / o.rate - 1 / a.rate) * 1e6 for o, a in zip(found[c.key], base)]))

    return [
        target.label,
        path,
        label,
        "%.1f" % (spread([1 / w.rate for w in base])["median"] * 1e6,),
        "**%s**" % diff(OURS),
        diff(OURS, cpu=True),
        diff(OURS_HC0),
        diff(OURS_NO_WATCHDOG),
    ]


def profile(report: Report, settings: Settings, targets: Sequence[Target]) -> None:
    """
    cProfile the direct calls of ours on each target and list
    txreconnect's own functions by their own time per call: where the
    pool's extra time goes (cProfile inflates small functions, so read
    the shares, not the absolute numbers).
    """
    rows = []
    raw = []
    for target in targets:
        extra: Dict[str, Any] = {}
        if target.server is None:
            extra["cp_openfun"] = _sqlite_openfun(target)
        calls = settings.direct_calls if target.server is None else max(1, settings.direct_calls // 20)
        pools = {c.key: make_pool(c, target, 1, cp_min=1, **extra) for c in (ADBAPI, OURS)}
        try:
            make = workloads(target)["select1"][2]
            totals = {}
            for key, pool in pools.items():
                _direct(pool, make, max(1, calls // 10))
                profiler = cProfile.Profile()
                profiler.enable()
                _direct(pool, make, calls)
                profiler.disable()
                stats = pstats.Stats(profiler, stream=io.StringIO())
                totals[key] = stats.total_tt / calls  # type: ignore[attr-defined]
                if key != OURS.key:
                    continue
                entries = []
                for (filename, line, name), (cc, nc, tt, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
                    if "txreconnect" in filename:
                        entries.append((tt / calls, nc / calls, "%s:%s" % (os.path.basename(filename), name)))
                entries.sort(reverse=True)
                for tt, per, where in entries[:8]:
                    rows.append([target.label, "`%s`" % where, "%.2f" % per, "%.2f" % (tt * 1e6)])
                raw.append({"target": target.key, "functions": entries[:20]})
            rows.append(
                [
                    target.label,
                    "total under the profiler: ours %.1f µs, adbapi %.1f µs per call"
                    % (totals[OURS.key] * 1e6, totals[ADBAPI.key] * 1e6),
                    "",
                    "",
                ]
            )
        finally:
            for pool in pools.values():
                pool.close()
    report.add(
        "#### Where ours spends its own time (cProfile, direct `runQuery(\"SELECT 1\")` calls)\n\n"
        "txreconnect's functions by their own time per call, under the "
        "profiler (which inflates small functions: compare the shares).\n\n"
        + markdown_table(["database", "function", "calls per call", "own µs per call"], rows)
    )
    report.data["profile"] = raw


@defer.inlineCallbacks
def run(settings: Settings, targets: Sequence[Target]) -> Any:
    """
    @return: (a Deferred firing with) the section's L{Report}.
    """
    report = Report("overhead")
    report.add("### Steady-state overhead")
    # The per-call cost and the profile: sqlite3, and PostgreSQL for a socket driver.
    costed = [t for t in targets if t.server is None or t.key == "postgres"]
    with one_cpu(targets) as cpu:
        report.data["cpu"] = cpu
        yield throughput(report, settings, targets, cpu)
        yield per_call_cost(report, settings, costed)
    profile(report, settings, costed)
    yield run_in_thread(report, settings, targets)
    worst = min(
        (row["ours_vs_adbapi"]["ratio"]["median"] for row in report.data["throughput"]),
        default=float("nan"),
    )
    control = [row["control_vs_adbapi"]["ratio"]["median"] for row in report.data["throughput"]]
    report.data["goal_ratio"] = GOAL_RATIO
    report.data["worst_median_ratio"] = worst
    report.data["control_median_range"] = [min(control, default=float("nan")), max(control, default=float("nan"))]
    report.add(
        "Goal: ours ≥ %.2f of adbapi's throughput in every scenario. Worst median ratio: **%.3f** (%s). "
        "The control (adbapi against itself) ranged %.3f–%.3f."
        % (
            GOAL_RATIO,
            worst,
            "met" if worst >= GOAL_RATIO else "missed",
            report.data["control_median_range"][0],
            report.data["control_median_range"][1],
        )
    )
    return report
