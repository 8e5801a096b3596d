"""
Thread-safe counters for a pool's C{stats()}.
"""

from __future__ import annotations

import threading
from typing import Dict

__all__ = ["Stats"]

_COUNTERS = (
    "opened",
    "closed",
    "disconnects",
    "wrong_server",
    "replays",
    "replays_failed",
    "outcome_unknown",
    "stalls",
    "conflicts",
    "conflict_retries",
    "resolved_committed",
    "resolved_aborted",
    "resolve_failed",
    "connect_attempts",
    "reconnect_attempts",
    "connect_failures",
    "health_checks",
    "health_check_failures",
    "seconds_waiting",
    "rejected",
    "wait_timeouts",
)


class Stats:
    """
    Counters updated from pool threads and read from anywhere.  Only
    events (a connection opened, a disconnection) count, so the lock is
    never taken on the path of a call that goes well.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Dict[str, float] = dict.fromkeys(_COUNTERS, 0)

    def add(self, name: str, amount: float = 1) -> None:
        """
        Add C{amount} to the counter C{name}.

        @raise KeyError: C{name} is not a counter.
        """
        with self._lock:
            self._counts[name] += amount

    def snapshot(self) -> Dict[str, float]:
        """
        @return: a copy of every counter.
        """
        with self._lock:
            return dict(self._counts)
