"""
What every driver of a PostgreSQL server shares, whatever its client
code: the SQLSTATEs that end a session, the refusal of a read-only
server, the URL schemes and the default port.  The drivers built on
libpq (L{txreconnect.drivers._libpq}) and pg8000 build on it.

Nothing here imports a driver: the driver module is given to the
L{Driver} at construction.
"""

from __future__ import annotations

from typing import Any, ClassVar, FrozenSet, Optional, Tuple

from txreconnect.drivers._base import Driver, close_quietly, run_and_commit

# SQLSTATEs that end the session, from PostgreSQL's "Appendix A. PostgreSQL
# Error Codes" (https://www.postgresql.org/docs/current/errcodes-appendix.html).
# Class 08 "Connection Exception" counts as a whole (see is_disconnect_sqlstate);
# its codes are listed so that an exception class can be mapped back to one.
CONNECTION_EXCEPTION_SQLSTATES: Tuple[str, ...] = (
    "08000",  # connection_exception
    "08001",  # sqlclient_unable_to_establish_sqlconnection
    "08003",  # connection_does_not_exist
    "08004",  # sqlserver_rejected_establishment_of_sqlconnection
    "08006",  # connection_failure
    "08007",  # transaction_resolution_unknown
    "08P01",  # protocol_violation
)
SESSION_ENDING_SQLSTATES: FrozenSet[str] = frozenset(
    {
        "57P01",  # admin_shutdown: pg_terminate_backend(), smart/fast shutdown
        "57P02",  # crash_shutdown: another backend crashed
        "57P03",  # cannot_connect_now: the server is starting or stopping
        # The server's FATAL for idle_session_timeout (PostgreSQL 14+) and
        # idle_in_transaction_session_timeout (postgres.c, ProcessInterrupts);
        # psycopg 3 reports them as such (seen by experiment).
        "57P05",  # idle_session_timeout
        "25P03",  # idle_in_transaction_session_timeout
    }
)

# SQLSTATE read_only_sql_transaction: a write refused by a read-only server
# or transaction.
READ_ONLY_SQL_TRANSACTION = "25006"

# Conflicts: the server rolled the whole transaction back, and running it
# again may succeed.  "Appendix A. PostgreSQL Error Codes" (class 40,
# Transaction Rollback), and "13.2. Transaction Isolation": applications
# using Repeatable Read or Serializable "must be prepared to retry
# transactions due to serialization failures"; a deadlock's victim is
# rolled back ("13.3.4. Deadlocks").  A serialization failure may also be
# the answer to COMMIT under Serializable: nothing was committed.
# lock_not_available: a lock wait ran past lock_timeout.
_LOCK_NOT_AVAILABLE = "55P03"

# undefined_table: the marker table is not there (yet).
_UNDEFINED_TABLE = "42P01"

# SQLSTATE 57P03 cannot_connect_now, and the server's messages for it
# while it is on its way up or down (postmaster.c, canAcceptConnections
# and ProcessStartupPacket): it answers these at once, before any login.
# Not "the database system is not accepting connections" (a standby
# with hot_standby off, which never will: probing it quickly would fork
# a backend every few milliseconds for ever).
CANNOT_CONNECT_NOW = "57P03"
TRANSIENT_REFUSALS: Tuple[str, ...] = (
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is not yet accepting connections",
    "the database system is in recovery mode",
)

# unique_violation (in the catalog: "duplicate key value violates unique
# constraint pg_type_typname_nsp_index") and duplicate_table: what a
# CREATE TABLE IF NOT EXISTS raises when another session creates the same
# table at the same moment.
_CREATED_MEANWHILE = frozenset({"23505", "42P07"})

CONFLICT_SQLSTATES: FrozenSet[str] = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
    }
)


def is_disconnect_sqlstate(sqlstate: str) -> bool:
    """
    @param sqlstate: a five-character PostgreSQL SQLSTATE.
    @return: whether the server reports the session as gone or unusable.
    """
    return sqlstate.startswith("08") or sqlstate in SESSION_ENDING_SQLSTATES


