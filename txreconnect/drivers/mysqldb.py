"""
mysqlclient (C{import MySQLdb}).

The MySQLdb module is never imported here: the pool gives it to
L{MySQLdbDriver} at construction, so txreconnect imports without it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from txreconnect.drivers._mysql_protocol import MySQLProtocolDriver


class MySQLdbDriver(MySQLProtocolDriver):
    """
    mysqlclient's rules.

    A lost connection shows up as C{OperationalError(2013, 'Lost connection
    to server during query')}, then C{OperationalError(2006, 'Server has
    gone away')}; the C{closed} attribute stays 0 until C{close()}.  After
    C{close()}, every call, including C{close()} itself, raises
    C{OperationalError(2006, '')} (_mysql.c reports CR_SERVER_GONE_ERROR
    for a closed handle; all seen by experiment with mysqlclient 2.3).
    """

    name: ClassVar[str] = "MySQLdb"

    def ping(self, connection: Any) -> None:
        """
        Call C{mysql_ping()} with no argument: mysqlclient 2.2.1+ deprecates
        the C{reconnect} argument and, without it, turns the client
        library's auto-reconnect off (C{_mysql_ConnectionObject_ping}).

        @param connection: a mysqlclient connection.
        @raise MySQLdb.OperationalError: if the connection is dead.
        """
        connection.ping()
