"""
DATABASE_URL-style URLs: which driver, its C{connect()} keywords, and
the pool's C{cp_*} options.

    scheme://[user[:password]@][hosts][/database][?name=value&...]
    hosts = host[:port] | host[:port],host[:port][,...]

  - C{postgresql://} and C{postgres://} use psycopg2,
    C{postgresql+psycopg2://} too, C{postgresql+psycopg://} psycopg 3.
    The parts become libpq's C{host}, C{port}, C{user}, C{password} and
    C{dbname}.  A Unix socket directory goes in the query
    (C{postgresql://app@/shop?host=/var/run/postgresql}) or,
    percent-encoded, in place of the host.
  - C{mysql://} and C{mariadb://} use PyMySQL, C{mysql+pymysql://} too,
    C{mysql+mysqldb://} mysqlclient (module C{MySQLdb}).  The parts become
    C{host}, C{port}, C{user}, C{password} and C{database}; a socket is
    C{?unix_socket=/path}.
  - C{sqlite:///relative/path}, C{sqlite:////absolute/path}; C{sqlite://}
    and C{sqlite:///:memory:} are a memory database.

Several hosts, separated by commas
(C{postgresql://app@h1:5432,h2:5433/shop?target_session_attrs=read-write}),
are tried in order, as libpq does:

  - for PostgreSQL they become libpq's multi-host keywords, text:
    C{host="h1,h2"}, C{port="5432,5433"}.  A host written without a port
    has an empty entry in the port list (C{h1,h2:5433} gives
    C{port=",5433"}), which libpq reads as its default port, as libpq's
    own URIs do; when no host has a port, there is no C{port} (libpq's
    default, or C{?port=} for every host).  Entries may be IPv6 addresses
    in brackets or percent-encoded socket directories.
  - for MySQL and MariaDB they become the same text lists, C{host="h1,h2"}
    and C{port="3306,3307"}, with 3306 for a host written without a port,
    which txreconnect's MySQL driver layer splits and tries in order.
  - an sqlite URL has no host, let alone a list of them.

C{target_session_attrs} picks the server a connection may stay on: for
PostgreSQL one of libpq's C{any}, C{read-write}, C{read-only},
C{primary}, C{standby} and C{prefer-standby}; for MySQL and MariaDB
C{any} or C{read-write}.

The user name, password, host, database and query values are
percent-decoded (C{urllib.parse.quote(password, safe="")} encodes a
password; a C{+} stays a plus, as in libpq's URIs); an IPv6 host is
written C{[::1]}.  libpq's own query parameters (C{sslmode}, C{options},
C{application_name}, several hosts as C{?host=h1,h2&port=5432,5433}, ...)
pass through.

Query parameters named C{cp_*} are the pool's options, converted from
text: integers for C{cp_min}, C{cp_max} and C{cp_replays}; seconds for
C{cp_health_check}, C{cp_max_lifetime} and C{cp_stall_timeout}, where
C{none} or C{off} turns the feature off; C{true}/C{false} (also
C{yes}/C{no}, C{on}/C{off}, C{1}/C{0}) for C{cp_noisy}, C{cp_reconnect}
and C{cp_follow_writer}; text for C{cp_name} and C{cp_good_sql}.
C{cp_policy=fail_fast} or C{cp_policy=wait} picks the reconnect policy,
and C{cp_wait_initial_delay}, C{cp_wait_factor}, C{cp_wait_max_delay} and
C{cp_wait_deadline} (seconds, or C{none}) tune L{WaitForDatabase}.

Every other parameter goes to the driver's C{connect()}: as text for
psycopg2 and psycopg 3 (libpq takes text), converted to a number or a
boolean for the options of PyMySQL, mysqlclient and sqlite3 that need one
(C{connect_timeout}, C{read_timeout}, C{write_timeout}, C{autocommit},
C{ssl_disabled}, ...).

For sqlite, C{check_same_thread} defaults to false, so that closing the
pool can close each thread's connection, and a memory database gets
C{cp_min=1, cp_max=1} unless told otherwise: each connection to
C{:memory:} is a database of its own.

Anything wrong is a L{ConfigurationError} that names the bad part and
never contains the password.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple
from urllib.parse import unquote

from hyperlink import URL

from txreconnect._options import seconds
from txreconnect.errors import ConfigurationError
from txreconnect.policy import FailFast, WaitForDatabase

__all__ = ["ParsedURL", "parse_url"]

#: converts a query parameter's text, given its name for the message
_Converter = Callable[[str, str], Any]


# --- converters ----------------------------------------------------------------

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_NONE = ("none", "off")


def _text(name: str, text: str) -> str:
    return text


def _boolean(name: str, text: str) -> bool:
    word = text.lower()
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    raise ConfigurationError("%s=%s is not a boolean (true or false)" % (name, text))


def _integer(minimum: int = 0) -> _Converter:
    def convert(name: str, text: str) -> int:
        if not (text.isascii() and text.isdigit()) or int(text) < minimum:
            raise ConfigurationError("%s=%s is not an integer >= %d" % (name, text, minimum))
        return int(text)

    return convert


def _number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ConfigurationError("%s=%s is not a number" % (name, text))
    return int(value) if value.is_integer() and "." not in text else value


def _seconds(allow_zero: bool = False, allow_none: bool = False) -> _Converter:
    def convert(name: str, text: str) -> Optional[float]:
        if allow_none and text.lower() in _NONE:
            return None
        return seconds(name, _number(name, text), allow_zero)

    return convert


def _at_least_one(name: str, text: str) -> float:
    value = _number(name, text)
    if value < 1:
        raise ConfigurationError("%s=%s is not a number >= 1" % (name, text))
    return float(value)


def _text_or_none(name: str, text: str) -> Optional[str]:
    return None if text.lower() == "none" else text


def _one_of(*values: str) -> _Converter:
    def convert(name: str, text: str) -> str:
        if text not in values:
            raise ConfigurationError("%s=%s is not one of %s" % (name, text, ", ".join(values)))
        return text

    return convert


# --- what the URL can say --------------------------------------------------------

#: the pool's options, by their query parameter names
_POOL_OPTIONS: Dict[str, _Converter] = {
    "cp_min": _integer(0),
    "cp_max": _integer(1),
    "cp_name": _text,
    "cp_noisy": _boolean,
    "cp_reconnect": _boolean,
    "cp_good_sql": _text,
    "cp_replays": _integer(0),
    "cp_health_check": _seconds(allow_zero=True, allow_none=True),
    "cp_max_lifetime": _seconds(allow_none=True),
    "cp_stall_timeout": _seconds(allow_none=True),
    "cp_follow_writer": _boolean,
}

#: pool options that are Python objects, given to from_url() instead
_NOT_IN_URLS = ("cp_openfun", "cp_reactor")

#: cp_policy values
_POLICIES = ("fail_fast", "wait")

#: query parameter -> WaitForDatabase() keyword, converter
_WAIT_OPTIONS: Dict[str, Tuple[str, _Converter]] = {
    "cp_wait_initial_delay": ("initial_delay", _seconds()),
    "cp_wait_factor": ("factor", _at_least_one),
    "cp_wait_max_delay": ("max_delay", _seconds()),
    "cp_wait_deadline": ("deadline", _seconds(allow_none=True)),
}

#: connect() keywords and query parameters whose values are never shown
_SECRET_KEYS = ("password", "passwd", "sslpassword", "ssl_key_password")


class _Driver(NamedTuple):
    """
    What one DB-API driver calls the parts of a URL, and which of its
    options are not text.
    """

    #: the DB-API module's name
    module: str
    #: URL part (host, port, user, password, database) -> connect() keyword
    keywords: Mapping[str, str]
    #: connect() options converted from text; any other goes as text
    options: Mapping[str, _Converter]
    #: connect() keywords added unless given
    defaults: Mapping[str, Any] = {}
    #: whether options missing from C{options} are refused, rather than
    #: passed on as text
    only_known: bool = False
    #: in a host list's ports, the port of a host written without one;
    #: L{None} leaves its entry empty (libpq's default port), and leaves
    #: the port out when no host has one
    list_port: Optional[int] = None


_LIBPQ = {"host": "host", "port": "port", "user": "user", "password": "password", "database": "dbname"}
_MYSQL = {"host": "host", "port": "port", "user": "user", "password": "password", "database": "database"}
#: libpq 15's target_session_attrs
_LIBPQ_OPTIONS: Dict[str, _Converter] = dict(
    target_session_attrs=_one_of("any", "read-write", "read-only", "primary", "standby", "prefer-standby")
)
#: options PyMySQL and mysqlclient share (target_session_attrs is
#: txreconnect's MySQL driver layer's, which takes these two)
_MYSQL_OPTIONS: Dict[str, _Converter] = dict(
    port=_integer(1),
    client_flag=_integer(0),
    autocommit=_boolean,
    local_infile=_boolean,
    target_session_attrs=_one_of("any", "read-write"),
)
#: MySQL's port, for a host of a list written without one
_MYSQL_PORT = 3306

_DRIVERS = {
    driver.module: driver
    for driver in [
        _Driver("psycopg2", _LIBPQ, _LIBPQ_OPTIONS),
        _Driver("psycopg", _LIBPQ, _LIBPQ_OPTIONS),
        # pymysql.connections.Connection.__init__
        _Driver(
            "pymysql",
            _MYSQL,
            dict(
                _MYSQL_OPTIONS,
                connect_timeout=_number,
                read_timeout=_number,
                write_timeout=_number,
                max_allowed_packet=_integer(1),
                ssl_disabled=_boolean,
                ssl_verify_cert=_boolean,
                ssl_verify_identity=_boolean,
            ),
            list_port=_MYSQL_PORT,
        ),
        # MySQLdb.connections.Connection.__init__ (timeouts are C unsigned ints)
        _Driver(
            "MySQLdb",
            _MYSQL,
            dict(
                _MYSQL_OPTIONS,
                connect_timeout=_integer(1),
                read_timeout=_integer(1),
                write_timeout=_integer(1),
                compress=_boolean,
                multi_statements=_boolean,
            ),
            list_port=_MYSQL_PORT,
        ),
        # sqlite3.connect
        _Driver(
            "sqlite3",
            {"database": "database"},
            dict(
                timeout=_number,
                detect_types=_integer(0),
                isolation_level=_text_or_none,
                check_same_thread=_boolean,
                cached_statements=_integer(0),
                uri=_boolean,
            ),
            {"check_same_thread": False},
            only_known=True,
        ),
    ]
}

#: scheme -> (default driver, {"+name" suffix: driver})
_POSTGRESQL = ("psycopg2", {"psycopg2": "psycopg2", "psycopg": "psycopg"})
_MYSQL_FAMILY = ("pymysql", {"pymysql": "pymysql", "mysqldb": "MySQLdb"})
_SCHEMES: Dict[str, Tuple[str, Mapping[str, str]]] = {
    "postgresql": _POSTGRESQL,
    "postgres": _POSTGRESQL,
    "mysql": _MYSQL_FAMILY,
    "mariadb": _MYSQL_FAMILY,
    "sqlite": ("sqlite3", {}),
}

_MEMORY = ":memory:"

#: why hyperlink rejected a URL, from the start of its message (which
#: itself is never shown: it quotes the URL)
_PARSE_ERRORS = (
    ("expected integer for port", "the port is not a number"),
    ("port must not be empty", "the port is empty"),
    ("invalid host", "the host is not valid"),
    ("one or more reserved delimiters", "the host is not valid"),
)

#: a URL's authority, as hyperlink finds it
_AUTHORITY = re.compile(r"^(?:[^:/?#]+:)?//(?P<authority>[^/?#]*)")

_ENCODING_HINT = (
    " (in a user name or password, percent-encode '@', ':', '/', '?', '#' and '%': "
    "urllib.parse.quote(password, safe=''))"
)


# --- the result --------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class ParsedURL:
    """
    A database URL, parsed.

    @ivar dbapi_name: the DB-API module's name, for
        L{ReconnectingConnectionPool}'s first argument.
    @ivar connect_kwargs: keyword arguments for the driver's C{connect()}.
        The URL needs no positional ones.
    @ivar pool_kwargs: the C{cp_*} options the URL gives, as Python values.
    """

    dbapi_name: str
    connect_kwargs: Dict[str, Any] = field(default_factory=dict)
    pool_kwargs: Dict[str, Any] = field(default_factory=dict)

    def arguments(self, **overrides: Any) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
        """
        The arguments for L{ReconnectingConnectionPool}.

        @param overrides: C{cp_*} options and C{connect()} keywords that
            replace the URL's.
        @return: C{(args, kwargs)}.
        """
        kwargs = {**self.connect_kwargs, **self.pool_kwargs, **overrides}
        if self.dbapi_name == "sqlite3" and kwargs.get("database") == _MEMORY:
            # One connection, so that every call sees the same database.
            kwargs.setdefault("cp_max", max(1, kwargs.get("cp_min", 1)))
            kwargs.setdefault("cp_min", min(1, kwargs["cp_max"]))
        return (self.dbapi_name,), kwargs

    def __repr__(self) -> str:
        return "ParsedURL(dbapi_name=%r, connect_kwargs=%r, pool_kwargs=%r)" % (
            self.dbapi_name,
            {k: "***" if k in _SECRET_KEYS else v for k, v in self.connect_kwargs.items()},
            self.pool_kwargs,
        )


# --- parsing -----------------------------------------------------------------------


def parse_url(url: str) -> ParsedURL:
    """
    Parse a DATABASE_URL-style URL (see L{txreconnect.url} for the
    grammar).

    @param url: e.g. C{"postgresql://app:secret@db:5432/shop?cp_max=10"}.
    @return: the driver's name, its C{connect()} keywords and the pool's
        options.
    @raise ConfigurationError: the URL is malformed, its scheme is
        unknown, or a part or parameter is invalid.  The message names
        the bad part and never contains the password; it chains nothing.
    """
    if not isinstance(url, str):
        raise ConfigurationError("a database URL must be a str, not %s" % (type(url).__name__,))
    parser = _Parser(url.strip())
    try:
        return parser.parse()
    except ConfigurationError as error:
        message = parser.redact(str(error))
    except (ValueError, TypeError):
        # Not ours (hyperlink's, say): its message may quote the URL.
        message = "it cannot be parsed" + _ENCODING_HINT
    # Raised here, outside the handler, so that nothing is chained: a
    # chained error (or its context) could quote the URL.
    raise ConfigurationError("invalid database URL: %s" % (message,)) from None


def _from_text(text: str) -> Tuple[URL, Optional[str]]:
    """
    Split C{text} with hyperlink.

    @return: the URL and L{None}, or a placeholder URL and what is wrong,
        in our words: hyperlink's message quotes the URL, password and
        all, so it is never shown.
    """
    try:
        return URL.from_text(text), None
    except (ValueError, TypeError) as error:
        message = str(error)
        problem = next(
            (ours for theirs, ours in _PARSE_ERRORS if message.startswith(theirs)),
            "it cannot be parsed",
        )
        return URL(), problem


def _split_host_list(text: str) -> Tuple[str, Optional[List[str]]]:
    """
    Take a host list (C{h1:5432,h2:5433}), which hyperlink cannot parse,
    out of a URL.  The hosts are what follows the authority's last C{@},
    so that a comma in the password is no host list.

    @return: the URL without its host list (its authority ends with the
        C{@}, if any), and the list's entries as written; or the URL as it
        is and L{None}, when there is no list.
    """
    match = _AUTHORITY.match(text)
    if match is None:
        return text, None
    start = match.start("authority") + match.group("authority").rfind("@") + 1
    hosts = text[start : match.end("authority")]
    if "," not in hosts:
        return text, None
    return text[:start] + text[match.end("authority") :], hosts.split(",")


class _Parser:
    """
    One URL being parsed; it remembers the secrets it saw, so that no
    message shows them.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.secrets: List[str] = []
        #: the host list's entries as written, or None: no list
        self.host_list: Optional[List[str]] = None
        # The password as typed, found without a parser, in case the
        # parser cannot make sense of the URL.
        authority = text.partition("://")[2]
        for delimiter in "/?#":
            authority = authority.partition(delimiter)[0]
        self._keep_secret(authority.rpartition("@")[0].partition(":")[2])

    def _keep_secret(self, secret: Optional[str]) -> None:
        if secret:
            self.secrets.extend({secret, unquote(secret)})

    def redact(self, message: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            message = message.replace(secret, "***")
        return message

    def parse(self) -> ParsedURL:
        url = self._structure()
        scheme, _, suffix = url.scheme.lower().partition("+")
        if scheme not in _SCHEMES:
            raise ConfigurationError(
                "unknown scheme %r (known: %s)" % (url.scheme, ", ".join(sorted(_SCHEMES)))
            )
        default, named = _SCHEMES[scheme]
        if suffix and suffix not in named:
            raise ConfigurationError(
                "unknown driver %r in scheme %r (known: %s)"
                % (suffix, url.scheme, ", ".join(sorted(named)) or "none")
            )
        driver = _DRIVERS[named[suffix] if suffix else default]
        if not url.uses_netloc:
            raise ConfigurationError("%r must be followed by '//'" % (url.scheme + ":",))
        if url.fragment:
            raise ConfigurationError("a database URL has no '#fragment'" + _ENCODING_HINT)
        parts = self._sqlite(url) if driver.module == "sqlite3" else self._server(url, driver)
        connect = {driver.keywords[part]: value for part, value in parts.items()}
        pool = self._query(url, driver, connect)
        for key, value in driver.defaults.items():
            connect.setdefault(key, value)
        return ParsedURL(driver.module, connect, pool)

    def _structure(self) -> URL:
        """
        @return: the URL, split by hyperlink.
        @raise ConfigurationError: hyperlink cannot split it.
        """
        text, self.host_list = _split_host_list(self.text)
        url, problem = _from_text(text)
        if problem is not None:
            raise ConfigurationError(problem + _ENCODING_HINT)
        if not url.scheme:
            raise ConfigurationError(
                "no scheme (known: %s), as in postgresql://user:password@host/database"
                % (", ".join(sorted(_SCHEMES)),)
            )
        return url

    def _decode(self, text: str, what: str) -> str:
        """
        @return: C{text}, percent-decoded (a C{+} stays a plus, as in
            libpq's URIs).
        @raise ConfigurationError: it does not decode to UTF-8.
        """
        try:
            return unquote(text, errors="strict")
        except UnicodeDecodeError:
            pass
        raise ConfigurationError("the %s is not UTF-8 once percent-decoded" % (what,))

    def _server(self, url: URL, driver: _Driver) -> Dict[str, Any]:
        """
        @param driver: the driver, which decides how a host list's ports
            are written.
        @return: the host, port, user, password and database the URL gives
            (for a host list, the C{host} and C{port} lists as text).
        """
        parts: Dict[str, Any] = {}
        user, _, password = url.userinfo.partition(":")
        self._keep_secret(password)
        if user:
            parts["user"] = self._decode(user, "user name")
        if password:
            parts["password"] = self._decode(password, "password")
            self._keep_secret(parts["password"])
        if self.host_list is not None:
            if url.host or url.port is not None:
                # What hyperlink took for a host is part of the password.
                raise ConfigurationError("the host is not valid" + _ENCODING_HINT)
            parts.update(self._hosts(self.host_list, driver))
        if url.host:
            parts["host"] = self._decode(url.host, "host")
        if url.port is not None:
            # Never quoted: with an unencoded '/' in the password, what
            # the parser takes for a port is part of the password.
            if not 0 < url.port < 65536:
                raise ConfigurationError("the port is out of range (1-65535)" + _ENCODING_HINT)
            parts["port"] = url.port
        path = list(url.path)
        if path and path[-1] == "":
            path.pop()  # a trailing slash: no database
        if len(path) > 1 or any("@" in segment for segment in path):
            # Not quoted either: most likely an unencoded '/' in the password.
            raise ConfigurationError(
                "the database name must be one path segment, with '/' and '@' percent-encoded"
                + _ENCODING_HINT
            )
        if path:
            parts["database"] = self._decode(path[0], "database name")
        return parts

    def _hosts(self, entries: List[str], driver: _Driver) -> Dict[str, str]:
        """
        @param entries: a host list's entries, as written.
        @return: the C{host} and C{port} lists, as text.
        """
        hosts = []
        ports = []
        for number, entry in enumerate(entries, 1):
            host, port = self._host_entry(entry, "host %d of %d in the host list" % (number, len(entries)))
            hosts.append(host)
            if port is None and driver.list_port is not None:
                port = driver.list_port
            ports.append("" if port is None else str(port))
        parts = {"host": ",".join(hosts)}
        if any(ports):
            parts["port"] = ",".join(ports)
        return parts

    def _host_entry(self, entry: str, which: str) -> Tuple[str, Optional[int]]:
        """
        @param entry: one host of a list, as written: C{host}, C{host:port},
            C{[IPv6]}, C{[IPv6]:port} or a percent-encoded socket directory.
        @param which: the entry, for messages (which never quote it: with
            an unencoded C{/} in the password, it may be part of it).
        @return: the host, percent-decoded, and the port, if written.
        """
        if not entry:
            raise ConfigurationError("%s is empty (write h1:port,h2:port)%s" % (which, _ENCODING_HINT))
        url, problem = _from_text("//" + entry)
        if problem is not None:
            raise ConfigurationError("%s: %s%s" % (which, problem, _ENCODING_HINT))
        if url.port is not None:
            # hyperlink's int() also takes signs, spaces and other digits.
            written = entry.rpartition(":")[2]
            if not (written.isascii() and written.isdigit()):
                raise ConfigurationError("%s: the port is not a number%s" % (which, _ENCODING_HINT))
            if not 0 < url.port < 65536:
                raise ConfigurationError("%s: the port is out of range (1-65535)%s" % (which, _ENCODING_HINT))
        if not url.host:
            raise ConfigurationError("%s has no host name%s" % (which, _ENCODING_HINT))
        host = self._decode(url.host, "name of " + which)
        if "," in host:
            raise ConfigurationError("%s holds a ',' once percent-decoded" % (which,))
        return host, url.port

    def _sqlite(self, url: URL) -> Dict[str, Any]:
        """
        @return: the database file (or C{:memory:}) the URL gives.
        """
        if self.host_list is not None:
            raise ConfigurationError(
                "an sqlite URL has no host list (nor user, host or port): sqlite:///relative/path, "
                "sqlite:////absolute/path or sqlite:// (memory)"
            )
        if url.userinfo or url.host or url.port is not None:
            raise ConfigurationError(
                "an sqlite URL has no user, host or port: sqlite:///relative/path, "
                "sqlite:////absolute/path or sqlite:// (memory)"
            )
        segments = [self._decode(segment, "path") for segment in url.path]
        if not segments:
            return {"database": _MEMORY}
        path = "/".join(segments)
        if not path or path == "/":
            raise ConfigurationError(
                "the sqlite URL has an empty path: sqlite:///relative/path, "
                "sqlite:////absolute/path or sqlite:// (memory)"
            )
        return {"database": path}

    def _query(self, url: URL, driver: _Driver, connect: Dict[str, Any]) -> Dict[str, Any]:
        """
        Sort the query parameters into C{connect}, converted for
        C{driver}, and the pool's options.

        @return: the pool's options.
        """
        pool: Dict[str, Any] = {}
        wait: Dict[str, Any] = {}
        seen = set()
        from_url = set(connect)
        for raw_name, raw_value in url.query:
            if not raw_name and raw_value is None:
                continue  # '&&'
            name = self._decode(raw_name, "query parameter name")
            if not (name.isascii() and name.isidentifier()):
                if "@" in name:  # likely an unencoded '?' in the password
                    raise ConfigurationError("a query parameter name is not valid" + _ENCODING_HINT)
                raise ConfigurationError("query parameter name %r is not valid" % (name,))
            if name in seen:
                raise ConfigurationError("query parameter %s is given more than once" % (name,))
            seen.add(name)
            if raw_value is None:
                raise ConfigurationError("query parameter %s has no value (write %s=...)" % (name, name))
            value = self._decode(raw_value, "value of " + name)
            if name in _SECRET_KEYS:
                self._keep_secret(value)
            if name.startswith("cp_"):
                self._pool_option(name, value, pool, wait)
            elif name in from_url:
                hint = ""
                if name == "port" and self.host_list is not None:
                    hint = " (a host list gives each host's port: h1:port,h2:port)"
                raise ConfigurationError("%s is given both in the URL and as ?%s=%s" % (name, name, hint))
            elif name in driver.options:
                connect[name] = driver.options[name](name, value)
            elif driver.only_known:
                raise ConfigurationError(
                    "unknown %s option %s (known: %s)"
                    % (driver.module, name, ", ".join(sorted(driver.options)))
                )
            else:
                connect[name] = value
        if wait:
            if pool.get("cp_policy") != "wait":
                raise ConfigurationError(
                    "%s needs cp_policy=wait" % (", ".join(sorted(wait)),)
                )
            pool["cp_policy"] = WaitForDatabase(
                **{_WAIT_OPTIONS[name][0]: value for name, value in wait.items()}
            )
        elif "cp_policy" in pool:
            pool["cp_policy"] = WaitForDatabase() if pool["cp_policy"] == "wait" else FailFast()
        return pool

    def _pool_option(self, name: str, value: str, pool: Dict[str, Any], wait: Dict[str, Any]) -> None:
        """
        Convert one C{cp_*} query parameter into C{pool} (or C{wait}, the
        policy's settings).
        """
        if name == "cp_policy":
            if value.lower() not in _POLICIES:
                raise ConfigurationError(
                    "cp_policy=%s is not a policy (known: %s)" % (value, ", ".join(_POLICIES))
                )
            pool[name] = value.lower()
        elif name in _WAIT_OPTIONS:
            wait[name] = _WAIT_OPTIONS[name][1](name, value)
        elif name in _POOL_OPTIONS:
            pool[name] = _POOL_OPTIONS[name](name, value)
        elif name in _NOT_IN_URLS:
            raise ConfigurationError(
                "%s cannot be given in a URL: pass it to from_url() as a keyword" % (name,)
            )
        else:
            known = sorted(set(_POOL_OPTIONS) | set(_WAIT_OPTIONS) | {"cp_policy"})
            raise ConfigurationError(
                "unknown pool option %s (known: %s)" % (name, ", ".join(known))
            )