class PostgresDriver(Driver):
    """
    A driver of a PostgreSQL server.  An error that carries a SQLSTATE
    (sent by the server) is judged by it alone, never by its text, which
    may quote user data.  Subclasses say where the SQLSTATE is
    (L{_sqlstate}).
    """

    family: ClassVar[str] = "postgresql"
    url_schemes: ClassVar[Tuple[str, ...]] = ("postgresql", "postgres")
    default_port: ClassVar[Optional[int]] = 5432
    complete_rules: ClassVar[bool] = True
    error_classes: ClassVar[Tuple[str, ...]] = ("Error",)

    def _code_says(self, exc: BaseException) -> Optional[bool]:
        """
        An error with a SQLSTATE is a disconnect only for class 08 and
        L{SESSION_ENDING_SQLSTATES}.

        @param exc: a driver exception.
        @return: the verdict of its SQLSTATE, or C{None} if it has none
            (then its message decides: the client's own words).
        """
        sqlstate = self._sqlstate(exc)
        if not sqlstate:
            return None
        return is_disconnect_sqlstate(sqlstate)

    def connect_failure_is_cheap(self, exc: BaseException) -> bool:
        """
        A refused connection (L{Driver.connect_failure_is_cheap}), or
        SQLSTATE 57P03 with one of L{TRANSIENT_REFUSALS}: the server
        answered at once that it is starting up, shutting down or
        recovering.  A failed login (28P01, 28000), too many connections
        (53300), a timeout and the rest are costly.

        @param exc: the driver's error from a failed C{connect()}.
        @return: whether the attempt was cheap for the server.
        """
        if super().connect_failure_is_cheap(exc):
            return True
        if self._sqlstate(exc) != CANNOT_CONNECT_NOW:
            return False
        text = str(exc).lower()
        return any(fragment in text for fragment in TRANSIENT_REFUSALS)

    def is_wrong_server(self, exc: BaseException, wants_writer: bool) -> bool:
        """
        SQLSTATE 25006 (C{read_only_sql_transaction}): the server refused a
        write because it is read-only (a standby, or an old primary back
        with C{default_transaction_read_only}).  It counts whether or not
        a writer was asked for: a pool that writes needs one.

        @param exc: a driver exception.
        @param wants_writer: unused.
        @return: whether C{exc} is that refusal.
        """
        return isinstance(exc, self.errors) and self._sqlstate(exc) == READ_ONLY_SQL_TRANSACTION

    def is_conflict(self, exc: BaseException) -> bool:
        """
        SQLSTATE 40001 (serialization failure) or 40P01 (deadlock
        detected): see L{CONFLICT_SQLSTATES}.

        @param exc: a driver exception.
        @return: whether the server rolled the transaction back because of
            a conflict.
        """
        return isinstance(exc, self.errors) and self._sqlstate(exc) in CONFLICT_SQLSTATES

    # --- commit markers ----------------------------------------------------

    commit_markers: ClassVar[bool] = True

    def create_commit_marker(self, connection: Any, table: str, key: str) -> None:
        """
        A plain read of the row first, which waits for no lock: the row
        is there but locked while the session of a COMMIT still in
        progress lives (one waiting for a synchronous standby), and an
        insert would wait for that session's end, for ever.  If it is
        missing, the row, C{ON CONFLICT DO NOTHING}, committed; if the
        table is missing (42P01), C{CREATE TABLE IF NOT EXISTS} first, in
        the same transaction.  Two sessions creating the table at once may
        collide in the catalog (23505, or 42P07): the other one made it,
        so only the row is inserted then.
        """
        exists = ("SELECT 1 FROM %s WHERE id = %%s" % (table,), (key,))
        row = ("INSERT INTO %s (id, n) VALUES (%%s, 0) ON CONFLICT (id) DO NOTHING" % (table,), (key,))
        create = ("CREATE TABLE IF NOT EXISTS %s (id TEXT PRIMARY KEY, n BIGINT NOT NULL)" % (table,), ())
        try:
            if not run_and_commit(connection, [exists]):
                run_and_commit(connection, [row])
            return
        except self.errors as error:
            if self._sqlstate(error) != _UNDEFINED_TABLE:
                raise
        try:
            run_and_commit(connection, [create, row])
        except self.errors as error:
            if self._sqlstate(error) not in _CREATED_MEANWHILE:
                raise
            run_and_commit(connection, [row])

    def mark_commit(self, connection: Any, table: str, key: str, number: int) -> Tuple[bool, bool, Any]:
        """
        One statement: set the marker only if the transaction has a
        transaction id, i.e. wrote (C{txid_current_if_assigned()}, which
        assigns none to read-only work: "Transaction ID and Snapshot
        Information Functions"), and return whether it has one, whether
        the row was updated, and the backend's pid.  Whether it wrote is
        read apart from whether the row was updated: a missing row must
        not make a write look like a read, which would be replayed.
        """
        cursor = connection.cursor()
        try:
            cursor.execute(
                "WITH marked AS (UPDATE %s SET n = %%s WHERE id = %%s AND txid_current_if_assigned() IS NOT NULL"
                " RETURNING 1) SELECT txid_current_if_assigned() IS NOT NULL, (SELECT count(*) FROM marked),"
                " pg_backend_pid()" % (table,),
                (number, key),
            )
            wrote, marked, pid = cursor.fetchall()[0]
        finally:
            close_quietly(cursor)
        return bool(wrote), bool(marked), pid

    def _read_marker(self, connection: Any, table: str, key: str, wait: float, number: int) -> Optional[int]:
        """
        C{SELECT ... FOR UPDATE} under C{SET LOCAL lock_timeout}: in READ
        COMMITTED, a row locked by another transaction is read again once
        that one ends ("13.2.1. Read Committed Isolation Level").  A
        PostgreSQL cluster has one primary: nothing to fence.
        """
        cursor = connection.cursor()
        try:
            if self.is_autocommit(connection):
                cursor.execute("BEGIN")
            cursor.execute("SET LOCAL lock_timeout = %d" % (int(wait * 1000),))
            cursor.execute("SELECT n FROM %s WHERE id = %%s FOR UPDATE" % (table,), (key,))
            rows = cursor.fetchall()
        finally:
            close_quietly(cursor)
        connection.rollback()
        return int(rows[0][0]) if rows else None

    def _is_lock_timeout(self, exc: BaseException) -> bool:
        return isinstance(exc, self.errors) and self._sqlstate(exc) == _LOCK_NOT_AVAILABLE

    def _end_session(self, connection: Any, session: Any) -> None:
        """
        C{pg_terminate_backend()}: allowed for a backend of the same role
        ("Server Signaling Functions").  A backend waiting for a
        synchronous standby after its COMMIT record was flushed ends with
        the transaction committed locally.
        """
        run_and_commit(connection, [("SELECT pg_terminate_backend(%s)", (session,))])

    def _sqlstate(self, exc: BaseException) -> Optional[str]:
        """
        @param exc: an exception of the driver.
        @return: the SQLSTATE it carries, if any.
        """
        raise NotImplementedError
