"""
The markdown of the section on the cost of C{cp_resolve_commits=True},
rendered from its data alone: the dict that L{bench.resolve_cost.run}
fills and C{resolve_cost.json} keeps.  So a results file can be rendered
again without measuring anything::

    .venv/bin/python -m bench.resolve_cost_tables bench/results/resolve_cost.json

prints C{resolve_cost.md} as that run wrote it.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, List, Sequence

from bench._common import ADBAPI, OURS, OURS_RESOLVE, spread
from bench._render import fmt_ci, markdown_file, markdown_table
from bench.overhead_tables import placement
from bench.workloads import LABELS

__all__ = ["HEADING", "counts", "paragraphs", "throughput", "verdict"]

HEADING = "### The cost of `cp_resolve_commits=True` when nothing goes wrong"

#: what the pools are called in the tables' headers
RESOLVE = "resolve"


def throughput(data: Dict[str, Any]) -> str:
    """
    @param data: the section's data.
    @return: the throughput table: ours and C{cp_resolve_commits=True}
        against adbapi, C{cp_resolve_commits=True} against ours, and the
        control.
    """
    settings = data["settings"]
    rows = []
    for row in data["throughput"]:
        rows.append(
            [
                data["labels"][row["target"]],
                LABELS[row["workload"]],
                row["inflight"],
                "{:,.0f}".format(spread(row["calls_per_second"][ADBAPI.key])["median"]),
                fmt_ci(row["ours_vs_adbapi"]["ratio"]),
                fmt_ci(row["resolve_vs_adbapi"]["ratio"], bold=True),
                fmt_ci(row["resolve_vs_ours"]["ratio"]),
                "%+.1f" % (row["resolve_vs_ours"]["cpu_us"]["median"],),
                fmt_ci(row["control_vs_adbapi"]["ratio"]),
            ]
        )
    return (
        "#### Throughput with `cp_resolve_commits=True` (higher is better; 1.000 = the same)\n\n"
        "*%s* is ReconnectingConnectionPool with `cp_resolve_commits=True`. "
        "cp_max=%d for every pool; %d rounds of %g s per pool, in rotating "
        "order, in one process, %s; the ratio of calls per second round by "
        "round, then its median and the median's 95%% confidence interval. "
        "*CPU* is this process's CPU time per call (all threads), %s minus "
        "ours with its defaults, median over rounds. The control is a second "
        "adbapi pool measured in the same rounds, against the first: its "
        "distance from 1.000 is how finely this machine tells two pools apart.\n\n"
        % (
            RESOLVE,
            settings["cp_max"],
            settings["resolve_rounds"],
            settings["window"],
            placement(data["cpu"], data["cpu_count"]),
            RESOLVE,
        )
        + markdown_table(
            [
                "database (driver)",
                "workload",
                "in flight",
                "adbapi calls/s",
                "ours / adbapi (95% CI)",
                "%s / adbapi (95%% CI)" % (RESOLVE,),
                "%s / ours (95%% CI)" % (RESOLVE,),
                "CPU µs/call, %s − ours" % (RESOLVE,),
                "control: adbapi / adbapi (95% CI)",
            ],
            rows,
        )
    )


def _count_cells(row: Dict[str, Any], name: str, fmt: str) -> List[str]:
    """
    @return: the cells of count C{name} of each of adbapi, ours and
        C{cp_resolve_commits=True} (C{"—"} if not counted).
    """
    found = row.get(name)
    return [fmt.format(found[c.key]) if found else "—" for c in (ADBAPI, OURS, OURS_RESOLVE)]


def counts(data: Dict[str, Any]) -> str:
    """
    @param data: the section's data.
    @return: the table of round trips and instructions per call, and why a
        count was not made.
    """
    settings = data["settings"]
    rows = []
    for row in data["counts"]:
        instructions = row.get("instructions_per_call")
        ratios = ["—", "—"]
        if instructions:
            ratios = [
                "**%.3f**" % (instructions[OURS_RESOLVE.key] / instructions[ADBAPI.key],),
                "%.3f" % (instructions[OURS_RESOLVE.key] / instructions[OURS.key],),
            ]
        rows.append(
            [data["labels"][row["target"]], LABELS[row["workload"]]]
            + [" / ".join(_count_cells(row, "round_trips_per_call", "{:.1f}"))]
            + _count_cells(row, "instructions_per_call", "{:,.0f}")
            + ratios
        )
    missing = "".join(
        " Not counted: %s, because %s." % (name.replace("_", " "), why) for name, why in sorted(data["not_counted"].items())
    )
    return (
        "#### Round trips and instructions per call (lower is better)\n\n"
        "Each pool runs the workload through the public API (cp_max=1, one "
        "call in flight) in a process of its own. *Round trips* are the "
        "requests the client sent per call, counted with `strace -f -c` "
        "(`sendto` and `sendmsg`; runs of %d and %d calls): on PostgreSQL "
        "psycopg2 sends `BEGIN`, each statement and `COMMIT` in turn, on "
        "MariaDB PyMySQL sends each statement and `COMMIT`. *Instructions* "
        "are the client process's, counted with valgrind's callgrind (runs of "
        "%d and %d calls); the server's work and system calls are not "
        "counted.%s\n\n"
        % (
            max(1, settings["round_trip_calls"] // 2),
            settings["round_trip_calls"],
            settings["instruction_calls"] // 6,
            settings["instruction_calls"],
            missing,
        )
        + markdown_table(
            [
                "database (driver)",
                "workload",
                "round trips: adbapi / ours / %s" % (RESOLVE,),
                "instructions: adbapi",
                "ours",
                RESOLVE,
                "%s / adbapi" % (RESOLVE,),
                "%s / ours" % (RESOLVE,),
            ],
            rows,
        )
    )


def verdict(data: Dict[str, Any]) -> str:
    """
    @param data: the section's data, with L{bench.resolve_cost.summary}.
    @return: what the numbers say about the option's default.
    """
    low, high = data["control_median_range"]
    instructions = data["highest_instructions_vs_adbapi"]
    counted = "" if instructions is None else " and at most **%.3f** of its instructions per call" % (instructions,)
    if data["below_max_cost"]:
        conclusion = "below %.0f%% in every scenario: it may be on by default" % (data["max_cost"] * 100,)
    else:
        conclusion = "above %.0f%%: it stays off by default" % (data["max_cost"] * 100,)
    return (
        "`cp_resolve_commits=True` kept at least **%.3f** of adbapi's throughput "
        "(lowest median; at least %.3f of ours with its defaults)%s. "
        "The control (adbapi against itself) ranged %.3f–%.3f. Its measured cost is %s."
        % (data["lowest_resolve_vs_adbapi"], data["lowest_resolve_vs_ours"], counted, low, high, conclusion)
    )


def paragraphs(data: Dict[str, Any]) -> List[str]:
    """
    @param data: the section's data.
    @return: the section's heading and tables, in the order
        L{bench.resolve_cost.run} adds them.
    """
    return [HEADING, throughput(data), counts(data), verdict(data)]


def main(argv: Sequence[str]) -> None:
    """
    Print the markdown file of the JSON results file C{argv[0]}.
    """
    with open(argv[0]) as f:
        data = json.load(f)
    sys.stdout.write(markdown_file(data["machine"], paragraphs(data)))


if __name__ == "__main__":
    main(sys.argv[1:])
