"""
The throwaway PostgreSQL cluster (a primary with a streaming standby) and
the throwaway PgBouncer produce real failovers and real pooler faults: each
test proves one with raw driver connections (no pool).
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, ClassVar, Dict, List, Optional, TypeVar

from twisted.internet import defer
from twisted.trial.unittest import SkipTest, TestCase

from txreconnect import ReconnectingConnectionPool
from txreconnect.drivers import driver_class

from txreconnect.testing import (
    PgBouncer,
    PostgresCluster,
    PostgresServer,
    ServerNotAvailable,
    require_driver,
    required,
    shared_server,
    started,
)
from txreconnect.testing import pgbouncer as pgbouncer_module
from txreconnect.testing.postgres import _children, _gone
from tests.support import close_quietly, wait_until

_T = TypeVar("_T")


def _started(thing: _T) -> _T:
    """
    Start a L{PostgresCluster} shared by a class (L{started} needs a test);
    when its software is missing, skip (or fail in CI) with what to
    install, as L{started} does.
    """
    try:
        thing.start()  # type: ignore[attr-defined]
    except ServerNotAvailable as e:
        thing.destroy()  # type: ignore[attr-defined]
        if required():
            raise RuntimeError(str(e) + " (CI requires it: this is a failure, not a skip)")
        raise SkipTest(str(e) + " (outside CI this test is skipped)")
    except BaseException:
        thing.destroy()  # type: ignore[attr-defined]
        raise
    return thing


class _PerClass:
    """
    A fixture shared by the tests of one class: made by the first test that
    asks for it, destroyed by the cleanup of the last one (trial runs no
    C{setUpClass}).  If only some of the class's tests run, the fixture's
    own finalizers destroy it at exit.  A failure to make it is kept, and
    raised again for each test, without trying again.
    """

    def __init__(self, make: Callable[[], Any], destroy: Callable[[Any], None]) -> None:
        self.make = make
        self.destroy = destroy
        self.value: Any = None
        self.error: Optional[BaseException] = None
        self.remaining: Optional[set] = None

    def get(self, testcase: TestCase) -> Any:
        if self.remaining is None:
            cls = type(testcase)
            self.remaining = {name for name in dir(cls) if name.startswith("test_")}
            try:
                self.value = self.make()
            except BaseException as e:
                self.error = e
        self.remaining.discard(testcase._testMethodName)
        if self.error is not None:
            raise self.error
        if not self.remaining:
            testcase.addCleanup(self.release)
        return self.value

    def release(self) -> None:
        value, self.value = self.value, None
        if value is not None:
            self.destroy(value)


def _run(conn: Any, sql: str, params: Optional[tuple] = None) -> List[Any]:
    """
    Run one statement in a transaction and commit, as adbapi does.
    """
    cursor = conn.cursor()
    cursor.execute(sql, params)
    rows = cursor.fetchall() if cursor.description else []
    conn.commit()
    return list(rows)


def _sqlstate(e: BaseException) -> Optional[str]:
    # psycopg2 says pgcode, psycopg 3 says sqlstate.
    return getattr(e, "pgcode", None) or getattr(e, "sqlstate", None)


def _in_thread(function: Callable[[], Any]) -> "_Background":
    background = _Background(function)
    background.start()
    return background


class _Background(threading.Thread):
    """
    Run a blocking call in a thread and keep its result or exception.
    """

    def __init__(self, function: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.function = function
        self.result: Any = None
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            self.result = self.function()
        except BaseException as e:
            self.error = e

    def outcome(self, timeout: float = 15.0) -> Any:
        self.join(timeout)
        if self.is_alive():
            raise AssertionError("the call did not return within %.0f s" % (timeout,))
        if self.error is not None:
            raise self.error
        return self.result


class _DriversMixin(TestCase):
    """
    Both PostgreSQL drivers, and connections closed by the test's cleanup.
    """

    psycopg2: Any
    psycopg: Any

    def setUp(self) -> None:
        self.psycopg2 = require_driver("psycopg2")
        self.psycopg = require_driver("psycopg")

    def connect(self, kwargs: Dict[str, object], driver: Any = None) -> Any:
        conn = (driver or self.psycopg2).connect(**kwargs)
        self.addCleanup(close_quietly, conn)
        return conn

    def drivers(self) -> List[Any]:
        return [self.psycopg2, self.psycopg]

    def assertReadOnlyError(self, conn: Any, sql: str) -> None:
        """
        C{sql} fails on C{conn} with SQLSTATE 25006, and the session
        survives it.
        """
        e = self.assertRaises(Exception, _run, conn, sql)
        self.assertEqual(_sqlstate(e), "25006", repr(e))
        conn.rollback()
        self.assertEqual(_run(conn, "SELECT 1"), [(1,)])


class SynchronousClusterTests(_DriversMixin):
    """
    A synchronous primary and standby, shared by the tests of this class;
    every test leaves them as it found them.
    """

    @staticmethod
    def _make() -> PostgresCluster:
        cluster = _started(PostgresCluster(synchronous=True))
        cluster.primary.admin_sql(
            "CREATE TABLE notes (id serial PRIMARY KEY, body text)", database="txreconnect"
        )
        cluster.primary.admin_sql("ALTER TABLE notes OWNER TO txreconnect", database="txreconnect")
        return cluster

    shared: ClassVar[_PerClass] = _PerClass(_make, PostgresCluster.destroy)

    def setUp(self) -> None:
        super().setUp()
        self.cluster: PostgresCluster = self.shared.get(self)

    def test_standbyStreamsAsTheSynchronousStandby(self) -> None:
        """
        After C{start()} the primary sees the standby streaming, as its
        synchronous standby, and the standby is in recovery.
        """
        self.assertEqual(
            self.cluster.replication_state(),
            {"application_name": "standby", "state": "streaming", "sync_state": "sync"},
        )
        self.assertTrue(self.cluster.standby.in_recovery())
        self.assertNotEqual(self.cluster.primary.port, self.cluster.standby.port)
        self.assertNotIn(self.cluster.standby.port, (5432, 6432))

    def test_writeOnPrimaryIsVisibleOnStandby(self) -> None:
        """
        A row committed on the primary can be read on the standby, with the
        test user and password, once replayed.
        """
        primary = self.connect(self.cluster.primary.connect_kwargs("psycopg2"))
        _run(primary, "INSERT INTO notes (body) VALUES (%s)", ("seen on the standby",))
        self.cluster.wait_for_replay()
        standby = self.connect(self.cluster.standby.connect_kwargs("psycopg2"))
        self.assertEqual(
            _run(standby, "SELECT count(*) FROM notes WHERE body = %s", ("seen on the standby",)),
            [(1,)],
        )

    def test_standbyRefusesWritesWith25006(self) -> None:
        """
        The standby, in recovery, refuses a write with SQLSTATE 25006.
        """
        for driver in self.drivers():
            standby = self.connect(self.cluster.standby.connect_kwargs(driver.__name__), driver)
            self.assertReadOnlyError(standby, "INSERT INTO notes (body) VALUES ('no')")

    def test_makeReadOnlyFailsAnExistingSessionsNextWrite(self) -> None:
        """
        After C{make_read_only(primary)}, a session opened before it (and
        idle since) fails its next write with SQLSTATE 25006.
        """
        sessions = [
            self.connect(self.cluster.primary.connect_kwargs(d.__name__), d) for d in self.drivers()
        ]
        for session in sessions:
            _run(session, "INSERT INTO notes (body) VALUES ('before read-only')")
        self.cluster.make_read_only(self.cluster.primary)
        self.addCleanup(self.cluster.make_read_write, self.cluster.primary)
        for session in sessions:
            self.assertReadOnlyError(session, "INSERT INTO notes (body) VALUES ('read-only')")

    def test_makeReadWriteLetsTheSameSessionWriteAgain(self) -> None:
        """
        C{make_read_write} undoes C{make_read_only} for existing sessions.
        """
        session = self.connect(self.cluster.primary.connect_kwargs("psycopg2"))
        self.cluster.make_read_only(self.cluster.primary)
        self.addCleanup(self.cluster.make_read_write, self.cluster.primary)
        self.assertReadOnlyError(session, "INSERT INTO notes (body) VALUES ('read-only')")
        self.cluster.make_read_write(self.cluster.primary)
        _run(session, "INSERT INTO notes (body) VALUES ('writable again')")

    def test_multiHostKwargsConnectToTheWritableServer(self) -> None:
        """
        C{multi_host_kwargs} and C{multi_host_dsn} give libpq's multi-host
        form; with C{target_session_attrs=read-write} it picks the primary
        whichever server is listed first.
        """
        for servers in (None, [self.cluster.standby, self.cluster.primary]):
            for driver in self.drivers():
                conn = self.connect(self.cluster.multi_host_kwargs(driver.__name__, servers=servers), driver)
                self.assertEqual(_run(conn, "SELECT inet_server_port()"), [(self.cluster.primary.port,)])
            conn = self.psycopg2.connect(self.cluster.multi_host_dsn(servers=servers))
            self.addCleanup(close_quietly, conn)
            self.assertEqual(_run(conn, "SELECT inet_server_port()"), [(self.cluster.primary.port,)])
        kwargs = self.cluster.multi_host_kwargs("psycopg2")
        self.assertEqual(kwargs["host"], "127.0.0.1,127.0.0.1")
        self.assertEqual(
            kwargs["port"], "%d,%d" % (self.cluster.primary.port, self.cluster.standby.port)
        )

    def test_primaryRestartedReadOnlyRefusesWritesUntilRestored(self) -> None:
        """
        C{restart_old_primary_read_only()} (here without a failover) makes
        the primary refuse writes with SQLSTATE 25006;
        C{restore_old_primary()} makes it writable and synchronous again.
        """
        self.cluster.restart_old_primary_read_only()
        self.addCleanup(self.cluster.wait_for_streaming)
        self.addCleanup(self.cluster.restore_old_primary)
        session = self.connect(self.cluster.primary.connect_kwargs("psycopg2"))
        self.assertReadOnlyError(session, "INSERT INTO notes (body) VALUES ('read-only')")
        self.cluster.restore_old_primary()
        self.cluster.wait_for_streaming()
        session = self.connect(self.cluster.primary.connect_kwargs("psycopg2"))
        _run(session, "INSERT INTO notes (body) VALUES ('writable and synchronous again')")

    def test_stoppedStandbyHoldsCommitsUntilMadeAsynchronous(self) -> None:
        """
        With the synchronous standby down, a commit on the primary waits
        (it does not fail); C{make_asynchronous} releases it.
        """
        session = self.connect(self.cluster.primary.connect_kwargs("psycopg2"))
        _run(session, "SELECT 1")
        self.cluster.standby.stop()

        def restore() -> None:
            self.cluster.standby.start()
            self.cluster.make_synchronous()

        self.addCleanup(restore)
        commit = _in_thread(
            lambda: _run(session, "INSERT INTO notes (body) VALUES ('waits for the standby')")
        )
        wait_until(
            lambda: self.cluster.primary.admin_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
            ).strip()
            == "1",
            what="the commit waits for the standby",
        )
        self.assertTrue(commit.is_alive())
        self.cluster.make_asynchronous()
        commit.outcome()
        self.assertEqual(
            _run(session, "SELECT count(*) FROM notes WHERE body = 'waits for the standby'"), [(1,)]
        )


class FailoverTests(_DriversMixin):
    """
    One synchronous cluster, failed over once for the whole class: a row
    committed, the primary killed, the standby promoted, the old primary
    restarted read-only.  The tests check the result.
    """

    @staticmethod
    def _make() -> Dict[str, Any]:
        psycopg2 = require_driver("psycopg2")
        cluster = _started(PostgresCluster(synchronous=True))
        try:
            conn = psycopg2.connect(**cluster.primary.connect_kwargs("psycopg2"))
            _run(conn, "CREATE TABLE notes (id serial PRIMARY KEY, body text)")
            _run(conn, "INSERT INTO notes (body) VALUES ('committed before the failover')")
            cluster.kill_primary()
            cluster.promote()
            cluster.restart_old_primary_read_only()
        except BaseException:
            cluster.destroy()
            raise
        return {"cluster": cluster, "lost_session": conn}

    @staticmethod
    def _destroy(fixture: Dict[str, Any]) -> None:
        close_quietly(fixture["lost_session"])
        fixture["cluster"].destroy()

    shared: ClassVar[_PerClass] = _PerClass(_make, _destroy)

    def setUp(self) -> None:
        super().setUp()
        fixture = self.shared.get(self)
        self.cluster: PostgresCluster = fixture["cluster"]
        self.lost_session = fixture["lost_session"]

    def test_killedPrimarysSessionsAreLost(self) -> None:
        """
        A session to the killed primary fails its next query with the
        driver's disconnect error.
        """
        self.assertRaises(self.psycopg2.OperationalError, _run, self.lost_session, "SELECT 1")

    def test_promotedStandbyLeftRecovery(self) -> None:
        """
        After C{promote()} the standby is no longer in recovery.
        """
        self.assertFalse(self.cluster.standby.in_recovery())

    def test_promotedStandbyAcceptsWrites(self) -> None:
        """
        The promoted standby accepts writes from both drivers (it waits for
        no synchronous standby).
        """
        for driver in self.drivers():
            conn = self.connect(self.cluster.standby.connect_kwargs(driver.__name__), driver)
            _run(conn, "INSERT INTO notes (body) VALUES (%s)", ("written after the failover",))

    def test_promotedStandbyHasEveryCommittedRow(self) -> None:
        """
        A row the synchronous primary acknowledged before it was killed is
        on the promoted standby.
        """
        conn = self.connect(self.cluster.standby.connect_kwargs("psycopg2"))
        self.assertEqual(
            _run(conn, "SELECT count(*) FROM notes WHERE body = 'committed before the failover'"),
            [(1,)],
        )

    def test_restartedOldPrimaryRefusesWritesWith25006(self) -> None:
        """
        The old primary, restarted read-only, accepts connections but
        refuses a write with SQLSTATE 25006 (psycopg2 C{pgcode}, psycopg
        C{sqlstate}).
        """
        self.assertFalse(self.cluster.primary.admin_sql("SELECT pg_is_in_recovery()").strip() == "t")
        for driver in self.drivers():
            conn = self.connect(self.cluster.primary.connect_kwargs(driver.__name__), driver)
            self.assertReadOnlyError(conn, "INSERT INTO notes (body) VALUES ('split brain')")
        conn = self.connect(self.cluster.primary.connect_kwargs("psycopg2"))
        e = self.assertRaises(
            self.psycopg2.Error, _run, conn, "INSERT INTO notes (body) VALUES ('split brain')"
        )
        self.assertEqual(e.pgcode, "25006")
        self.assertIn("read-only transaction", str(e))

    def test_restartedOldPrimaryAnswersReads(self) -> None:
        """
        The old primary still serves reads, with the rows it had.
        """
        conn = self.connect(self.cluster.primary.connect_kwargs("psycopg2"))
        self.assertEqual(
            _run(conn, "SELECT count(*) FROM notes WHERE body = 'committed before the failover'"),
            [(1,)],
        )

    def test_multiHostKwargsSkipTheReadOnlyOldPrimary(self) -> None:
        """
        libpq's C{target_session_attrs=read-write} skips the read-only old
        primary, listed first, and lands on the promoted standby.
        """
        for driver in self.drivers():
            conn = self.connect(self.cluster.multi_host_kwargs(driver.__name__), driver)
            self.assertEqual(_run(conn, "SELECT inet_server_port()"), [(self.cluster.standby.port,)])

    @defer.inlineCallbacks
    def test_aPoolFromTheURLSkipsTheReadOnlyOldPrimary(self) -> Any:
        """
        C{url()} lists both servers with C{target_session_attrs=read-write}:
        a pool made from it, with either driver or the default one, lands
        on the promoted standby.
        """
        for name in [None, *(driver.__name__ for driver in self.drivers())]:
            pool = ReconnectingConnectionPool.from_url(self.cluster.url(name), cp_min=1, cp_max=1)
            pool.start()
            try:
                rows = yield pool.runQuery("SELECT inet_server_port()")
            finally:
                pool.close()
            self.assertEqual(list(rows), [(self.cluster.standby.port,)], name)


class PrivateClusterTests(_DriversMixin):
    """
    Clusters of a test's own.
    """

    def cluster(self, **kwargs: Any) -> PostgresCluster:
        return started(self, PostgresCluster(**kwargs))

    def test_withBlockStartsTheClusterAndDestroysItEvenOnError(self) -> None:
        """
        C{with PostgresCluster() as cluster:} starts both servers, streaming;
        leaving the block destroys them, even when the block raised.
        """

        class Boom(Exception):
            pass

        directories: List[str] = []
        with self.assertRaises(Boom):
            with PostgresCluster(synchronous=False) as cluster:
                self.addCleanup(cluster.destroy)  # should the test fail
                self.assertEqual(cluster.replication_state()["state"], "streaming")  # type: ignore[index]
                directories += [server.directory for server in cluster.servers]
                raise Boom()
        for directory in directories:
            self.assertFalse(os.path.exists(directory), directory)
        self.assertFalse(any(server.running for server in cluster.servers))

    def test_asynchronousStandbyFailsOverAfterACleanStop(self) -> None:
        """
        An asynchronous standby streams as C{async}; after a clean stop of
        the primary (which sends it its last WAL) and C{promote()}, it has
        the primary's last commit and accepts writes.
        """
        cluster = self.cluster(synchronous=False)
        self.assertEqual(cluster.replication_state()["sync_state"], "async")  # type: ignore[index]
        conn = self.connect(cluster.primary.connect_kwargs("psycopg2"))
        _run(conn, "CREATE TABLE notes (body text)")
        _run(conn, "INSERT INTO notes VALUES ('last commit')")
        cluster.stop_primary()
        self.assertFalse(cluster.primary.running)
        cluster.promote()
        conn = self.connect(cluster.standby.connect_kwargs("psycopg2"))
        self.assertEqual(_run(conn, "SELECT body FROM notes"), [("last commit",)])
        _run(conn, "INSERT INTO notes VALUES ('after promotion')")

    def test_destroyLeavesNoProcessOrDirectory(self) -> None:
        """
        C{destroy()} kills both servers and all their processes and removes
        their directories.
        """
        cluster = self.cluster(synchronous=True)
        directories = [server.directory for server in cluster.servers]
        pids: List[int] = []
        for server in cluster.servers:
            assert server._process is not None
            pids += [server._process.pid, *_children(server._process.pid)]
        self.assertGreater(len(pids), 4)
        cluster.destroy()
        for directory in directories:
            self.assertFalse(os.path.exists(directory), directory)
        wait_until(lambda: all(_gone(pid) for pid in pids), what="every process gone")
        cluster.destroy()  # again: harmless


class _PgBouncerMixin(_DriversMixin):
    """
    A PgBouncer of each test's own in front of the shared PostgreSQL
    server; subclasses name the pool mode.
    """

    pool_mode: ClassVar[str]

    def setUp(self) -> None:
        super().setUp()
        self.server = shared_server(self, PostgresServer)
        self.bouncer = started(self, PgBouncer(self.server, pool_mode=self.pool_mode))

    def connect_via_bouncer(self, driver: Any = None) -> Any:
        driver = driver or self.psycopg2
        return self.connect(self.bouncer.connect_kwargs(driver.__name__), driver)

    def backend_pid(self, conn: Any) -> int:
        return int(_run(conn, "SELECT pg_backend_pid()")[0][0])

    def assertDisconnected(self, conn: Any) -> BaseException:
        """
        The next query on C{conn} fails and the driver marks it closed.
        """
        e = self.assertRaises(Exception, _run, conn, "SELECT 1")
        self.assertTrue(conn.closed, repr(e))
        return e

    def test_queriesPassThroughWithBothDrivers(self) -> None:
        """
        Both drivers query the server through PgBouncer, again and again
        (psycopg 3 prepares a statement run five times: in transaction mode
        C{connect_kwargs} turns that off).
        """
        for driver in self.drivers():
            conn = self.connect_via_bouncer(driver)
            for i in range(8):
                self.assertEqual(_run(conn, "SELECT %s::int + 1", (i,)), [(i + 1,)])
            self.assertEqual(
                _run(conn, "SELECT current_database(), current_user"), [("txreconnect", "txreconnect")]
            )
        self.assertEqual(self.bouncer.pool()["pool_mode"], self.pool_mode)

    def test_runsOnItsOwnPortAsTheServersUser(self) -> None:
        """
        It listens on a port of its own, not PgBouncer's default, and does
        not run as root.
        """
        self.assertNotIn(self.bouncer.port, (5432, 6432, self.server.port))
        self.assertIn("PgBouncer", self.bouncer.version)
        process = self.bouncer._process
        assert process is not None
        with open("/proc/%d/status" % (process.pid,)) as f:
            uid = next(line.split()[1] for line in f if line.startswith("Uid:"))
        self.assertNotEqual(uid, "0")

    def test_pauseHoldsANewClientUntilResume(self) -> None:
        """
        While paused, a new client's query waits (it does not fail); after
        C{resume()} it runs.
        """
        self.bouncer.pause()
        self.addCleanup(self.bouncer.resume)
        query = _in_thread(lambda: _run(self.connect_via_bouncer(), "SELECT 42"))
        wait_until(lambda: int(self.bouncer.pool().get("cl_waiting", "0")) >= 1, what="a waiting client")
        self.assertTrue(query.is_alive())
        self.bouncer.resume()
        self.assertEqual(query.outcome(), [(42,)])

    def test_pauseWithoutWaitingHoldsANewClientUntilResume(self) -> None:
        """
        C{pause(wait=False)} returns at once, even with a client connected;
        a new client's query waits until C{resume()}.
        """
        _run(self.connect_via_bouncer(), "SELECT 1")
        self.bouncer.pause(wait=False)
        self.addCleanup(self.bouncer.resume)
        query = _in_thread(lambda: _run(self.connect_via_bouncer(), "SELECT 43"))
        wait_until(lambda: int(self.bouncer.pool().get("cl_waiting", "0")) >= 1, what="a waiting client")
        self.assertTrue(query.is_alive())
        self.bouncer.resume()
        self.assertEqual(query.outcome(), [(43,)])

    def test_reconnectDoesNotBreakAConnectedClient(self) -> None:
        """
        After C{RECONNECT} a connected client's next query works.
        """
        for driver in self.drivers():
            conn = self.connect_via_bouncer(driver)
            self.assertEqual(_run(conn, "SELECT 1"), [(1,)])
            self.bouncer.reconnect()
            self.assertEqual(_run(conn, "SELECT 1"), [(1,)])

    def test_killMakesAConnectedClientsNextQueryFail(self) -> None:
        """
        After C{KILL db} a connected client's next query fails with an
        C{OperationalError} (psycopg2: "server closed the connection
        unexpectedly"; psycopg 3: "database removed", with SQLSTATE 08P01
        from psycopg 3.2.4 on, without one before), and a new client is
        served.
        """
        conns = [self.connect_via_bouncer(driver) for driver in self.drivers()]
        for conn in conns:
            _run(conn, "SELECT 1")
        self.bouncer.kill_database()
        psycopg2_error = self.assertDisconnected(conns[0])
        self.assertIsInstance(psycopg2_error, self.psycopg2.OperationalError)
        self.assertIn("server closed the connection unexpectedly", str(psycopg2_error))
        psycopg_error = self.assertDisconnected(conns[1])
        self.assertIsInstance(psycopg_error, self.psycopg.OperationalError)
        self.assertIn("database removed", str(psycopg_error))
        self.assertIn(_sqlstate(psycopg_error), ("08P01", None))
        self.assertEqual(_run(self.connect_via_bouncer(), "SELECT 1"), [(1,)])

    def test_killWithoutResumeHoldsNewClientsUntilResume(self) -> None:
        """
        C{KILL db} leaves the database paused: a new client waits until
        C{resume()}.
        """
        self.bouncer.kill_database(resume=False)
        self.addCleanup(self.bouncer.resume)
        query = _in_thread(lambda: _run(self.connect_via_bouncer(), "SELECT 7"))
        wait_until(lambda: int(self.bouncer.pool().get("cl_waiting", "0")) >= 1, what="a waiting client")
        self.bouncer.resume()
        self.assertEqual(query.outcome(), [(7,)])

    def test_restartBreaksConnectedClientsAndKeepsItsPort(self) -> None:
        """
        C{restart()} (an immediate shutdown) breaks connected clients with
        C{OperationalError}; PgBouncer comes back on the same port.
        """
        conns = [self.connect_via_bouncer(driver) for driver in self.drivers()]
        for conn in conns:
            _run(conn, "SELECT 1")
        port = self.bouncer.port
        self.bouncer.restart()
        for conn, driver in zip(conns, self.drivers()):
            e = self.assertDisconnected(conn)
            self.assertIsInstance(e, driver.OperationalError)
            self.assertIn("server closed the connection unexpectedly", str(e))
        self.assertEqual(self.bouncer.port, port)
        self.assertEqual(_run(self.connect_via_bouncer(), "SELECT 1"), [(1,)])

    def test_killThenStartServesAgain(self) -> None:
        """
        C{kill()} kills the PgBouncer process (SIGKILL); C{start()} brings
        it back.
        """
        conn = self.connect_via_bouncer()
        _run(conn, "SELECT 1")
        self.bouncer.kill()
        self.assertFalse(self.bouncer.running)
        self.assertDisconnected(conn)
        self.bouncer.start()
        self.assertEqual(_run(self.connect_via_bouncer(), "SELECT 1"), [(1,)])

    def test_pointToSendsNewServerConnectionsElsewhere(self) -> None:
        """
        C{point_to(other)} reloads PgBouncer with another server behind it:
        new server connections go there.
        """
        # Another shared server (the setting makes it another one), with
        # the same database, user and password.
        other = shared_server(self, PostgresServer, cluster_name="txreconnect-other")
        self.bouncer.point_to(other)
        self.addCleanup(self.bouncer.point_to, self.server)
        self.assertEqual(_run(self.connect_via_bouncer(), "SELECT inet_server_port()"), [(other.port,)])

    @defer.inlineCallbacks
    def test_aPoolFromTheURLQueriesThroughPgBouncer(self) -> Any:
        """
        A pool made from C{url(driver)}, with the driver's
        C{transaction_pooling_keywords} in transaction mode, runs the same
        statement again and again through PgBouncer.
        """
        for driver in self.drivers():
            extra = driver_class(driver.__name__).transaction_pooling_keywords
            pool = ReconnectingConnectionPool.from_url(
                self.bouncer.url(driver.__name__),
                cp_min=1,
                cp_max=1,
                **(extra if self.pool_mode == "transaction" else {}),
            )
            pool.start()
            try:
                for i in range(8):
                    rows = yield pool.runQuery("SELECT %s::int + 1", (i,))
                    self.assertEqual(list(rows), [(i + 1,)])
            finally:
                pool.close()

    def test_withBlockStartsPgBouncerAndDestroysIt(self) -> None:
        """
        C{with PgBouncer(server) as bouncer:} starts it; leaving the block
        destroys it and leaves the server running.
        """
        with PgBouncer(self.server, pool_mode=self.pool_mode) as bouncer:
            self.addCleanup(bouncer.destroy)  # should the test fail
            directory = bouncer.directory
            self.assertEqual(_run(self.connect(bouncer.connect_kwargs("psycopg2")), "SELECT 1"), [(1,)])
        self.assertFalse(os.path.exists(directory))
        self.assertFalse(bouncer.running)
        self.assertTrue(self.server.running)

    def test_destroyLeavesNoProcessOrDirectory(self) -> None:
        """
        C{destroy()} kills PgBouncer and removes its directory; the server
        behind it keeps running.
        """
        directory = self.bouncer.directory
        process = self.bouncer._process
        assert process is not None
        self.bouncer.destroy()
        self.assertFalse(os.path.exists(directory))
        self.assertIsNot(process.poll(), None)
        self.assertRaises(ProcessLookupError, os.killpg, process.pid, 0)
        self.assertTrue(self.server.running)
        self.bouncer.destroy()  # again: harmless


class SessionPgBouncerTests(_PgBouncerMixin):
    pool_mode = "session"

    def test_reconnectKeepsTheServerConnectionUntilTheClientLeaves(self) -> None:
        """
        In session mode C{RECONNECT} closes a client's server connection
        only when the client disconnects.
        """
        conn = self.connect_via_bouncer()
        pid = self.backend_pid(conn)
        self.bouncer.reconnect()
        self.assertEqual(self.backend_pid(conn), pid)
        conn.close()
        wait_until(lambda: self.bouncer.server_connections() == 0, what="server connection closed")

    def test_pauseWaitsForConnectedSessionClients(self) -> None:
        """
        In session mode C{PAUSE} does not return while a client is
        connected (it waits for its server connection to be released);
        C{pause()} raises when its time is up, and C{resume()} undoes it.
        """
        conn = self.connect_via_bouncer()
        _run(conn, "SELECT 1")
        self.addCleanup(self.bouncer.resume)
        self.assertRaises(RuntimeError, self.bouncer.pause, timeout=0.5)
        self.bouncer.resume()
        self.assertEqual(_run(conn, "SELECT 1"), [(1,)])

    def test_serverRestartBreaksAConnectedClient(self) -> None:
        """
        In session mode a server restart breaks a connected client: psycopg2
        raises C{OperationalError}; psycopg 3, inside a transaction, raises
        C{InternalError} ("received 2 results"), and only its closed
        connection tells it was a disconnect.
        """
        conns = [self.connect_via_bouncer(driver) for driver in self.drivers()]
        for conn in conns:
            _run(conn, "SELECT 1")
        self.server.restart()
        self.assertIsInstance(self.assertDisconnected(conns[0]), self.psycopg2.OperationalError)
        self.assertIsInstance(self.assertDisconnected(conns[1]), self.psycopg.Error)
        self.assertEqual(_run(self.connect_via_bouncer(), "SELECT 1"), [(1,)])


class TransactionPgBouncerTests(_PgBouncerMixin):
    pool_mode = "transaction"

    def test_reconnectReplacesAnIdleServerConnection(self) -> None:
        """
        In transaction mode C{RECONNECT} closes idle server connections: the
        client's next transaction runs on a new backend.
        """
        conn = self.connect_via_bouncer()
        pid = self.backend_pid(conn)
        self.bouncer.reconnect()
        self.assertNotEqual(self.backend_pid(conn), pid)

    def test_pauseHoldsAConnectedClientsNextQuery(self) -> None:
        """
        In transaction mode C{PAUSE} returns at once with clients connected
        (between transactions), and their next query waits until
        C{resume()}.
        """
        conn = self.connect_via_bouncer()
        _run(conn, "SELECT 1")
        self.bouncer.pause()
        self.addCleanup(self.bouncer.resume)
        query = _in_thread(lambda: _run(conn, "SELECT 2"))
        wait_until(lambda: int(self.bouncer.pool().get("cl_waiting", "0")) >= 1, what="a waiting client")
        self.bouncer.resume()
        self.assertEqual(query.outcome(), [(2,)])

    def test_serverRestartIsInvisibleToAnIdleClient(self) -> None:
        """
        In transaction mode a client between transactions does not notice a
        server restart: its next transaction gets a new server connection.
        """
        conns = [self.connect_via_bouncer(driver) for driver in self.drivers()]
        for conn in conns:
            _run(conn, "SELECT 1")
        self.server.restart()
        for conn in conns:
            self.assertEqual(_run(conn, "SELECT 1"), [(1,)])


class MissingPgBouncerTests(TestCase):
    """
    Without PgBouncer installed, its tests skip, saying what to install,
    or fail in CI.
    """

    def setUp(self) -> None:
        empty = self.mktemp()
        os.mkdir(empty)
        self.addCleanup(pgbouncer_module._binary.cache_clear)
        self.patch(pgbouncer_module, "_SEARCH", ())
        pgbouncer_module._binary.cache_clear()
        for name, value in (("PATH", empty), ("CI", None), ("TXRECONNECT_REQUIRE_ALL", None)):
            self.setenv(name, value)

    def setenv(self, name: str, value: Optional[str]) -> None:
        old = os.environ.get(name)
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value

        def restore() -> None:
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old

        self.addCleanup(restore)

    def test_missingBinarySkipsSayingWhatToInstall(self) -> None:
        """
        Outside CI the test is skipped with "apt-get install pgbouncer";
        nothing is left behind.
        """
        bouncer = PgBouncer(PostgresServer())
        e = self.assertRaises(SkipTest, started, self, bouncer)
        self.assertIn("apt-get install pgbouncer", str(e))
        self.assertIs(bouncer._directory, None)

    def test_missingBinaryFailsInCI(self) -> None:
        """
        In CI (C{TXRECONNECT_REQUIRE_ALL=1}) a missing PgBouncer fails.
        """
        self.setenv("TXRECONNECT_REQUIRE_ALL", "1")
        e = self.assertRaises(RuntimeError, started, self, PgBouncer(PostgresServer()))
        self.assertIn("apt-get install pgbouncer", str(e))


del _PgBouncerMixin
