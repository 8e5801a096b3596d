"""
Small helpers shared by the tests: waiting for a condition with a
deadline (never sleeping and hoping) and closing connections quietly.
"""

from __future__ import annotations

import time
from typing import Any, Callable



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


# Re-exported for the tests that import it from here.
from txreconnect.testing import warm  # noqa: E402

__all__ = ["close_quietly", "wait_until", "warm"]
