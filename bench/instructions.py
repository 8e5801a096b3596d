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
SPEC}).  L{bench.overhead_tables} renders the numbers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

from twisted.enterprise import adbapi
from twisted.internet import defer, reactor

from bench._common import ADBAPI, OURS, Settings, Target
from bench.workloads import create_table, sqlite_openfun, workloads
from txreconnect import ReconnectingConnectionPool

__all__ = ["count", "measure", "not_measured"]


def _child(spec: Dict[str, Any]) -> None:
    """
    Run C{spec["calls"]} calls of one workload on one pool, then stop.
    """
    target = Target(spec["target"], "", spec["driver"], None)
    kwargs = dict(spec["kwargs"], cp_min=1, cp_max=1)
    if spec["target"] == "sqlite":
        kwargs["cp_openfun"] = sqlite_openfun(target)
    cls = ReconnectingConnectionPool if spec["pool"] == OURS.key else adbapi.ConnectionPool
    pool = cls(spec["driver"], *spec["args"], **kwargs)
    call = workloads(target)[spec["workload"]].call

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


def count(spec: Dict[str, Any]) -> int:
    """
    Run the child for C{spec} under callgrind.

    @param spec: the child's target key, driver, C{connect()} arguments
        (C{args}, C{kwargs}), pool key, workload key and number of calls.
    @return: the instructions the child executed.
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
            # A fixed hash seed: with random ones the same code's count
            # moves by about 1% from run to run (dict and set layouts).
            env=dict(os.environ, PYTHONHASHSEED="0"),
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
    few, many = (count(dict(base, calls=n)) for n in calls)
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
            counts = {pool: _per_call(target, pool, key, calls) for pool in (ADBAPI.key, OURS.key)}
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
