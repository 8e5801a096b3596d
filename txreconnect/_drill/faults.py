"""
The fault schedule: which faults, in which order and when, drawn from a
seed so that a drill can be repeated; and the loop that injects them on
the reactor's clock, one after the other.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Generator, List, Sequence, Tuple

from twisted.internet import defer, task

from txreconnect._outage import describe

__all__ = ["COOLDOWN", "Fault", "inject_all", "plan"]

#: seconds of plain workload before the first fault
WARMUP = 1.0
#: seconds left for recovery after the last fault
COOLDOWN = 1.5
#: the average seconds between faults, when the drill is long enough
SPACING = 2.0


@dataclass
class Fault:
    """
    One injected fault.

    @ivar kind: what it was (C{"kill"}, C{"restart"}, C{"drop"}, ...).
    @ivar started: when its injection began, on the reactor's clock.
    @ivar ended: when its injection ended (a restart takes a while).
    @ivar detail: what was done, in words.
    """

    kind: str
    started: float
    ended: float = 0.0
    detail: str = ""


def plan(kinds: Sequence[str], duration: float, seed: object) -> List[Tuple[float, str]]:
    """
    @param kinds: the faults the site can make.
    @param duration: the workload's length, in seconds.
    @param seed: the seed; the same seed gives the same plan.
    @return: C{(seconds after the start, kind)} for each fault, in order:
        every kind at least once, more when the drill is long (every
        L{SPACING} seconds on average), each kind in turn in a shuffled
        order, spread over the drill between L{WARMUP} and L{COOLDOWN}.
    """
    rng = random.Random(str(seed))
    span = max(duration - WARMUP - COOLDOWN, 0.0)
    count = max(len(kinds), int(span // SPACING))
    order: List[str] = []
    while len(order) < count:
        batch = sorted(kinds)
        rng.shuffle(batch)
        order.extend(batch)
    slot = span / count
    return [(WARMUP + slot * (i + rng.uniform(0.2, 0.8)), kind) for i, kind in enumerate(order[:count])]


@defer.inlineCallbacks
def inject_all(
    reactor: Any,
    schedule: Sequence[Tuple[float, str]],
    start: float,
    inject: Callable[[str], "defer.Deferred[str]"],
    announce: Callable[[Fault], None],
) -> Generator[Any, Any, List[Fault]]:
    """
    Inject the faults of C{schedule}, each at its time or as soon as the
    one before it is done.

    @param start: the drill's start on the reactor's clock.
    @param inject: makes a fault of a kind; fires with what it did.
    @param announce: called with each fault as it begins (no C{ended}
        yet) and again once it is done.
    @return: a Deferred that fires with the faults, once all are done.
    """
    done: List[Fault] = []
    for at, kind in schedule:
        wait = start + at - reactor.seconds()
        if wait > 0:
            yield task.deferLater(reactor, wait, lambda: None)
        fault = Fault(kind, reactor.seconds())
        announce(fault)
        try:
            fault.detail = yield inject(kind)
        except Exception as error:
            fault.detail = "could not inject it: %s" % (describe(error),)
        fault.ended = reactor.seconds()
        announce(fault)
        done.append(fault)
    return done
