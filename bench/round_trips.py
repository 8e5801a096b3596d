"""
The requests a pool sends the server per call, counted rather than
reasoned about: the child of L{bench.instructions} runs one workload
through the public API (C{cp_max=1}, one call in flight) under
C{strace -f -c}, which counts the process's C{sendto} and C{sendmsg}
system calls.  A driver sends each request (a statement, C{BEGIN},
C{COMMIT}) in one such call and then waits for the reply, so on a
database that answers every request, as PostgreSQL and MySQL do, the
count per call is the round trips per call.  (The reactor's waker
writes to a pipe, with C{write}, which is not counted.)  Two runs with
different numbers of calls give the count per call (the connection's
start-up cancels out).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from typing import Any, Dict, Optional

from bench.instructions import run_child

__all__ = ["SENDS", "not_measured", "sends"]

#: the system calls that send a request
SENDS = ("sendto", "sendmsg")


def sends(spec: Dict[str, Any]) -> int:
    """
    Run the child for C{spec} under strace.

    @param spec: as for L{bench.instructions.run_child}.
    @return: how many L{SENDS} calls the child and its threads made.
    @raise RuntimeError: the child failed, or strace wrote no summary.
    """
    with tempfile.TemporaryDirectory(prefix="txreconnect-strace-") as tmp:
        out = os.path.join(tmp, "strace.out")
        run_child(["strace", "-f", "-c", "-e", "trace=" + ",".join(SENDS), "-o", out], spec)
        with open(out) as f:
            summary = f.read()
    found = 0
    for line in summary.splitlines():
        fields = line.split()
        # "% time  seconds  usecs/call  calls  [errors]  syscall"
        if len(fields) >= 5 and fields[-1] in SENDS:
            found += int(fields[3])
    if "total" not in summary:
        raise RuntimeError("strace wrote no summary: %s" % (summary[-2000:],))
    return found


def not_measured() -> Optional[str]:
    """
    @return: why L{sends} cannot run (strace is missing, or may not trace
        here: a container without C{ptrace}), or L{None}.
    """
    if shutil.which("strace") is None:
        return "strace is not installed (Debian: apt-get install strace)"
    tried = subprocess.run(["strace", "-f", "-c", "-o", os.devnull, "true"], capture_output=True, text=True)
    if tried.returncode != 0:
        return "strace cannot trace here (%s)" % (tried.stderr.strip().splitlines()[-1:] or ["exit status %d" % tried.returncode])[0]
    return None
