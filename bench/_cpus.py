"""
Run a measurement with the benchmark and its servers on one CPU.

On a small virtual machine the wall clock of a thread pool is ruled by
where the scheduler places the threads: whether the reactor thread, the
pool's worker and the server's backend share a CPU or wake each other
across CPUs changes a call's latency by tens of percent, and that placement
changes every time a pool's threads wake up.  Two identical pools measured
in turn then differ by ±5% and more (the benchmark's control shows it).
With every thread of the client and of the servers on one CPU, a call costs
what its instructions cost: the pools differ only by their own work, and
the pools' own overhead counts in full (nothing runs in parallel to hide
it).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, List, Optional, Sequence

from bench._common import Target

__all__ = ["one_cpu"]


def _tasks(pid: int) -> List[int]:
    """
    @return: the thread ids of process C{pid} (empty if it is gone).
    """
    try:
        return [int(tid) for tid in os.listdir("/proc/%d/task" % (pid,))]
    except OSError:
        return []


def _set(pids: Sequence[int], cpus: "set[int]") -> bool:
    """
    Give every thread of C{pids} the CPU set C{cpus} (threads that ended
    meanwhile are passed over).

    @return: whether every thread could be given it (a server run as
        another user cannot be, without root); the others are given it
        all the same.
    """
    done = True
    for pid in pids:
        for tid in _tasks(pid):
            try:
                os.sched_setaffinity(tid, cpus)
            except ProcessLookupError:
                pass
            except PermissionError:
                done = False
    return done


@contextmanager
def one_cpu(targets: Sequence[Target]) -> Iterator[Optional[int]]:
    """
    Run the block with every thread of this process and of the targets'
    servers on one CPU (the last one this process may use), then give them
    all back every CPU this process could use.  Threads and processes
    started in the block inherit the one CPU.

    @return: a context manager yielding the CPU, or L{None} when nothing
        was pinned: one CPU only, no C{sched_setaffinity} (not Linux), or
        not allowed to.
    """
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_setaffinity") else set()
    if len(allowed) < 2:
        yield None
        return

    def pids() -> List[int]:
        found = [os.getpid()]
        for target in targets:
            if target.server is not None:
                found.extend(target.server.pids())
        return found

    cpu = max(allowed)
    if not _set(pids(), {cpu}):
        _set(pids(), allowed)
        yield None
        return
    try:
        yield cpu
    finally:
        _set(pids(), allowed)
