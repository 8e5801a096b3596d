"""
Small helpers shared by the tests: waiting for a condition with a
deadline (never sleeping and hoping) and closing connections quietly.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from twisted.internet import defer


def wait_until(condition: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    """
    Poll C{condition} (blocking) until it holds.

    @raise AssertionError: it did not hold within C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("%s did not hold within %.0f s" % (what, timeout))
        time.sleep(0.02)


def close_quietly(conn: Any) -> None:
    """
    Close a raw DB-API connection, ignoring errors from a dead one.
    """
    try:
        conn.close()
    except Exception:
        pass


def warm(pool: Any) -> "defer.Deferred[Any]":
    """
    Make every one of the pool's C{cp_max} threads open its connection:
    C{cp_max} interactions that wait for each other, so each runs on a
    thread of its own.
    """
    barrier = threading.Barrier(pool.max)

    def hold(txn: Any) -> None:
        txn.execute("SELECT 1")
        txn.fetchall()
        barrier.wait(timeout=30)

    return defer.gatherResults([pool.runInteraction(hold) for _ in range(pool.max)])
