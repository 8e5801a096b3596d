"""
Steady-state overhead: what the pool costs when nothing goes wrong.

  - Throughput of C{runQuery("SELECT 1")} and of a three-statement
    C{runInteraction} (L{bench.workloads}) with 1, 4 and C{cp_max} calls
    in flight, for C{adbapi.ConnectionPool} and
    L{ReconnectingConnectionPool} with its defaults, with
    C{cp_health_check=0} (a ping on every checkout) and with
    C{cp_stall_timeout=None} (no watchdog, no PyMySQL socket timeouts).
    The pools take turns in short windows, in a rotating order, in the
    same process: each round gives one ratio per pool, and the tables
    show the median ratio and its spread over the rounds, and the
    difference in this process's CPU time per call (which other programs
    on the machine disturb far less than the wall clock).
  - The pool's own cost per interaction, in microseconds: direct
    C{pool._runInteraction} calls in one thread (no reactor, no thread
    pool) on sqlite3 C{:memory:} and on PostgreSQL, and the public API
    (reactor, thread pool, Deferred) on sqlite3 with C{cp_max=1}.
  - Where the extra time goes: a cProfile of the direct calls, listing
    txreconnect's functions by their own time.
  - The instructions per call (L{bench.instructions}).

The functions here measure and return plain data, which L{run} keeps in
the section's L{Report}; L{bench.overhead_tables} renders it.
"""

from __future__ import annotations

import cProfile
import gc
import io
import os
import pstats
import time
from typing import Any, Callable, Dict, List, Sequence

from twisted.enterprise import adbapi
from twisted.internet import defer

from bench import instructions, overhead_tables
from bench._common import (
    ADBAPI,
    ADBAPI_CONTROL,
    OURS,
    OURS_HC0,
    OURS_NO_WATCHDOG,
    Report,
    Settings,
    Target,
    clock,
    in_thread,
    rotation,
)
from bench._cpus import one_cpu
from bench.rounds import Window, close_pools, compare, make_pools, take_turns, window
from bench.workloads import STEADY, create_table, workloads

__all__ = ["per_call_cost", "profile", "run", "summary", "throughput"]

#: the goal: ours/adbapi throughput at least this, in every scenario
GOAL_RATIO = 0.98


@defer.inlineCallbacks
def throughput(settings: Settings, targets: Sequence[Target]) -> Any:
    """
    Throughput on every target, of every workload, with each number of
    calls in flight; the pools alternate in rounds
    (L{bench.rounds.compare}).

    @return: (a Deferred firing with) one dict per target, workload and
        number of calls in flight: every round's calls per second and CPU
        seconds per call, by pool key, and the spreads of ours against
        adbapi, of C{cp_health_check=0} against ours and of the control
        against adbapi (L{bench.rounds.paired}).
    """
    result = yield compare(
        settings,
        targets,
        [ADBAPI, OURS, OURS_HC0, ADBAPI_CONTROL],
        STEADY,
        settings.inflight,
        settings.rounds,
        {
            "ours_vs_adbapi": (OURS.key, ADBAPI.key),
            "health_check_0_vs_ours": (OURS_HC0.key, OURS.key),
            "control_vs_adbapi": (ADBAPI_CONTROL.key, ADBAPI.key),
        },
    )
    return result


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


