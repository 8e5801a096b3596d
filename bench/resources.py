"""
Resources: does the pool leak across many interactions and many faults?

For each server, a L{ReconnectingConnectionPool} (defaults, C{cp_max}
connections, through a L{FaultProxy}) runs many interactions, then many
fault cycles: every session terminated by the server's administrator, or
every connection dropped by the proxy, in turn; after each fault every
pool thread makes a call (and so replaces its connection).  Checkpoints
record this process's resident memory, open file descriptors and
threads, the server's client connections, and the pool's connections
opened minus closed.  Growth must be flat.
"""

from __future__ import annotations

import gc
import os
import threading
from typing import Any, Dict, List, Sequence

from twisted.internet import defer

from bench._common import OURS, Report, Settings, Target, in_thread, make_pool, run_sql, warm
from bench._render import markdown_table
from txreconnect.testing import FaultProxy

__all__ = ["run"]


def _status(field: str) -> int:
    """
    @return: an integer field of C{/proc/self/status} (kB for sizes).
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


@defer.inlineCallbacks
def _snapshot(label: str, target: Target, pool: Any, interactions: int, cycles: int, failures: int) -> Any:
    gc.collect()
    assert target.server is not None
    server_connections = yield in_thread(target.server.client_connections)
    stats = pool.stats()
    return {
        "checkpoint": label,
        "interactions": interactions,
        "fault_cycles": cycles,
        "rss_kib": _status("VmRSS"),
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": _status("Threads"),
        "python_threads": threading.active_count(),
        "server_connections": server_connections,
        "pool_open": int(stats["opened"] - stats["closed"]),
        "failed_calls": failures,
        "replays": int(stats["replays"]),
        "opened": int(stats["opened"]),
    }


@defer.inlineCallbacks
def _interactions(pool: Any, target: Target, count: int, inflight: int) -> Any:
    """
    C{count} calls, C{inflight} at a time: runQuery and a write
    (runInteraction) in turn.

    @return: how many failed.
    """
    insert = target.sql("INSERT INTO bench_leak (id) VALUES (%s)")

    def write(txn: Any, i: int) -> None:
        txn.execute(insert, (i,))

    left = iter(range(count))
    failed = [0]

    @defer.inlineCallbacks
    def lane() -> Any:
        for i in left:
            try:
                if i % 2:
                    yield pool.runInteraction(write, i)
                else:
                    yield pool.runQuery("SELECT 1")
            except Exception:
                failed[0] += 1

    yield defer.gatherResults([lane() for _ in range(inflight)], consumeErrors=True)
    return failed[0]


def _create_table(target: Target) -> None:
    run_sql(target, ["DROP TABLE IF EXISTS bench_leak", "CREATE TABLE bench_leak (id BIGINT NOT NULL)"])


@defer.inlineCallbacks
def _one(settings: Settings, target: Target) -> Any:
    server = target.server
    assert server is not None
    cp_max = settings.recovery_cp_max
    yield in_thread(_create_table, target)
    proxy = FaultProxy(server.port)
    proxy.start()
    pool = make_pool(OURS, target, cp_max, port=proxy.port)
    points: List[Dict[str, Any]] = []
    failures = 0
    done = 0
    cycles = 0

    @defer.inlineCallbacks
    def cycle() -> Any:
        nonlocal cycles, failures
        if cycles % 2 == 0:
            yield in_thread(server.terminate_sessions)
        else:
            yield proxy.drop()
        try:
            yield warm(pool)
        except Exception:
            failures += 1
        cycles += 1

    try:
        yield warm(pool)
        # Settle first (allocator, caches, the reactor's thread pool), so
        # that the checkpoints show growth, not the first use.
        failures += yield _interactions(pool, target, max(10, settings.interactions // 20), cp_max)
        for _ in range(max(2, settings.fault_cycles // 20)):
            yield cycle()
        warmup_cycles, cycles = cycles, 0
        points.append((yield _snapshot("start", target, pool, done, cycles, failures)))
        failures += yield _interactions(pool, target, settings.interactions, cp_max)
        done += settings.interactions
        points.append((yield _snapshot("after the interactions", target, pool, done, cycles, failures)))
        quarter = max(1, settings.fault_cycles // 4)
        while cycles < settings.fault_cycles:
            yield cycle()
            if cycles % quarter == 0 or cycles == settings.fault_cycles:
                points.append((yield _snapshot("after %d fault cycles" % (cycles,), target, pool, done, cycles, failures)))
        failures += yield _interactions(pool, target, max(10, settings.interactions // 20), cp_max)
        done += max(10, settings.interactions // 20)
        points.append((yield _snapshot("end", target, pool, done, cycles, failures)))
    finally:
        pool.close()
        yield proxy.stop()
    return {"warmup_cycles": warmup_cycles, "cp_max": cp_max, "points": points}


@defer.inlineCallbacks
def run(settings: Settings, targets: Sequence[Target]) -> Any:
    """
    @return: (a Deferred firing with) the section's L{Report}.
    """
    report = Report("resources")
    report.add("### Resources")
    rows = []
    raw: Dict[str, Any] = {}
    for target in targets:
        if target.server is None:
            continue
        result = yield _one(settings, target)
        raw[target.key] = result
        points = result["points"]
        for p in points:
            rows.append(
                [
                    target.label,
                    p["checkpoint"],
                    "{:,}".format(p["interactions"]),
                    p["fault_cycles"],
                    "%.1f" % (p["rss_kib"] / 1024,),
                    p["fds"],
                    p["threads"],
                    p["server_connections"],
                    p["pool_open"],
                    p["failed_calls"],
                ]
            )
        first, last = points[0], points[-1]
        rows.append(
            [
                target.label,
                "**growth, start → end**",
                "",
                "",
                "**%+.1f**" % ((last["rss_kib"] - first["rss_kib"]) / 1024,),
                "**%+d**" % (last["fds"] - first["fds"],),
                "**%+d**" % (last["threads"] - first["threads"],),
                "**%+d**" % (last["server_connections"] - first["server_connections"],),
                "**%+d**" % (last["pool_open"] - first["pool_open"],),
                "",
            ]
        )
        print("  %s: done" % (target.key,), flush=True)
    report.add(
        "#### Memory, descriptors, threads and sessions (ReconnectingConnectionPool)\n\n"
        "cp_max=%d through a FaultProxy; %s interactions (runQuery and a "
        "write in turn, %d in flight), then %d fault cycles (sessions "
        "terminated by the server, then connections dropped by the proxy, "
        "in turn; after each, every pool thread makes a call). Measured "
        "after a warm-up (a few hundred calls and fault cycles). RSS of "
        "the whole benchmark process after `gc.collect()`; descriptors in "
        "`/proc/self/fd` (sockets of the pool and the proxy included); "
        "*pool open*: connections opened minus closed (`pool.stats()`); "
        "*failed*: calls that failed so far (cumulative).\n\n"
        % (settings.recovery_cp_max, "{:,}".format(settings.interactions), settings.recovery_cp_max, settings.fault_cycles)
        + markdown_table(
            [
                "database",
                "checkpoint",
                "interactions",
                "fault cycles",
                "RSS MiB",
                "open fds",
                "threads",
                "server connections",
                "pool open",
                "failed",
            ],
            rows,
        )
    )
    report.data["resources"] = raw
    return report
