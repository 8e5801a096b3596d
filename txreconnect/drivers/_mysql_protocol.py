"""
Rules shared by the MySQL and MariaDB drivers: PyMySQL and mysqlclient
(C{MySQLdb}).

Nothing here imports a driver: the driver module is given to the
L{Driver} at construction.
"""

from __future__ import annotations

import errno
from typing import Any, Callable, ClassVar, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

from txreconnect import _convert
from txreconnect.drivers._base import Driver, _message, close_quietly, error_chain, run_and_commit
from txreconnect.errors import ConfigurationError

# Error numbers (args[0]) that mean the connection is gone.  Sources: the
# MySQL client and server error references
# (https://dev.mysql.com/doc/mysql-errors/8.0/en/client-error-reference.html,
# .../server-error-reference.html), MariaDB's error codes
# (https://mariadb.com/kb/en/mariadb-error-codes/), and SQLAlchemy's MySQL
# dialect, whose is_disconnect() (dialects/mysql/base.py) lists 1927, 2006,
# 2013, 2014, 2045, 2055 and 4031.
DISCONNECT_CODES: FrozenSet[int] = frozenset(
    {
        # ER_SERVER_SHUTDOWN "Server shutdown in progress", SQLSTATE 08S01
        # (communication link failure): the server is closing the session.
        1053,
        # ER_CONNECTION_KILLED (MariaDB) "Connection was killed": KILL.
        1927,
        # CR_CONNECTION_ERROR / CR_CONN_HOST_ERROR "Can't connect to
        # server": the server cannot be reached (now), raised by a
        # reconnect attempt; nothing was sent, the call may be retried.
        2002,
        2003,
        # CR_SERVER_GONE_ERROR "MySQL server has gone away" (also what
        # mysqlclient raises on a connection closed on the client side).
        2006,
        # CR_SERVER_LOST "Lost connection to MySQL server during query".
        2013,
        # CR_COMMANDS_OUT_OF_SYNC: the protocol state is unusable.
        # mysqlclient raises it as ProgrammingError (_mysql.c).
        2014,
        # Listed by SQLAlchemy; PyMySQL's constants/CR.py names it
        # CR_SHARED_MEMORY_CONNECT_ABANDONED_ERROR.
        2045,
        # CR_SERVER_LOST_EXTENDED "Lost connection to MySQL server at '%s'".
        2055,
        # ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8.0.24+): the server closed
        # an idle connection after wait_timeout.
        4031,
    }
)


# Conflicts: running the transaction again may succeed.  The MySQL server
# error reference (and MariaDB's error codes):
#   - 1213 ER_LOCK_DEADLOCK "Deadlock found when trying to get lock; try
#     restarting transaction" (SQLSTATE 40001): InnoDB rolled the whole
#     transaction back ("InnoDB Error Handling", "Deadlocks in InnoDB").
#     Galera reports a transaction that failed certification the same way
#     (Galera Cluster docs, "Certification-Based Replication": "the
#     transaction ... fails with a deadlock error").
#   - 1205 ER_LOCK_WAIT_TIMEOUT "Lock wait timeout exceeded; try restarting
#     transaction": by default (innodb_rollback_on_timeout=OFF) only the
#     statement is rolled back, so the pool rolls the whole transaction
#     back before running it again.
CONFLICT_CODES: FrozenSet[int] = frozenset({1213, 1205})

# ER_NO_SUCH_TABLE: the marker table is not there (yet).
_NO_SUCH_TABLE = 1146

# ER_LOCK_WAIT_TIMEOUT, and ER_NO_SUCH_THREAD "Unknown thread id" (KILL of
# a session that has already ended).
_LOCK_WAIT_TIMEOUT = 1205
_NO_SUCH_THREAD = 1094

# A Galera node outside the primary component (isolated from the rest of
# its cluster, or still joining): ER_UNKNOWN_COM_ERROR, SQLSTATE 08S01,
# "WSREP has not yet prepared node for application use".  The node
# refuses every statement but SET and SHOW, reads included, unless
# wsrep_dirty_reads is on (MariaDB's "wsrep_ready" and "Galera Cluster
# Status Variables": "nodes that belong to non-primary components are
# non-operational and raise a ER_UNKNOWN_COM_ERROR to SQL queries").  The
# statement was refused before it ran: at COMMIT, nothing was committed,
# since a node outside the primary component cannot replicate.  Without
# Galera, 1047 answers only an unknown protocol command, never a
# statement.
_WSREP_NOT_READY = 1047

