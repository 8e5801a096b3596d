"""
The pool's own cost in instructions, which the machine's noise cannot
move: each pool runs one workload through the public API (reactor,
thread pool, Deferred; C{cp_max=1}, one call in flight) in a child
process under C{valgrind --tool=callgrind}, which counts the
instructions the process executes in user space.  Two runs with
different numbers of calls give the instructions per call (the start-up
cancels out).  The database's own work runs in the server, outside the
count, as do system calls: the count is the client side's CPU cost.

The child is this module run as a script (C{python -m bench.instructions
SPEC}).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Dict, List, Sequence, Tuple

from bench._common import ADBAPI, OURS, Report, Settings, Target, in_thread, markdown_table

__all__ = ["instructions", "run_in_thread"]


def _child(spec: Dict[str, Any]) -> None:
    """
    Run C{spec["calls"]} calls of one workload on one pool, then stop.
    """
    from twisted.enterprise import adbapi
    from twisted.internet import defer, reactor

    from bench.overhead import _setup_sql, workloads
    from txreconnect import ReconnectingConnectionPool

    target = Target(spec["target"], "", spec["driver"], None)
    kwargs = dict(spec["kwargs"], cp_min=1, cp_max=1)
    if spec["target"] == "sqlite":

        def openfun(conn: Any) -> None:
            cursor = conn.cursor()
            for statement in _setup_sql(target):
                cursor.execute(statement)
            conn.commit()

        kwargs["cp_openfun"] = openfun
    cls = ReconnectingConnectionPool if spec["pool"] == OURS.key else adbapi.ConnectionPool
    pool = cls(spec["driver"], *spec["args"], **kwargs)
    _, call, _ = workloads(target)[spec["workload"]]

    @defer.inlineCallbacks
    def main() -> Any:
        try:
            for i in range(spec["calls"]):
                yield call(pool, i)
        finally:
            pool.close()
            reactor.stop()

    reactor.callWhenRunning(main)
    reactor.run()


def _count(spec: Dict[str, Any]) -> int:
    """
    @return: the instructions the child executed for C{spec}.
    @raise RuntimeError: the child failed.
    """
    with tempfile.TemporaryDirectory(prefix="txreconnect-callgrind-") as tmp:
        out = os.path.join(tmp, "callgrind.out")
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--callgrind-out-file=" + out,
                sys.executable,
                "-m",
                "bench.instructions",
                json.dumps(spec),
            ],
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError("callgrind run failed (%s): %s" % (done.returncode, done.stderr[-2000:]))
        for line in done.stderr.splitlines():
            if "Collected :" in line:
                return int(line.rsplit(":", 1)[1].strip())
    raise RuntimeError("callgrind printed no instruction count: %s" % (done.stderr[-2000:],))


def _per_call(target: Target, pool: str, workload: str, calls: Tuple[int, int]) -> float:
    """
    @return: instructions per call of C{pool} on C{target}: the difference
        between two runs of C{calls[0]} and C{calls[1]} calls.
    """
    args, kwargs = target.connect_args()
    base = {
        "target": target.key,
        "driver": target.driver,
        "args": list(args),
        "kwargs": kwargs,
        "pool": pool,
        "workload": workload,
    }
    few, many = (_count(dict(base, calls=n)) for n in calls)
    return (many - few) / (calls[1] - calls[0])


def instructions(report: Report, settings: Settings, targets: Sequence[Target]) -> Any:
    """
    The table: instructions per call, adbapi's and ours, for each target
    and workload.  Nothing is measured (and the report says why) when
    valgrind is missing, or in smoke mode.
    """
    from bench.overhead import _create_table, workloads

    if settings.smoke or shutil.which("valgrind") is None:
        why = "smoke mode" if settings.smoke else "valgrind is not installed (Debian: apt-get install valgrind)"
        report.add("#### Instructions per call\n\nNot measured: %s." % (why,))
        return
    calls = (settings.instruction_calls // 6, settings.instruction_calls)
    rows: List[List[Any]] = []
    raw: List[Dict[str, Any]] = []
    for target in targets:
        if target.server is not None:
            _create_table(target)
        for key, (label, _, _) in workloads(target).items():
            counts = {pool: _per_call(target, pool, key, calls) for pool in (ADBAPI.key, OURS.key)}
            ratio = counts[OURS.key] / counts[ADBAPI.key]
            rows.append(
                [
                    target.label,
                    label,
                    "{:,.0f}".format(counts[ADBAPI.key]),
                    "{:,.0f}".format(counts[OURS.key]),
                    "{:+,.0f}".format(counts[OURS.key] - counts[ADBAPI.key]),
                    "**%.3f**" % (ratio,),
                ]
            )
            raw.append({"target": target.key, "workload": key, "instructions_per_call": counts, "ratio": ratio})
            print("  %s %s: adbapi %.0f, ours %.0f instructions/call (%.3f)" % (
                target.key, key, counts[ADBAPI.key], counts[OURS.key], ratio), flush=True)
    report.add(
        "#### Instructions per call (valgrind's callgrind; lower is better)\n\n"
        "The client side's CPU cost, counted rather than timed, so that "
        "other programs on the machine cannot move it: each pool runs the "
        "workload through the public API (cp_max=1, one call in flight) in "
        "a process of its own under `valgrind --tool=callgrind`; runs of "
        "%d and %d calls give the instructions per call. The server's work "
        "and system calls are not counted.\n\n" % calls
        + markdown_table(
            ["database (driver)", "workload", "adbapi", "ours", "ours − adbapi", "ours / adbapi"],
            rows,
        )
    )
    report.data["instructions"] = raw


def run_in_thread(report: Report, settings: Settings, targets: Sequence[Target]) -> Any:
    """
    L{instructions}, in a thread (it blocks on the child processes).
    """
    return in_thread(instructions, report, settings, targets)


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
