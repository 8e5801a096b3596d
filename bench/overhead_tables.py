"""
The steady-state section's markdown, rendered from its data alone: the
dict that L{bench.overhead.run} fills and C{overhead.json} keeps.  So a
results file can be rendered again without measuring anything::

    .venv/bin/python -m bench.overhead_tables bench/results/overhead.json

prints C{overhead.md} as that run wrote it.

Besides the measurements, the data holds what the text says about the
run: C{settings} (L{Settings}, as a dict), C{labels} (each target's
label, by key), C{cpu_count} and C{cpu}.  L{with_context} supplies the
first three for files written before they were recorded.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from typing import Any, Dict, List, Optional, Sequence

from bench._common import ADBAPI, OURS, OURS_HC0, OURS_NO_WATCHDOG, Settings, spread
from bench._render import fmt_ci, markdown_file, markdown_table
from bench.workloads import LABELS

__all__ = [
    "HEADING",
    "goal",
    "health_check",
    "instructions",
    "paragraphs",
    "per_call",
    "placement",
    "profile",
    "throughput",
    "with_context",
]

HEADING = "### Steady-state overhead"

#: the per-call table's paths, by their key in the data
PATHS = {
    "direct": "direct `_runInteraction`, one thread",
    "api": "public API, cp_max=1, 1 in flight",
}

#: the functions the profile table lists for each target
PROFILED = 8


def _us(s: Dict[str, float]) -> str:
    """
    @return: a spread of microseconds: its median and interquartile range.
    """
    return "%+.1f (%+.1f…%+.1f)" % (s["median"], s["q1"], s["q3"])


def placement(cpu: Optional[int], cpu_count: int) -> str:
    """
    @param cpu: the CPU the rounds ran on (L{bench._cpus.one_cpu}), or
        L{None}.
    @param cpu_count: the machine's CPUs.
    @return: where the rounds ran, in words.
    """
    if cpu is None:
        return "its threads and the servers' placed by the scheduler (not pinned)"
    return (
        "its threads and the servers' all on CPU %d of %d (see `bench/_cpus.py`: across CPUs, "
        "where the scheduler puts the threads moves a pool's throughput more than the pools differ)"
        % (cpu, cpu_count)
    )


def throughput(data: Dict[str, Any]) -> str:
    """
    @return: the throughput table, ours / adbapi, with the control.
    """
    settings = data["settings"]
    rows = []
    for row in data["throughput"]:
        ours = row["ours_vs_adbapi"]
        control = row["control_vs_adbapi"]
        rows.append(
            [
                data["labels"][row["target"]],
                LABELS[row["workload"]],
                row["inflight"],
                "{:,.0f}".format(spread(row["calls_per_second"][ADBAPI.key])["median"]),
                "**%.3f**" % ours["ratio"]["median"],
                "%.3f–%.3f" % (ours["ratio"]["ci_low"], ours["ratio"]["ci_high"]),
                "%.3f–%.3f" % (ours["ratio"]["q1"], ours["ratio"]["q3"]),
                _us(ours["cpu_us"]),
                fmt_ci(control["ratio"]),
            ]
        )
    return (
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
        % (settings["cp_max"], settings["rounds"], settings["window"], placement(data["cpu"], data["cpu_count"]))
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


def health_check(data: Dict[str, Any]) -> str:
    """
    @return: the table of C{cp_health_check=0} against ours' defaults, from
        the throughput rounds.
    """
    rows = []
    for row in data["throughput"]:
        hc0 = row["health_check_0_vs_ours"]
        rows.append(
            [
                data["labels"][row["target"]],
                LABELS[row["workload"]],
                row["inflight"],
                "%.3f (%.3f–%.3f)" % (hc0["ratio"]["median"], hc0["ratio"]["q1"], hc0["ratio"]["q3"]),
                _us(hc0["cpu_us"]),
            ]
        )
    return (
        "#### The cost of `cp_health_check=0` (a ping before every call)\n\n"
        "Measured in the same rounds: ReconnectingConnectionPool with "
        "`cp_health_check=0` against ReconnectingConnectionPool with its "
        "defaults (health checks off).\n\n"
        + markdown_table(
            ["database (driver)", "workload", "in flight", "throughput, hc=0 / default (IQR)", "CPU µs/call, hc=0 − default"],
            rows,
        )
    )


def _cost_row(label: str, row: Dict[str, Any]) -> List[Any]:
    """
    @return: one row of the per-call table: each pool's difference from
        adbapi's, paired round by round (C{"—"} for a pool not measured).
    """
    wall = row["wall_seconds_per_call"]
    cpu = row["cpu_seconds_per_call"]
    base = ADBAPI.key

    def diff(key: str, per_call: Dict[str, List[float]]) -> str:
        if key not in per_call:
            return "—"
        return _us(spread([(o - a) * 1e6 for o, a in zip(per_call[key], per_call[base])]))

    return [
        label,
        PATHS[row["path"]],
        LABELS[row["workload"]],
        "%.1f" % (spread(wall[base])["median"] * 1e6,),
        "**%s**" % diff(OURS.key, wall),
        diff(OURS.key, cpu),
        diff(OURS_HC0.key, wall),
        diff(OURS_NO_WATCHDOG.key, wall),
    ]


def per_call(data: Dict[str, Any]) -> str:
    """
    @return: the table of the pool's own cost per interaction.
    """
    settings = data["settings"]
    return (
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
        % (settings["direct_rounds"], settings["rounds"], settings["window"])
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
            [_cost_row(data["labels"][row["target"]], row) for row in data["per_call"]],
        )
    )


def profile(data: Dict[str, Any]) -> str:
    """
    @return: the table of txreconnect's functions by their own time.
    """
    rows: List[List[Any]] = []
    for found in data["profile"]:
        label = data["labels"][found["target"]]
        for tt, per, where in found["functions"][:PROFILED]:
            rows.append([label, "`%s`" % where, "%.2f" % per, "%.2f" % (tt * 1e6)])
        totals = found.get("seconds_per_call")
        if totals is None:  # files written before the totals were kept
            total = "total under the profiler: not recorded"
        else:
            total = "total under the profiler: ours %.1f µs, adbapi %.1f µs per call" % (
                totals[OURS.key] * 1e6,
                totals[ADBAPI.key] * 1e6,
            )
        rows.append([label, total, "", ""])
    return (
        "#### Where ours spends its own time (cProfile, direct `runQuery(\"SELECT 1\")` calls)\n\n"
        "txreconnect's functions by their own time per call, under the "
        "profiler (which inflates small functions: compare the shares).\n\n"
        + markdown_table(["database", "function", "calls per call", "own µs per call"], rows)
    )


def instructions(data: Dict[str, Any]) -> str:
    """
    @return: the table of instructions per call, or why they were not
        counted.
    """
    if "instructions" not in data:
        return "#### Instructions per call\n\nNot measured: %s." % (data.get("instructions_not_measured", "?"),)
    calls = data["settings"]["instruction_calls"]
    rows = []
    for row in data["instructions"]:
        counts = row["instructions_per_call"]
        rows.append(
            [
                data["labels"][row["target"]],
                LABELS[row["workload"]],
                "{:,.0f}".format(counts[ADBAPI.key]),
                "{:,.0f}".format(counts[OURS.key]),
                "{:+,.0f}".format(counts[OURS.key] - counts[ADBAPI.key]),
                "**%.3f**" % (row["ratio"],),
            ]
        )
    return (
        "#### Instructions per call (valgrind's callgrind; lower is better)\n\n"
        "The client side's CPU cost, counted rather than timed, so that "
        "other programs on the machine cannot move it: each pool runs the "
        "workload through the public API (cp_max=1, one call in flight) in "
        "a process of its own under `valgrind --tool=callgrind`; runs of "
        "%d and %d calls give the instructions per call. The server's work "
        "and system calls are not counted.\n\n" % (calls // 6, calls)
        + markdown_table(
            ["database (driver)", "workload", "adbapi", "ours", "ours − adbapi", "ours / adbapi"],
            rows,
        )
    )


def goal(data: Dict[str, Any]) -> str:
    """
    @return: whether the throughput met the goal, and the control's range.
    """
    worst = data["worst_median_ratio"]
    low, high = data["control_median_range"]
    return (
        "Goal: ours ≥ %.2f of adbapi's throughput in every scenario. Worst median ratio: **%.3f** (%s). "
        "The control (adbapi against itself) ranged %.3f–%.3f."
        % (data["goal_ratio"], worst, "met" if worst >= data["goal_ratio"] else "missed", low, high)
    )


def paragraphs(data: Dict[str, Any]) -> List[str]:
    """
    @return: the section's headings, notes and tables, in the order
        L{bench.overhead.run} adds them.
    """
    return [
        HEADING,
        throughput(data),
        health_check(data),
        per_call(data),
        profile(data),
        instructions(data),
        goal(data),
    ]


#: for L{with_context}: the servers' products as the machine line names
#: them, and their drivers (as in L{bench.run})
_SERVERS = (("postgres", "PostgreSQL", "psycopg2"), ("mariadb", "MariaDB", "pymysql"))

#: sqlite3's label (as in L{bench.run})
_SQLITE = "SQLite :memory: (sqlite3)"


def with_context(data: Dict[str, Any]) -> Dict[str, Any]:
    """
    Supply what the data of files written before it was recorded lacks,
    from their machine line: the settings (full, or smoke), the targets'
    labels and the number of CPUs.

    @return: C{data} with C{settings}, C{labels} and C{cpu_count}.
    """
    machine = data["machine"]
    found = dict(data)
    if "settings" not in found:
        settings = Settings.smoke_test() if "(SMOKE" in machine else Settings.full()
        found["settings"] = dataclasses.asdict(settings)
    if "labels" not in found:
        labels = {"sqlite": _SQLITE}
        for key, product, driver in _SERVERS:
            version = re.search(r" · %s (\S+)" % (product,), machine)
            if version:
                labels[key] = "%s %s (%s)" % (product, version.group(1), driver)
        found["labels"] = labels
    if "cpu_count" not in found:
        cores = re.search(r" × (\d+) cores", machine)
        found["cpu_count"] = int(cores.group(1)) if cores else 0
    return found


def main(argv: Sequence[str]) -> None:
    """
    Print the markdown file of the JSON results file C{argv[0]}.
    """
    with open(argv[0]) as f:
        data = with_context(json.load(f))
    sys.stdout.write(markdown_file(data["machine"], paragraphs(data)))


if __name__ == "__main__":
    main(sys.argv[1:])
