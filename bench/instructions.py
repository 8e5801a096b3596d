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
SPEC}); L{bench.round_trips} runs it under strace.
L{bench.overhead_tables} renders the numbers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from twisted.internet import defer, reactor

from bench._common import ADBAPI, CONTENDERS, OURS, Settings, Target
from bench.workloads import create_table, sqlite_openfun, workloads

__all__ = ["count", "measure", "not_measured", "per_call", "run_child"]


def _child(spec: Dict[str, Any]) -> None:
    """
    Run C{spec["calls"]} calls of one workload on one pool, then stop.
    """
    target = Target(spec["target"], "", spec["driver"], None)
    contender = CONTENDERS[spec["pool"]]
    kwargs = dict(spec["kwargs"], cp_min=1, cp_max=1, **contender.options)
    if spec["target"] == "sqlite":
        kwargs["cp_openfun"] = sqlite_openfun(target)
    pool = contender.cls(spec["driver"], *spec["args"], **kwargs)
    call = workloads(target, [spec["workload"]])[spec["workload"]].call

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


def run_child(tool: Sequence[str], spec: Dict[str, Any]) -> "subprocess.CompletedProcess[str]":
    """
    Run the child for C{spec} under C{tool}, from the repository's root,
    with a fixed hash seed.

    @param tool: the command line that runs the child, e.g. C{["valgrind",
        "--tool=callgrind"]}.
    @param spec: the child's target key, driver, C{connect()} arguments
        (C{args}, C{kwargs}), pool key (of L{CONTENDERS}), workload key
        and number of calls.
    @return: what it did, with its output captured.
    @raise RuntimeError: the child failed.
    """
    done = subprocess.run(
        list(tool) + [sys.executable, "-m", "bench.instructions", json.dumps(spec)],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        # A fixed hash seed: with random ones the same code's count
        # moves by about 1% from run to run (dict and set layouts).
        env=dict(os.environ, PYTHONHASHSEED="0"),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError("%s run failed (%s): %s" % (tool[0], done.returncode, done.stderr[-2000:]))
    return done


def count(spec: Dict[str, Any]) -> int:
    """
    Run the child for C{spec} under callgrind.

    @param spec: as for L{run_child}.
    @return: the instructions the child executed.
    @raise RuntimeError: the child failed.
    """
    with tempfile.TemporaryDirectory(prefix="txreconnect-callgrind-") as tmp:
        done = run_child(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + os.path.join(tmp, "callgrind.out")], spec)
    for line in done.stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1].strip())
    raise RuntimeError("callgrind printed no instruction count: %s" % (done.stderr[-2000:],))


def per_call(
    target: Target,
    pool: str,
    workload: str,
    calls: Tuple[int, int],
    counter: Callable[[Dict[str, Any]], int] = count,
) -> float:
    """
    @param target: the database.
    @param pool: the pool's key (of L{CONTENDERS}).
    @param workload: the workload's key.
    @param calls: the calls of the shorter and of the longer run.
    @param counter: what counts a child's run (L{count}, or another
        L{run_child} under another tool).
    @return: the count per call of C{pool} on C{target}: the difference
        between the two runs, divided by the difference in calls (the
        start-up cancels out).
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
    few, many = (counter(dict(base, calls=n)) for n in calls)
    return (many - few) / (calls[1] - calls[0])


def not_measured(settings: Settings) -> Optional[str]:
    """
    @return: why L{measure} cannot run (valgrind is missing) or should not
        (smoke mode), or L{None}.
    """
    if settings.smoke:
        return "smoke mode"
    if shutil.which("valgrind") is None:
        return "valgrind is not installed (Debian: apt-get install valgrind)"
    return None


def measure(settings: Settings, targets: Sequence[Target]) -> List[Dict[str, Any]]:
    """
    Count adbapi's and ours' instructions per call, for each target and
    workload (blocking: it waits for the child processes).

    @return: one dict per target and workload: its keys, the instructions
        per call by pool key, and ours / adbapi.
    """
    calls = (settings.instruction_calls // 6, settings.instruction_calls)
    raw: List[Dict[str, Any]] = []
    for target in targets:
        if target.server is not None:
            create_table(target)
        for key in workloads(target):
            counts = {pool: per_call(target, pool, key, calls) for pool in (ADBAPI.key, OURS.key)}
            ratio = counts[OURS.key] / counts[ADBAPI.key]
            raw.append({"target": target.key, "workload": key, "instructions_per_call": counts, "ratio": ratio})
            print(
                "  %s %s: adbapi %.0f, ours %.0f instructions/call (%.3f)"
                % (target.key, key, counts[ADBAPI.key], counts[OURS.key], ratio),
                flush=True,
            )
    return raw


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
