"""
Histograms of how long a pool's calls wait for a thread, how long they
hold it, and how long a connection takes to open, without a lock on the
path of a call.

Each thread counts into cells of its own (a list per thread id, which
only that thread changes), and a reader adds the cells up.  A reader may
see an observation half counted (in its bucket but not yet in the sum);
the next read is whole.
"""

from __future__ import annotations

import bisect
import threading
from typing import Dict, List, Tuple

__all__ = ["BOUNDS", "Histogram", "Snapshot", "Timings"]

#: bucket upper bounds, in seconds: from half a millisecond (a call on a
#: local server) to a minute (a call that waited out an outage)
BOUNDS: Tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)

#: (bucket upper bounds, the count in each bucket and one more for the
#: rest (+Inf), not cumulative; the sum of the observations; their count)
Snapshot = Tuple[Tuple[float, ...], List[int], float, int]

_get_ident = threading.get_ident


class Histogram:
    """
    Observations of a duration, counted in L{BOUNDS} buckets, with a cell
    of counters per observing thread.
    """

    def __init__(self, bounds: Tuple[float, ...] = BOUNDS) -> None:
        self.bounds = bounds
        self._cells: Dict[int, List[float]] = {}

    def observe(self, seconds: float) -> None:
        """
        Count one observation, in the calling thread's cell.

        @param seconds: the duration.
        """
        cell = self._cells.get(_get_ident())
        if cell is None:
            # dict.setdefault is atomic: a thread makes its cell once.
            cell = self._cells.setdefault(_get_ident(), [0] * (len(self.bounds) + 1) + [0.0])
        cell[bisect.bisect_left(self.bounds, seconds)] += 1
        cell[-1] += seconds

    def snapshot(self) -> Snapshot:
        """
        @return: the counts so far, every thread's cells added up.
        """
        counts = [0] * (len(self.bounds) + 1)
        total = 0.0
        for cell in list(self._cells.values()):
            values = list(cell)
            for i in range(len(counts)):
                counts[i] += int(values[i])
            total += values[-1]
        return self.bounds, counts, total, sum(counts)


class Timings:
    """
    A pool's three histograms.

    @ivar wait: from a call to its start in a pool thread.
    @ivar use: how long a call held its thread (and connection).
    @ivar connect: each successful connection attempt.
    """

    def __init__(self) -> None:
        self.wait = Histogram()
        self.use = Histogram()
        self.connect = Histogram()

    def snapshot(self) -> Dict[str, Snapshot]:
        """
        @return: each histogram's L{Histogram.snapshot}, by name.
        """
        return {"wait": self.wait.snapshot(), "use": self.use.snapshot(), "connect": self.connect.snapshot()}
