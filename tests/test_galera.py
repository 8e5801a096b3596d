"""
The pool on a MariaDB Galera cluster (L{GaleraCluster}), through a host
list of its three nodes: a node killed and a node isolated from the
primary component while four callers write, with commit resolution on and
waiting for the database; and certification failures, which are
conflicts.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar, Dict, List, Optional

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from txreconnect import ReconnectingConnectionPool
from txreconnect._resolve import TABLE, CommitMarkers
from txreconnect.drivers import driver_for
from txreconnect.testing import GaleraCluster, GaleraNode, require_driver
from tests.support import warm
from tests.test_clusters import _PerClass, _started
from tests.test_galera_cluster import _recover
from tests.test_resolve_faults import CP_MAX, audit, resolving_pool, run_events, stored_ids
from tests.writeload import WriteLoad


def _make() -> GaleraCluster:
    return _started(GaleraCluster())


class _GaleraMixin(TestCase):
    """
    One cluster shared by the tests of a class, its tables made afresh by
    each test; every test leaves three synced nodes.
    """

    driver_name: ClassVar[str]
    shared: ClassVar[_PerClass]

    def setUp(self) -> None:
        self.driver = require_driver(self.driver_name)
        self.cluster: GaleraCluster = self.shared.get(self)
        self.addCleanup(_recover, self.cluster)
        self.cluster.nodes[0].admin_sql(
            "DROP TABLE IF EXISTS txreconnect.items; CREATE TABLE txreconnect.items (id INT PRIMARY KEY);"
            " DROP TABLE IF EXISTS txreconnect.counters;"
            " CREATE TABLE txreconnect.counters (id INT PRIMARY KEY, n INT NOT NULL);"
            " INSERT INTO txreconnect.counters VALUES (1, 0)"
        )
        # The other nodes apply that a moment later: a causal read on each
        # (wsrep_sync_wait) returns once it has, so that no test starts on
        # a node without its tables or its counter row.
        for node in self.cluster.nodes:
            self.assertEqual(self.counter(node), 0)

    def serving(self) -> GaleraNode:
        """
        @return: the node that holds the application's sessions (the pool
            keeps the first node of its list that will do).
        """
        busy = [node for node in self.cluster.nodes if node.running and node.client_connections()]
        self.assertEqual(len(busy), 1, "the pool's sessions are on %d nodes" % (len(busy),))
        return busy[0]

    def kill_and_restart(self) -> str:
        node = self.serving()
        self.cluster.kill_node(node)
        self.cluster.restart_node(node)
        return node.name

    def isolate(self) -> str:
        """
        Isolate the serving node (healed after the writes stop).
        """
        node = self.serving()
        self.cluster.isolate_node(node)
        return node.name

    def heal(self) -> None:
        for node in self.cluster.nodes:
            if node.status().get("wsrep_cluster_status") != "Primary":
                self.cluster.heal_node(node)

    @defer.inlineCallbacks
    def test_noWriteFailsWhenTheServingNodeIsKilledOrIsolated(self) -> Any:
        """
        Four callers write unique ids through a host list of the three
        nodes, waiting for the database and resolving lost COMMITs.  The
        node that serves them is killed (then restarted), and later the
        node that serves them is isolated (its sessions get error 1047,
        and new connections skip it): no call fails, every acknowledged
        id is stored exactly once, on every node.
        """
        pool = resolving_pool(self, self.driver_name, self.cluster.multi_host_kwargs(self.driver_name))
        yield warm(pool)
        load = WriteLoad(pool, callers=CP_MAX)
        yield run_events(
            load,
            {
                "kill and restart the serving node": self.kill_and_restart,
                "isolate the serving node": self.isolate,
            },
        )
        self.heal()
        for node in self.cluster.nodes:
            report = audit(self, "galera %s on %s" % (self.driver_name, node.name), load, stored_ids(node), pool)
        self.assertEqual(load.failure_types(), {}, report)
        # Both events reach every session: a call meets the kill as a lost
        # connection and the isolation as error 1047 (a statement refused:
        # the wrong server) or 1180 (COMMIT failed to replicate: a lost
        # outcome), by where each caller was; or, once another thread has
        # met it, the suspect connection fails its ping before any call.
        stats = pool.stats()
        met = stats["disconnects"] + stats["wrong_server"] + stats["health_check_failures"]
        self.assertGreaterEqual(met, 2 * CP_MAX, stats)

    def test_aThreadsMarkerFollowsItToAnotherNodeWithoutAConflict(self) -> None:
        """
        With commit resolution, every write transaction of a pool thread
        updates the thread's marker row.  When the thread's connection
        moves to another node (a failover), its first transaction there
        must not fail certification (1213, a conflict its caller would
        get) because that node had not yet applied the thread's last
        commit on the other: the new connection's check of the row is a
        causal read.  One thread's connection moves between two nodes
        after every commit, fifty times, with no conflict; each
        transaction writes five thousand rows, so that applying it on the
        other node takes a while.
        """
        driver = driver_for(self.driver)
        key = CommitMarkers().key(threading.get_ident())
        connections = [self.driver.connect(**node.connect_kwargs(self.driver_name)) for node in self.cluster.nodes[:2]]
        for connection in connections:
            self.addCleanup(connection.close)
        for number in range(1, 51):
            connection = connections[number % 2]
            # As a new connection: the pool prepares it, then the
            # transaction writes and sets the marker.
            driver.create_commit_marker(connection, TABLE, key)
            cursor = connection.cursor()
            cursor.execute("INSERT INTO items (id) SELECT %s * 5000 + seq FROM seq_1_to_5000", (number,))
            driver.mark_commit(connection, TABLE, key, number)
            connection.commit()
            cursor.close()
        out = self.cluster.nodes[2].admin_sql("SET SESSION wsrep_sync_wait = 1; SELECT COUNT(*) FROM txreconnect.items")
        self.assertEqual(int(out.strip()), 50 * 5000)

    def pool_on(self, node: GaleraNode, **kwargs: Any) -> ReconnectingConnectionPool:
        options: Dict[str, Any] = dict(node.connect_kwargs(self.driver_name), cp_min=1, cp_max=1)
        options.update(kwargs)
        pool = ReconnectingConnectionPool(self.driver_name, **options)
        pool.start()
        self.addCleanup(pool.close)
        return pool

    def collide(self, retries: int) -> "defer.Deferred[List[Any]]":
        """
        Two interactions on two nodes increment the same counter and
        commit at the same moment: one of them fails certification (or is
        aborted by the other's replicated write), error 1213.

        @param retries: each pool's C{cp_conflict_retries}.
        @return: a Deferred firing with both outcomes (results or
            failures).
        """
        both_updated = threading.Barrier(2)

        def increment(txn: Any, attempts: List[int]) -> int:
            attempts.append(1)
            txn.execute("UPDATE counters SET n = n + 1 WHERE id = 1")
            # Else nothing would collide (the row was not there yet).
            assert txn.rowcount == 1, txn.rowcount
            if len(attempts) == 1:
                both_updated.wait(30)
            return len(attempts)

        calls = [
            self.pool_on(node, cp_conflict_retries=retries).runInteraction(increment, [])
            for node in self.cluster.nodes[:2]
        ]
        return defer.DeferredList(calls, consumeErrors=True)  # type: ignore[return-value]

    def counter(self, node: Optional[GaleraNode] = None) -> int:
        """
        @param node: the node to ask (the first one by default).
        @return: the counter, read causally (after every write the cluster
            ordered before).
        """
        out = (node or self.cluster.nodes[0]).admin_sql(
            "SET SESSION wsrep_sync_wait = 1; SELECT n FROM txreconnect.counters WHERE id = 1"
        )
        return int(out.strip())

    @defer.inlineCallbacks
    def test_aCertificationFailureIsRetriedAsAConflict(self) -> Any:
        """
        With C{cp_conflict_retries=3}, both colliding interactions
        complete, one of them on its second attempt; the counter is
        incremented twice.
        """
        outcomes = yield self.collide(3)
        self.assertTrue(all(ok for ok, _ in outcomes), outcomes)
        self.assertEqual(sorted(attempts for _, attempts in outcomes), [1, 2])
        self.assertEqual(self.counter(), 2)

    @defer.inlineCallbacks
    def test_withoutConflictRetriesTheCertificationFailureReachesTheCaller(self) -> Any:
        """
        With C{cp_conflict_retries=0}, as with adbapi, the loser gets the
        driver's error 1213, unchanged; the counter is incremented once.
        """
        outcomes = yield self.collide(0)
        failures = [outcome for ok, outcome in outcomes if not ok]
        self.assertEqual(len(failures), 1, outcomes)
        self.assertIsInstance(failures[0].value, self.driver.Error)
        self.assertEqual(failures[0].value.args[0], 1213)
        self.assertEqual(self.counter(), 1)


class PyMySQLGaleraTests(_GaleraMixin):
    driver_name = "pymysql"
    shared = _PerClass(_make, GaleraCluster.destroy)


class MySQLdbGaleraTests(_GaleraMixin):
    driver_name = "MySQLdb"
    shared = _PerClass(_make, GaleraCluster.destroy)


del _GaleraMixin