def _direct_calls(settings: Settings, target: Target) -> int:
    """
    @return: the direct calls per round on C{target} (fewer through a
        socket than on sqlite3).
    """
    return settings.direct_calls if target.server is None else max(1, settings.direct_calls // 20)


@defer.inlineCallbacks
def per_call_cost(settings: Settings, targets: Sequence[Target]) -> Any:
    """
    The pool's own cost per interaction: direct calls on every target,
    and calls through the public API on sqlite3; pools alternate in
    rounds.

    @return: (a Deferred firing with) one dict per target, path
        (C{"direct"} or C{"api"}) and workload: every round's wall-clock
        and CPU seconds per call, by pool key.
    """
    raw: List[Dict[str, Any]] = []
    for target in targets:
        sqlite = target.server is None
        contenders = [ADBAPI, OURS, OURS_HC0] + ([] if sqlite else [OURS_NO_WATCHDOG])
        if not sqlite:
            yield in_thread(create_table, target)
        calls = _direct_calls(settings, target)
        # The direct calls run in this thread (the reactor's), each pool
        # with a connection of its own for this thread.
        pools = make_pools(contenders, target, 1)
        try:
            for key, workload in workloads(target).items():
                found: Dict[str, List[Window]] = {c.key: [] for c in contenders}
                for c in contenders:
                    _direct(pools[c.key], workload.direct, max(1, calls // 10))  # warm up
                for r in range(settings.direct_rounds):
                    for c in rotation(contenders, r):
                        gc.collect()
                        found[c.key].append(_direct(pools[c.key], workload.direct, calls))
                raw.append(_cost_raw(target, "direct", key, found))
        finally:
            close_pools(pools)
        if not sqlite:
            continue
        # The same through the public API: reactor, thread pool, Deferred.
        contenders = [ADBAPI, OURS, OURS_HC0]
        pools = make_pools(contenders, target, 1)
        try:
            for key, workload in workloads(target).items():
                for c in contenders:
                    yield window(pools[c.key], workload.call, 1, settings.window)
                found = yield take_turns(pools, contenders, workload.call, 1, settings.rounds, settings.window)
                raw.append(_cost_raw(target, "api", key, found))
        finally:
            close_pools(pools)
    return raw


def _cost_raw(target: Target, path: str, workload: str, found: Dict[str, List[Window]]) -> Dict[str, Any]:
    return {
        "target": target.key,
        "path": path,
        "workload": workload,
        "wall_seconds_per_call": {k: [1 / w.rate for w in v] for k, v in found.items()},
        "cpu_seconds_per_call": {k: [w.cpu for w in v] for k, v in found.items()},
    }


def profile(settings: Settings, targets: Sequence[Target]) -> List[Dict[str, Any]]:
    """
    cProfile the direct C{runQuery("SELECT 1")} calls of ours and of
    adbapi on each target: where the pool's extra time goes (cProfile
    inflates small functions, so read the shares, not the absolute
    numbers).

    @return: one dict per target: txreconnect's functions in ours, by
        their own time per call (the twenty first: own seconds, calls per
        call, C{"file:function"}), and the seconds per call of each pool
        under the profiler, by pool key.
    """
    raw = []
    for target in targets:
        calls = _direct_calls(settings, target)
        pools = make_pools((ADBAPI, OURS), target, 1)
        try:
            make = workloads(target)["select1"].direct
            totals = {}
            entries = []
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
                for (filename, line, name), (cc, nc, tt, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
                    if "txreconnect" in filename:
                        entries.append((tt / calls, nc / calls, "%s:%s" % (os.path.basename(filename), name)))
                entries.sort(reverse=True)
            raw.append({"target": target.key, "functions": entries[:20], "seconds_per_call": totals})
        finally:
            close_pools(pools)
    return raw


def summary(throughput: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """
    @param throughput: what L{throughput} found.
    @return: the goal, the worst median ratio of ours to adbapi, and the
        range of the control's median ratios.
    """
    worst = min((row["ours_vs_adbapi"]["ratio"]["median"] for row in throughput), default=float("nan"))
    control = [row["control_vs_adbapi"]["ratio"]["median"] for row in throughput]
    return {
        "goal_ratio": GOAL_RATIO,
        "worst_median_ratio": worst,
        "control_median_range": [min(control, default=float("nan")), max(control, default=float("nan"))],
    }


@defer.inlineCallbacks
def run(settings: Settings, targets: Sequence[Target]) -> Any:
    """
    Measure, and add each table as soon as its numbers are in.

    @return: (a Deferred firing with) the section's L{Report}: its data
        holds the numbers and what the text says about the run (the
        settings, the targets' labels, the number of CPUs and the one the
        rounds ran on).
    """
    report = Report.of_run("overhead", settings, targets)
    data = report.data
    add = report.add_rendered

    report.add(overhead_tables.HEADING)
    # The per-call cost and the profile: sqlite3, and PostgreSQL for a socket driver.
    costed = [t for t in targets if t.server is None or t.key == "postgres"]
    with one_cpu(targets) as cpu:
        data["cpu"] = cpu
        data["throughput"] = yield throughput(settings, targets)
        add(overhead_tables.throughput)
        add(overhead_tables.health_check)
        data["per_call"] = yield per_call_cost(settings, costed)
        add(overhead_tables.per_call)
    data["profile"] = profile(settings, costed)
    add(overhead_tables.profile)
    why = instructions.not_measured(settings)
    if why is None:
        data["instructions"] = yield in_thread(instructions.measure, settings, targets)
    else:
        data["instructions_not_measured"] = why
    add(overhead_tables.instructions)
    data.update(summary(data["throughput"]))
    add(overhead_tables.goal)
    return report
