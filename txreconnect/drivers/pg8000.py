"""
pg8000 (C{import pg8000}), the pure-Python PostgreSQL driver (the one
Google's Cloud SQL Python connector uses).

The pg8000 module is never imported here: the pool gives it to
L{Pg8000Driver} at construction, so txreconnect imports without it.
Line numbers below are those of pg8000 1.31.6 (C{core.py},
C{legacy.py}); the rules hold from 1.29 on.
"""

from __future__ import annotations

import socket
from typing import Any, Callable, ClassVar, Dict, Mapping, Optional, Sequence, Tuple

from txreconnect import _convert
from txreconnect.drivers._postgres import PostgresDriver

# The connect timeout the pool adds unless the user gives pg8000's own
# "timeout" (which is also a read timeout: the pool takes it off again
# once connected).
_CONNECT_TIMEOUT = 10.0

# pg8000.connect's 9th positional parameter is "timeout".
_TIMEOUT_POSITION = 8

# Keepalive settings for the socket, as libpq's keepalives_* and
# tcp_user_timeout parameters give them to the other PostgreSQL drivers
# (see _libpq._KEEPALIVE_DEFAULTS): pg8000's tcp_keepalive=True only turns
# SO_KEEPALIVE on, with the kernel's 7200 s idle time.
_KEEPALIVE_OPTIONS: Tuple[Tuple[str, int], ...] = (
    ("TCP_KEEPIDLE", 30),
    ("TCP_KEEPINTVL", 10),
    ("TCP_KEEPCNT", 3),
    ("TCP_USER_TIMEOUT", 30000),
)


