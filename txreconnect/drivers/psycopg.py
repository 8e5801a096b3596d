"""
psycopg 3 (C{import psycopg}).

The psycopg module is never imported here: the pool gives it to
L{PsycopgDriver} at construction, so txreconnect imports without it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Dict, Mapping, Optional

from txreconnect.drivers._libpq import LibpqDriver


class PsycopgDriver(LibpqDriver):
    """
    psycopg 3's rules.

    A lost connection shows up as the server's FATAL error with its
    SQLSTATE (C{AdminShutdown}, 57P01, after C{pg_terminate_backend()};
    C{IdleSessionTimeout}, 57P05) or as C{OperationalError("consuming input
    failed: server closed the connection unexpectedly")}, and marks the
    connection C{closed} and C{broken}; every later use raises
    C{OperationalError("the connection is closed")}.
    """

    name: ClassVar[str] = "psycopg"
    install_hint: ClassVar[str] = "psycopg 3 (pip install 'txreconnect[psycopg]')"
    # Automatic server-side prepared statements off: PgBouncer 1.18 does
    # not track them, so one prepared on one server connection is missing
    # on the next (psycopg's "Server-side binding" docs say the same).
    transaction_pooling_keywords: ClassVar[Mapping[str, Any]] = {"prepare_threshold": None}

    def _connection_gone(self, connection: Optional[Any]) -> bool:
        """
        @param connection: a psycopg connection, or C{None}.
        @return: whether it is C{closed} or C{broken} (the rule of
            SQLAlchemy's psycopg dialect, C{is_disconnect} in
            C{dialects/postgresql/psycopg.py}).
        """
        return bool(
            getattr(connection, "closed", False) or getattr(connection, "broken", False)
        )

    def _sqlstate(self, exc: BaseException) -> Optional[str]:
        """
        @param exc: a psycopg exception.
        @return: C{exc.sqlstate}: set from the server's error, and a class
            attribute of every C{psycopg.errors} class.
        """
        sqlstate = getattr(exc, "sqlstate", None)
        return str(sqlstate) if sqlstate else None

    def _transaction_status(self, connection: Any) -> int:
        """
        @param connection: a psycopg connection.
        @return: C{connection.info.transaction_status}.
        """
        return int(connection.info.transaction_status)

    def _parse_dsn(self, dsn: str) -> Dict[str, Any]:
        """
        @param dsn: a libpq connection string.
        @return: C{psycopg.conninfo.conninfo_to_dict(dsn)}.
        """
        return dict(self.module.conninfo.conninfo_to_dict(dsn))

    def _libpq_version(self) -> int:
        try:
            return int(self.module.pq.version())
        except Exception:
            return 0


DRIVER = PsycopgDriver
