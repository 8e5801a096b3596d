"""
What the pool needs to know about one DB-API driver.

Each driver module in this package defines one L{Driver} subclass, named
by the module's C{DRIVER}, that holds I{all} driver-specific knowledge:
how a lost connection shows up, how to ping, whether a connection is in
autocommit mode, the connect keyword defaults that keep a half-open
socket from hanging forever, and how its C{connect()} names the parts of
a database URL.  Nothing outside this package branches on a driver's
name.

L{Driver} itself holds the generic DB-API 2.0 rules, used as is for
drivers txreconnect does not know.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Type

from txreconnect._convert import Converter

# Fragments of the messages drivers use when the connection is gone,
# compared in lower case.  The wording comes from the drivers this package
# knows (libpq's fe-misc.c and fe-secure*.c, psycopg2's connection.h,
# PyMySQL's connections.py, mysqlclient's _mysql.c, the MySQL client error
# reference) and from SQLAlchemy's dialects' is_disconnect(); the errno
# texts ("connection reset", "broken pipe") are the C library's strerror().
_GENERIC_FRAGMENTS: Tuple[str, ...] = (
    "connection already closed",
    "connection is closed",
    "connection was closed",
    "connection not open",
    "closed the connection",
    "terminating connection",
    "server has gone away",
    "lost connection",
    "connection lost",
    "connection was killed",
    "connection reset",
    "broken pipe",
    "could not receive data from server",
    "could not send data to server",
)

# Characters that open quoted user data in a message (a value, an
# identifier): a fragment found after one of them may be the user's data.
_QUOTES = frozenset("\"'")


#: how many times resolving a COMMIT reads the marker again after a
#: conflict (a multi-primary cluster certified the old transaction first)
_RESOLVE_CONFLICTS = 5


def _message(exc: BaseException) -> str:
    """
    Extract the human-readable message of a driver exception.

    MySQL drivers raise C{(code, message)}, libpq drivers C{(message,)}:
    the first string argument is the message.

    @param exc: any exception.
    @return: its message, or C{str(exc)} if no argument is a string.
    """
    for arg in exc.args:
        if isinstance(arg, str):
            return arg
    return str(exc)


def _mentions(message: str, fragments: Tuple[str, ...]) -> bool:
    """
    Tell whether the first line of C{message} contains one of C{fragments}
    outside quoted user data.

    Only the first line counts (PostgreSQL puts key values in a DETAIL
    line), and a fragment counts only if no quote precedes it: this is the
    rule of SQLAlchemy's psycopg2 dialect (C{is_disconnect} in
    C{sqlalchemy/dialects/postgresql/psycopg2.py}), which keeps a duplicate
    key C{'server closed the connection unexpectedly'} from looking like a
    lost connection.

    @param message: an exception message.
    @param fragments: lower-case fragments.
    @return: C{True} if a fragment occurs before any quote.
    """
    line = message.partition("\n")[0].lower()
    for fragment in fragments:
        index = line.find(fragment)
        if index >= 0 and not _QUOTES.intersection(line[:index]):
            return True
    return False


#: the attribute that L{Driver.connect} sets on the error of a failed
#: attempt: the driver's verdict on what the attempt cost the server
_CHEAP_MARK = "_txreconnect_cheap"


def failed_cheaply(error: BaseException) -> bool:
    """
    Tell whether a failed connection attempt cost the server nothing, as
    the driver judged it when L{Driver.connect} raised C{error} (see
    L{Driver.connect_failure_is_cheap}).

    @param error: the error a failed attempt raised.
    @return: the driver's verdict; C{False} for an error that did not come
        through L{Driver.connect} (a pool's C{_open} replaced in a test,
        an C{openfun} that failed).
    """
    return getattr(error, _CHEAP_MARK, None) is True


def error_chain(error: BaseException) -> Iterator[BaseException]:
    """
    @param error: an exception.
    @return: C{error}, then the errors it was raised from or during
        (C{__cause__}, else C{__context__}), each once.
    """
    seen = set()
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def close_quietly(cursor: Any) -> None:
    """
    Close C{cursor}, ignoring any error (its connection may be dead).
    """
    try:
        cursor.close()
    except Exception:
        pass


def run_and_commit(connection: Any, statements: List[Tuple[str, Tuple[Any, ...]]]) -> List[Any]:
    """
    Run C{statements} (SQL and parameters) in one transaction on a raw
    connection and commit it, rolling back if one fails.

    @return: the rows of the last statement that returned rows (none if
        no statement did).
    @raise Exception: the driver's error.
    """
    cursor = connection.cursor()
    rows: List[Any] = []
    try:
        for sql, params in statements:
            if params:
                cursor.execute(sql, params)
            else:
                cursor.execute(sql)
            if cursor.description is not None:
                rows = list(cursor.fetchall())
        connection.commit()
        return rows
    except BaseException:
        try:
            connection.rollback()
        except Exception:
            pass
        raise
    finally:
        close_quietly(cursor)


class Driver:
    """
    Generic DB-API 2.0 knowledge, used as is for drivers txreconnect does
    not know, and as the base of every known driver.

    @cvar name: the driver module's C{__name__} this class describes.
    @cvar family: the kind of database server it talks to, named by its
        main URL scheme: C{"postgresql"}, C{"mysql"} or C{"sqlite"} (and
        C{""} for a driver txreconnect does not know).
    @cvar url_schemes: the URL schemes it serves, as
        C{scheme+name://}, where I{name} is L{name} in any case
        (C{postgresql+psycopg://}).
    @cvar url_default: whether a bare C{scheme://} of L{url_schemes} means
        this driver (one driver per scheme).
    @cvar url_file_database: whether a URL names a database file (a path,
        no server), as C{sqlite:///path} does.
    @cvar url_options: converters for the C{connect()} options that a URL
        query gives as text and that are not text to the driver.
    @cvar url_only_known_options: whether a URL query may hold only the
        options in L{url_options} (others are refused, not passed on).
    @cvar url_defaults: C{connect()} keywords a URL adds unless it gives
        them.
    @cvar default_port: the server's port when none is given.
    @cvar keywords: the C{connect()} keyword for each part of a database
        URL: C{host}, C{port}, C{user}, C{password}, C{database}.
    @cvar shown_keywords: C{connect()} keywords whose values name the
        target in a repr or a log line.
    @cvar secret_keywords: C{connect()} keywords whose values are never
        shown.
    @cvar transaction_pooling_keywords: C{connect()} keywords the driver
        needs behind a proxy that pools server connections per
        transaction (PgBouncer's C{pool_mode=transaction}).
    @cvar install_hint: how to install the driver, for a message.
    @cvar complete_rules: whether L{is_disconnect} knows every way the
        driver reports a lost connection (see L{suspect}): true for the
        drivers txreconnect knows, false for the generic rules.
    @cvar error_classes: names of the module's exception classes that may
        report a lost connection at all.  Generic: C{InterfaceError} and
        C{OperationalError} (PEP 249: the errors of the interface and of
        the database's operation, such as an unexpected disconnect); known
        drivers: C{Error}, since any error on a connection whose own flag
        says it is closed means it is lost.
    @cvar message_fragments: lower-case fragments of the messages that
        mean the connection is gone (see L{_mentions} for where they may
        occur).
    @cvar exact_message_classes: names of the module's base exception
        classes whose direct instances (not subclasses) also carry
        client-side messages, besides C{InterfaceError} and
        C{OperationalError}.
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    url_schemes: ClassVar[Tuple[str, ...]] = ()
    url_default: ClassVar[bool] = False
    url_file_database: ClassVar[bool] = False
    url_options: ClassVar[Mapping[str, Converter]] = {}
    url_only_known_options: ClassVar[bool] = False
    url_defaults: ClassVar[Mapping[str, Any]] = {}
    default_port: ClassVar[Optional[int]] = None
    # PEP 249's suggested connect() parameters (footnote 1).
    keywords: ClassVar[Mapping[str, str]] = {
        "host": "host",
        "port": "port",
        "user": "user",
        "password": "password",
        "database": "database",
    }
    shown_keywords: ClassVar[Tuple[str, ...]] = ("host", "port", "database", "dbname", "db")
    secret_keywords: ClassVar[Tuple[str, ...]] = ("password", "passwd")
    transaction_pooling_keywords: ClassVar[Mapping[str, Any]] = {}
    install_hint: ClassVar[str] = ""
    complete_rules: ClassVar[bool] = False
    error_classes: ClassVar[Tuple[str, ...]] = ("InterfaceError", "OperationalError")
    message_fragments: ClassVar[Tuple[str, ...]] = _GENERIC_FRAGMENTS
    exact_message_classes: ClassVar[Tuple[str, ...]] = ()

    def __init__(self, module: Any) -> None:
        """
        @param module: the imported DB-API module (C{pool.dbapi}).
        """
        self.module = module
        #: the module's C{Error} class, the base of its exceptions (PEP
        #: 249); empty for a module that has none, which C{adbapi} accepts
        self.errors: Tuple[Type[BaseException], ...] = self._errors("Error")

    @classmethod
    def connect_kwargs(cls, **parts: Any) -> Dict[str, Any]:
        """
        Name the parts of a connection target as this driver's
        C{connect()} does (SQLAlchemy's C{create_connect_args}).

        @param parts: any of C{host}, C{port}, C{user}, C{password} and
            C{database}; a part whose value is C{None} is left out.
        @return: C{connect()} keywords.
        @raise KeyError: a part this driver has no keyword for.
        """
        return {cls.keywords[part]: value for part, value in parts.items() if value is not None}

    @classmethod
    def pool_defaults(cls, connkw: Mapping[str, Any]) -> Dict[str, Any]:
        """
        Pool options that a URL with these C{connect()} keywords needs
        unless it says otherwise.

        Generic: none.

        @param connkw: the keywords the pool will get: C{connect()}'s and
            the C{cp_*} options given so far.
        @return: C{cp_*} options, to add unless given.
        """
        return {}

    def is_disconnect(self, exc: BaseException, connection: Optional[Any]) -> bool:
        """
        Tell whether C{exc}, raised while using C{connection}, means the
        connection is lost (as opposed to an error in the SQL or the data).

        C{exc} must be an instance of one of L{error_classes}.  Then, in
        order: the connection's own flag (L{_connection_gone}); the error's
        code, if it carries one (L{_code_says}), since the server's text
        may quote user data; the message (L{_says_disconnect}).

        @param exc: the exception raised by the driver (or user code).
        @param connection: the raw DB-API connection in use, or C{None}.
        @return: C{True} if the connection must be discarded.
        """
        if not isinstance(exc, self._errors(*self.error_classes)):
            return False
        if self._connection_gone(connection):
            return True
        verdict = self._code_says(exc)
        if verdict is not None:
            return verdict
        return self._says_disconnect(exc)

    def is_conflict(self, exc: BaseException) -> bool:
        """
        Tell whether C{exc} means the server rolled the transaction back
        because it conflicted with another (a deadlock, a serialization
        failure, a lock wait that timed out), so that running it again may
        succeed.

        Generic: C{False} (DB-API has no standard error code).

        @param exc: an exception raised while using a connection, which
            L{is_disconnect} did not take for a lost connection.
        @return: whether C{exc} is such a conflict.
        """
        return False

    # --- commit resolution (txreconnect._resolve) ---------------------------

    #: whether this driver can leave and read commit markers
    commit_markers: ClassVar[bool] = False

    def create_commit_marker(self, connection: Any, table: str, key: str) -> None:
        """
        Make sure of C{table} and of the marker row C{key} in it (number 0
        if it is new), and commit.

        @param connection: a new raw connection, not in use.
        @raise NotImplementedError: the driver has no commit markers.
        """
        raise NotImplementedError("%s has no commit markers" % (self.name or "this driver",))

    def mark_commit(self, connection: Any, table: str, key: str, number: int) -> Tuple[bool, bool, Any]:
        """
        In the transaction about to COMMIT, set the marker row C{key} to
        C{number}, if the transaction wrote anything.

        @return: whether the transaction wrote (or may have: then the pool
            must not take it for a read); whether the marker row was set
            (not if it is missing: then the COMMIT cannot be resolved); and
            the server's id of the session (to end it later if need be),
            or C{None}.
        @raise NotImplementedError: the driver has no commit markers.
        """
        raise NotImplementedError("%s has no commit markers" % (self.name or "this driver",))

    def resolve_commit(
        self, connection: Any, table: str, key: str, number: int, session: Any, wait: float
    ) -> Tuple[Optional[bool], str]:
        """
        Tell whether the transaction that set the marker row C{key} to
        C{number} committed, with a locking read of the row on a new
        connection: once it returns, the transaction has ended.  If the
        old session still holds the row after C{wait} seconds, end it
        (L{_end_session}) and wait again.

        @param connection: a new raw connection (the pool thread's own).
        @param session: the old session's id, or C{None}.
        @return: C{True} (committed), C{False} (not, and never will be) or
            C{None} (cannot tell), and why.
        @raise Exception: the driver's error if the connection fails.
        """
        waits = conflicts = 0
        while True:
            try:
                found = self._read_marker(connection, table, key, wait, number)
            except Exception as error:
                if self.is_conflict(error) and conflicts < _RESOLVE_CONFLICTS:
                    # A multi-primary cluster applied the old transaction
                    # meanwhile, or certified it first: read again.
                    connection.rollback()
                    conflicts += 1
                    continue
                if not self._is_lock_timeout(error):
                    raise
                connection.rollback()
                waits += 1
                if waits == 2 or session is None:
                    break
                self._end_session(connection, session)
                continue
            if found is None:
                return None, "its marker row is gone"
            if found == number:
                return True, "its marker is committed"
            if found < number:
                return False, "its marker was not committed, and its session has ended"
            return None, "its marker row holds a newer number (%d > %d)" % (found, number)
        return None, "its session still held its transaction open after %.0f s" % (2 * wait,)

    def _read_marker(self, connection: Any, table: str, key: str, wait: float, number: int) -> Optional[int]:
        """
        Read the marker row C{key} with a lock, waiting at most C{wait}
        seconds for it, then end the transaction.  On a multi-primary
        cluster, where a lock on one node does not wait for a transaction
        in flight on another, a row that does not hold C{number} must also
        be overwritten and committed, so that the old transaction, if it
        is still on its way, fails certification and never commits.

        @param number: the number the transaction in question set.
        @return: the number the row held, or C{None} if there is no such
            row.
        @raise Exception: the driver's error; a lock wait timeout is one
            that L{_is_lock_timeout} recognises, a conflict one that
            L{is_conflict} does (then the pool reads again).
        """
        raise NotImplementedError

    def _is_lock_timeout(self, exc: BaseException) -> bool:
        """
        @return: whether C{exc} is the server giving up waiting for a lock.
        """
        return False

    def _end_session(self, connection: Any, session: Any) -> None:
        """
        End the server session C{session} (its transaction is rolled back,
        unless it already committed).
        """
        raise NotImplementedError

    def suspect(self, exc: BaseException) -> bool:
        """
        Tell whether C{exc}, which L{is_disconnect} did not take for a lost
        connection, may still mean one, so that the pool must check: roll
        back, then L{ping}; if either fails, the connection is lost.

        Generic: any error of the driver module, unless the rules are
        complete (L{complete_rules}).  An unknown driver may report a
        lost connection in words the generic rules miss (pg8000's
        C{InterfaceError("network error")}); this check, a round trip
        after each of its errors, keeps such a connection from being
        kept for ever, as C{adbapi}'s C{cp_reconnect} does with its
        C{good_sql} after every error.

        @param exc: an exception raised while using a connection.
        @return: whether the pool must check the connection.
        """
        return not self.complete_rules and isinstance(exc, self.errors)

    def connect(
        self,
        connargs: Sequence[Any],
        connkw: Dict[str, Any],
        dbapi_connect: Optional[Callable[..., Any]] = None,
    ) -> Any:
        """
        Open a connection: the one place where the pool calls the driver's
        C{connect()} (through L{_connect}, which a driver may override,
        e.g. to give a driver without one a host list).

        The error of a failed attempt carries the verdict of
        L{connect_failure_is_cheap} (read it with L{failed_cheaply}), so
        that the pool's reconnect policy can probe quickly while the
        server only refuses; it is otherwise raised unchanged.

        @param connargs: the positional arguments the user gave.
        @param connkw: the keyword arguments, with L{connect_defaults}.
        @param dbapi_connect: the function that opens one connection: the
            pool's C{dbapi.connect}, as C{adbapi} calls it, so that a
            replaced C{pool.dbapi} sees every attempt (default: the
            module's own C{connect}).
        @return: a new DB-API connection.
        @raise Exception: the driver's error if no connection could be had.
        """
        try:
            return self._connect(connargs, connkw, dbapi_connect)
        except BaseException as error:
            if self.errors and isinstance(error, self.errors):
                try:
                    cheap = self.connect_failure_is_cheap(error)
                except Exception:
                    cheap = False
                try:
                    setattr(error, _CHEAP_MARK, cheap)
                except Exception:
                    pass  # an error class with __slots__: costly, then
            raise

    def _connect(
        self,
        connargs: Sequence[Any],
        connkw: Dict[str, Any],
        dbapi_connect: Optional[Callable[..., Any]] = None,
    ) -> Any:
        """
        Open a connection (see L{connect}).

        Generic: C{dbapi_connect(*connargs, **connkw)}.

        @param connargs: the positional arguments the user gave.
        @param connkw: the keyword arguments, with L{connect_defaults}.
        @param dbapi_connect: the function that opens one connection.
        @return: a new DB-API connection.
        @raise Exception: the driver's error if no connection could be had.
        """
        return (dbapi_connect or self.module.connect)(*connargs, **connkw)

    def connect_failure_is_cheap(self, exc: BaseException) -> bool:
        """
        Tell whether a failed connection attempt cost the server nothing,
        so that the next one may follow within milliseconds: nothing
        listened (the kernel refused the connection), or the server
        answered at once that it does not accept sessions yet (starting
        up, shutting down).  A failed login, too many connections, a
        timeout or anything unknown costs it something (a process or
        thread, an authentication, a slot): those back off.

        Generic: a C{ConnectionRefusedError} raised the error or was being
        handled when it was raised (PEP 3134's C{__cause__} and
        C{__context__}: pg8000 and PyMySQL raise their own errors from
        the socket's).

        @param exc: the driver's error from a failed C{connect()}.
        @return: whether the attempt was cheap for the server.
        """
        return any(isinstance(error, ConnectionRefusedError) for error in error_chain(exc))

    def wants_writer(self, connargs: Sequence[Any], connkw: Dict[str, Any]) -> bool:
        """
        Tell whether the user asked for a writable server.

        Generic: C{False}.

        @param connargs: the positional arguments the user gave.
        @param connkw: the keyword arguments the user gave.
        @return: whether the pool must reach a server that accepts writes.
        """
        return False

    def is_wrong_server(self, exc: BaseException, wants_writer: bool) -> bool:
        """
        Tell whether C{exc} is a write refused because the server is
        read-only: the connection is fine, but to the wrong server (an old
        primary, a standby), and the write may succeed elsewhere.

        Generic: C{False}.

        @param exc: an exception raised while using a connection, which
            L{is_disconnect} did not take for a lost connection.
        @param wants_writer: what L{wants_writer} said of the pool's
            arguments.
        @return: C{True} if the pool should reconnect through host
            selection.
        """
        return False

    def ping(self, connection: Any) -> None:
        """
        Check that C{connection} is alive with one round trip, never
        reconnecting behind the pool's back.

        Generic: C{SELECT 1} on a new cursor, fetch, close the cursor.

        @param connection: a raw DB-API connection.
        @raise Exception: the driver's error if the connection is dead.
        """
        cursor = connection.cursor()
        try:
            cursor.execute("SELECT 1")
            cursor.fetchall()
        finally:
            try:
                cursor.close()
            except Exception:
                # The error that matters, if any, is the one from execute.
                pass

    def is_autocommit(self, connection: Any) -> bool:
        """
        Tell whether each statement on C{connection} commits on its own.

        Generic: the connection's C{autocommit} attribute (called if it is
        a method), C{False} if there is none (PEP 249: transactions are
        the default).

        Never raises (every driver keeps to this: the pool asks on the
        path of every call, and of a dead connection).

        @param connection: a raw DB-API connection, possibly dead.
        @return: whether each statement commits on its own.  When it
            cannot be told: C{False} if the connection's own flag says it
            is closed (nothing can be sent on it), else C{True}, so that a
            statement whose reply was lost is never taken as safely
            rolled back.
        """
        try:
            value = getattr(connection, "autocommit", False)
            if callable(value):
                value = value()
            return bool(value)
        except Exception:
            return not self._connection_gone(connection)

    def connect_defaults(
        self,
        connargs: Sequence[Any],
        connkw: Dict[str, Any],
        stall_timeout: Optional[float] = None,
    ) -> Dict[str, Any]:
        """
        @param connargs: the positional arguments the user gave for
            C{connect()}.
        @param connkw: the keyword arguments the user gave for C{connect()}.
        @param stall_timeout: the pool's bound on one call, in seconds, or
            C{None}; a driver with read and write timeouts of its own may
            use it for them.
        @return: keyword arguments to add for C{connect()}, never overriding
            one the user gave.  Generic: none, since keyword arguments are
            driver-specific.
        """
        return {}

    def socket_fileno(self, connection: Any) -> Optional[int]:
        """
        The descriptor of the connection's socket, which the pool's
        watchdog shuts down when a call hangs on a silent network path.

        Generic: the connection's C{fileno()} method, if it has one.

        @param connection: a raw DB-API connection.
        @return: a file descriptor, or C{None} if it has no socket.
        """
        fileno = getattr(connection, "fileno", None)
        return int(fileno()) if callable(fileno) else None

    def prepare(self, connection: Any) -> None:
        """
        Set up a freshly opened connection (e.g. turn off the driver's own
        auto-reconnect, which would silently lose a transaction).

        Generic: nothing.

        @param connection: a raw DB-API connection, just opened.
        """

    def close(self, connection: Any) -> None:
        """
        Close C{connection}, never raising: a dead connection is simply
        dropped.

        @param connection: a raw DB-API connection, possibly dead or
            already closed.
        """
        try:
            connection.close()
        except Exception:
            pass

    def _errors(self, *names: str) -> Tuple[Type[BaseException], ...]:
        """
        Look up exception classes of the driver module.

        @param names: names of PEP 249 exception classes.
        @return: those the module defines (an unknown driver may lack some).
        """
        found = (getattr(self.module, name, None) for name in names)
        return tuple(
            cls
            for cls in found
            if isinstance(cls, type) and issubclass(cls, BaseException)
        )

    def _connection_gone(self, connection: Optional[Any]) -> bool:
        """
        Tell whether the connection's own flag says it is closed.

        Generic: a truthy C{closed} attribute (ignored when it is a method,
        whose meaning is unknown).

        @param connection: a raw DB-API connection, or C{None}.
        @return: C{True} if the connection says it is closed.
        """
        closed = getattr(connection, "closed", False)
        return bool(closed) and not callable(closed)

    def _code_says(self, exc: BaseException) -> Optional[bool]:
        """
        Judge C{exc} by the error code it carries (SQLSTATE, error number).

        Generic: DB-API has no standard error code, so C{None}.

        @param exc: a driver exception.
        @return: whether its code means a lost connection, or C{None} if it
            carries no code, so that its message decides.
        """
        return None

    def _says_disconnect(self, exc: BaseException) -> bool:
        """
        Tell whether the message of C{exc} says the connection is gone.

        Only C{InterfaceError}, C{OperationalError} and the classes named
        by L{exact_message_classes} count: the others (C{IntegrityError},
        C{ProgrammingError}, C{DataError}, ...) carry the server's text,
        which may quote user data.

        @param exc: a driver exception.
        @return: C{True} if its class may carry client-side messages and
            its message mentions one of L{message_fragments}.
        """
        if not (
            isinstance(exc, self._errors("InterfaceError", "OperationalError"))
            or type(exc) in self._errors(*self.exact_message_classes)
        ):
            return False
        return _mentions(_message(exc), self.message_fragments)
