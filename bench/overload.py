"""
Overload: callers offering three times what the database can serve.

Two pool threads each serve one call at a time, and every call sleeps
50 ms in the database: 40 calls a second.  For ten seconds, 120 calls a
second are offered, to C{adbapi.ConnectionPool}, to
L{ReconnectingConnectionPool} with its defaults (both queue without a
bound, as adbapi does), to L{ReconnectingConnectionPool} with
C{cp_max_waiting=10} and C{cp_wait_timeout=1}, and with
C{cp_wait_timeout=1} alone.  Each pool's turn ends
when its last call has ended.  The table says what became of the calls:
how many succeeded, were refused at once or failed at their deadline;
the most calls that waited for a thread; the successes' latency; how
many calls completed more than a second after they were made (a caller
with a second of patience gave up on them, yet they ran); how long the
queue took to empty after the offering stopped; and this process's
resident memory before and after.
"""

from __future__ import annotations

import gc
import time
from typing import Any, Dict, List, Sequence

from twisted.internet import defer, task
from twisted.python.failure import Failure

from bench._common import ADBAPI, OURS, Contender, Report, Settings, Target, make_pool, quantile, sleep
from bench._render import markdown_table
from txreconnect import PoolOverloaded, ReconnectingConnectionPool

__all__ = ["run"]

#: the bounded contender
OURS_BOUNDED = Contender(
    "ours_bounded",
    "ReconnectingConnectionPool(cp_max_waiting=10, cp_wait_timeout=1)",
    ReconnectingConnectionPool,
    {"cp_max_waiting": 10, "cp_wait_timeout": 1.0},
)
#: a deadline alone: the queue is bounded by time
OURS_DEADLINE = Contender(
    "ours_deadline",
    "ReconnectingConnectionPool(cp_wait_timeout=1)",
    ReconnectingConnectionPool,
    {"cp_wait_timeout": 1.0},
)

#: pool threads, the seconds each call spends in the database, and the
#: offered rate (three times what they serve)
CP_MAX = 2
SERVICE = 0.05
RATE = 3 * CP_MAX / SERVICE

#: a caller's patience (seconds): a call that ends later was given up on
PATIENCE = 1.0


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def _waiting(pool: Any) -> int:
    """
    @return: how many calls wait for a thread of C{pool} (ours counts
        them; adbapi's are in its thread pool's queue).
    """
    occupancy = getattr(pool, "occupancy", None)
    return occupancy()["waiting"] if occupancy is not None else pool.threadpool.q.qsize()


def _sleep_sql(target: Target) -> str:
    return "SELECT pg_sleep(%s)" % (SERVICE,) if target.key == "postgres" else "SELECT SLEEP(%s)" % (SERVICE,)


@defer.inlineCallbacks
def _offer(contender: Contender, target: Target, seconds: float) -> Any:
    """
    Offer L{RATE} calls a second to a new pool of C{contender} for
    C{seconds}, then wait for every call to end.

    @return: (a Deferred firing with) what became of the calls.
    """
    pool = make_pool(contender, target, CP_MAX, cp_min=CP_MAX)
    pool.start()
    sql = _sleep_sql(target)
    latencies: List[float] = []
    late = [0]
    refused = [0]
    timed_out = [0]
    other: List[str] = []
    pending: List["defer.Deferred[Any]"] = []
    most_waiting = [0]
    try:
        yield defer.gatherResults([pool.runQuery("SELECT 1") for _ in range(CP_MAX)])
        gc.collect()
        rss_before = _rss_kib()

        def succeeded(_: Any, began: float) -> None:
            took = time.monotonic() - began
            latencies.append(took)
            if took > PATIENCE:
                late[0] += 1

        def failed(failure: Failure, began: float) -> None:
            if failure.check(PoolOverloaded):
                timed_out[0] += 1
            else:
                other.append(failure.getErrorMessage()[:100])

        def refused_now(failure: Failure) -> None:
            if failure.check(PoolOverloaded):
                refused[0] += 1
            else:
                other.append(failure.getErrorMessage()[:100])

        def offer() -> None:
            most_waiting[0] = max(most_waiting[0], _waiting(pool))
            began = time.monotonic()
            d = pool.runQuery(sql)
            if d.called:
                # Refused before runQuery returned.
                d.addErrback(refused_now)
                return
            d.addCallbacks(succeeded, failed, callbackArgs=(began,), errbackArgs=(began,))
            pending.append(d)

        loop = task.LoopingCall(offer)
        started = time.monotonic()
        loop.start(1.0 / RATE)
        yield sleep(seconds)
        loop.stop()
        stopped = time.monotonic()
        rss_peak = _rss_kib()
        yield defer.DeferredList(pending)
        drained = time.monotonic() - stopped
        gc.collect()
        rss_after = _rss_kib()
    finally:
        pool.close()
    offered = len(pending) + refused[0]
    return {
        "offered": offered,
        "offered_per_s": offered / (stopped - started),
        "succeeded": len(latencies),
        "refused": refused[0],
        "timed_out": timed_out[0],
        "other_failures": other,
        "most_waiting": most_waiting[0],
        "latency_p50": quantile(latencies, 0.5),
        "latency_p99": quantile(latencies, 0.99),
        "latency_max": max(latencies) if latencies else float("nan"),
        "completed_late": late[0],
        "drain_s": drained,
        "rss_before_kib": rss_before,
        "rss_peak_kib": rss_peak,
        "rss_after_kib": rss_after,
    }


@defer.inlineCallbacks
def run(settings: Settings, targets: Sequence[Target]) -> Any:
    """
    The overload section, on each server.

    @return: (a Deferred firing with) the section's L{Report}.
    """
    report = Report.of_run("overload", settings, targets)
    seconds = 1.0 if settings.smoke else 10.0
    report.add(
        "Overload: %d calls a second offered for %g s to %d pool threads that serve %d a second "
        "(each call sleeps %d ms in the database). A call that ends more than %g s after it was "
        "made has outlived its caller's patience." % (RATE, seconds, CP_MAX, CP_MAX / SERVICE, SERVICE * 1000, PATIENCE)
    )
    results: Dict[str, Dict[str, Any]] = {}
    rows = []
    for target in targets:
        if target.server is None:
            continue
        for contender in (ADBAPI, OURS, OURS_BOUNDED, OURS_DEADLINE):
            outcome = yield _offer(contender, target, seconds)
            results["%s/%s" % (target.key, contender.key)] = outcome
            rows.append(
                [
                    target.label,
                    contender.label,
                    outcome["offered"],
                    outcome["succeeded"],
                    outcome["refused"],
                    outcome["timed_out"],
                    outcome["most_waiting"],
                    "%.0f / %.0f / %.0f"
                    % (outcome["latency_p50"] * 1000, outcome["latency_p99"] * 1000, outcome["latency_max"] * 1000),
                    outcome["completed_late"],
                    "%.1f" % (outcome["drain_s"],),
                    "%+.1f / %+.1f"
                    % (
                        (outcome["rss_peak_kib"] - outcome["rss_before_kib"]) / 1024,
                        (outcome["rss_after_kib"] - outcome["rss_before_kib"]) / 1024,
                    ),
                ]
            )
    report.add(
        markdown_table(
            [
                "database",
                "pool",
                "offered",
                "succeeded",
                "refused at once",
                "failed at deadline",
                "most waiting",
                "latency p50 / p99 / max (ms)",
                "completed after 1 s",
                "queue emptied after (s)",
                "RSS peak / after (MiB)",
            ],
            rows,
        )
    )
    report.data["results"] = results
    return report