# ER_ERROR_DURING_COMMIT.  Galera raises it when replicating the
# transaction failed for another reason than a conflict, above all when
# the node lost the primary component while COMMIT was being replicated
# (wsrep-lib's error_conn_failed, which MariaDB's wsrep_override_error()
# reports as 1180 "Error while appending streaming replication fragment
# (provider status: ...)").  The other nodes may or may not have received
# the transaction, so its outcome is unknown, as when the connection is
# lost during COMMIT: see MySQLProtocolDriver.is_disconnect.
_ERROR_DURING_COMMIT = 1180

# Writes refused by a read-only server: ER_OPTION_PREVENTS_STATEMENT "The
# server is running with the --read-only option so it cannot execute this
# statement" (1290 also names other options, such as --secure-file-priv:
# the message must say read-only), and ER_READ_ONLY_MODE "Running in
# read-only mode" (1836, InnoDB's innodb_read_only).
_OPTION_PREVENTS_STATEMENT = 1290
_READ_ONLY_MODE = 1836

# CR_CONN_HOST_ERROR "Can't connect to MySQL server": the error raised when
# no server of a host list would do (a disconnect code, so that it reads
# like the failure of one server).
_CONN_HOST_ERROR = 2003

# CR_CONNECTION_ERROR "Can't connect to local MySQL server through socket".
_CONNECTION_ERROR = 2002

#: target_session_attrs values this pool understands for MySQL: libpq's
#: names, since MySQL drivers have no such setting
_TARGETS = ("any", "read-write")

#: connect() options of both PyMySQL and mysqlclient that are not text,
#: for a URL's query (target_session_attrs is this module's)
MYSQL_URL_OPTIONS: Mapping[str, _convert.Converter] = {
    "port": _convert.integer(1),
    "client_flag": _convert.integer(0),
    "autocommit": _convert.boolean,
    "local_infile": _convert.boolean,
    "target_session_attrs": _convert.one_of(*_TARGETS),
}


def _split(value: Any) -> List[Any]:
    """
    @param value: a host or port: one value, a list or tuple, or a
        comma-separated string.
    @return: its entries, stripped.
    """
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        return [part.strip() for part in value.split(",")]
    return [value]


def _targets(connkw: Dict[str, Any]) -> Tuple[List[Tuple[Any, Any]], Dict[str, Any], bool]:
    """
    Read a host list (libpq's form: C{host="a,b"}, C{port="3306,3307"},
    or lists) and C{target_session_attrs} out of C{connect()} keywords.

    @return: the (host, port) pairs to try in order (port C{None}: the
        driver's default, or the single port given), the other keywords,
        and whether a writable server is asked for.
    @raise ConfigurationError: a malformed list or an unknown
        C{target_session_attrs}.
    """
    rest = dict(connkw)
    target = rest.pop("target_session_attrs", "any")
    if target not in _TARGETS:
        raise ConfigurationError(
            "target_session_attrs=%r is not supported for MySQL and MariaDB (use one of: %s)"
            % (target, ", ".join(_TARGETS))
        )
    hosts = _split(rest.pop("host", None))
    ports = _split(rest.pop("port", None))
    if len(ports) == 1:
        ports = ports * len(hosts)
    if len(hosts) > 1 and any(host in ("", None) for host in hosts):
        raise ConfigurationError("empty entry in the MySQL host list %r" % (",".join(map(str, hosts)),))
    if len(ports) != len(hosts):
        raise ConfigurationError(
            "a MySQL host list needs one port per host, or one port for all (got %d hosts, %d ports)"
            % (len(hosts), len(ports))
        )
    pairs = []
    for host, port in zip(hosts, ports):
        try:
            pairs.append((host, None if port in ("", None) else int(port)))
        except ValueError:
            raise ConfigurationError("port %r is not a number" % (port,)) from None
    return pairs, rest, target == "read-write"


def _is_wsrep_message(exc: BaseException) -> bool:
    """
    @param exc: a driver error with number 1180.
    @return: whether its message is Galera's (a replication failure), not
        a storage engine's C{Got error N during COMMIT}.
    """
    text = _message(exc).lower()
    return "replication" in text or "provider status" in text or "wsrep" in text


