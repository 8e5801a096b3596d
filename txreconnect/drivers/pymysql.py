"""
PyMySQL (C{import pymysql}).

The pymysql module is never imported here: the pool gives it to
L{PyMySQLDriver} at construction, so txreconnect imports without it.  A
program that ran C{pymysql.install_as_MySQLdb()} still gets these rules:
the registry goes by the module's C{__name__}, which stays C{"pymysql"}.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, ClassVar, Dict, Mapping, Optional, Sequence, Tuple

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

    PyMySQL 1.1 and later, given no TLS option, offer TLS if the server
    does (the I{preferred} mode) and build a fresh default
    C{ssl.SSLContext} for it on every C{connect()}, whether the server
    offers TLS or not, refused attempts included: loading the system's
    certificates takes tens of milliseconds, most of a connect's cost.
    The pool builds that context once (see L{_connection_class}).
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

    def __init__(self, module: Any) -> None:
        """
        @param module: the imported C{pymysql} module.
        """
        super().__init__(module)
        self._default_context: Any = None
        self._context_lock = threading.Lock()
        self._connection_class = self._preferred_tls_once()

    def _preferred_tls_once(self) -> Optional[Callable[..., Any]]:
        """
        Make the subclass of PyMySQL's C{Connection} that this driver opens
        connections with: the same class, except that the default TLS
        context of the preferred mode is built once per driver (so once
        per pool) and then shared, instead of once per C{connect()}.

        Only the context that PyMySQL builds from an empty set of TLS
        parameters (C{_create_ssl_ctx({})}) is shared: it depends on
        nothing the user gave (no certificate, no CA, no verification:
        PyMySQL turns verification off without a CA), so sharing it
        changes nothing about the TLS a connection gets, which PyMySQL
        still decides from the user's arguments as before (preferred,
        required, verified or off, C{ssl_disabled} honoured).  A context
        built from the user's own TLS parameters (C{ssl_ca},
        C{ssl_cert}, an C{ssl} dict, an option file) is built as PyMySQL
        always does, so that renewed certificate files are read.  An
        C{ssl.SSLContext} is thread-safe for wrapping sockets, and
        PyMySQL does not change it after building it.  PyMySQL 1.0 makes
        no context unless asked for TLS: there, nothing changes.

        @return: the class, or C{None} if the module is not PyMySQL as
            known (then its own C{connect} is used).
        """
        base = getattr(getattr(self.module, "connections", None), "Connection", None)
        if not isinstance(base, type) or not callable(getattr(base, "_create_ssl_ctx", None)):
            return None
        driver = self

        class Connection(base):  # type: ignore[misc, valid-type]
            def _create_ssl_ctx(self, sslp: Any) -> Any:
                if type(sslp) is dict and not sslp:
                    return driver._shared_default_context(lambda: super(Connection, self)._create_ssl_ctx({}))
                return super()._create_ssl_ctx(sslp)

        Connection.__module__ = base.__module__
        Connection.__qualname__ = base.__qualname__
        return Connection

    def _shared_default_context(self, build: Callable[[], Any]) -> Any:
        """
        @param build: builds PyMySQL's default context.
        @return: the context C{build} made the first time it was called.
        """
        with self._context_lock:
            if self._default_context is None:
                self._default_context = build()
            return self._default_context

    def _connect(
        self,
        connargs: Sequence[Any],
        connkw: Dict[str, Any],
        dbapi_connect: Optional[Callable[..., Any]] = None,
    ) -> Any:
        """
        Open a connection with L{_connection_class} when the pool calls
        PyMySQL's own C{connect} (a C{pool.dbapi} replaced by the user is
        called as it is).

        @param connargs: the positional arguments the user gave.
        @param connkw: the keyword arguments.
        @param dbapi_connect: the function that opens one connection.
        @return: a new PyMySQL connection.
        @raise pymysql.err.Error: no connection could be had.
        """
        if self._connection_class is not None and dbapi_connect in (None, getattr(self.module, "connect", None)):
            dbapi_connect = self._connection_class
        return super()._connect(connargs, connkw, dbapi_connect)

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
