"""
Commit resolution (C{cp_resolve_commits}) under real faults and
continuous writes: a crash of the server with COMMITs in flight, a plain
restart, terminated sessions, PgBouncer restarts and C{KILL}, and a
promotion.  After each, an audit of what was stored: no write is reported
done that is not stored, none is stored twice, and none that failed with
a known outcome is stored.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Type

from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from txreconnect import ReconnectingConnectionPool, TransactionOutcomeUnknown, WaitForDatabase
from txreconnect.testing import _target
from txreconnect.testing import (
    FaultProxy,
    MariaDBServer,
    PgBouncer,
    PostgresCluster,
    PostgresServer,
    ThrowawayServer,
    private_server,
    require_driver,
    shared_server,
    started,
)
from tests.support import close_quietly, wait_until_async, warm
from tests.writeload import WriteLoad

#: how long writes may take to resume after a fault (seconds)
RESUME_BOUND = 60.0

#: writes acknowledged before a fault, and again after it
ACKS = 40

CP_MAX = 4

#: the advisory lock that holds back the COMMIT of some inserts
GATE = 7311

_log = Logger()


def stored_ids(server: ThrowawayServer, table: str = "items") -> List[int]:
    """
    @param server: a running PostgreSQL or MariaDB server.
    @return: every id in C{table}, read by the administrator, as many
        times as it is there.
    """
    if server.family == "postgresql":
        out = server.admin_sql("SELECT id FROM %s" % (table,), database=server.database)  # type: ignore[call-arg]
    else:
        out = server.admin_sql("SELECT id FROM `%s`.%s" % (server.database, table))
    return [int(line) for line in out.split()]


def create_tables(server: PostgresServer, *tables: str, then: str = "") -> None:
    """
    (Re)create each of C{tables} as C{(id INTEGER PRIMARY KEY)}, owned by
    the server's user, in its database, as the administrator.

    @param then: more SQL to run after, in the same session.
    """
    sql = "".join(
        'DROP TABLE IF EXISTS %s; CREATE TABLE %s (id INTEGER PRIMARY KEY); ALTER TABLE %s OWNER TO "%s"; '
        % (table, table, table, server.user)
        for table in tables
    )
    server.admin_sql(sql + then, database=server.database)


#: SQL that makes an insert into C{items} of every tenth id wait, at
#: COMMIT (a deferred constraint trigger), for the advisory lock L{GATE}
HOLD_COMMIT = (
    "CREATE FUNCTION hold_commit() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN IF NEW.id %% 10 = 0 THEN PERFORM pg_advisory_xact_lock_shared(%d); END IF;"
    " RETURN NULL; END $$;"
    " CREATE CONSTRAINT TRIGGER hold_commit AFTER INSERT ON items"
    " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION hold_commit()" % (GATE,)
)


def hold_gate(testcase: TestCase, server: PostgresServer) -> Any:
    """
    Take the advisory lock L{GATE} on C{server}, on a connection of our own
    (the server's kill ends it; so does the test's cleanup).
    """
    holder = require_driver("psycopg2").connect(**server.connect_kwargs("psycopg2"))
    testcase.addCleanup(close_quietly, holder)
    holder.autocommit = True
    holder.cursor().execute("SELECT pg_advisory_lock(%s)", (GATE,))
    return holder


def held_transactions(server: PostgresServer) -> List[str]:
    """
    @return: the transaction ids of the COMMITs on C{server} that wait for
        L{GATE}.
    """
    out = server.admin_sql(
        "SELECT a.backend_xid FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
        " WHERE l.locktype = 'advisory' AND l.objid = %d AND NOT l.granted" % (GATE,)
    )
    return out.split()


@defer.inlineCallbacks
def hold_every_commit(server: PostgresServer) -> Any:
    """
    Wait until every caller's COMMIT (L{CP_MAX}) waits at the gate.

    @return: a Deferred firing with their transaction ids.
    """
    held: List[str] = []

    def all_held(xids: List[str]) -> bool:
        held[:] = xids
        return len(xids) == CP_MAX

    yield wait_until_async(
        lambda: threads.deferToThread(held_transactions, server).addCallback(all_held),
        RESUME_BOUND,
        "every caller's COMMIT held at the gate",
    )
    return held


def resolving_pool(testcase: TestCase, driver_name: str, connect: Mapping[str, Any], **kwargs: Any) -> ReconnectingConnectionPool:
    """
    A started pool that resolves lost COMMITs and waits for the database
    (for up to a minute), with L{CP_MAX} threads, closed by the test's
    cleanup.

    @param connect: the driver's connect keywords.
    @param kwargs: pool options overriding those.
    """
    options: Dict[str, Any] = dict(
        connect, cp_min=1, cp_max=CP_MAX, cp_resolve_commits=True, cp_policy=WaitForDatabase(deadline=60)
    )
    options.update(kwargs)
    pool = ReconnectingConnectionPool(driver_name, **options)
    pool.start()
    testcase.addCleanup(pool.close)
    return pool


def audit(testcase: TestCase, what: str, load: WriteLoad, stored: List[int], pool: ReconnectingConnectionPool) -> Dict[str, Any]:
    """
    Check what C{load} was told against what is C{stored}: every
    acknowledged id is stored exactly once, no id is stored twice, and no
    id whose call failed with anything but L{TransactionOutcomeUnknown}
    is stored.  Log the counts (in the test log, under C{resolve-audit}).

    @return: the counts: C{acked}, C{failures} (by exception class),
        C{outcome_unknown} (calls that failed with
        L{TransactionOutcomeUnknown}) and the pool's C{resolved_committed},
        C{resolved_aborted}, C{resolve_failed}, C{replays} and
        C{disconnects}.
    """
    counts = collections.Counter(stored)
    testcase.assertEqual({id: n for id, n in counts.items() if n > 1}, {}, "ids stored more than once")
    testcase.assertEqual(set(load.acked) - set(counts), set(), "acknowledged writes missing")
    known = {id for id, failure in load.failed if not failure.check(TransactionOutcomeUnknown)}
    testcase.assertEqual(known & set(counts), set(), "writes that failed with a known outcome are stored")
    stats = pool.stats()
    report: Dict[str, Any] = {
        "acked": len(load.acked),
        "failures": load.failure_types(),
        "outcome_unknown": sum(1 for _, failure in load.failed if failure.check(TransactionOutcomeUnknown)),
    }
    for key in ("resolved_committed", "resolved_aborted", "resolve_failed", "replays", "disconnects", "conflict_retries"):
        report[key] = stats[key]
    if load.failed:
        report["examples"] = sorted({"%s: %s" % (f.type.__name__, f.value) for _, f in load.failed})[:5]
    _log.info("resolve-audit {what}: {report}", what=what, report=report)
    return report


@defer.inlineCallbacks
def run_events(load: WriteLoad, events: Mapping[str, Callable[[], Any]]) -> Any:
    """
    Start C{load}; once it has L{ACKS} acknowledged writes, run each event
    in a thread, in order, waiting after each for L{ACKS} more; then stop
    it.
    """
    load.start()
    try:
        yield load.wait_for_acks(ACKS, RESUME_BOUND, "writes before the events")
        for name, event in events.items():
            result = yield threads.deferToThread(event)
            _log.info("resolve-audit event {name}: {result}", name=name, result=result)
            yield load.wait_for_acks(ACKS, RESUME_BOUND, "writes resuming after %s" % (name,))
    finally:
        yield load.stop()


class _CrashMixin(TestCase):
    """
    A private PostgreSQL server (with C{synchronous_commit=on}, so that an
    acknowledged COMMIT survives a crash) is killed with SIGKILL while
    COMMITs are in flight.  An insert of every tenth id waits at COMMIT
    (a deferred constraint trigger) for an advisory lock the test holds;
    the server is killed once every caller waits there, when the last lost
    transaction's WAL is still only in the server's memory
    (C{wal_writer_delay} is long).  The resolving pool reaches the server
    through a L{FaultProxy} that turns it away while another pool, without
    resolution, writes a burst after the restart: the lost transaction's
    id is handed out again before the resolving pool asks.
    """

    driver_name: ClassVar[str]

    def setUp(self) -> None:
        self.driver = require_driver(self.driver_name)
        require_driver("psycopg2")  # holds the gate
        self.server = private_server(self, PostgresServer, synchronous_commit="on", wal_writer_delay="10s")
        create_tables(self.server, "items", "burst", then=HOLD_COMMIT)
        self.proxy = FaultProxy(self.server.port)
        self.proxy.start()
        self.addCleanup(self.proxy.stop)

    def burst_transactions(self) -> List[str]:
        """
        @return: the transaction ids that wrote the other pool's 200 rows.
        """
        out = self.server.admin_sql("SELECT xmin FROM burst", database=self.server.database)
        self.assertEqual(len(out.split()), 200)
        return out.split()

    def crash_and_restart(self) -> None:
        """
        Kill the server and start it again.
        """
        self.server.kill()
        self.server.start()

    @defer.inlineCallbacks
    def test_aCrashWithCommitsInFlightReportsNoLostWriteAsDone(self) -> Any:
        """
        After a crash with COMMITs in flight, and transaction ids handed
        out again before the pool asks, every write the pool reported done
        is stored once, none that failed is stored, and no call fails:
        waiting for the database, the pool asks about each lost COMMIT.
        """
        pool = resolving_pool(self, self.driver_name, self.server.connect_kwargs(self.driver_name, port=self.proxy.port))
        yield warm(pool)
        other = ReconnectingConnectionPool(
            "psycopg2", **dict(self.server.connect_kwargs("psycopg2"), cp_policy=WaitForDatabase(deadline=60))
        )
        other.start()
        self.addCleanup(other.close)
        yield warm(other)
        load = WriteLoad(pool, callers=CP_MAX)
        load.start()
        try:
            yield load.wait_for_acks(ACKS, RESUME_BOUND, "writes before the crash")
            yield threads.deferToThread(hold_gate, self, self.server)
            held = yield hold_every_commit(self.server)
            self.proxy.refuse(3600)
            yield threads.deferToThread(self.crash_and_restart)
            yield defer.gatherResults(
                [other.runOperation("INSERT INTO burst (id) VALUES (%s)", (id,)) for id in range(1, 201)],
                consumeErrors=True,
            )
            self.proxy.refuse(0)
            yield load.wait_for_acks(ACKS, RESUME_BOUND, "writes after the crash")
        finally:
            yield load.stop()
        reused = set(held) & set(self.burst_transactions())
        report = audit(self, "crash %s" % (self.driver_name,), load, stored_ids(self.server), pool)
        _log.info("resolve-audit crash {driver}: xids held {held}, reused {reused}", driver=self.driver_name, held=held, reused=reused)
        self.assertTrue(reused, "no transaction id of a lost COMMIT was handed out again: %r" % (held,))
        self.assertEqual(load.failure_types(), {}, report)
        self.assertEqual(report["resolved_aborted"], CP_MAX, report)


class Psycopg2CrashTests(_CrashMixin):
    driver_name = "psycopg2"


class PsycopgCrashTests(_CrashMixin):
    driver_name = "psycopg"


class Pg8000CrashTests(_CrashMixin):
    driver_name = "pg8000"


class _RestartMixin(TestCase):
    """
    Continuous writes, waiting for the database, through a plain restart
    of the server and the termination of every session.
    """

    server_class: ClassVar[Type[ThrowawayServer]]
    driver_name: ClassVar[str]

    def setUp(self) -> Any:
        self.driver = require_driver(self.driver_name)
        self.server = shared_server(self, self.server_class)
        # Conflicts retried too, as an application that wants no failed
        # call sets it: InnoDB once reported a deadlock (1213) to one of
        # the writers while the killed sessions were rolled back (one run
        # in CI, none in a thousand here), and a deadlock is a conflict,
        # not an outage.  The server's log prints every deadlock in full.
        self.pool = resolving_pool(
            self, self.driver_name, self.server.connect_kwargs(self.driver_name), cp_conflict_retries=3
        )
        return self.pool.runInteraction(self._create_table)

    def _create_table(self, txn: Any) -> None:
        txn.execute("DROP TABLE IF EXISTS items")
        txn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY)")

    @defer.inlineCallbacks
    def test_noWriteFailsThroughARestartOrTerminatedSessions(self) -> Any:
        """
        Waiting for the database, with resolution on, a restart of the
        server and the termination of every session fail no call: a COMMIT
        whose reply was lost is resolved, and nothing is lost or doubled.
        """
        yield warm(self.pool)
        load = WriteLoad(self.pool, callers=CP_MAX)
        yield run_events(
            load, {"restart": self.server.restart, "terminate_sessions": self.server.terminate_sessions}
        )
        report = audit(self, "restart %s" % (self.driver_name,), load, stored_ids(self.server), self.pool)
        # The server's log says why, for a failure the server caused (a
        # MariaDB deadlock is printed there in full).
        self.assertEqual(load.failure_types(), {}, "%r\nthe server's log ends with:\n%s" % (report, self.server.log_tail(80)))


class Psycopg2RestartTests(_RestartMixin):
    server_class = PostgresServer
    driver_name = "psycopg2"


class PyMySQLRestartTests(_RestartMixin):
    server_class = MariaDBServer
    driver_name = "pymysql"


class _PgBouncerMixin(TestCase):
    """
    Continuous writes through PgBouncer, waiting for the database, while
    PgBouncer restarts and C{KILL}s the database's connections.
    """

    driver_name: ClassVar[str] = "psycopg2"
    pool_mode: ClassVar[str]

    def setUp(self) -> None:
        self.driver = require_driver(self.driver_name)
        self.server = shared_server(self, PostgresServer)
        create_tables(self.server, "items")
        self.bouncer = started(self, PgBouncer(self.server, pool_mode=self.pool_mode))

    @defer.inlineCallbacks
    def test_noWriteFailsThroughPgBouncerRestartsAndKills(self) -> Any:
        """
        Waiting for the database, with resolution on, a PgBouncer restart
        and C{KILL} fail no call, and nothing is lost or doubled.
        """
        pool = resolving_pool(self, self.driver_name, self.bouncer.connect_kwargs(self.driver_name))
        yield warm(pool)
        load = WriteLoad(pool, callers=CP_MAX)
        yield run_events(load, {"restart": self.bouncer.restart, "KILL": self.bouncer.kill_database})
        report = audit(self, "pgbouncer %s" % (self.pool_mode,), load, stored_ids(self.server), pool)
        self.assertEqual(load.failure_types(), {}, report)


class Psycopg2SessionPoolingTests(_PgBouncerMixin):
    pool_mode = "session"


class Psycopg2TransactionPoolingTests(_PgBouncerMixin):
    pool_mode = "transaction"


class _PromotionMixin(TestCase):
    """
    A primary and a synchronous standby; the pool writes through libpq's
    multi-host target (C{target_session_attrs=read-write}) while the
    primary is killed and the standby promoted.  The primary is killed
    while every caller's COMMIT waits at the gate (as in the crash test),
    and the pool reaches the standby through a L{FaultProxy} that turns it
    away until the new primary has run transactions of its own: every
    lost COMMIT is asked about on a primary that has moved on.
    """

    driver_name: ClassVar[str]

    def setUp(self) -> None:
        self.driver = require_driver(self.driver_name)
        require_driver("psycopg2")  # holds the gate
        self.cluster = started(self, PostgresCluster(synchronous=True))
        create_tables(self.cluster.primary, "items", "burst", then=HOLD_COMMIT)
        self.proxy = FaultProxy(self.cluster.standby.port)
        self.proxy.start()
        self.addCleanup(self.proxy.stop)

    def fail_over(self) -> None:
        self.cluster.kill_primary()
        self.cluster.promote()

    def burst(self) -> List[str]:
        """
        Run 200 transactions on the new primary, each inserting a row of
        C{burst}.

        @return: their transaction ids.
        """
        standby = self.cluster.standby
        standby.admin_sql(
            "DO $$ BEGIN FOR i IN 1..200 LOOP INSERT INTO burst VALUES (i); COMMIT; END LOOP; END $$",
            database=standby.database,
        )
        out = standby.admin_sql("SELECT xmin FROM burst", database=standby.database)
        return out.split()

    @defer.inlineCallbacks
    def test_aPromotionReportsNoWriteAsDoneThatTheNewPrimaryLacks(self) -> Any:
        """
        After the primary is killed with COMMITs in flight and the standby
        promoted, and once the new primary has run transactions of its
        own, every write the pool reported done is on the new primary
        once, none that failed is, and no call fails: each lost COMMIT is
        resolved on the new primary (as not committed, and replayed).
        """
        primary, standby = self.cluster.primary, self.cluster.standby
        connect = _target.connect_kwargs(primary, self.driver_name, [primary.port, self.proxy.port])
        connect["target_session_attrs"] = "read-write"
        pool = resolving_pool(self, self.driver_name, connect, cp_policy=WaitForDatabase(deadline=120))
        yield warm(pool)
        load = WriteLoad(pool, callers=CP_MAX)
        load.start()
        try:
            yield load.wait_for_acks(ACKS, RESUME_BOUND, "writes before the promotion")
            yield threads.deferToThread(hold_gate, self, primary)
            held = yield hold_every_commit(primary)
            self.proxy.refuse(3600)
            yield threads.deferToThread(self.fail_over)
            burst = yield threads.deferToThread(self.burst)
            self.assertEqual(len(burst), 200)
            self.assertEqual(pool.stats()["resolved_aborted"], 0, "the pool asked before the burst")
            self.proxy.refuse(0)
            yield load.wait_for_acks(ACKS, RESUME_BOUND, "writes after the promotion")
        finally:
            yield load.stop()
        report = audit(self, "promotion %s" % (self.driver_name,), load, stored_ids(standby), pool)
        _log.info(
            "resolve-audit promotion {driver}: xids held {held}, handed out again {reused}",
            driver=self.driver_name,
            held=held,
            reused=set(held) & set(burst),
        )
        self.assertEqual(load.failure_types(), {}, report)
        self.assertEqual(report["resolved_aborted"], CP_MAX, report)


class Psycopg2PromotionTests(_PromotionMixin):
    driver_name = "psycopg2"


del _CrashMixin, _RestartMixin, _PgBouncerMixin, _PromotionMixin
