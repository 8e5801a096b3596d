"""
Same-run comparisons of pools: the pools take turns in short windows, in
a rotating order, in one process, each keeping a number of calls in
flight; each round gives one ratio per pair of pools.  L{bench.overhead}
and L{bench.resolve_cost} measure their throughput tables with it.
"""

from __future__ import annotations

import gc
import time
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from twisted.enterprise import adbapi
from twisted.internet import defer

from bench._common import ADBAPI, Contender, Settings, Target, clock, in_thread, make_pool, rotation, spread
from bench._render import fmt_ratio
from bench.workloads import Call, create_table, pool_options, workloads

__all__ = ["Window", "close_pools", "compare", "make_pools", "paired", "take_turns", "window"]


class Window:
    """
    One measurement window of one pool.

    @ivar rate: calls completed per second (wall clock).
    @ivar cpu: this process's CPU seconds per call (every thread: the
        reactor, the pool's threads): the client side's cost, which other
        processes on the machine disturb far less than the wall clock.
    """

    __slots__ = ("rate", "cpu")

    def __init__(self, rate: float, cpu: float) -> None:
        self.rate = rate
        self.cpu = cpu


@defer.inlineCallbacks
def window(pool: adbapi.ConnectionPool, call: Call, inflight: int, seconds: float) -> Any:
    """
    Keep C{inflight} calls in flight for C{seconds}.

    @return: (a Deferred firing with) a L{Window}.
    """
    done = [0]
    cpu = time.process_time()
    started = clock()
    end = started + seconds

    @defer.inlineCallbacks
    def lane(i: int) -> Any:
        while clock() < end:
            yield call(pool, i)
            done[0] += 1

    yield defer.gatherResults([lane(i) for i in range(inflight)], consumeErrors=True)
    calls = max(1, done[0])
    return Window(calls / (clock() - started), (time.process_time() - cpu) / calls)


@defer.inlineCallbacks
def take_turns(
    pools: Dict[str, adbapi.ConnectionPool],
    contenders: Sequence[Contender],
    call: Call,
    inflight: int,
    rounds: int,
    seconds: float,
) -> Any:
    """
    Measure every pool once per round, in rotating order.

    @return: (a Deferred firing with) the L{Window}s of each pool, by key.
    """
    found: Dict[str, List[Window]] = {c.key: [] for c in contenders}
    for r in range(rounds):
        for c in rotation(contenders, r):
            gc.collect()
            found[c.key].append((yield window(pools[c.key], call, inflight, seconds)))
    return found


def paired(found: Dict[str, List[Window]], key: str, base: str) -> Dict[str, Dict[str, float]]:
    """
    @param found: what L{take_turns} found.
    @param key: the pool compared.
    @param base: the pool it is compared with.
    @return: the spread of C{key}'s throughput ratio to C{base}'s, and of
        its CPU microseconds per call minus C{base}'s, round by round.
    """
    return {
        "ratio": spread([a.rate / b.rate for a, b in zip(found[key], found[base])]),
        "cpu_us": spread([(a.cpu - b.cpu) * 1e6 for a, b in zip(found[key], found[base])]),
    }


def make_pools(contenders: Sequence[Contender], target: Target, cp_max: int) -> Dict[str, adbapi.ConnectionPool]:
    """
    @return: a pool of each of C{contenders} on C{target}, by key, with
        C{cp_max} connections (and as many at the least) and what the
        workloads need (L{pool_options}).
    """
    return {c.key: make_pool(c, target, cp_max, cp_min=cp_max, **pool_options(target)) for c in contenders}


def close_pools(pools: Dict[str, adbapi.ConnectionPool]) -> None:
    """
    Close every pool of C{pools}.
    """
    for pool in pools.values():
        pool.close()


@defer.inlineCallbacks
def compare(
    settings: Settings,
    targets: Sequence[Target],
    contenders: Sequence[Contender],
    keys: Sequence[str],
    inflights: Sequence[int],
    rounds: int,
    pairs: Mapping[str, Tuple[str, str]],
) -> Any:
    """
    Throughput on every target, of every workload of C{keys}, with each
    number of calls in flight; the pools (C{settings.cp_max} connections
    each) take turns in C{rounds} rounds of C{settings.window} seconds,
    after a warm-up window each.  Prints a line per scenario.

    @param pairs: the comparisons to keep: by name, the keys of the pool
        compared and of the pool it is compared with (L{paired}).
    @return: (a Deferred firing with) one dict per target, workload and
        number of calls in flight: every round's calls per second and CPU
        seconds per call, by pool key, and each of C{pairs} by its name.
    """
    raw: List[Dict[str, Any]] = []
    for target in targets:
        if target.server is not None:
            yield in_thread(create_table, target)
        pools = make_pools(contenders, target, settings.cp_max)
        try:
            for key, workload in workloads(target, keys).items():
                # Warm up: every thread opens its connection, caches settle.
                for c in contenders:
                    yield window(pools[c.key], workload.call, settings.cp_max, settings.window)
                for inflight in inflights:
                    found = yield take_turns(pools, contenders, workload.call, inflight, rounds, settings.window)
                    row: Dict[str, Any] = {
                        "target": target.key,
                        "workload": key,
                        "inflight": inflight,
                        "calls_per_second": {k: [w.rate for w in v] for k, v in found.items()},
                        "cpu_seconds_per_call": {k: [w.cpu for w in v] for k, v in found.items()},
                    }
                    for name, (compared, base) in pairs.items():
                        row[name] = paired(found, compared, base)
                    raw.append(row)
                    print(
                        "  %s %s x%d: adbapi %.0f/s; %s"
                        % (
                            target.key,
                            key,
                            inflight,
                            spread([w.rate for w in found[ADBAPI.key]])["median"],
                            ", ".join(
                                "%s %s, CPU %+.1f µs/call" % (name, fmt_ratio(row[name]["ratio"]), row[name]["cpu_us"]["median"])
                                for name in pairs
                            ),
                        ),
                        flush=True,
                    )
        finally:
            close_pools(pools)
    return raw