class Pg8000Driver(PostgresDriver):
    """
    pg8000's rules.

    A lost connection, however it was lost (server restart,
    C{pg_terminate_backend()}, FIN, RST, idle session timeout), shows up
    as C{InterfaceError("network error")}: pg8000 stores the server's
    FATAL, then meets the end of the stream before it can report it
    (C{core.py} C{handle_messages} l.838 and C{_read} l.148), so the
    session-ending SQLSTATE never reaches the caller.  pg8000 sets no
    flag on a network error; only C{close()} sets C{_usock} to C{None},
    after which every use raises C{InterfaceError("connection is
    closed")}.  Since 1.31.5 a reset or timeout on the first read of a
    reply escapes as a bare C{OSError} (C{_read} l.149, outside its
    C{try}), as does any failure of the SSL request at connect (C{_make_socket}
    l.229-230).  Errors the server sent carry their fields as a dict in
    C{args[0]}, the SQLSTATE under C{"C"}.  All seen by experiment with
    pg8000 1.31.4 and 1.31.6 against PostgreSQL 15.
    """

    name: ClassVar[str] = "pg8000"
    install_hint: ClassVar[str] = "pg8000 (pip install 'txreconnect[pg8000]')"
    # pg8000.connect's parameters that are not text (__init__.py, connect).
    url_options: ClassVar[Mapping[str, _convert.Converter]] = {
        "port": _convert.integer(1),
        "timeout": _convert.number,
        "tcp_keepalive": _convert.boolean,
    }
    shown_keywords: ClassVar[Tuple[str, ...]] = ("host", "port", "database", "unix_sock")
    secret_keywords: ClassVar[Tuple[str, ...]] = ("password",)
    # Its own words for a lost or unusable connection, besides SQLSTATEs:
    # core.py _flush/_read/_write and close() ("network error"; "network
    # error on read/flush/write" before 1.26), _send_message, close() and
    # legacy.Cursor.execute ("connection is closed"), _make_socket
    # ("communication error" for a Unix socket, "Can't create a connection
    # to host ..." for TCP).  SQLAlchemy's pg8000 dialect (is_disconnect in
    # dialects/postgresql/pg8000.py) uses the first two.
    message_fragments: ClassVar[Tuple[str, ...]] = (
        "network error",
        "connection is closed",
        "communication error",
        "can't create a connection to host",
    )

    def is_disconnect(self, exc: BaseException, connection: Optional[Any]) -> bool:
        """
        A bare C{OSError} raised inside pg8000 (see the class docstring) is
        a lost connection; one raised by the user's own code, which has
        no pg8000 frame, is not.  Otherwise the rules of
        L{PostgresDriver}: the connection's own flag, the SQLSTATE, then
        pg8000's messages.

        @param exc: the exception raised.
        @param connection: the raw connection in use, or C{None}.
        @return: C{True} if the connection must be discarded.
        """
        if isinstance(exc, OSError) and not isinstance(exc, self.errors):
            return self._raised_inside(exc)
        return super().is_disconnect(exc, connection)

    def _raised_inside(self, exc: BaseException) -> bool:
        """
        @return: whether a frame of C{exc}'s traceback runs pg8000's code.
        """
        package = self.name + "."
        tb = exc.__traceback__
        while tb is not None:
            module = tb.tb_frame.f_globals.get("__name__", "")
            if module == self.name or module.startswith(package):
                return True
            tb = tb.tb_next
        return False

    def _connection_gone(self, connection: Optional[Any]) -> bool:
        """
        @param connection: a pg8000 connection, or C{None}.
        @return: whether it was closed: its C{_usock} is C{None} (C{core.py}
            C{close} l.557-559).
        """
        return connection is not None and getattr(connection, "_usock", False) is None

    def _sqlstate(self, exc: BaseException) -> Optional[str]:
        """
        @param exc: a pg8000 exception.
        @return: the C{"C"} field of the server's error fields in
            C{args[0]} (C{core.py} C{handle_ERROR_RESPONSE} l.402), if it
            is one.
        """
        fields = exc.args[0] if exc.args else None
        if isinstance(fields, dict):
            code = fields.get("C")
            return str(code) if code else None
        return None

    def ping(self, connection: Any) -> None:
        """
        One simple-protocol C{SELECT 1} (C{execute_simple}, C{core.py}
        l.692): one round trip, no C{BEGIN}, the transaction state left
        as it was.

        @param connection: a pg8000 connection, not in use.
        @raise pg8000.InterfaceError: if the connection is dead.
        """
        connection.execute_simple("SELECT 1")

    def socket_fileno(self, connection: Any) -> Optional[int]:
        """
        pg8000 has no C{fileno()}: its socket is C{_usock} (C{core.py}
        l.322), C{None} once closed.

        @param connection: a pg8000 connection.
        @return: the socket's descriptor, or C{None}.
        """
        sock = getattr(connection, "_usock", None)
        return None if sock is None else int(sock.fileno())

    def _connect(
        self,
        connargs: Sequence[Any],
        connkw: Dict[str, Any],
        dbapi_connect: Optional[Callable[..., Any]] = None,
    ) -> Any:
        """
        Open a connection with a 10 s connect timeout unless the user gave
        pg8000's C{timeout}; pg8000 keeps that timeout on the socket for
        every later read, so the pool's own is taken off once connected
        (the pool's watchdog bounds a stalled call).  A bare C{OSError}
        from pg8000's SSL request becomes its C{InterfaceError}, so that
        the pool's outage policy sees it.

        @param connargs: the positional arguments the user gave.
        @param connkw: the keyword arguments.
        @param dbapi_connect: the function that opens one connection.
        @return: a new pg8000 connection.
        @raise pg8000.InterfaceError: no connection could be had.
        """
        ours = "timeout" not in connkw and len(connargs) <= _TIMEOUT_POSITION
        kwargs = dict(connkw, timeout=_CONNECT_TIMEOUT) if ours else connkw
        opener = dbapi_connect or self.module.connect
        try:
            connection = opener(*connargs, **kwargs)
        except OSError as error:
            if isinstance(error, self.errors):
                raise
            raise self.module.InterfaceError("network error while connecting (%s)" % (error,)) from error
        if ours:
            sock = getattr(connection, "_usock", None)
            if sock is not None:
                sock.settimeout(None)
        return connection

    def prepare(self, connection: Any) -> None:
        """
        Tune the keepalives of a TCP connection whose C{SO_KEEPALIVE} is on
        (pg8000's default, C{tcp_keepalive=True}) as the pool does for
        libpq: probes after 30 s idle, every 10 s, dead after 3, and data
        unacknowledged for 30 s means the path is dead.  Options the
        platform lacks are skipped.

        @param connection: a pg8000 connection, just opened.
        """
        sock = getattr(connection, "_usock", None)
        if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
        try:
            if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE):
                return
            for option, value in _KEEPALIVE_OPTIONS:
                if hasattr(socket, option):
                    sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
        except OSError:
            pass


DRIVER = Pg8000Driver
