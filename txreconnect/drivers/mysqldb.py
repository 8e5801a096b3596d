"""
mysqlclient (C{import MySQLdb}).

The MySQLdb module is never imported here: the pool gives it to
L{MySQLdbDriver} at construction, so txreconnect imports without it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

from txreconnect import _convert
from txreconnect.drivers._mysql_protocol import MYSQL_URL_OPTIONS, MySQLProtocolDriver


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
    install_hint: ClassVar[str] = (
        "mysqlclient (apt-get install libmariadb-dev pkg-config; pip install 'txreconnect[mysqlclient]')"
    )
    # MySQLdb.connections.Connection.__init__ (timeouts are C unsigned ints)
    url_options: ClassVar[Mapping[str, _convert.Converter]] = dict(
        MYSQL_URL_OPTIONS,
        connect_timeout=_convert.integer(1),
        read_timeout=_convert.integer(1),
        write_timeout=_convert.integer(1),
        compress=_convert.boolean,
        multi_statements=_convert.boolean,
    )

    def ping(self, connection: Any) -> None:
        """
        Call C{mysql_ping()} with no argument: mysqlclient 2.2.1+ deprecates
        the C{reconnect} argument and, without it, turns the client
        library's auto-reconnect off (C{_mysql_ConnectionObject_ping}).

        @param connection: a mysqlclient connection.
        @raise MySQLdb.OperationalError: if the connection is dead.
        """
        connection.ping()


DRIVER = MySQLdbDriver
