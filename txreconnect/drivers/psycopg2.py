"""
psycopg2 (C{import psycopg2}).

The psycopg2 module is never imported here: the pool gives it to
L{Psycopg2Driver} at construction, so txreconnect imports without it.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar, Dict, Optional, Type

from txreconnect.drivers._libpq import LibpqDriver
from txreconnect.drivers._postgres import CONNECTION_EXCEPTION_SQLSTATES, SESSION_ENDING_SQLSTATES


class Psycopg2Driver(LibpqDriver):
    """
    psycopg2's rules.

    A lost connection shows up as C{OperationalError("server closed the
    connection unexpectedly ...")} (no C{pgcode}, since libpq wrote it) and
    sets the connection's C{closed} attribute to 2; every later use raises
    C{InterfaceError("connection already closed")}.  Errors sent by the
    server carry their SQLSTATE in C{pgcode}.
    """

    name: ClassVar[str] = "psycopg2"
    url_default: ClassVar[bool] = True
    install_hint: ClassVar[str] = "psycopg2-binary (pip install 'txreconnect[postgres]')"

    def __init__(self, module: Any) -> None:
        """
        @param module: the imported C{psycopg2} module.
        """
        super().__init__(module)
        self._sqlstate_by_class: Optional[Dict[Type[BaseException], str]] = None

    def _sqlstate(self, exc: BaseException) -> Optional[str]:
        """
        Read C{exc.pgcode}, which psycopg2 sets only on errors it received
        from the server.  An exception class of C{psycopg2.errors} built
        directly (C{AdminShutdown("...")}) has no C{pgcode} (seen by
        experiment with psycopg2 2.9): its class then gives the SQLSTATE.

        @param exc: a psycopg2 exception.
        @return: its SQLSTATE, if it carries one or is a disconnect class.
        """
        pgcode = getattr(exc, "pgcode", None)
        if pgcode:
            return str(pgcode)
        return self._classes().get(type(exc))

    def _classes(self) -> Dict[Type[BaseException], str]:
        """
        Map the C{psycopg2.errors} classes of the disconnect SQLSTATEs back
        to their SQLSTATE, once (C{psycopg2.errors.lookup} goes the other
        way).

        @return: class -> SQLSTATE; empty if the module has no C{errors}.
        """
        if self._sqlstate_by_class is None:
            self._sqlstate_by_class = {}
            try:
                lookup = importlib.import_module(self.module.__name__ + ".errors").lookup
            except (ImportError, AttributeError):
                return self._sqlstate_by_class
            for sqlstate in CONNECTION_EXCEPTION_SQLSTATES + tuple(
                sorted(SESSION_ENDING_SQLSTATES)
            ):
                try:
                    self._sqlstate_by_class[lookup(sqlstate)] = sqlstate
                except KeyError:
                    # Older psycopg2 versions lack the newest SQLSTATEs.
                    pass
        return self._sqlstate_by_class

    def _transaction_status(self, connection: Any) -> int:
        """
        @param connection: a psycopg2 connection.
        @return: C{connection.get_transaction_status()}.
        """
        return int(connection.get_transaction_status())

    def _parse_dsn(self, dsn: str) -> Dict[str, Any]:
        """
        @param dsn: a libpq connection string.
        @return: C{psycopg2.extensions.parse_dsn(dsn)}.
        """
        return dict(self.module.extensions.parse_dsn(dsn))

    def _libpq_version(self) -> int:
        try:
            return int(self.module.extensions.libpq_version())
        except Exception:
            return 0


DRIVER = Psycopg2Driver
