"""
What the benchmark sections share: their settings (full or smoke), the
databases they run against, the pools they compare, a connect() counter,
statistics and the report a section fills (L{bench._render} writes its
markdown).
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from twisted.enterprise import adbapi
from twisted.internet import defer, reactor, task, threads

from bench._render import json_safe
from txreconnect import ReconnectingConnectionPool, WaitForDatabase
from txreconnect.testing import ThrowawayServer, warm

__all__ = [
    "CONTENDERS",
    "Contender",
    "CountingDBAPI",
    "Report",
    "Settings",
    "Target",
    "clock",
    "in_thread",
    "machine_line",
    "make_pool",
    "quantile",
    "rotation",
    "sleep",
    "spread",
    "warm",
]

#: the clock of every timestamp in the benchmark (and of CountingDBAPI)
clock = time.perf_counter


@dataclass(frozen=True)
class Settings:
    """
    How much each section measures; L{full} for the published numbers,
    L{smoke} for CI (a few seconds, numbers meaningless).
    """

    smoke: bool
    #: overhead: rounds per scenario (each round measures every pool once)
    rounds: int
    #: overhead: seconds one pool is measured in one round
    window: float
    #: overhead: calls in flight for the throughput scenarios
    inflight: Tuple[int, ...]
    #: overhead: the pools' cp_max in the throughput scenarios
    cp_max: int
    #: overhead: direct _runInteraction calls per round, per pool
    direct_calls: int
    #: overhead: rounds of direct calls
    direct_rounds: int
    #: overhead: calls of the longer callgrind run (the shorter: a sixth)
    instruction_calls: int
    #: resolve_cost: rounds per scenario, and the calls in flight
    resolve_rounds: int
    resolve_inflight: Tuple[int, ...]
    #: resolve_cost: calls of the longer run under strace (the shorter: half)
    round_trip_calls: int
    #: recovery: the databases (keys of L{Target}) it runs on
    recovery_databases: Tuple[str, ...]
    #: recovery: the pools' cp_max
    recovery_cp_max: int
    #: recovery: the server's idle timeout for the idle-timeout event, and
    #: how long the pool then stays idle (seconds)
    idle_timeout: float
    idle_for: float
    #: recovery: calls made after an event that happened while idle
    burst_calls: int
    #: recovery: rounds of each idle event, per pool
    event_rounds: int
    #: recovery: callers of the restart under load
    callers: int
    #: recovery: seconds of load before the restart, of outage, and after
    load_before: float
    outage: float
    load_after: float
    #: recovery: cp_max (and callers) of the jitter measurement
    jitter_cp_max: int
    #: recovery: the outage of the jitter measurement
    jitter_outage: float
    #: resources: interactions, then fault cycles
    interactions: int
    fault_cycles: int

    @classmethod
    def full(cls) -> "Settings":
        return cls(
            smoke=False,
            rounds=400,
            window=0.05,
            inflight=(1, 4, 10),
            cp_max=10,
            direct_calls=20000,
            direct_rounds=15,
            instruction_calls=1200,
            resolve_rounds=150,
            resolve_inflight=(1, 10),
            round_trip_calls=200,
            recovery_databases=("postgres", "mariadb"),
            recovery_cp_max=10,
            idle_timeout=1.0,
            idle_for=2.0,
            burst_calls=50,
            event_rounds=3,
            callers=8,
            load_before=1.0,
            outage=1.0,
            load_after=3.0,
            jitter_cp_max=50,
            jitter_outage=3.0,
            interactions=10000,
            fault_cycles=100,
        )

    @classmethod
    def smoke_test(cls) -> "Settings":
        return cls(
            smoke=True,
            rounds=2,
            window=0.05,
            inflight=(1, 4),
            cp_max=4,
            direct_calls=200,
            direct_rounds=2,
            instruction_calls=60,
            resolve_rounds=2,
            resolve_inflight=(1,),
            round_trip_calls=10,
            recovery_databases=("postgres",),
            recovery_cp_max=4,
            idle_timeout=0.3,
            idle_for=0.6,
            burst_calls=8,
            event_rounds=1,
            callers=4,
            load_before=0.1,
            outage=0.2,
            load_after=0.2,
            jitter_cp_max=8,
            jitter_outage=0.3,
            interactions=100,
            fault_cycles=4,
        )


@dataclass
class Target:
    """
    One database and driver to benchmark against.

    @ivar key: a short name, e.g. C{"postgres"}.
    @ivar label: for tables, e.g. C{"PostgreSQL 15 (psycopg2)"}.
    @ivar driver: the DB-API module's name.
    @ivar server: the throwaway server, or L{None} for sqlite3.
    @ivar sqlite_path: sqlite3's database (C{":memory:"}).
    """

    key: str
    label: str
    driver: str
    server: Optional[ThrowawayServer] = None
    sqlite_path: str = ":memory:"

    def connect_args(self, port: Optional[int] = None) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
        """
        @param port: connect to this port on 127.0.0.1 (a proxy) instead of
            the server's.
        @return: positional and keyword arguments for the driver's
            C{connect()}.
        """
        if self.server is None:
            return (self.sqlite_path,), {"check_same_thread": False}
        return (), dict(self.server.connect_kwargs(self.driver, port=port))

    def sql(self, text: str) -> str:
        """
        @param text: SQL with C{%s} placeholders.
        @return: the same in the driver's parameter style.
        """
        return text.replace("%s", "?") if self.driver == "sqlite3" else text

    def connect(self) -> Any:
        """
        @return: a new raw connection (for setup and checks, never through
            a pool).
        """
        module = __import__(self.driver)
        args, kwargs = self.connect_args()
        return module.connect(*args, **kwargs)


@dataclass(frozen=True)
class Contender:
    """
    One pool configuration.

    @ivar key: a short name for JSON, e.g. C{"ours_hc0"}.
    @ivar label: for tables.
    @ivar cls: the pool class.
    @ivar options: its C{cp_*} keywords.
    """

    key: str
    label: str
    cls: Callable[..., adbapi.ConnectionPool]
    options: Dict[str, Any] = field(default_factory=dict)

    @property
    def ours(self) -> bool:
        return self.cls is ReconnectingConnectionPool


ADBAPI = Contender("adbapi", "adbapi.ConnectionPool", adbapi.ConnectionPool)
ADBAPI_RECONNECT = Contender(
    "adbapi_reconnect", "adbapi.ConnectionPool(cp_reconnect=True)", adbapi.ConnectionPool, {"cp_reconnect": True}
)
#: a second adbapi pool, measured like the others: adbapi against itself
#: shows how finely the machine can tell two pools apart (the noise floor)
ADBAPI_CONTROL = Contender("adbapi_control", "adbapi.ConnectionPool (control)", adbapi.ConnectionPool)
OURS = Contender("ours", "ReconnectingConnectionPool", ReconnectingConnectionPool)
OURS_HC0 = Contender(
    "ours_hc0", "ReconnectingConnectionPool(cp_health_check=0)", ReconnectingConnectionPool, {"cp_health_check": 0}
)
OURS_NO_WATCHDOG = Contender(
    "ours_no_watchdog",
    "ReconnectingConnectionPool(cp_stall_timeout=None)",
    ReconnectingConnectionPool,
    {"cp_stall_timeout": None},
)
OURS_WAIT = Contender(
    "ours_wait",
    "ReconnectingConnectionPool(cp_policy=WaitForDatabase())",
    ReconnectingConnectionPool,
    # A deadline, so that nothing in the benchmark can wait for ever.
    {"cp_policy": WaitForDatabase(deadline=60)},
)
OURS_RESOLVE = Contender(
    "ours_resolve",
    "ReconnectingConnectionPool(cp_resolve_commits=True)",
    ReconnectingConnectionPool,
    {"cp_resolve_commits": True},
)

#: every contender, by key (how a child process names its pool)
CONTENDERS: Dict[str, Contender] = {
    c.key: c for c in (ADBAPI, ADBAPI_RECONNECT, ADBAPI_CONTROL, OURS, OURS_HC0, OURS_NO_WATCHDOG, OURS_WAIT, OURS_RESOLVE)
}


class CountingDBAPI:
    """
    Stands for a pool's DB-API module and records when each C{connect()}
    was attempted and whether it failed; everything else is the module's.
    Both pools call C{self.dbapi.connect}, so this counts every attempt a
    pool makes (not the benchmark's own connections).

    @ivar attempts: the L{clock} time of each attempt.
    @ivar failures: the L{clock} time of each failed attempt.
    @ivar successes: the L{clock} time of each attempt that returned a
        connection (when it returned).
    """

    def __init__(self, module: Any) -> None:
        self._module = module
        self.__name__ = module.__name__
        self.attempts: List[float] = []
        self.failures: List[float] = []
        self.successes: List[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        self.attempts.append(clock())  # list.append is atomic
        try:
            conn = self._module.connect(*args, **kwargs)
        except BaseException:
            self.failures.append(clock())
            raise
        self.successes.append(clock())
        return conn

    def between(self, start: float, end: float) -> int:
        """
        @return: how many attempts were made in [start, end).
        """
        return sum(1 for t in self.attempts if start <= t < end)


def make_pool(
    contender: Contender,
    target: Target,
    cp_max: int,
    port: Optional[int] = None,
    count: bool = False,
    **extra: Any,
) -> adbapi.ConnectionPool:
    """
    Make (and, the reactor running, start) a pool of C{contender} on
    C{target}.

    @param port: connect through this port (a L{FaultProxy}).
    @param count: replace the pool's C{dbapi} by a L{CountingDBAPI}
        (C{pool.dbapi}), before any connection is opened.
    @param extra: more C{cp_*} keywords (e.g. C{cp_openfun}).
    """
    args, kwargs = target.connect_args(port)
    kwargs.update(contender.options)
    kwargs.update(extra)
    kwargs.setdefault("cp_min", min(3, cp_max))
    pool = contender.cls(target.driver, *args, cp_max=cp_max, **kwargs)
    if count:
        pool.dbapi = CountingDBAPI(pool.dbapi)
    return pool




def rotation(items: Sequence[Any], r: int) -> List[Any]:
    """
    @return: C{items} rotated by C{r}: over rounds, each pool goes first,
        second, ... in turn, so that slow drifts of the machine favour
        none.
    """
    r %= len(items)
    return list(items[r:]) + list(items[:r])


def sleep(seconds: float) -> "defer.Deferred[None]":
    """
    @return: a Deferred that fires after C{seconds} on the reactor's clock.
    """
    return task.deferLater(reactor, seconds, lambda: None)


def in_thread(f: Callable[..., Any], *args: Any, **kwargs: Any) -> "defer.Deferred[Any]":
    """
    Run blocking C{f} in the reactor's thread pool (server control, setup
    SQL), never in a benchmarked pool.
    """
    return threads.deferToThread(f, *args, **kwargs)


# --- statistics -------------------------------------------------------------


def quantile(values: Sequence[float], q: float) -> float:
    """
    @return: the C{q} quantile (0..1) of C{values}, interpolating linearly
        between the closest ranks; NaN for no values.
    """
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median_interval(values: Sequence[float], z: float = 1.96) -> Tuple[float, float]:
    """
    A distribution-free confidence interval for the median (95% for the
    default C{z}): the order statistics at ranks M{n/2 ± z·√n/2}, which
    assumes nothing about the shape of C{values}.

    @return: the interval's ends (NaN for no values).
    """
    if not values:
        return float("nan"), float("nan")
    ordered = sorted(values)
    n = len(ordered)
    half = z * math.sqrt(n) / 2
    low = max(0, int(math.floor(n / 2 - half)))
    high = min(n - 1, int(math.ceil(n / 2 + half)))
    return ordered[low], ordered[high]


def spread(values: Sequence[float]) -> Dict[str, float]:
    """
    @return: median (with its 95% confidence interval, C{ci_low} and
        C{ci_high}), quartiles and extremes of C{values}.
    """
    ci_low, ci_high = median_interval(values)
    return {
        "median": quantile(values, 0.5),
        "ci_low": ci_low,
        "ci_high": ci_high,
        "q1": quantile(values, 0.25),
        "q3": quantile(values, 0.75),
        "min": min(values) if values else float("nan"),
        "max": max(values) if values else float("nan"),
        "n": len(values),
    }


def mean(values: Iterable[float]) -> float:
    listed = list(values)
    return statistics.fmean(listed) if listed else float("nan")


# --- output -----------------------------------------------------------------


@dataclass
class Report:
    """
    What a section produced: markdown (tables and short notes) for the
    terminal and the results file, and raw numbers for JSON.
    """

    name: str
    markdown: List[str] = field(default_factory=list)
    data: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of_run(cls, name: str, settings: Settings, targets: Sequence[Target]) -> "Report":
        """
        @param name: the section's name (of its results files).
        @param settings: what the run measures.
        @param targets: the databases it measures.
        @return: a report whose data holds what the section's text says
            about the run: C{settings} (as a dict), C{labels} (each
            target's, by key) and C{cpu_count}.
        """
        report = cls(name)
        report.data["settings"] = asdict(settings)
        report.data["labels"] = {t.key: t.label for t in targets}
        report.data["cpu_count"] = os.cpu_count() or 0
        return report

    def add(self, text: str) -> None:
        """
        Add a paragraph or a table, and print it at once.
        """
        self.markdown.append(text)
        print(text + "\n", flush=True)

    def add_rendered(self, render: Callable[[Dict[str, Any]], str]) -> None:
        """
        Add what C{render} makes of the data, as the JSON keeps it (so that
        the JSON renders to this very markdown).
        """
        self.add(render(json_safe(self.data)))


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module_name: str) -> str:
    try:
        from importlib.metadata import version

        return version(module_name)
    except Exception:
        return "?"


def machine_line(targets: Iterable[Target]) -> str:
    """
    @return: one line saying when and where the numbers were measured.
    """
    servers = []
    for target in targets:
        if target.server is not None and target.server.version:
            servers.append("%s %s" % (target.server.product, target.server.version.split()[0].split("-")[0]))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    psycopg2 = _version("psycopg2-binary")
    return "%s UTC · %s × %d cores · Linux %s · Python %s · Twisted %s · psycopg2 %s · PyMySQL %s · SQLite %s%s · load average %.2f at start" % (
        datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        _cpu_model(),
        os.cpu_count() or 0,
        platform.release().split("-")[0],
        platform.python_version(),
        _version("Twisted"),
        psycopg2 if psycopg2 != "?" else _version("psycopg2"),
        _version("PyMySQL"),
        __import__("sqlite3").sqlite_version,
        "".join(" · " + s for s in servers),
        load,
    )


def run_sql(target: "Target", statements: Sequence[str]) -> None:
    """
    Run C{statements} in one transaction on a connection of our own to
    C{target}, outside any pool (blocking: call it with L{in_thread}).
    """
    conn = target.connect()
    try:
        cursor = conn.cursor()
        for statement in statements:
            cursor.execute(statement)
        conn.commit()
    finally:
        conn.close()
