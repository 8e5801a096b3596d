"""
The throwaway MariaDB Galera cluster (L{GaleraCluster}) produces real
Galera faults: a crashed node, a node cut off from the primary component
that still answers its clients, and their recovery.  Each test proves one
with raw PyMySQL connections (and one with a pool over the node list).
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
from typing import Any, Callable, ClassVar, Dict, List

from twisted.internet import defer, threads
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from txreconnect import ReconnectingConnectionPool
from txreconnect.testing import GaleraCluster, GaleraNode, ServerNotAvailable, require_driver
from txreconnect.testing import galera as galera_module
from tests.support import close_quietly
from tests.test_clusters import _PerClass, _started

#: what a node outside the primary component answers (ER_UNKNOWN_COM_ERROR)
NOT_PREPARED = (1047, "WSREP has not yet prepared node for application use")


def _recover(cluster: GaleraCluster) -> None:
    """
    Bring every node of C{cluster} back, whatever a test did to it:
    start those that do not run, heal those that are isolated, and wait
    until all three are synced.
    """
    for node in cluster.nodes:
        if not node.running:
            node.start()
        elif node.status().get("wsrep_cluster_status") != "Primary":
            node.set_provider_option("gmcast.isolate", "0")
    cluster.wait_for_primary(cluster.nodes)


def _make() -> GaleraCluster:
    cluster = _started(GaleraCluster())
    cluster.nodes[0].admin_sql(
        "CREATE TABLE txreconnect.notes (id INT AUTO_INCREMENT PRIMARY KEY, body TEXT)"
    )
    return cluster


class GaleraClusterTests(TestCase):
    """
    One cluster shared by the tests of this class; every test leaves it
    with three synced nodes, as it found it.
    """

    shared: ClassVar[_PerClass] = _PerClass(_make, GaleraCluster.destroy)

    def setUp(self) -> None:
        self.pymysql = require_driver("pymysql")
        self.cluster: GaleraCluster = self.shared.get(self)
        self.addCleanup(_recover, self.cluster)

    def connect(self, node: GaleraNode, **options: Any) -> Any:
        """
        @return: a PyMySQL connection to C{node} as the test user, closed
            by the test's cleanup.
        """
        kwargs: Dict[str, Any] = dict(node.connect_kwargs("pymysql"), **options)
        conn = self.pymysql.connect(**kwargs)
        self.addCleanup(close_quietly, conn)
        return conn

    def run_sql(self, conn: Any, sql: str, params: Any = None) -> List[Any]:
        cursor = conn.cursor()
        try:
            cursor.execute(sql, params)
            return list(cursor.fetchall()) if cursor.description else []
        finally:
            cursor.close()

    def note(self, node: GaleraNode, body: str) -> None:
        """
        Insert a note on C{node}, committed.
        """
        self.run_sql(self.connect(node, autocommit=True), "INSERT INTO notes (body) VALUES (%s)", (body,))

    def bodies(self, node: GaleraNode) -> List[str]:
        """
        @return: the notes' bodies as C{node} has them once it has applied
            every write the cluster committed before (a causal read:
            C{wsrep_sync_wait=1}).
        """
        conn = self.connect(node, autocommit=True)
        self.run_sql(conn, "SET SESSION wsrep_sync_wait = 1")
        return [row[0] for row in self.run_sql(conn, "SELECT body FROM notes ORDER BY id")]

    def assertNotPrepared(self, conn: Any, sql: str) -> None:
        """
        C{sql} fails on C{conn} with error 1047.
        """
        e = self.assertRaises(self.pymysql.err.OperationalError, self.run_sql, conn, sql)
        self.assertEqual(e.args, NOT_PREPARED, "%s: %r" % (sql, e))

    def test_startFormsAPrimaryComponentOfThreeSyncedNodes(self) -> None:
        """
        After C{start()} every node reports a primary component of three,
        ready for clients and synced, under a name of its own.
        """
        names = set()
        for index in range(3):
            status = self.cluster.status(index)
            self.assertEqual(
                {name: status[name] for name in galera_module._SYNCED},
                dict(galera_module._SYNCED),
            )
            self.assertEqual(status["wsrep_cluster_size"], "3")
            names.add(self.run_sql(self.connect(self.cluster.nodes[index]), "SELECT @@wsrep_node_name")[0][0])
        self.assertEqual(names, {"node1", "node2", "node3"})

    def test_aWriteOnOneNodeIsReadOnTheOthers(self) -> None:
        """
        A row committed on one node is read on the other two; every node
        takes writes (the test user, made on the first node, exists on all
        of them).
        """
        nodes = self.cluster.nodes
        for node in nodes:
            self.note(node, "written on %s" % (node.name,))
        for node in nodes:
            bodies = self.bodies(node)
            for writer in nodes:
                self.assertIn("written on %s" % (writer.name,), bodies)

    def test_aKilledNodeLeavesTwoInThePrimaryComponent(self) -> None:
        """
        Once a node is killed, the other two form the primary component of
        two and take writes; the killed node refuses connections.
        """
        killed, *alive = self.cluster.nodes
        self.cluster.kill_node(0)
        self.assertFalse(killed.running)
        for node in alive:
            status = self.cluster.status(node)
            self.assertEqual(
                (status["wsrep_cluster_size"], status["wsrep_cluster_status"], status["wsrep_ready"]),
                ("2", "Primary", "ON"),
            )
        self.note(alive[0], "while node1 was down")
        self.assertIn("while node1 was down", self.bodies(alive[1]))
        e = self.assertRaises(self.pymysql.err.OperationalError, self.connect, killed)
        self.assertEqual(e.args[0], 2003, repr(e))  # cannot connect

    def test_aRestartedNodeCatchesUpByIncrementalStateTransfer(self) -> None:
        """
        A killed node that is started again recovers its position, rejoins
        synced and receives what it missed as an incremental state
        transfer (IST), not a whole snapshot.
        """
        node = self.cluster.nodes[1]
        self.cluster.kill_node(node)
        self.note(self.cluster.nodes[0], "while node2 was down")
        with open(node.logfile, "rb") as f:
            f.seek(0, os.SEEK_END)
            before = f.tell()
        self.cluster.restart_node(node)
        self.assertEqual(self.cluster.status(node)["wsrep_local_state_comment"], "Synced")
        self.assertIn("while node2 was down", self.bodies(node))
        with open(node.logfile, "rb") as f:
            f.seek(before)
            log = f.read().decode("utf-8", "replace")
        self.assertIn("WSREP: Recovered position from storage", log)
        self.assertIn("rsync IST completed on joiner", log)

    def test_anIsolatedNodeRefusesStatementsWith1047(self) -> None:
        """
        An isolated node keeps running and accepting connections, reports
        C{wsrep_ready=OFF} outside the primary component, and refuses
        clients' statements on tables (SELECT, INSERT) and even BEGIN with
        error 1047; statements on no table, SHOW and SET still work.  The
        other two stay primary with two nodes and take writes.
        """
        isolated = self.cluster.nodes[2]
        before = self.connect(isolated)
        self.cluster.isolate_node(2)
        self.assertTrue(isolated.running)
        status = self.cluster.status(isolated)
        self.assertEqual(
            (status["wsrep_ready"], status["wsrep_cluster_status"], status["wsrep_cluster_size"]),
            ("OFF", "non-Primary", "1"),
        )
        after = self.connect(isolated)  # the client port is up
        for conn in (before, after):
            self.assertNotPrepared(conn, "SELECT body FROM notes")
            self.assertNotPrepared(conn, "INSERT INTO notes (body) VALUES ('refused')")
            self.assertNotPrepared(conn, "BEGIN")
            self.assertEqual(self.run_sql(conn, "SELECT 1"), [(1,)])
            self.assertEqual(self.run_sql(conn, "SHOW STATUS LIKE 'wsrep_ready'"), [("wsrep_ready", "OFF")])
            # txreconnect's MySQL drivers ask this of a new connection for
            # target_session_attrs=read-write: an isolated node is no
            # read-only server.
            self.assertEqual(
                self.run_sql(conn, "SELECT @@global.read_only, @@global.innodb_read_only"), [(0, 0)]
            )
        for node in self.cluster.others(2):
            status = self.cluster.status(node)
            self.assertEqual((status["wsrep_cluster_size"], status["wsrep_ready"]), ("2", "ON"))
        self.note(self.cluster.nodes[0], "while node3 was isolated")

    def test_anIsolatedNodeServesDirtyReadsOnly(self) -> None:
        """
        A session that sets C{wsrep_dirty_reads} reads on an isolated node
        (stale data) but still cannot write.
        """
        isolated = self.cluster.nodes[2]
        self.note(isolated, "before the isolation")
        self.cluster.isolate_node(isolated)
        conn = self.connect(isolated, autocommit=True)
        self.run_sql(conn, "SET SESSION wsrep_dirty_reads = ON")
        self.assertIn(("before the isolation",), self.run_sql(conn, "SELECT body FROM notes"))
        self.assertNotPrepared(conn, "INSERT INTO notes (body) VALUES ('refused')")

    def test_aCommitRefusedWith1047LeavesTheTransactionOpen(self) -> None:
        """
        A transaction open on a node when it is isolated cannot commit (nor
        roll back): COMMIT and ROLLBACK fail with 1047, but the transaction
        is not over.  Once the node is healed, a COMMIT on the same
        connection commits it: a COMMIT that failed with 1047 did not
        decide the transaction's outcome.
        """
        isolated = self.cluster.nodes[2]
        conn = self.connect(isolated)
        self.run_sql(conn, "INSERT INTO notes (body) VALUES ('open across the isolation')")
        self.cluster.isolate_node(isolated)
        self.assertNotPrepared(conn, "COMMIT")
        self.assertNotPrepared(conn, "ROLLBACK")
        self.cluster.heal_node(isolated)
        conn.commit()
        self.assertIn("open across the isolation", self.bodies(self.cluster.nodes[0]))

    def test_aHealedNodeRejoinsSynced(self) -> None:
        """
        A healed node rejoins the primary component of three, synced, has
        the writes made without it, and takes writes again.
        """
        node = self.cluster.nodes[1]
        self.cluster.isolate_node(node)
        self.note(self.cluster.nodes[0], "while node2 was isolated")
        self.cluster.heal_node(node)
        for each in self.cluster.nodes:
            status = self.cluster.status(each)
            self.assertEqual(
                (status["wsrep_cluster_size"], status["wsrep_ready"], status["wsrep_local_state_comment"]),
                ("3", "ON", "Synced"),
            )
        self.assertIn("while node2 was isolated", self.bodies(node))
        self.note(node, "after node2 healed")
        self.assertIn("after node2 healed", self.bodies(self.cluster.nodes[2]))

    def test_multiHostKwargsListEveryNodeInOrder(self) -> None:
        """
        C{multi_host_kwargs} and C{url} name the three nodes as a host
        list, in order, as txreconnect's MySQL drivers read it.
        """
        ports = [node.port for node in self.cluster.nodes]
        kwargs = self.cluster.multi_host_kwargs("pymysql")
        self.assertEqual(kwargs["host"], "127.0.0.1,127.0.0.1,127.0.0.1")
        self.assertEqual(kwargs["port"], ",".join(map(str, ports)))
        self.assertEqual((kwargs["user"], kwargs["database"]), ("txreconnect", "txreconnect"))
        reordered = self.cluster.multi_host_kwargs("pymysql", "read-write", self.cluster.nodes[::-1])
        self.assertEqual(reordered["port"], ",".join(map(str, ports[::-1])))
        self.assertEqual(reordered["target_session_attrs"], "read-write")
        self.assertEqual(
            self.cluster.url("pymysql"),
            "mysql+pymysql://txreconnect:s3cret-pw%%21@127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d/txreconnect"
            % tuple(ports),
        )

    def test_reprShowsNoPassword(self) -> None:
        """
        The cluster's and the nodes' C{repr} name the nodes and their
        ports, never the password.
        """
        text = repr(self.cluster)
        self.assertNotIn(self.cluster.nodes[0].password, text)
        for node in self.cluster.nodes:
            self.assertIn("%s %s on 127.0.0.1:%d (running)" % (node.name, node.version, node.port), text)

    @defer.inlineCallbacks
    def test_aPoolOverTheNodeListSkipsAKilledNode(self) -> Any:
        """
        A pool made from the cluster's URL connects to the first node that
        answers: with the first node killed, to the second.
        """
        yield threads.deferToThread(self.cluster.kill_node, 0)
        pool = ReconnectingConnectionPool.from_url(self.cluster.url("pymysql"), cp_min=1, cp_max=1)
        pool.start()
        self.addCleanup(pool.close)
        rows = yield pool.runQuery("SELECT @@wsrep_node_name")
        self.assertEqual([tuple(row) for row in rows], [("node2",)])


class GaleraClusterLifecycleTests(TestCase):
    """
    What a cluster leaves behind when it cannot start: nothing.
    """

    def setUp(self) -> None:
        galera_module.find_provider.cache_clear()
        self.addCleanup(galera_module.find_provider.cache_clear)

    def record_directories(self) -> List[str]:
        """
        @return: a list that gets every temporary directory made from now
            on in this test.
        """
        made: List[str] = []
        real = tempfile.mkdtemp

        def mkdtemp(*args: Any, **kwargs: Any) -> str:
            path = real(*args, **kwargs)
            made.append(path)
            return path

        self.patch(tempfile, "mkdtemp", mkdtemp)
        return made

    def record_events(self) -> List[Dict[str, Any]]:
        """
        @return: a list that gets every log event emitted from now on in
            this test.
        """
        events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        return events

    def assertNothingLeft(self, directories: List[str]) -> None:
        """
        None of C{directories} exists, and no process runs from one of
        them.
        """
        for path in directories:
            self.assertFalse(os.path.exists(path), path)
        pattern = re.compile("|".join(re.escape(path) for path in directories) or "(?!)")
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open("/proc/%s/cmdline" % (pid,), "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
            except OSError:
                continue
            self.assertIsNone(pattern.search(cmdline), cmdline)

    def assertUnavailable(self, start: Callable[[], None]) -> None:
        e = self.assertRaises(ServerNotAvailable, start)
        self.assertIn("install Debian's galera-4 (and rsync)", str(e))

    def test_withoutGaleraStartRaisesServerNotAvailable(self) -> None:
        """
        Without Galera's provider, C{start()} raises L{ServerNotAvailable}
        saying what to install, and leaves nothing behind.
        """
        self.patch(os, "environ", dict(os.environ, TXRECONNECT_GALERA_PROVIDER="/nonexistent/libgalera_smm.so"))
        made = self.record_directories()
        cluster = GaleraCluster()
        self.assertUnavailable(cluster.start)
        self.assertNothingLeft(made)
        self.assertEqual(made, [])

    def test_withoutRsyncStartRaisesServerNotAvailable(self) -> None:
        """
        Without rsync (Galera's state transfers), C{start()} raises
        L{ServerNotAvailable} saying what to install.
        """
        self.patch(galera_module.shutil, "which", lambda name: None)
        self.assertUnavailable(GaleraCluster().start)

    def test_aNodeThatCannotStartLeavesNothingBehind(self) -> None:
        """
        When the third node cannot start, leaving the C{with} block's
        C{start()} destroys the two that run: no directory and no process
        is left.
        """
        made = self.record_directories()
        cluster = GaleraCluster()
        cluster.nodes[2].settings["no-such-option"] = "1"

        def use() -> None:
            with cluster:
                raise AssertionError("the cluster started")

        e = self.assertRaises(RuntimeError, use)
        self.assertIn("no-such-option", str(e))
        self.assertEqual(len(made), 3, made)
        self.assertNothingLeft(made)
        self.assertEqual([node.running for node in cluster.nodes], [False, False, False])

    def test_aJoinerWhoseStateTransferFailsStartsAgainFromAWholeSnapshot(self) -> None:
        """
        When the third node's state transfer fails (here: something else
        listens on the port its rsync daemon must receive the snapshot
        on, so the daemon dies and the node aborts), C{start()} warns,
        starts that node again with an empty data directory and a new
        port, and the cluster comes up with three synced nodes that have
        the database.
        """
        events = self.record_events()
        cluster = GaleraCluster()
        self.addCleanup(cluster.destroy)
        cluster._assign_ports()
        joiner = cluster.nodes[2]
        blocked = joiner.sst_port
        squatter = socket.socket()
        self.addCleanup(squatter.close)
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", blocked))
        squatter.listen()

        cluster.start()

        self.assertNotEqual(joiner.sst_port, blocked)
        self.assertEqual(joiner.status()["wsrep_cluster_size"], "3")
        self.assertEqual(joiner.status()["wsrep_local_state_comment"], "Synced")
        self.assertIn("txreconnect", joiner.admin_sql("SHOW DATABASES").split())
        self.assertNotEqual(joiner.version, "")
        warnings = [
            formatEvent(event) for event in events
            if event.get("log_level") == LogLevel.warn and event.get("node") is joiner
        ]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("state transfer failed (attempt 1 of 3)", warnings[0])

    def test_aNodeThatFailsForAnotherReasonIsNotStartedAgain(self) -> None:
        """
        A joining node that exits for a reason other than its state
        transfer (an unknown option) is not started again: C{start()}
        raises with that reason and warns of no retry.
        """
        events = self.record_events()
        cluster = GaleraCluster()
        cluster.nodes[2].settings["no-such-option"] = "1"
        self.addCleanup(cluster.destroy)
        e = self.assertRaises(RuntimeError, cluster.start)
        self.assertIn("no-such-option", str(e))
        retries = [event for event in events if "attempt" in event]
        self.assertEqual(retries, [])
