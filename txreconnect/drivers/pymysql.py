"""
PyMySQL (C{import pymysql}).

The pymysql module is never imported here: the pool gives it to
L{PyMySQLDriver} at construction, so txreconnect imports without it.  A
program that ran C{pymysql.install_as_MySQLdb()} still gets these rules:
the registry goes by the module's C{__name__}, which stays C{"pymysql"}.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Optional, Tuple

from txreconnect import _convert
from txreconnect.drivers._mysql_protocol import MYSQL_URL_OPTIONS, MySQLProtocolDriver


class PyMySQLDriver(MySQLProtocolDriver):
    """
    PyMySQL's rules.

    A lost connection shows up as C{OperationalError(2013, 'Lost connection
    to MySQL server during query')} or C{OperationalError(2006, 'MySQL
    server has gone away (...)')}, after which the connection is no longer
    C{open}; every later query raises C{InterfaceError(0, '')}, and
    C{ping()} or C{close()} raise C{Error('Already closed')} (all seen by
    experiment with PyMySQL 1.2).
    """

    name: ClassVar[str] = "pymysql"
    url_default: ClassVar[bool] = True
    install_hint: ClassVar[str] = "PyMySQL (pip install 'txreconnect[mysql]')"
    # pymysql.connections.Connection.__init__
    url_options: ClassVar[Mapping[str, _convert.Converter]] = dict(
        MYSQL_URL_OPTIONS,
        connect_timeout=_convert.number,
        read_timeout=_convert.number,
        write_timeout=_convert.number,
        max_allowed_packet=_convert.integer(1),
        ssl_disabled=_convert.boolean,
        ssl_verify_cert=_convert.boolean,
        ssl_verify_identity=_convert.boolean,
    )
    # PyMySQL's own messages, raised as the base Error class
    # (connections.py: close() and ping()), and the message of
    # ER_CONNECTION_KILLED: the same list as SQLAlchemy's PyMySQL dialect
    # (is_disconnect in dialects/mysql/pymysql.py).
    message_fragments: ClassVar[Tuple[str, ...]] = (
        "already closed",
        "connection was killed",
    )
    exact_message_classes: ClassVar[Tuple[str, ...]] = ("Error",)

    def _connection_gone(self, connection: Optional[Any]) -> bool:
        """
        @param connection: a PyMySQL connection, or C{None}.
        @return: whether its C{open} property is false: PyMySQL drops its
            socket on every read or write error (C{_force_close()}).
        """
        return connection is not None and getattr(connection, "open", True) is False

    def ping(self, connection: Any) -> None:
        """
        Send COM_PING with C{reconnect=False}: PyMySQL before 1.0 defaulted
        to C{reconnect=True}, which would silently open a new session.

        @param connection: a PyMySQL connection.
        @raise pymysql.err.Error: if the connection is dead.
        """
        connection.ping(reconnect=False)

    def socket_fileno(self, connection: Any) -> Optional[int]:
        """
        PyMySQL has no C{fileno()}: its socket is C{_sock}, C{None} once
        closed.

        @param connection: a PyMySQL connection.
        @return: the socket's descriptor, or C{None}.
        """
        sock = getattr(connection, "_sock", None)
        return None if sock is None else int(sock.fileno())


DRIVER = PyMySQLDriver
