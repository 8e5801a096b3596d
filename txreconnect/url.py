"""
DATABASE_URL-style URLs: which driver, its C{connect()} keywords, and
the pool's C{cp_*} options::

    scheme://[user[:password]@][hosts][/database][?name=value&...]
    hosts = host[:port] | host[:port],host[:port][,...]

By scheme:

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

In general C{scheme+name://} picks the driver whose module is I{name},
in any case, among those that serve the scheme; the drivers and what
each calls the URL's parts are in L{txreconnect.drivers}, one module per
driver.

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
    and C{port="3306,3307"} (an empty entry, or no C{port}, for the
    default port), which txreconnect's MySQL driver layer splits and
    tries in order.
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
text: integers for C{cp_min}, C{cp_max}, C{cp_replays} and
C{cp_conflict_retries}; seconds for
C{cp_health_check}, C{cp_max_lifetime} and C{cp_stall_timeout}, where
C{none} or C{off} turns the feature off; C{true}/C{false} (also
C{yes}/C{no}, C{on}/C{off}, C{1}/C{0}) for C{cp_noisy}, C{cp_reconnect}
C{cp_follow_writer} and C{cp_resolve_commits}; text for C{cp_name} and C{cp_good_sql}.
C{cp_policy=fail_fast} or C{cp_policy=wait} picks the reconnect policy,
and C{cp_wait_initial_delay}, C{cp_wait_factor}, C{cp_wait_max_delay},
C{cp_wait_deadline} and C{cp_wait_fast_probe_interval} (seconds, or
C{none}) and C{cp_wait_fast_probe_ratio} (a number between 0 and 1) tune
L{WaitForDatabase}.

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

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Type
from urllib.parse import unquote

from hyperlink import URL

from txreconnect import _convert
from txreconnect.drivers import Driver, driver_class, known_drivers
from txreconnect.errors import ConfigurationError
from txreconnect.policy import FailFast, WaitForDatabase

__all__ = ["ParsedURL", "parse_url"]


# --- what the URL can say --------------------------------------------------------

#: the pool's options, by their query parameter names
_POOL_OPTIONS: Dict[str, _convert.Converter] = {
    "cp_min": _convert.integer(0),
    "cp_max": _convert.integer(1),
    "cp_name": _convert.text,
    "cp_noisy": _convert.boolean,
    "cp_reconnect": _convert.boolean,
    "cp_good_sql": _convert.text,
    "cp_replays": _convert.integer(0),
    "cp_health_check": _convert.seconds(allow_zero=True, allow_none=True),
    "cp_max_lifetime": _convert.seconds(allow_none=True),
    "cp_stall_timeout": _convert.seconds(allow_none=True),
    "cp_follow_writer": _convert.boolean,
    "cp_conflict_retries": _convert.integer(0),
    "cp_resolve_commits": _convert.boolean,
    "cp_max_waiting": _convert.integer(1),
    "cp_wait_timeout": _convert.seconds(allow_none=True),
}

#: pool options that are Python objects, given to from_url() instead
_NOT_IN_URLS = ("cp_openfun", "cp_reactor", "cp_credentials")

#: cp_policy values
_POLICIES = ("fail_fast", "wait")

#: query parameter -> WaitForDatabase() keyword, converter
_WAIT_OPTIONS: Dict[str, Tuple[str, _convert.Converter]] = {
    "cp_wait_initial_delay": ("initial_delay", _convert.seconds()),
    "cp_wait_factor": ("factor", _convert.at_least_one),
    "cp_wait_max_delay": ("max_delay", _convert.seconds()),
    "cp_wait_deadline": ("deadline", _convert.seconds(allow_none=True)),
    "cp_wait_fast_probe_interval": ("fast_probe_interval", _convert.seconds(allow_none=True)),
    "cp_wait_fast_probe_ratio": ("fast_probe_ratio", _convert.fraction),
}


class _Scheme:
    """
    The drivers that serve one URL scheme: C{scheme://} means the
    default one, C{scheme+name://} the one whose module is I{name} (in any
    case).
    """

    def __init__(self) -> None:
        self.default: Optional[Type[Driver]] = None
        self.named: Dict[str, Type[Driver]] = {}


def _schemes() -> Dict[str, _Scheme]:
    """
    @return: every scheme the known drivers serve.
    """
    table: Dict[str, _Scheme] = {}
    for cls in known_drivers():
        for scheme in cls.url_schemes:
            entry = table.setdefault(scheme, _Scheme())
            entry.named[cls.name.lower()] = cls
            if cls.url_default:
                entry.default = cls
    return table


def _secret(name: str, driver: Type[Driver]) -> bool:
    """
    @return: whether the C{connect()} keyword C{name} holds a secret for
        C{driver}: one of its own, or a password by any driver's name.
    """
    return name in driver.secret_keywords or name in Driver.secret_keywords


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
        for key, value in driver_class(self.dbapi_name).pool_defaults(kwargs).items():
            kwargs.setdefault(key, value)
        return (self.dbapi_name,), kwargs

    def __repr__(self) -> str:
        driver = driver_class(self.dbapi_name)
        return "ParsedURL(dbapi_name=%r, connect_kwargs=%r, pool_kwargs=%r)" % (
            self.dbapi_name,
            {k: "***" if _secret(k, driver) else v for k, v in self.connect_kwargs.items()},
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

    @return: the URL and C{None}, or a placeholder URL and what is wrong,
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
        is and C{None}, when there is no list.
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
        schemes = _schemes()
        scheme, _, suffix = url.scheme.lower().partition("+")
        if scheme not in schemes:
            raise ConfigurationError(
                "unknown scheme %r (known: %s)" % (url.scheme, ", ".join(sorted(schemes)))
            )
        entry = schemes[scheme]
        driver = entry.named.get(suffix) if suffix else entry.default
        if driver is None:
            raise ConfigurationError(
                "unknown driver %r in scheme %r (known: %s)"
                % (suffix, url.scheme, ", ".join(sorted(entry.named)) or "none")
            )
        if not url.uses_netloc:
            raise ConfigurationError("%r must be followed by '//'" % (url.scheme + ":",))
        if url.fragment:
            raise ConfigurationError("a database URL has no '#fragment'" + _ENCODING_HINT)
        parts = self._file(url) if driver.url_file_database else self._server(url)
        connect = driver.connect_kwargs(**parts)
        pool = self._query(url, driver, connect)
        for key, value in driver.url_defaults.items():
            connect.setdefault(key, value)
        return ParsedURL(driver.name, connect, pool)

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
                % (", ".join(sorted(_schemes())),)
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

    def _server(self, url: URL) -> Dict[str, Any]:
        """
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
            parts.update(self._hosts(self.host_list))
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

    def _hosts(self, entries: List[str]) -> Dict[str, str]:
        """
        @param entries: a host list's entries, as written.
        @return: the C{host} and C{port} lists, as text; the port of a
            host written without one is an empty entry (the driver's
            default port).
        """
        hosts = []
        ports = []
        for number, entry in enumerate(entries, 1):
            host, port = self._host_entry(entry, "host %d of %d in the host list" % (number, len(entries)))
            hosts.append(host)
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

    def _file(self, url: URL) -> Dict[str, Any]:
        """
        @return: the database file the URL gives, for a driver whose
            database is a file (sqlite); none for C{scheme://} (the
            driver's C{url_defaults} may name one).
        """
        forms = "{0}:///relative/path, {0}:////absolute/path or {0}:// (memory)".format(url.scheme)
        if self.host_list is not None:
            raise ConfigurationError(
                "a %s URL has no host list (nor user, host or port): %s" % (url.scheme, forms)
            )
        if url.userinfo or url.host or url.port is not None:
            raise ConfigurationError("a %s URL has no user, host or port: %s" % (url.scheme, forms))
        segments = [self._decode(segment, "path") for segment in url.path]
        if not segments:
            return {}
        path = "/".join(segments)
        if not path or path == "/":
            raise ConfigurationError("the %s URL has an empty path: %s" % (url.scheme, forms))
        return {"database": path}

    def _query(self, url: URL, driver: Type[Driver], connect: Dict[str, Any]) -> Dict[str, Any]:
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
            if _secret(name, driver):
                self._keep_secret(value)
            if name.startswith("cp_"):
                self._pool_option(name, value, pool, wait)
            elif name in from_url:
                hint = ""
                if name == "port" and self.host_list is not None:
                    hint = " (a host list gives each host's port: h1:port,h2:port)"
                raise ConfigurationError("%s is given both in the URL and as ?%s=%s" % (name, name, hint))
            elif name in driver.url_options:
                connect[name] = driver.url_options[name](name, value)
            elif driver.url_only_known_options:
                raise ConfigurationError(
                    "unknown %s option %s (known: %s)"
                    % (driver.name, name, ", ".join(sorted(driver.url_options)))
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
