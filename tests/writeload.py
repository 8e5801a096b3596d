"""
Continuous writes through a pool, each with a unique id, for the tests
that fail a server over under load and then audit what was stored.
"""

from __future__ import annotations

import itertools
import time
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from twisted.internet import defer
from twisted.python.failure import Failure

from tests.support import wait_until_async

__all__ = ["WriteLoad"]


class WriteLoad:
    """
    C{callers} lanes, each inserting one row with a fresh id into C{table}
    and waiting for the answer before the next, until L{stop}.

    @ivar acked: ids whose insert the pool reported as done, with when.
    @ivar failed: ids whose insert failed, with the failure.
    """

    def __init__(
        self,
        pool: Any,
        callers: int = 4,
        table: str = "items",
        insert: Optional[Callable[[Any, int], "defer.Deferred[Any]"]] = None,
    ) -> None:
        """
        @param pool: a started pool.
        @param insert: how to write one id (default: C{runOperation} of an
            C{INSERT INTO table (id) VALUES (%s)}).
        """
        self.pool = pool
        self.callers = callers
        self.table = table
        self._insert = insert or self._run_operation
        self._ids = itertools.count(1)
        self._running = False
        self._lanes: List["defer.Deferred[Any]"] = []
        self.acked: Dict[int, float] = {}
        self.failed: List[Tuple[int, Failure]] = []

    def _run_operation(self, pool: Any, id: int) -> "defer.Deferred[Any]":
        return pool.runOperation("INSERT INTO %s (id) VALUES (%%s)" % (self.table,), (id,))

    def start(self) -> None:
        """
        Start the lanes.
        """
        self._running = True
        self._lanes = [self._lane() for _ in range(self.callers)]

    @defer.inlineCallbacks
    def _lane(self) -> Any:
        while self._running:
            id = next(self._ids)
            try:
                yield self._insert(self.pool, id)
            except Exception:
                self.failed.append((id, Failure()))
            else:
                self.acked[id] = time.monotonic()

    def stop(self) -> "defer.Deferred[Any]":
        """
        Stop the lanes.

        @return: a Deferred that fires when the last calls have answered.
        """
        self._running = False
        return defer.gatherResults(self._lanes, consumeErrors=True)

    def acked_since(self, moment: float) -> Set[int]:
        """
        @return: the ids acknowledged after C{moment} (C{time.monotonic()}).
        """
        return {id for id, when in self.acked.items() if when > moment}

    def wait_for_acks(self, count: int, timeout: float, what: str) -> "defer.Deferred[Any]":
        """
        Wait until C{count} more writes than now were acknowledged.

        @return: a Deferred firing with the seconds it took.
        """
        target = len(self.acked) + count

        def explain(failure: Failure) -> Failure:
            if self.failed:
                failure.value.args = (
                    "%s; %d writes failed, the last with %s"
                    % (failure.getErrorMessage(), len(self.failed), self.failed[-1][1].getErrorMessage()),
                )
            return failure

        return wait_until_async(lambda: len(self.acked) >= target, timeout, what).addErrback(explain)

    def failure_types(self) -> Dict[str, int]:
        """
        @return: how many writes failed, by exception class name.
        """
        counts: Dict[str, int] = {}
        for _, failure in self.failed:
            name = failure.type.__name__ if failure.type is not None else "?"
            counts[name] = counts.get(name, 0) + 1
        return counts
