"""
Rules shared by the MySQL and MariaDB drivers: PyMySQL and mysqlclient
(C{MySQLdb}).

Nothing here imports a driver: the driver module is given to the
L{Driver} at construction.
"""

from __future__ import annotations

from typing import Any, ClassVar, Dict, FrozenSet, Optional, Tuple

from txreconnect.drivers._base import Driver, _message

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


def _error_code(exc: BaseException) -> Optional[int]:
    """
    @param exc: a MySQL driver exception, raised as C{(code, message)}.
    @return: its error number (Python 3 has no C{exc[0]}: C{args[0]}), or
        L{None}.
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
        @return: the verdict of its error number, or L{None} if it has none
            (then its message decides, where the driver says so).
        """
        code = _error_code(exc)
        if isinstance(exc, self._errors("InterfaceError", "InternalError")):
            if (code == 0 and not _message(exc)) or "(0, '')" in str(exc):
                return True
        if not code:
            return None
        return code in DISCONNECT_CODES and isinstance(
            exc, self._errors("OperationalError", "InterfaceError", "ProgrammingError")
        )

    def is_autocommit(self, connection: Any) -> bool:
        """
        @param connection: a raw connection, possibly dead.
        @return: C{connection.get_autocommit()}, read from the last server
            status; L{True} when it cannot be read (mysqlclient raises on a
            closed connection).
        """
        try:
            return bool(connection.get_autocommit())
        except Exception:
            return True

    def connect_defaults(
        self, connkw: Dict[str, Any], stall_timeout: Optional[float] = None
    ) -> Dict[str, Any]:
        """
        Add a 10 s C{connect_timeout}, unless given.  No read or write
        timeout: PyMySQL's put every read through C{poll()} (a fifth of the
        throughput with 10 calls in flight, measured in C{bench/}), and the
        pool's watchdog already bounds a stalled call.

        @param connkw: the keyword arguments the user gave for C{connect()}.
        @param stall_timeout: unused.
        @return: the keyword arguments to add.
        """
        if "connect_timeout" in connkw:
            return {}
        return {"connect_timeout": 10}
