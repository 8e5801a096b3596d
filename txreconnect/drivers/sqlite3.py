"""
sqlite3, the standard library's SQLite driver (C{import sqlite3}).

The sqlite3 module is never imported here: the pool gives it to
L{Sqlite3Driver} at construction.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

from txreconnect.drivers._base import Driver, _message

# CPython, Modules/_sqlite/connection.c (pysqlite_check_connection): the
# error for any use of a closed connection.
_CLOSED_DATABASE = "Cannot operate on a closed database."


class Sqlite3Driver(Driver):
    """
    sqlite3's rules: there is no server, so the only lost connection is a
    closed one.  The generic ping (C{SELECT 1}) and lenient C{close()}
    apply; there are no connect defaults.
    """

    name: ClassVar[str] = "sqlite3"

    def is_disconnect(self, exc: BaseException, connection: Optional[Any]) -> bool:
        """
        @param exc: the exception raised by the driver (or user code).
        @param connection: the raw connection in use, or L{None}.
        @return: whether C{exc} is C{ProgrammingError("Cannot operate on a
            closed database.")}.
        """
        return (
            isinstance(exc, self._errors("ProgrammingError"))
            and _message(exc) == _CLOSED_DATABASE
        )

    def is_autocommit(self, connection: Any) -> bool:
        """
        Python 3.12 adds C{Connection.autocommit} (C{True}, C{False}, or
        C{sqlite3.LEGACY_TRANSACTION_CONTROL}, the default); in legacy
        mode, and before 3.12, a connection commits each statement when
        its C{isolation_level} is L{None}.

        @param connection: a sqlite3 connection, possibly closed.
        @return: whether each statement commits on its own; L{True} when
            it cannot be read (a closed connection raises).
        """
        try:
            autocommit = getattr(connection, "autocommit", None)
            if autocommit is True or autocommit is False:
                return autocommit
            return connection.isolation_level is None
        except Exception:
            return True
