"""
The cost of C{cp_resolve_commits=True} when nothing goes wrong: the
marker statement each transaction that ran a statement sends before its
COMMIT (on PostgreSQL an C{UPDATE} that sets the marker only if the
transaction has a transaction id, i.e. wrote; on MySQL/MariaDB always an
C{UPDATE}; see L{txreconnect._resolve}).

On PostgreSQL and on MariaDB, for a read (C{runQuery("SELECT 1")}), a
one-statement write (C{runOperation}: C{UPDATE}) and the three-statement
interaction of L{bench.overhead}:

  - the throughput of C{adbapi.ConnectionPool},
    L{ReconnectingConnectionPool} with its defaults and with
    C{cp_resolve_commits=True}, and a second adbapi pool as the control,
    measured as L{bench.overhead} does (L{bench.rounds.compare}: the
    pools take turns in short windows, in rotating order, in one process
    pinned with the servers to one CPU);
  - the round trips per call (L{bench.round_trips}) and the client's
    instructions per call (L{bench.instructions}) of the first three,
    each in a process of its own.

The functions here measure and return plain data, which L{run} keeps in
the section's L{Report}; L{bench.resolve_cost_tables} renders it.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Sequence, Tuple

from twisted.internet import defer

from bench import instructions, resolve_cost_tables, round_trips
from bench._common import ADBAPI, ADBAPI_CONTROL, OURS, OURS_RESOLVE, Report, Settings, Target, in_thread
from bench._cpus import one_cpu
from bench.rounds import compare
from bench.workloads import create_table

__all__ = ["COUNTED", "KEYS", "MAX_COST", "counts", "not_counted", "run", "summary", "throughput"]

#: the workloads measured, by their key in L{bench.workloads}
KEYS = ("select1", "write1", "txn3")

#: the pools whose round trips and instructions are counted
COUNTED = (ADBAPI, OURS, OURS_RESOLVE)

#: the option may be on by default only if it costs less than this share
#: of adbapi's throughput, in every scenario
MAX_COST = 0.02

#: the databases that have commit markers (sqlite3 has none)
DATABASES = ("postgres", "mariadb")


@defer.inlineCallbacks
def throughput(settings: Settings, targets: Sequence[Target]) -> Any:
    """
    Throughput of every workload on every target, with each number of
    calls in flight of C{settings.resolve_inflight}, in
    C{settings.resolve_rounds} rounds.

    @return: (a Deferred firing with) one dict per target, workload and
        number of calls in flight (L{bench.rounds.compare}): ours and
        C{cp_resolve_commits=True} against adbapi, C{cp_resolve_commits=True}
        against ours, and the control against adbapi.
    """
    result = yield compare(
        settings,
        targets,
        [ADBAPI, OURS, OURS_RESOLVE, ADBAPI_CONTROL],
        KEYS,
        settings.resolve_inflight,
        settings.resolve_rounds,
        {
            "ours_vs_adbapi": (OURS.key, ADBAPI.key),
            "resolve_vs_adbapi": (OURS_RESOLVE.key, ADBAPI.key),
            "resolve_vs_ours": (OURS_RESOLVE.key, OURS.key),
            "control_vs_adbapi": (ADBAPI_CONTROL.key, ADBAPI.key),
        },
    )
    return result


def not_counted(settings: Settings) -> Dict[str, str]:
    """
    @return: why a count cannot be made or should not be, by its name
        (C{"round_trips_per_call"}: strace is missing;
        C{"instructions_per_call"}: valgrind is missing, or smoke mode).
    """
    why = {"round_trips_per_call": round_trips.not_measured(), "instructions_per_call": instructions.not_measured(settings)}
    return {name: reason for name, reason in why.items() if reason is not None}


def counts(settings: Settings, targets: Sequence[Target], names: Sequence[str]) -> List[Dict[str, Any]]:
    """
    Count the round trips and the instructions per call (those of C{names})
    of each of L{COUNTED}, for each target and workload (blocking: it
    waits for the child processes, two at a time where there are two
    CPUs: counts do not depend on the machine's load).

    @param names: C{"round_trips_per_call"} (under strace: seconds) and
        C{"instructions_per_call"} (under callgrind: minutes), or either.
    @return: one dict per target and workload: its keys, and each count
        of C{names} per call, by pool key.
    """
    for target in targets:
        create_table(target)
    trips = (max(1, settings.round_trip_calls // 2), settings.round_trip_calls)
    calls = (settings.instruction_calls // 6, settings.instruction_calls)
    every: Dict[str, Callable[[Target, str, str], float]] = {
        "round_trips_per_call": lambda t, p, w: instructions.per_call(t, p, w, trips, round_trips.sends),
        "instructions_per_call": lambda t, p, w: instructions.per_call(t, p, w, calls),
    }
    with ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1))) as executor:
        futures: List[Tuple[Dict[str, Any], Dict[str, Dict[str, "Future[float]"]]]] = [
            (
                {"target": target.key, "workload": key},
                {name: {c.key: executor.submit(every[name], target, c.key, key) for c in COUNTED} for name in names},
            )
            for target in targets
            for key in KEYS
        ]
        raw: List[Dict[str, Any]] = []
        for row, pending in futures:
            for name, by_pool in pending.items():
                row[name] = {pool: future.result() for pool, future in by_pool.items()}
            raw.append(row)
            print(
                "  %s %s: %s"
                % (
                    row["target"],
                    row["workload"],
                    "; ".join("%s %s" % (name, ", ".join("%s %.1f" % p for p in row[name].items())) for name in names),
                ),
                flush=True,
            )
    return raw


def summary(data: Dict[str, Any]) -> Dict[str, Any]:
    """
    @param data: the section's data, with its C{throughput} and C{counts}.
    @return: the threshold, the lowest median throughput ratios of
        C{cp_resolve_commits=True} to adbapi and to ours, the highest
        instruction ratio to adbapi (NaN if not counted), the control's
        range, and whether the option costs less than L{MAX_COST}
        everywhere.
    """
    nan = float("nan")
    rows = data["throughput"]
    lowest = min((row["resolve_vs_adbapi"]["ratio"]["median"] for row in rows), default=nan)
    lowest_ours = min((row["resolve_vs_ours"]["ratio"]["median"] for row in rows), default=nan)
    control = [row["control_vs_adbapi"]["ratio"]["median"] for row in rows]
    counted = [row["instructions_per_call"] for row in data["counts"] if "instructions_per_call" in row]
    highest = max((c[OURS_RESOLVE.key] / c[ADBAPI.key] for c in counted), default=nan)
    cheap = lowest >= 1 - MAX_COST and (not counted or highest <= 1 + MAX_COST)
    return {
        "max_cost": MAX_COST,
        "lowest_resolve_vs_adbapi": lowest,
        "lowest_resolve_vs_ours": lowest_ours,
        "highest_instructions_vs_adbapi": highest,
        "control_median_range": [min(control, default=nan), max(control, default=nan)],
        "below_max_cost": bool(cheap),
    }


@defer.inlineCallbacks
def run(settings: Settings, targets: Sequence[Target]) -> Any:
    """
    Measure, and add each table as soon as its numbers are in.

    @return: (a Deferred firing with) the section's L{Report}: its data
        holds the numbers and what the text says about the run (the
        settings, the targets' labels, the number of CPUs and the one the
        rounds ran on, and why a count was not made).
    """
    targets = [t for t in targets if t.key in DATABASES]
    report = Report.of_run("resolve_cost", settings, targets)
    data = report.data
    add = report.add_rendered

    report.add(resolve_cost_tables.HEADING)
    with one_cpu(targets) as cpu:
        data["cpu"] = cpu
        data["throughput"] = yield throughput(settings, targets)
    add(resolve_cost_tables.throughput)
    data["not_counted"] = not_counted(settings)
    names = [name for name in ("round_trips_per_call", "instructions_per_call") if name not in data["not_counted"]]
    data["counts"] = yield in_thread(counts, settings, targets, names)
    add(resolve_cost_tables.counts)
    data.update(summary(data))
    add(resolve_cost_tables.verdict)
    return report
