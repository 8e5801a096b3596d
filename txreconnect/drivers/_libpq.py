"""
Rules shared by the drivers built on libpq, PostgreSQL's client library:
psycopg2 and psycopg (3): libpq's messages, connection parameters and
connection strings.

Nothing here imports a driver: the driver module is given to the
L{Driver} at construction.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple

from txreconnect import _convert
from txreconnect.drivers._base import _message
from txreconnect.drivers._postgres import TRANSIENT_REFUSALS, PostgresDriver

# Messages raised without a SQLSTATE, i.e. written by the client, compared
# in lower case, first line only and outside quotes (see _base._mentions).
LIBPQ_FRAGMENTS: Tuple[str, ...] = (
    # libpq, fe-misc.c and fe-protocol3.c; the same list as SQLAlchemy's
    # psycopg2 dialect (is_disconnect in dialects/postgresql/psycopg2.py).
    "terminating connection",
    "closed the connection",  # "server closed the connection unexpectedly"
    "connection not open",
    "could not receive data from server",
    "could not send data to server",
    "no connection to the server",
    # libpq, fe-secure-openssl.c (also listed by SQLAlchemy).
    "connection has been closed unexpectedly",
    "ssl connection has been closed unexpectedly",
    "ssl syscall error: bad file descriptor",
    "ssl syscall error: eof detected",
    "ssl syscall error: operation timed out",
    "ssl error: decryption failed or bad record mac",
    # libpq, fe-connect.c: the server cannot be reached (now), the same
    # condition seen from a reconnect attempt.
    "could not connect to server",
    "connection to server at",
    "connection to server on socket",
    "timeout expired",
    # psycopg2, connection.h (EXC_IF_CONN_CLOSED).  Its "cursor already
    # closed" (cursor.h, EXC_IF_CURS_CLOSED) is left out on purpose: on a
    # closed connection the connection's flag already says so, and on an
    # open one it means the application closed the cursor.
    "connection already closed",
    # psycopg 3: _connection_base.py ("the connection is closed"),
    # pq/pq_ctypes.py ("the connection is lost"), generators.py
    # ("connection is bad: ..."), waiting.py ("connection socket closed":
    # poll() or select() reported an error or hang-up on the socket, as
    # when the server's RST arrives while psycopg waits to send; the
    # connection is not marked closed).
    "the connection is closed",
    "the connection is lost",
    "connection is bad",
    "connection socket closed",
)

# target_session_attrs values that ask for a writable server (libpq 14+
# knows "primary"; "read-write" since libpq 10).
_WRITER_ATTRS = ("read-write", "primary")

# Every target_session_attrs value of libpq 15 ("Parameter Key Words").
_SESSION_ATTRS = ("any", "read-write", "read-only", "primary", "standby", "prefer-standby")

# libpq's PQTRANS_IDLE: connected, outside a transaction block.
_PQTRANS_IDLE = 0

# Half-open socket defaults: libpq connection parameters, documented in
# "Parameter Key Words" (https://www.postgresql.org/docs/current/libpq-connect.html).
# Keepalives detect a peer that vanished while the connection is idle;
# connect_timeout bounds a connection attempt to a black hole.
_KEEPALIVE_DEFAULTS: Dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "connect_timeout": 10,
}

# tcp_user_timeout (libpq 12+): milliseconds that transmitted data may
# remain unacknowledged before the connection is closed (same page; the
# kernel's TCP_USER_TIMEOUT, RFC 5482).
_TCP_USER_TIMEOUT_MS = 30000

# connect()'s connection string argument: psycopg2's dsn, psycopg 3's
# conninfo.
_DSN_KEYWORDS: Tuple[str, ...] = ("dsn", "conninfo")

# The environment variable libpq reads for connect_timeout (same page,
# "Environment Variables"): a user who set it has chosen a value.
_ENVIRONMENT_DEFAULTS: Dict[str, str] = {"connect_timeout": "PGCONNECT_TIMEOUT"}

# The reasons in libpq's message for a connection attempt that cost the
# server nothing: the C library's strerror() for a refused TCP connection
# and for a missing Unix socket (the server removes it when it stops), and
# the server's own 57P03 answers while it starts or stops.
_CHEAP_REASONS: Tuple[str, ...] = ("connection refused", "no such file or directory") + TRANSIENT_REFUSALS

# Lines of libpq's (and psycopg's) message that give no reason: a header,
# the server's DETAIL and HINT lines (hints are indented with a tab).
_NO_REASON = ("multiple connection attempts failed", "detail:", "hint:")


class LibpqDriver(PostgresDriver):
    """
    What psycopg2 and psycopg 3 share: SQLSTATEs, libpq's messages, a
    ping that leaves no transaction open, and libpq's keepalive and
    connect-timeout parameters.

    Any driver error on a connection whose own flag says it is closed is a
    disconnect (as in SQLAlchemy's psycopg2 and psycopg dialects); else
    its SQLSTATE decides; else its message, for C{InterfaceError},
    C{OperationalError} and plain C{DatabaseError} only (C{IntegrityError},
    C{ProgrammingError}, C{DataError} and the like never count by their
    message).
    """

    # libpq takes every parameter as text; only this one is checked early.
    url_options: ClassVar[Mapping[str, _convert.Converter]] = {
        "target_session_attrs": _convert.one_of(*_SESSION_ATTRS),
    }
    # libpq's parameter key words ("Parameter Key Words").
    keywords: ClassVar[Mapping[str, str]] = {
        "host": "host",
        "port": "port",
        "user": "user",
        "password": "password",
        "database": "dbname",
    }
    shown_keywords: ClassVar[Tuple[str, ...]] = ("host", "port", "dbname")
    secret_keywords: ClassVar[Tuple[str, ...]] = ("password", "sslpassword")
    message_fragments: ClassVar[Tuple[str, ...]] = LIBPQ_FRAGMENTS
    # psycopg2 raises an error without SQLSTATE, such as "SSL SYSCALL error:
    # EOF detected", as a plain DatabaseError (pq_raise() in pqpath.c: "reported
    # happening e.g. when the connection is closed").
    exact_message_classes: ClassVar[Tuple[str, ...]] = ("DatabaseError",)

    def connect_failure_is_cheap(self, exc: BaseException) -> bool:
        """
        libpq reports a failed connection in words only (no SQLSTATE, not
        even for the server's own refusal): one line per host tried, each
        with its reason (libpq 14 and later: C{connection to server at
        ... failed: Connection refused}; before: C{could not connect to
        server: No such file or directory}; the server's own words after
        C{FATAL:}), followed by hints indented with a tab.  The attempt
        was cheap if every host's reason is one of L{_CHEAP_REASONS}; a
        failed password, too many clients, a timeout or an unknown reason
        on any line makes it costly (so does a translated message:
        C{lc_messages} or the client's locale).

        @param exc: the driver's error from a failed C{connect()}.
        @return: whether the attempt was cheap for the server.
        """
        if super().connect_failure_is_cheap(exc):
            return True
        reasons = [
            line.lower()
            for line in _message(exc).splitlines()
            if line.strip() and not line[:1].isspace() and not line.lower().startswith(_NO_REASON)
        ]
        return bool(reasons) and all(any(cheap in line for cheap in _CHEAP_REASONS) for line in reasons)

    def ping(self, connection: Any) -> None:
        """
        Run C{SELECT 1}, then roll back the transaction it opened, if any,
        so that the pinged connection is left as found (not "idle in
        transaction" with an old snapshot).

        @param connection: a raw connection, not in use.
        @raise Exception: the driver's error if the connection is dead.
        """
        opens_transaction = (
            not self.is_autocommit(connection)
            and self._transaction_status(connection) == _PQTRANS_IDLE
        )
        super().ping(connection)
        if opens_transaction:
            connection.rollback()

    def connect_defaults(
        self,
        connargs: Sequence[Any],
        connkw: Dict[str, Any],
        stall_timeout: Optional[float] = None,
    ) -> Dict[str, Any]:
        """
        Add TCP keepalives (idle 30 s, then every 10 s, dead after 3
        unanswered probes), a 10 s connect timeout and, with libpq 12 or
        later, a 30 s C{tcp_user_timeout} (data sent and not acknowledged
        for that long means the path is dead).

        A parameter is left out when the user gave it as a keyword, in the
        connection string (positional, or C{dsn} for psycopg2, C{conninfo}
        for psycopg 3) or, for C{connect_timeout}, in libpq's
        C{PGCONNECT_TIMEOUT}.  If the connection string cannot be parsed
        nothing is added: C{connect()} will report it.

        @param connargs: the positional arguments the user gave: a
            connection string, if any.
        @param connkw: the keyword arguments the user gave for C{connect()}.
        @param stall_timeout: unused: libpq has no read timeout (the
            pool's watchdog bounds a stalled call).
        @return: the parameters to add.
        """
        given = set(connkw)
        for dsn in self._connection_strings(connargs, connkw):
            if dsn:
                try:
                    given.update(self._parse_dsn(dsn))
                except Exception:
                    return {}
        given.update(
            key
            for key, variable in _ENVIRONMENT_DEFAULTS.items()
            if os.environ.get(variable)
        )
        defaults = dict(_KEEPALIVE_DEFAULTS)
        if self._libpq_version() >= 120000:
            defaults["tcp_user_timeout"] = _TCP_USER_TIMEOUT_MS
        return {key: value for key, value in defaults.items() if key not in given}

    def _libpq_version(self) -> int:
        """
        @return: the version of the libpq the driver uses, as libpq's
            C{PQlibVersion()} gives it (120000 for 12.0); 0 if unknown.
        """
        return 0

    def wants_writer(self, connargs: Sequence[Any], connkw: Dict[str, Any]) -> bool:
        """
        libpq's C{target_session_attrs}, as a keyword, in the connection
        string or in C{PGTARGETSESSIONATTRS}: C{read-write} or C{primary}
        ask for a writable server, and libpq skips the others in a
        multi-host target (C{host=a,b port=p1,p2}).

        @param connargs: the positional arguments (a connection string).
        @param connkw: the keyword arguments.
        @return: whether a writable server is asked for.
        """
        attrs = connkw.get("target_session_attrs")
        for dsn in self._connection_strings(connargs, connkw):
            if attrs is None and dsn:
                try:
                    attrs = self._parse_dsn(dsn).get("target_session_attrs")
                except Exception:
                    pass
        if attrs is None:
            attrs = os.environ.get("PGTARGETSESSIONATTRS")
        return attrs in _WRITER_ATTRS

    def _connection_strings(self, connargs: Sequence[Any], connkw: Dict[str, Any]) -> List[str]:
        """
        @param connargs: the positional arguments the user gave.
        @param connkw: the keyword arguments the user gave.
        @return: the connection strings among them: a positional one, and
            C{dsn} (psycopg2) or C{conninfo} (psycopg 3).
        """
        candidates = list(connargs[:1]) + [connkw.get(keyword) for keyword in _DSN_KEYWORDS]
        return [dsn for dsn in candidates if isinstance(dsn, str)]

    def _transaction_status(self, connection: Any) -> int:
        """
        @param connection: a raw connection.
        @return: libpq's C{PQtransactionStatus} of C{connection}.
        """
        raise NotImplementedError

    def _parse_dsn(self, dsn: str) -> Dict[str, Any]:
        """
        @param dsn: a libpq connection string (C{key=value} or URI).
        @return: its parameters.
        @raise Exception: if C{dsn} cannot be parsed.
        """
        raise NotImplementedError
