"""
Prometheus metrics for L{ReconnectingConnectionPool}s (the
C{txreconnect[metrics]} extra: C{pip install txreconnect[metrics]}).

A L{PoolCollector} is a C{prometheus_client} custom collector: at each
scrape it reads the C{stats()}, C{occupancy()} and C{timings()} of every
pool added to it, so that nothing runs on the path of a call (the
histograms of wait, use and connect times are kept by the pool, without
a lock, once the collector turns them on).  One collector serves any
number of pools, each told apart by the label
C{db_client_connection_pool_name}: the pool's C{cp_name}, or, for a pool
without one, C{host:port/database} as OpenTelemetry suggests (the
driver's name when the pool has none of these).  Two pools alive under
one name are refused (L{ConfigurationError}): give each its own
C{cp_name}.

The names follow OpenTelemetry's semantic conventions for database
client connection pools where they have one, as OpenTelemetry's
Prometheus exporter writes them (dots become underscores, seconds get
C{_seconds}, counters C{_total}; the attribute
C{db.client.connection.pool.name} becomes the label
C{db_client_connection_pool_name}, C{db.client.connection.state} the
label C{db_client_connection_state}), and start with C{txreconnect_}
where they are txreconnect's own.  L{METRICS} lists them all.

Serving them, in a Twisted program::

    from prometheus_client.twisted import MetricsResource
    from txreconnect.metrics import track

    track(pool)                     # the default registry
    root.putChild(b"metrics", MetricsResource())

A password never appears in a label: a label that would contain one of
the pool's secret C{connect()} keywords is refused.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

try:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
except ImportError as _missing:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "txreconnect.metrics needs prometheus_client: pip install txreconnect[metrics] (%s)" % (_missing,)
    ) from _missing

from txreconnect.drivers import driver_class
from txreconnect.errors import ConfigurationError

__all__ = ["METRICS", "POOL_LABEL", "STATE_LABEL", "PoolCollector", "track"]

#: the label that names a pool on every metric (OpenTelemetry's
#: C{db.client.connection.pool.name})
POOL_LABEL = "db_client_connection_pool_name"

#: the label of C{db_client_connection_count} (OpenTelemetry's
#: C{db.client.connection.state}): C{idle} or C{used}
STATE_LABEL = "db_client_connection_state"

#: the states of C{txreconnect_database_state}, as C{stats()["state"]}
#: says them
_OUTAGE_STATES = ("up", "down", "probing")

#: each counter: its name without C{_total}, the key of C{pool.stats()}
#: it reads, and what it counts
_COUNTERS: Tuple[Tuple[str, str, str], ...] = (
    ("db_client_connection_timeouts", "wait_timeouts",
     "Calls that failed because they waited longer than cp_wait_timeout for a connection"),
    ("txreconnect_connections_opened", "opened", "Database connections opened"),
    ("txreconnect_connections_closed", "closed", "Database connections closed"),
    ("txreconnect_disconnects", "disconnects", "Lost database connections detected"),
    ("txreconnect_wrong_server", "wrong_server",
     "Statements refused by a read-only or not ready server (cp_follow_writer)"),
    ("txreconnect_replays", "replays", "Calls run again on a new connection after their connection was lost"),
    ("txreconnect_replays_failed", "replays_failed", "Replays that failed too"),
    ("txreconnect_outcome_unknown", "outcome_unknown",
     "Calls that failed with TransactionOutcomeUnknown (connection lost while committing)"),
    ("txreconnect_stalls", "stalls", "Calls ended by cp_stall_timeout"),
    ("txreconnect_conflicts", "conflicts", "Transactions the server rolled back because of a conflict"),
    ("txreconnect_conflict_retries", "conflict_retries", "Transactions run again after a conflict"),
    ("txreconnect_resolved_committed", "resolved_committed",
     "Lost COMMITs the database said took effect (cp_resolve_commits)"),
    ("txreconnect_resolved_aborted", "resolved_aborted",
     "Lost COMMITs the database said did not take effect (cp_resolve_commits)"),
    ("txreconnect_resolve_failed", "resolve_failed", "Lost COMMITs the database could not resolve"),
    ("txreconnect_connect_attempts", "connect_attempts", "Attempts to open a database connection"),
    ("txreconnect_reconnect_attempts", "reconnect_attempts",
     "Attempts replacing a lost connection or made while the database was down"),
    ("txreconnect_connect_failures", "connect_failures", "Attempts to open a connection that failed"),
    ("txreconnect_health_checks", "health_checks", "Connections pinged before use"),
    ("txreconnect_health_check_failures", "health_check_failures", "Pings that failed"),
    ("txreconnect_rejected", "rejected", "Calls refused at once because cp_max_waiting calls were waiting"),
    ("txreconnect_database_wait_seconds", "seconds_waiting",
     "Seconds calls spent waiting for the database to come back (summed over calls)"),
)

#: each histogram: its name, the key of C{pool.timings()} it reads, and
#: what it measures
_HISTOGRAMS: Tuple[Tuple[str, str, str], ...] = (
    ("db_client_connection_wait_time_seconds", "wait",
     "Seconds from a call to its start on a pool thread (with its connection)"),
    ("db_client_connection_use_time_seconds", "use", "Seconds a call held its pool thread and connection"),
    ("db_client_connection_create_time_seconds", "connect", "Seconds per successful connection attempt"),
)

#: each gauge: its name, and what it measures
_GAUGES: Tuple[Tuple[str, str], ...] = (
    ("db_client_connection_count", "Open connections, by state: idle or used (running a call)"),
    ("db_client_connection_max", "The most connections the pool opens (cp_max)"),
    ("db_client_connection_pending_requests", "Calls waiting for a pool thread"),
    ("txreconnect_database_state", "1 for the pool's view of the database (up, down or probing), 0 for the others"),
)

#: every metric's name, as the text format shows it, with its type
METRICS: Mapping[str, str] = dict(
    [(name + "_total", "counter") for name, _, _ in _COUNTERS]
    + [(name, "gauge") for name, _ in _GAUGES]
    + [(name, "histogram") for name, _, _ in _HISTOGRAMS]
)

#: secrets shorter than this are not looked for in a label (a one-letter
#: password would refuse most names)
_SHORTEST_SECRET = 4


class PoolCollector:
    """
    A C{prometheus_client} collector of the metrics of any number of
    L{ReconnectingConnectionPool}s (see L{METRICS}), read at scrape time.

    Pools are held weakly: a pool that is garbage collected leaves the
    collector by itself.  A closed pool stays, its counters as they
    were, until L{remove}d.  The collector may be scraped from any
    thread (C{prometheus_client.twisted.MetricsResource} scrapes from
    the reactor's thread pool).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: label -> weak reference to the pool
        self._pools: Dict[str, "weakref.ReferenceType[Any]"] = {}

    def add(self, pool: Any, name: Optional[str] = None) -> str:
        """
        Export C{pool}'s metrics, and turn its timing histograms on
        (C{pool.enable_timings()}).  Adding a pool again under the same
        name does nothing.

        @param pool: a L{ReconnectingConnectionPool}.
        @param name: the value of its C{db_client_connection_pool_name}
            label (default: its C{cp_name}, or C{host:port/database}).
        @return: the label's value.
        @raise ConfigurationError: C{pool} has no C{stats()} (a stock
            C{adbapi.ConnectionPool}); the name is empty or not a string;
            another live pool has the same name; the pool is here under
            another name; or the name would show the pool's password.
        """
        for method in ("stats", "occupancy", "timings", "enable_timings"):
            if not callable(getattr(pool, method, None)):
                raise ConfigurationError(
                    "PoolCollector.add takes a txreconnect ReconnectingConnectionPool; %s has no %s()"
                    % (type(pool).__name__, method)
                )
        label = _label(pool) if name is None else name
        if not isinstance(label, str) or not label.strip():
            raise ConfigurationError(
                "the pool's metrics name must be a non-empty string, not %r" % (label,)
            )
        if _shows_secret(pool, label):
            raise ConfigurationError(
                "the metrics name of a %s pool would show the pool's password: name the pool with a "
                "cp_name (or name=) that does not contain it" % (getattr(pool, "dbapiName", "?"),)
            )
        with self._lock:
            for other, ref in self._pools.items():
                if ref() is pool:
                    if other == label:
                        return label
                    raise ConfigurationError(
                        "this pool is already exported under the name %r, not %r" % (other, label)
                    )
            held = self._pools.get(label)
            if held is not None and held() is not None:
                raise ConfigurationError(
                    "two pools named %r: give each pool its own cp_name (or name=), so that their "
                    "metrics are told apart" % (label,)
                )
            self._pools[label] = weakref.ref(pool, self._forget(label))
        pool.enable_timings()
        return label

    def _forget(self, label: str) -> Callable[["weakref.ReferenceType[Any]"], None]:
        """
        @return: the callback of a pool's weak reference: drop its entry,
            unless another pool took the name meanwhile.
        """
        mine = weakref.ref(self)

        def forget(ref: "weakref.ReferenceType[Any]") -> None:
            collector = mine()
            if collector is None:
                return
            with collector._lock:
                if collector._pools.get(label) is ref:
                    del collector._pools[label]

        return forget

    def remove(self, pool: Any) -> None:
        """
        Stop exporting C{pool}'s metrics.  Its timings stay on.

        @param pool: a pool given to L{add}.
        @raise ConfigurationError: C{pool} is not exported here.
        """
        with self._lock:
            for label, ref in list(self._pools.items()):
                if ref() is pool:
                    del self._pools[label]
                    return
        raise ConfigurationError("this pool (%s) is not exported by this PoolCollector" % (type(pool).__name__,))

    def names(self) -> List[str]:
        """
        @return: the C{db_client_connection_pool_name} of each pool
            exported, sorted.
        """
        return sorted(label for label, _ in self._live())

    def _live(self) -> List[Tuple[str, Any]]:
        with self._lock:
            held = [(label, ref()) for label, ref in self._pools.items()]
        return sorted((label, pool) for label, pool in held if pool is not None)

    def register(self, registry: Optional[CollectorRegistry] = None) -> "PoolCollector":
        """
        Register this collector with C{registry}.

        @param registry: default: C{prometheus_client.REGISTRY}.
        @return: this collector.
        @raise ConfigurationError: the registry already has collectors of
            these names (another L{PoolCollector}: use L{track}, which
            keeps one per registry, or add the pools to that one).
        """
        registry = REGISTRY if registry is None else registry
        try:
            registry.register(self)
        except ValueError as error:
            raise ConfigurationError(
                "the registry already exports txreconnect's metrics (%s): add the pool to the "
                "PoolCollector registered there, or use txreconnect.metrics.track(pool)" % (error,)
            ) from error
        return self

    def describe(self) -> Iterator[Metric]:
        """
        Name the metric families L{collect} yields, without samples, so
        that a registry can check for clashes without a scrape.
        """
        return self._families({})

    def collect(self) -> Iterator[Metric]:
        """
        Read every pool exported, now.

        @return: the metric families of L{METRICS}, each with a sample
            (or a histogram) per pool.  A counter that a pool's
            C{stats()} does not report is left out for that pool.
        """
        readings = {}
        for label, pool in self._live():
            readings[label] = (pool.stats(), pool.occupancy(), pool.timings())
        return self._families(readings)

    def _families(
        self, readings: Mapping[str, Tuple[Mapping[str, Any], Mapping[str, int], Mapping[str, Any]]]
    ) -> Iterator[Metric]:
        labels = [POOL_LABEL]
        for name, key, documentation in _COUNTERS:
            counter = CounterMetricFamily(name, documentation, labels=labels)
            for label, (stats, _, _) in readings.items():
                value = stats.get(key)
                if value is not None:
                    counter.add_metric([label], value)
            yield counter
        count, most, pending, state = (
            GaugeMetricFamily(name, documentation, labels=labels + extra)
            for (name, documentation), extra in zip(_GAUGES, ([STATE_LABEL], [], [], ["state"]))
        )
        for label, (stats, occupancy, _) in readings.items():
            count.add_metric([label, "idle"], occupancy["idle"])
            count.add_metric([label, "used"], occupancy["used"])
            most.add_metric([label], occupancy["max"])
            pending.add_metric([label], occupancy["waiting"])
            for each in _OUTAGE_STATES:
                state.add_metric([label, each], 1 if stats.get("state") == each else 0)
        yield count
        yield most
        yield pending
        yield state
        for name, key, documentation in _HISTOGRAMS:
            histogram = HistogramMetricFamily(name, documentation, labels=labels)
            for label, (_, _, timings) in readings.items():
                timing = timings.get(key)
                if timing is not None:
                    buckets, total = _cumulative(*timing)
                    histogram.add_metric([label], buckets, total)
            yield histogram


def _cumulative(
    bounds: Sequence[float], counts: Sequence[int], total: float, count: int
) -> Tuple[List[Tuple[str, float]], float]:
    """
    Turn a pool's timing (per-bucket counts, the last one for C{+Inf})
    into Prometheus's cumulative buckets.

    @return: the buckets, and the sum of the observations.
    """
    buckets: List[Tuple[str, float]] = []
    running = 0
    for bound, each in zip(list(bounds) + [float("inf")], counts):
        running += each
        buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
    if not buckets or buckets[-1][0] != "+Inf":
        buckets.append(("+Inf", max(running, count)))
    return buckets, total


def _label(pool: Any) -> str:
    """
    @return: the default name of C{pool}: its C{cp_name}, or
        C{host:port/database} from its C{connect()} keywords (the parts
        it has), or its driver's name.
    """
    if getattr(pool, "name", None):
        return str(pool.name)
    connkw = getattr(pool, "connkw", {})
    keywords = driver_class(pool.dbapiName).keywords
    host, port, database = (connkw.get(keywords[part]) for part in ("host", "port", "database"))
    where = "%s%s%s" % (
        host if host is not None else "",
        ":%s" % (port,) if port is not None else "",
        "/%s" % (database,) if database is not None else "",
    )
    return where or str(pool.dbapiName)


def _shows_secret(pool: Any, label: str) -> bool:
    """
    @return: whether C{label} contains the value of one of C{pool}'s
        secret C{connect()} keywords.
    """
    connkw = getattr(pool, "connkw", {})
    secrets = driver_class(getattr(pool, "dbapiName", "")).secret_keywords
    return any(
        isinstance(connkw.get(key), str) and len(connkw[key]) >= _SHORTEST_SECRET and connkw[key] in label
        for key in secrets
    )


_collectors: "weakref.WeakKeyDictionary[CollectorRegistry, PoolCollector]" = weakref.WeakKeyDictionary()
_collectors_lock = threading.Lock()


def track(pool: Any, name: Optional[str] = None, registry: Optional[CollectorRegistry] = None) -> PoolCollector:
    """
    Export C{pool}'s metrics through C{registry}: the one L{PoolCollector}
    of that registry (made and registered the first time) adds it.

    @param pool: a L{ReconnectingConnectionPool}.
    @param name: see L{PoolCollector.add}.
    @param registry: default: C{prometheus_client.REGISTRY}.
    @return: the registry's collector (its L{PoolCollector.remove} stops
        exporting the pool).
    @raise ConfigurationError: see L{PoolCollector.add} and
        L{PoolCollector.register}.
    """
    registry = REGISTRY if registry is None else registry
    with _collectors_lock:
        collector = _collectors.get(registry)
        if collector is None:
            collector = PoolCollector().register(registry)
            _collectors[registry] = collector
    collector.add(pool, name)
    return collector

