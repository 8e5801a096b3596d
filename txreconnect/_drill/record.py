"""
What the clients of one pool saw during a drill: every call with its start,
end and outcome, what each write was told, and the failures by kind; and
the times derived from them (downtime, recovery after a fault).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Dict, List, Optional, Tuple

from txreconnect._drill.audit import FAILED, OK, UNKNOWN, Audit
from txreconnect.errors import TransactionOutcomeUnknown

__all__ = ["Record"]


class Record:
    """
    One pool's side of a drill.

    @ivar label: the pool's name in the report.
    @ivar calls: C{(started, ended, succeeded)} for every call, in the
        order they ended, on the reactor's clock.
    @ivar reads: how many calls were reads.
    @ivar writes: each write id with what its client was told.
    @ivar failures: failed calls by exception class name.
    @ivar stats: the pool's C{stats()} at the end, if it has them.
    @ivar audit: the verdict on its writes, once audited.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.calls: List[Tuple[float, float, bool]] = []
        self.reads = 0
        self.writes: Dict[str, str] = {}
        self.failures: Counter[str] = Counter()
        self.stats: Optional[Dict[str, Any]] = None
        self.audit: Optional[Audit] = None

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def succeeded(self) -> int:
        return len(self.calls) - self.failed

    def call(self, started: float, ended: float, error: Optional[BaseException], write_id: Optional[str]) -> None:
        """
        Record one call.

        @param error: what it failed with, or C{None} if it succeeded.
        @param write_id: the id of the write, or C{None} for a read.
        """
        self.calls.append((started, ended, error is None))
        if write_id is None:
            self.reads += 1
        elif error is None:
            self.writes[write_id] = OK
        else:
            self.writes[write_id] = UNKNOWN if isinstance(error, TransactionOutcomeUnknown) else FAILED
        if error is not None:
            self.failures[type(error).__name__] += 1

    def downtime(self, end: float) -> float:
        """
        @param end: when the drill's workload ended.
        @return: the seconds during which the clients saw failures: from
            each failure that follows a success to the next success (or
            C{end}), summed.
        """
        total = 0.0
        failing_since: Optional[float] = None
        for _, ended, ok in self.calls:
            if not ok and failing_since is None:
                failing_since = ended
            elif ok and failing_since is not None:
                total += ended - failing_since
                failing_since = None
        if failing_since is not None:
            total += end - failing_since
        return total

    def failed_between(self, since: float, until: float) -> int:
        """
        @return: how many calls failed that ended from C{since} to before
            C{until}.
        """
        return sum(1 for _, ended, ok in self.calls if not ok and since <= ended < until)

    def recovery(self, since: float) -> Optional[float]:
        """
        @param since: when a fault began.
        @return: the seconds from C{since} to the end of the first
            successful call made after it, or C{None} if there was none.
        """
        ends = [ended for started, ended, ok in self.calls if ok and started >= since]
        return min(ends) - since if ends else None
