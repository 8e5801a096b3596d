"""
sqlite3, the standard library's SQLite driver (C{import sqlite3}).

The sqlite3 module is never imported here: the pool gives it to
L{Sqlite3Driver} at construction.
"""

from __future__ import annotations

from typing import Any, ClassVar, Dict, Mapping, Optional, Tuple

from txreconnect import _convert
from txreconnect.drivers._base import Driver, _message

# CPython, Modules/_sqlite/connection.c (pysqlite_check_connection): the
# error for any use of a closed connection.
_CLOSED_DATABASE = "Cannot operate on a closed database."

# The database that lives in the connection itself: each connection to it
# is a database of its own.
_MEMORY = ":memory:"


class Sqlite3Driver(Driver):
    """
    sqlite3's rules: there is no server, so the only lost connection is a
    closed one.  The generic ping (C{SELECT 1}) and lenient C{close()}
    apply; there are no connect defaults.
    """

    name: ClassVar[str] = "sqlite3"
    family: ClassVar[str] = "sqlite"
    complete_rules: ClassVar[bool] = True
    url_schemes: ClassVar[Tuple[str, ...]] = ("sqlite",)
    url_default: ClassVar[bool] = True
    url_file_database: ClassVar[bool] = True
    # sqlite3.connect's own parameters; nothing else may be passed on.
    url_options: ClassVar[Mapping[str, _convert.Converter]] = {
        "timeout": _convert.number,
        "detect_types": _convert.integer(0),
        "isolation_level": _convert.text_or_none,
        "check_same_thread": _convert.boolean,
        "cached_statements": _convert.integer(0),
        "uri": _convert.boolean,
    }
    url_only_known_options: ClassVar[bool] = True
    # So that closing the pool, in the reactor's thread, can close each
    # pool thread's connection.
    # sqlite:// (no path) is a memory database.
    url_defaults: ClassVar[Mapping[str, Any]] = {"check_same_thread": False, "database": _MEMORY}
    keywords: ClassVar[Mapping[str, str]] = {"database": "database"}
    shown_keywords: ClassVar[Tuple[str, ...]] = ("database",)
    secret_keywords: ClassVar[Tuple[str, ...]] = ()

    @classmethod
    def pool_defaults(cls, connkw: Mapping[str, Any]) -> Dict[str, Any]:
        """
        A memory database gets one connection, so that every call sees the
        same database: C{cp_max=1} (or C{cp_min}, if larger), and
        C{cp_min=1}, unless given.

        @param connkw: the keywords the pool will get: C{connect()}'s and
            the C{cp_*} options given so far.
        @return: C{cp_*} options, to add unless given.
        """
        if connkw.get("database") != _MEMORY:
            return {}
        cp_max = connkw.get("cp_max", max(1, connkw.get("cp_min", 1)))
        return {"cp_max": cp_max, "cp_min": min(1, cp_max)}

    def is_disconnect(self, exc: BaseException, connection: Optional[Any]) -> bool:
        """
        @param exc: the exception raised by the driver (or user code).
        @param connection: the raw connection in use, or C{None}.
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
        its C{isolation_level} is C{None}.

        @param connection: a sqlite3 connection, possibly closed.
        @return: whether each statement commits on its own; C{True} when
            it cannot be read (a closed connection raises).
        """
        try:
            autocommit = getattr(connection, "autocommit", None)
            if autocommit is True or autocommit is False:
                return autocommit
            return connection.isolation_level is None
        except Exception:
            return True


DRIVER = Sqlite3Driver