def _text(value: Any) -> str:
    """
    @param value: a column as the driver returns it (C{str} or C{bytes}).
    @return: it as text.
    """
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


def _wsrep_on(cursor: Any) -> bool:
    """
    @param cursor: a cursor of a connection.
    @return: whether its server is a node of a Galera cluster:
        C{wsrep_on} is on.  MariaDB's packages build Galera support into
        every server, where C{wsrep_on} is off unless it is a cluster's
        node; MySQL has no such variable.  C{SHOW} is allowed on a node
        that is not ready, where a C{SELECT} may not be.
    @raise Exception: the driver's error if the connection fails.
    """
    cursor.execute("SHOW GLOBAL VARIABLES LIKE 'wsrep_on'")
    row = cursor.fetchone()
    return row is not None and _text(row[1]).upper() in ("ON", "1")


def _error_code(exc: BaseException) -> Optional[int]:
    """
    @param exc: a MySQL driver exception, raised as C{(code, message)}.
    @return: its error number (Python 3 has no C{exc[0]}: C{args[0]}), or
        C{None}.
    """
    code = exc.args[0] if exc.args else None
    return code if isinstance(code, int) else None


class MySQLProtocolDriver(Driver):
    """
    What PyMySQL and mysqlclient share: error numbers, the I{closed
    connection} C{InterfaceError}, a protocol-level ping that cannot
    reconnect, C{get_autocommit()}, and a connect timeout.

    Any driver error on a connection whose own flag says it is closed is a
    disconnect; else its error number decides; else, for errors without
    one, its message, where the driver lists fragments.
    """

    family: ClassVar[str] = "mysql"
    complete_rules: ClassVar[bool] = True
    url_schemes: ClassVar[Tuple[str, ...]] = ("mysql", "mariadb")
    url_options: ClassVar[Mapping[str, _convert.Converter]] = MYSQL_URL_OPTIONS
    default_port: ClassVar[Optional[int]] = 3306
    shown_keywords: ClassVar[Tuple[str, ...]] = ("host", "port", "database", "db")
    secret_keywords: ClassVar[Tuple[str, ...]] = ("password", "passwd", "ssl_key_password")
    error_classes: ClassVar[Tuple[str, ...]] = ("Error",)
    message_fragments: ClassVar[Tuple[str, ...]] = ()

    def _code_says(self, exc: BaseException) -> Optional[bool]:
        """
        An error with a server or client error number is a disconnect only
        if it is an C{OperationalError}, C{InterfaceError} or
        C{ProgrammingError} whose number is in L{DISCONNECT_CODES}; its
        text never counts, since it may quote user data.  Number 0 is no
        number, except in C{InterfaceError}/C{InternalError} C{(0, '')},
        the error for using a closed connection (SQLAlchemy's MySQL dialect
        tests for C{"(0, '')"}, also matching the older single-string form).

        @param exc: a driver exception.
        @return: the verdict of its error number, or C{None} if it has none
            (then its message decides, where the driver says so).
        """
        code = _error_code(exc)
        if code == _ERROR_DURING_COMMIT and isinstance(exc, self._errors("Error")):
            # Galera lost the primary component while replicating COMMIT:
            # the session lives, but the outcome is as unknown as after a
            # lost connection.  Not for other engines' commit errors.
            return _is_wsrep_message(exc)
        if isinstance(exc, self._errors("InterfaceError", "InternalError")):
            if (code == 0 and not _message(exc)) or "(0, '')" in str(exc):
                return True
        if not code:
            return None
        return code in DISCONNECT_CODES and isinstance(
            exc, self._errors("OperationalError", "InterfaceError", "ProgrammingError")
        )

    def connect_failure_is_cheap(self, exc: BaseException) -> bool:
        """
        Error 2002 (C{CR_CONNECTION_ERROR}, a local socket) or 2003
        (C{CR_CONN_HOST_ERROR}, TCP) "Can't connect" whose reason is that
        nothing listens: the connection was refused (C{ECONNREFUSED}) or
        the socket file is missing (C{ENOENT}: the server removes it when
        it stops).  PyMySQL raises it from the socket's own error (the
        error's C{__context__}); the C client library (mysqlclient) ends
        its message with the errno in parentheses (MariaDB Connector/C
        reports a refused TCP connection as 115, C{EINPROGRESS}, from its
        non-blocking connect, which tells nothing: costly).  Any other
        2002/2003 (a timeout, no route, a host list whose servers all
        failed) and
        every error the server sent (1040 too many connections, 1045
        access denied, 1129 host blocked, 1053 shutdown in progress) are
        costly.

        @param exc: the driver's error from a failed C{connect()}.
        @return: whether the attempt was cheap for the server.
        """
        if _error_code(exc) not in (_CONNECTION_ERROR, _CONN_HOST_ERROR):
            return False
        if any(isinstance(error, (ConnectionRefusedError, FileNotFoundError)) for error in error_chain(exc)):
            return True
        text = _message(exc).rstrip()
        return text.endswith(("(%d)" % (errno.ECONNREFUSED,), "(%d)" % (errno.ENOENT,)))

    def _connect(
        self,
        connargs: Sequence[Any],
        connkw: Dict[str, Any],
        dbapi_connect: Optional[Callable[..., Any]] = None,
    ) -> Any:
        """
        Open a connection to the first server of the host list that
        answers, and, with C{target_session_attrs="read-write"}, that is
        writable (C{@@read_only} and C{@@innodb_read_only} both off): the
        pool's host selection, since PyMySQL and mysqlclient take one host
        only.  A single host is passed on as given.

        @param connargs: the positional arguments the user gave.
        @param connkw: the keyword arguments; C{host} and C{port} may be
            lists or comma-separated strings.
        @param dbapi_connect: the function that opens one connection (see
            L{Driver._connect}).
        @return: a new connection.
        @raise ConfigurationError: a malformed host list or target.
        @raise Exception: the driver's C{OperationalError} (error 2003)
            naming every server tried and why it was skipped, when none
            would do; the last server's own error when only one was
            listed.
        """
        pairs, rest, writer = _targets(connkw)
        opener = dbapi_connect or self.module.connect
        skipped = []
        for host, port in pairs:
            where = dict(rest)
            if host is not None:
                where["host"] = host
            if port is not None:
                where["port"] = port
            try:
                connection = opener(*connargs, **where)
            except self.module.Error as error:
                if len(pairs) == 1:
                    raise
                skipped.append("%s:%s: %s" % (host, port or self.default_port, _message(error)))
                continue
            refused = self._refuses(connection, writer, len(pairs) > 1)
            if refused:
                self.close(connection)
                skipped.append("%s:%s: %s" % (host, port or self.default_port, refused))
                continue
            return connection
        raise self.module.OperationalError(
            _CONN_HOST_ERROR,
            "no %sserver could be used: %s" % ("writable " if writer else "", "; ".join(skipped)),
        )

    def wants_writer(self, connargs: Sequence[Any], connkw: Dict[str, Any]) -> bool:
        """
        Read the host list as L{connect} will, so that a malformed one is
        reported when the pool is made.

        @param connargs: unused.
        @param connkw: the keyword arguments.
        @return: whether C{target_session_attrs} is C{"read-write"}.
        @raise ConfigurationError: a malformed host list or target.
        """
        return _targets(connkw)[2]

    def is_wrong_server(self, exc: BaseException, wants_writer: bool) -> bool:
        """
        Error 1047 from a Galera node outside the primary component, which
        refuses reads and writes alike; and, when the pool asked for a
        writable server, errors 1290 (C{--read-only}) and 1836 (read-only
        mode): these also arise by design, for a user without the right to
        write on a read-only replica.

        @param exc: a driver exception.
        @param wants_writer: whether the pool asked for a writer.
        @return: whether C{exc} is a statement refused by a server that
            another one of the host list may serve.
        """
        if not isinstance(exc, self._errors("Error")):
            return False
        code = _error_code(exc)
        if code == _WSREP_NOT_READY:
            return True
        if not wants_writer:
            return False
        if code == _READ_ONLY_MODE:
            return True
        return code == _OPTION_PREVENTS_STATEMENT and "read-only" in _message(exc).lower().replace("_", "-")

    def is_conflict(self, exc: BaseException) -> bool:
        """
        Errors 1213 (deadlock, or a Galera certification failure) and 1205
        (lock wait timeout): see L{CONFLICT_CODES}.

        @param exc: a driver exception.
        @return: whether running the transaction again may succeed.
        """
        return isinstance(exc, self.errors) and _error_code(exc) in CONFLICT_CODES

    # --- commit markers ----------------------------------------------------

    commit_markers: ClassVar[bool] = True

    def create_commit_marker(self, connection: Any, table: str, key: str) -> None:
        """
        A plain (consistent, non-locking) read of the row first: the row
        is there but locked while the session of a COMMIT still in
        progress lives, and an insert would wait for it (up to
        C{innodb_lock_wait_timeout}).  If it is missing, the row with
        C{INSERT IGNORE}, committed; if the table is missing (1146),
        C{CREATE TABLE IF NOT EXISTS} (InnoDB) first.  Not the C{CREATE}
        every time: on Galera every DDL statement runs in total order
        across the cluster and aborts the transactions that touch the
        table, the other threads' markers among them.

        On a Galera node the read is causal (C{wsrep_sync_wait=1}): it
        returns once the node has applied every transaction that the
        cluster ordered before it, the thread's last commit on another
        node among them (the connection it replaces was there, before a
        failover).  Otherwise the thread's next transaction could update
        the row before this node has applied that commit, and fail
        certification: error 1213, a conflict that its caller would get.
        """
        exists = ("SELECT 1 FROM %s WHERE id = %%s" % (table,), (key,))
        row = ("INSERT IGNORE INTO %s (id, n) VALUES (%%s, 0)" % (table,), (key,))
        causal = self._galera(connection)
        try:
            if causal:
                run_and_commit(connection, [("SET SESSION wsrep_sync_wait = 1", ())])
            try:
                found = run_and_commit(connection, [exists])
            finally:
                if causal:
                    run_and_commit(connection, [("SET SESSION wsrep_sync_wait = DEFAULT", ())])
            if not found:
                run_and_commit(connection, [row])
            return
        except self.errors as error:
            if _error_code(error) != _NO_SUCH_TABLE:
                raise
        run_and_commit(
            connection,
            [("CREATE TABLE IF NOT EXISTS %s (id VARCHAR(64) PRIMARY KEY, n BIGINT NOT NULL) ENGINE=InnoDB" % (table,), ()), row],
        )

    def mark_commit(self, connection: Any, table: str, key: str, number: int) -> Tuple[bool, bool, Any]:
        """
        Set the marker in every transaction that ran a statement: MySQL
        has no cheap way to tell a transaction that wrote (a read-only
        one then writes the marker row too), and return whether the row
        was set (the number always changes, so the affected row count
        says) and the connection's id (C{thread_id()}, the server's
        C{CONNECTION_ID()}).
        """
        cursor = connection.cursor()
        try:
            cursor.execute("UPDATE %s SET n = %%s WHERE id = %%s" % (table,), (number, key))
            marked = cursor.rowcount == 1
        finally:
            close_quietly(cursor)
        try:
            session = int(connection.thread_id())
        except Exception:
            session = None
        return True, marked, session

    def _read_marker(self, connection: Any, table: str, key: str, wait: float, number: int) -> Optional[int]:
        """
        C{SELECT ... FOR UPDATE} under a session C{innodb_lock_wait_timeout}
        of C{wait}: a locking read reads the latest committed version
        ("InnoDB Locking Reads").

        On a Galera node (C{@@wsrep_on}), a lock waits only for sessions of
        this node, and a transaction from another node may still be on its
        way.  So the read is causal (C{wsrep_sync_wait=1}: it waits until
        the node has applied every transaction the cluster ordered before
        it), and a row that holds an older number is overwritten (with
        C{-number}) and committed.  Certification is deterministic and
        happens in the same order on every node: if the cluster orders the
        old transaction after this one, it wrote the same row from an
        older snapshot and fails certification everywhere, so it never
        commits; if before, this one fails (1213, a conflict) and the
        caller reads again, and sees its number.
        """
        galera = self._galera(connection)
        cursor = connection.cursor()
        try:
            cursor.execute("SET SESSION innodb_lock_wait_timeout = %d" % (max(1, int(wait)),))
            if galera:
                cursor.execute("SET SESSION wsrep_sync_wait = 1")
            if self.is_autocommit(connection):
                cursor.execute("START TRANSACTION")
            try:
                cursor.execute("SELECT n FROM %s WHERE id = %%s FOR UPDATE" % (table,), (key,))
                rows = cursor.fetchall()
                found = int(rows[0][0]) if rows else None
                if galera and found is not None and found < number:
                    cursor.execute("UPDATE %s SET n = %%s WHERE id = %%s" % (table,), (-number, key))
                    connection.commit()
            finally:
                connection.rollback()
                cursor.execute("SET SESSION innodb_lock_wait_timeout = DEFAULT")
                if galera:
                    cursor.execute("SET SESSION wsrep_sync_wait = DEFAULT")
        finally:
            close_quietly(cursor)
        return found

    def _galera(self, connection: Any) -> bool:
        """
        @param connection: a connection.
        @return: whether its server is a node of a Galera cluster.
        @raise Exception: the driver's error if the connection fails.
        """
        cursor = connection.cursor()
        try:
            return _wsrep_on(cursor)
        finally:
            close_quietly(cursor)

    def _is_lock_timeout(self, exc: BaseException) -> bool:
        return isinstance(exc, self.errors) and _error_code(exc) == _LOCK_WAIT_TIMEOUT

    def _end_session(self, connection: Any, session: Any) -> None:
        """
        C{KILL CONNECTION}: a user may kill its own sessions ("KILL
        Statement").  One that has already ended is fine.
        """
        cursor = connection.cursor()
        try:
            cursor.execute("KILL CONNECTION %d" % (int(session),))
        except self.errors as error:
            if _error_code(error) != _NO_SUCH_THREAD:
                raise
        finally:
            close_quietly(cursor)

    def _refuses(self, connection: Any, writer: bool, choice: bool) -> Optional[str]:
        """
        Tell why a new connection's server will not do: with a choice of
        servers, a Galera node that is not ready (C{wsrep_ready} off: it
        is outside the primary component, or still joining); when a
        writer is asked for, a read-only server (C{@@read_only} or
        C{@@innodb_read_only} on).

        @param connection: a new connection.
        @param writer: whether a writable server is asked for.
        @param choice: whether another server may be tried (a host list);
            with one server, its own errors tell.
        @return: why it will not do, or C{None} if it will.
        @raise Exception: the driver's error if the connection fails.
        """
        if not (choice or writer):
            # Nothing to ask (a single server, any role): no round trip.
            return None
        why = None
        cursor = connection.cursor()
        try:
            if choice and _wsrep_on(cursor):
                # SHOW is allowed on a node that is not ready.
                cursor.execute("SHOW GLOBAL STATUS LIKE 'wsrep_ready'")
                row = cursor.fetchone()
                if row is None or _text(row[1]).upper() != "ON":
                    ready = "unknown" if row is None else _text(row[1])
                    why = "not ready (a Galera node outside the primary component: wsrep_ready=%s)" % (ready,)
            if writer and why is None:
                cursor.execute("SELECT @@global.read_only, @@global.innodb_read_only")
                if any(int(value) for value in cursor.fetchone()):
                    why = "read-only"
        finally:
            cursor.close()
        connection.rollback()  # leave no transaction open
        return why

    def is_autocommit(self, connection: Any) -> bool:
        """
        @param connection: a raw connection, possibly dead.
        @return: C{connection.get_autocommit()}, read from the last server
            status; when it cannot be read (mysqlclient raises on a closed
            connection), C{False} if the connection's own flag says it is
            closed (nothing can be sent on it), else C{True}.
        """
        try:
            return bool(connection.get_autocommit())
        except Exception:
            return not self._connection_gone(connection)

    def connect_defaults(
        self,
        connargs: Sequence[Any],
        connkw: Dict[str, Any],
        stall_timeout: Optional[float] = None,
    ) -> Dict[str, Any]:
        """
        Add a 10 s C{connect_timeout}, unless given.  No read or write
        timeout: PyMySQL's put every read through C{poll()} (a fifth of the
        throughput with 10 calls in flight, measured in C{bench/}), and the
        pool's watchdog already bounds a stalled call.

        @param connargs: unused.
        @param connkw: the keyword arguments the user gave for C{connect()}.
        @param stall_timeout: unused.
        @return: the keyword arguments to add.
        """
        if "connect_timeout" in connkw:
            return {}
        return {"connect_timeout": 10}
