"""
Tests for L{txreconnect.url} and L{ReconnectingConnectionPool.from_url}:
every scheme gives the right driver and keywords, every bad URL a
L{ConfigurationError} that names the bad part without the password, and
pools made from URLs work against real PostgreSQL, MariaDB and sqlite
databases.
"""

from __future__ import annotations

import os
import sqlite3
import traceback
from typing import Any, ClassVar, Dict, List, Type
from urllib.parse import quote

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase, TestCase

import txreconnect
from txreconnect import (
    ConfigurationError,
    FailFast,
    ReconnectingConnectionPool,
    WaitForDatabase,
    parse_url,
)
from txreconnect import url as url_module
from txreconnect.testing import (
    MariaDBServer,
    PostgresServer,
    ThrowawayServer,
    free_port,
    require_driver,
    shared_server,
)
from txreconnect.url import ParsedURL

#: a password distinctive enough that finding it anywhere means a leak
PASSWORD = "Xyzzy-S3cret"

#: a user name and a password with every character a URL reserves
AWKWARD_USER = "url user@x:y"
AWKWARD_PASSWORD = "p@ss/w:rd?#[%]&=+ ;"


def q(text: str) -> str:
    """
    Percent-encode C{text} for the user or password part of a URL.
    """
    return quote(text, safe="")


class ParseTests(SynchronousTestCase):
    """
    L{parse_url} on good URLs: driver names, connect() keywords, pool
    options.
    """

    def assertParses(
        self,
        url: str,
        dbapi_name: str,
        connect_kwargs: Dict[str, Any],
        pool_kwargs: Dict[str, Any] | None = None,
    ) -> ParsedURL:
        parsed = parse_url(url)
        self.assertEqual(parsed.dbapi_name, dbapi_name, url)
        self.assertEqual(parsed.connect_kwargs, connect_kwargs, url)
        self.assertEqual(parsed.pool_kwargs, pool_kwargs or {}, url)
        return parsed

    def test_serverSchemes(self) -> None:
        """
        C{postgresql://} and C{postgres://} use psycopg2, as does
        C{+psycopg2}; C{+psycopg} uses psycopg 3.  C{mysql://} and
        C{mariadb://} use PyMySQL, as does C{+pymysql}; C{+mysqldb} uses
        mysqlclient, whose module is C{MySQLdb}.  Schemes ignore case.
        Every part becomes the driver's keyword.
        """
        for scheme, driver, database in [
            ("postgresql", "psycopg2", "dbname"),
            ("postgres", "psycopg2", "dbname"),
            ("postgresql+psycopg2", "psycopg2", "dbname"),
            ("postgres+psycopg2", "psycopg2", "dbname"),
            ("postgresql+psycopg", "psycopg", "dbname"),
            ("PostgreSQL+Psycopg", "psycopg", "dbname"),
            ("mysql", "pymysql", "database"),
            ("mariadb", "pymysql", "database"),
            ("mysql+pymysql", "pymysql", "database"),
            ("mysql+mysqldb", "MySQLdb", "database"),
            ("mariadb+mysqldb", "MySQLdb", "database"),
        ]:
            self.assertParses(
                "%s://app:%s@db:5433/shop" % (scheme, PASSWORD),
                driver,
                {"host": "db", "port": 5433, "user": "app", "password": PASSWORD, database: "shop"},
            )

    def test_sqliteSchemes(self) -> None:
        """
        Three slashes and a relative path, four and an absolute one;
        C{sqlite://} and C{sqlite:///:memory:} are a memory database.
        Connections may be closed from another thread.
        """
        for url, database in [
            ("sqlite:///relative/path.db", "relative/path.db"),
            ("sqlite:///file.db", "file.db"),
            ("sqlite:////absolute/path.db", "/absolute/path.db"),
            ("sqlite:////tmp/with%20space.db", "/tmp/with space.db"),
            ("sqlite://", ":memory:"),
            ("sqlite:///:memory:", ":memory:"),
        ]:
            self.assertParses(url, "sqlite3", {"database": database, "check_same_thread": False})

    def test_partsAreOptional(self) -> None:
        """
        Whatever the URL leaves out is left to the driver's defaults; a
        trailing slash names no database.
        """
        self.assertParses("postgresql://", "psycopg2", {})
        self.assertParses("postgresql:///shop", "psycopg2", {"dbname": "shop"})
        self.assertParses("postgresql://db/", "psycopg2", {"host": "db"})
        self.assertParses("mysql://app@db", "pymysql", {"user": "app", "host": "db"})
        self.assertParses("mysql://app:@db", "pymysql", {"user": "app", "host": "db"})
        self.assertParses("postgresql://:%s@db" % (PASSWORD,), "psycopg2", {"password": PASSWORD, "host": "db"})

    def test_percentEncodedUserAndPassword(self) -> None:
        self.assertParses(
            "postgresql://us%40er:p%40ss%2Fw%3Ard@db/shop",
            "psycopg2",
            {"user": "us@er", "password": "p@ss/w:rd", "host": "db", "dbname": "shop"},
        )

    def test_quotedPasswordsComeBackExactly(self) -> None:
        """
        Whatever C{quote(password, safe="")} encodes comes back exactly:
        reserved characters, C{%}, C{+}, spaces, non-ASCII letters.
        """
        for password in [AWKWARD_PASSWORD, "100%", "a+b c", "pässwörd", "€", "%41", "::"]:
            for scheme in ["postgresql", "mysql+mysqldb"]:
                parsed = parse_url("%s://%s:%s@db/x" % (scheme, q(AWKWARD_USER), q(password)))
                self.assertEqual(parsed.connect_kwargs["user"], AWKWARD_USER)
                self.assertEqual(parsed.connect_kwargs["password"], password)

    def test_ipv6Host(self) -> None:
        self.assertParses(
            "postgresql://app@[::1]:5432/shop", "psycopg2", {"user": "app", "host": "::1", "port": 5432, "dbname": "shop"}
        )
        self.assertParses("mysql://[2001:db8::7]/shop", "pymysql", {"host": "2001:db8::7", "database": "shop"})

    def test_postgresqlUnixSocket(self) -> None:
        """
        A socket directory goes in the query, as libpq's C{host}, or
        percent-encoded in place of the host.
        """
        self.assertParses(
            "postgresql://app@/shop?host=/var/run/postgresql",
            "psycopg2",
            {"user": "app", "dbname": "shop", "host": "/var/run/postgresql"},
        )
        self.assertParses(
            "postgresql://app@%2Fvar%2Frun%2Fpostgresql/shop",
            "psycopg2",
            {"user": "app", "host": "/var/run/postgresql", "dbname": "shop"},
        )

    def test_postgresqlHostListBecomesLibpqMultiHostKeywords(self) -> None:
        """
        Several hosts become libpq's multi-host keywords, as text, for
        psycopg2 and psycopg 3 alike; C{target_session_attrs} passes on.
        """
        for scheme, driver in [
            ("postgresql", "psycopg2"),
            ("postgres", "psycopg2"),
            ("postgresql+psycopg2", "psycopg2"),
            ("postgresql+psycopg", "psycopg"),
        ]:
            self.assertParses(
                "%s://app:%s@h1:5433,h2:5434,h3:5435/shop?target_session_attrs=read-write" % (scheme, PASSWORD),
                driver,
                {
                    "host": "h1,h2,h3",
                    "port": "5433,5434,5435",
                    "user": "app",
                    "password": PASSWORD,
                    "dbname": "shop",
                    "target_session_attrs": "read-write",
                },
            )

    def test_postgresqlHostWithoutPortHasAnEmptyPortEntry(self) -> None:
        """
        A host written without a port has an empty entry in the port list,
        which libpq reads as its default port; with no port at all there
        is no port list, and C{?port=} may give one port for every host.
        """
        self.assertParses("postgresql://h1,h2:5433/shop", "psycopg2", {"host": "h1,h2", "port": ",5433", "dbname": "shop"})
        self.assertParses("postgresql://h1:5433,h2/shop", "psycopg2", {"host": "h1,h2", "port": "5433,", "dbname": "shop"})
        self.assertParses("postgresql://h1,h2/shop", "psycopg2", {"host": "h1,h2", "dbname": "shop"})
        self.assertParses(
            "postgresql://h1,h2/shop?port=5433", "psycopg2", {"host": "h1,h2", "port": "5433", "dbname": "shop"}
        )

    def test_postgresqlHostListMatchesLibpqsOwnURIs(self) -> None:
        """
        Where a host has a port, the keywords are those libpq's own URI
        parser gives for the same URL (libpq writes an empty entry for a
        host without a port, so C{",5433"} means the default port then
        5433).
        """
        extensions = require_driver("psycopg2.extensions")
        for url in [
            "postgresql://app:%s@h1:5433,h2:5434/shop?target_session_attrs=read-only" % (PASSWORD,),
            "postgresql://app@h1,h2:5433,h3/shop",
            "postgresql://app@[::1]:5433,[2001:db8::7],db:5434/shop",
            "postgresql://app@%2Fvar%2Frun%2Fpostgresql,db:5433/shop",
        ]:
            self.assertEqual(parse_url(url).connect_kwargs, extensions.parse_dsn(url), url)

    def test_hostListIPv6AndSockets(self) -> None:
        """
        Entries of a host list may be IPv6 addresses in brackets, with or
        without a port, or percent-encoded socket directories.
        """
        self.assertParses(
            "postgresql://app@[::1]:5433,[2001:db8::7],db:5434/shop",
            "psycopg2",
            {"user": "app", "host": "::1,2001:db8::7,db", "port": "5433,,5434", "dbname": "shop"},
        )
        self.assertParses(
            "postgresql+psycopg://app@%2Fvar%2Frun%2Fpostgresql,db:5433/shop",
            "psycopg",
            {"user": "app", "host": "/var/run/postgresql,db", "port": ",5433", "dbname": "shop"},
        )
        self.assertParses(
            "mysql://app@[::1]:3307,db/shop",
            "pymysql",
            {"user": "app", "host": "::1,db", "port": "3307,", "database": "shop"},
        )

    def test_mysqlHostListBecomesHostAndPortLists(self) -> None:
        """
        For PyMySQL and mysqlclient, several hosts become text lists, which
        the MySQL driver layer splits; C{target_session_attrs} is its
        keyword.
        """
        for scheme, driver in [
            ("mysql", "pymysql"),
            ("mariadb", "pymysql"),
            ("mysql+pymysql", "pymysql"),
            ("mysql+mysqldb", "MySQLdb"),
            ("mariadb+mysqldb", "MySQLdb"),
        ]:
            self.assertParses(
                "%s://app:%s@h1:3306,h2:3307/shop?target_session_attrs=read-write" % (scheme, PASSWORD),
                driver,
                {
                    "host": "h1,h2",
                    "port": "3306,3307",
                    "user": "app",
                    "password": PASSWORD,
                    "database": "shop",
                    "target_session_attrs": "read-write",
                },
            )

    def test_hostWithoutPortHasAnEmptyEntryForEveryDriver(self) -> None:
        """
        A MySQL host list is written as libpq's: a host written without a
        port has an empty entry (the driver's default port), and a list
        without ports has no C{port} at all.
        """
        self.assertParses("mysql://h1,h2:3307/shop", "pymysql", {"host": "h1,h2", "port": ",3307", "database": "shop"})
        self.assertParses("mysql+mysqldb://h1,h2/shop", "MySQLdb", {"host": "h1,h2", "database": "shop"})

    def test_singleHostUnchangedByTargetSessionAttrs(self) -> None:
        """
        One host stays a host and an integer port (for MySQL) as before;
        C{target_session_attrs} is passed on beside them.
        """
        self.assertParses(
            "mysql://app@db:3307/shop?target_session_attrs=read-write",
            "pymysql",
            {"user": "app", "host": "db", "port": 3307, "database": "shop", "target_session_attrs": "read-write"},
        )
        self.assertParses(
            "postgresql://app@db:5433/shop?target_session_attrs=primary",
            "psycopg2",
            {"user": "app", "host": "db", "port": 5433, "dbname": "shop", "target_session_attrs": "primary"},
        )

    def test_targetSessionAttrsValues(self) -> None:
        """
        PostgreSQL takes libpq 15's values; MySQL and MariaDB C{any} and
        C{read-write}.
        """
        for value in ["any", "read-write", "read-only", "primary", "standby", "prefer-standby"]:
            for scheme in ["postgresql", "postgresql+psycopg"]:
                parsed = parse_url("%s://h1,h2/shop?target_session_attrs=%s" % (scheme, value))
                self.assertEqual(parsed.connect_kwargs["target_session_attrs"], value)
        for value in ["any", "read-write"]:
            for scheme in ["mysql", "mysql+mysqldb"]:
                parsed = parse_url("%s://h1,h2/shop?target_session_attrs=%s" % (scheme, value))
                self.assertEqual(parsed.connect_kwargs["target_session_attrs"], value)

    def test_commaInThePasswordIsNoHostList(self) -> None:
        """
        Hosts are what follows the last C{@}: a comma in the password,
        encoded or not, makes no host list.
        """
        for password in ["a,b", "a%2Cb"]:
            self.assertParses(
                "postgresql://app:%s@db/shop" % (password,),
                "psycopg2",
                {"user": "app", "password": "a,b", "host": "db", "dbname": "shop"},
            )
        self.assertParses(
            "mysql://app:a,b@h1,h2:3307/shop",
            "pymysql",
            {"user": "app", "password": "a,b", "host": "h1,h2", "port": ",3307", "database": "shop"},
        )

    def test_mysqlUnixSocket(self) -> None:
        self.assertParses(
            "mysql://app@localhost/shop?unix_socket=/run/mysqld/mysqld.sock",
            "pymysql",
            {"user": "app", "host": "localhost", "database": "shop", "unix_socket": "/run/mysqld/mysqld.sock"},
        )

    def test_libpqOptionsPassThroughAsText(self) -> None:
        """
        libpq takes text, so every driver option goes as it is
        (percent-decoded; a C{+} stays a plus, as in libpq's own URIs).
        """
        parsed = parse_url(
            "postgresql+psycopg:///shop?sslmode=require&connect_timeout=5"
            "&application_name=a+b%20c&options=-c%20search_path%3Dx&host=h1,h2&port=5432,5433"
        )
        self.assertEqual(
            parsed.connect_kwargs,
            {
                "dbname": "shop",
                "sslmode": "require",
                "connect_timeout": "5",
                "application_name": "a+b c",
                "options": "-c search_path=x",
                "host": "h1,h2",
                "port": "5432,5433",
            },
        )

    def test_pymysqlOptionsConverted(self) -> None:
        """
        PyMySQL's numeric options become numbers (its timeouts may be
        fractional) and its flags booleans; other options stay text.
        """
        parsed = parse_url(
            "mysql://db/shop?connect_timeout=5&read_timeout=2.5&write_timeout=30&ssl_disabled=true"
            "&autocommit=off&local_infile=0&charset=utf8mb4&port=3308&max_allowed_packet=1024"
        )
        self.assertEqual(
            parsed.connect_kwargs,
            {
                "host": "db",
                "database": "shop",
                "connect_timeout": 5,
                "read_timeout": 2.5,
                "write_timeout": 30,
                "ssl_disabled": True,
                "autocommit": False,
                "local_infile": False,
                "charset": "utf8mb4",
                "port": 3308,
                "max_allowed_packet": 1024,
            },
        )
        self.assertIsInstance(parsed.connect_kwargs["connect_timeout"], int)

    def test_mysqldbOptionsConverted(self) -> None:
        """
        mysqlclient's timeouts are whole seconds; its flags are booleans.
        """
        parsed = parse_url(
            "mysql+mysqldb://db/shop?connect_timeout=5&read_timeout=7&autocommit=yes&compress=1&ssl_mode=DISABLED"
        )
        self.assertEqual(
            parsed.connect_kwargs,
            {
                "host": "db",
                "database": "shop",
                "connect_timeout": 5,
                "read_timeout": 7,
                "autocommit": True,
                "compress": True,
                "ssl_mode": "DISABLED",
            },
        )

    def test_sqliteOptionsConverted(self) -> None:
        parsed = parse_url(
            "sqlite:///x.db?timeout=2.5&detect_types=1&isolation_level=none&check_same_thread=true&uri=false"
        )
        self.assertEqual(
            parsed.connect_kwargs,
            {
                "database": "x.db",
                "timeout": 2.5,
                "detect_types": 1,
                "isolation_level": None,
                "check_same_thread": True,
                "uri": False,
            },
        )
        self.assertEqual(parse_url("sqlite:///x.db?isolation_level=IMMEDIATE").connect_kwargs["isolation_level"], "IMMEDIATE")

    def test_poolOptions(self) -> None:
        """
        C{cp_*} parameters become the pool's options, as Python values.
        """
        self.assertParses(
            "postgresql://db/shop?cp_min=2&cp_max=10&cp_replays=0&cp_name=shop&cp_noisy=true"
            "&cp_reconnect=no&cp_good_sql=SELECT%202&cp_health_check=0&cp_max_lifetime=1800"
            "&cp_stall_timeout=12.5&cp_conflict_retries=3",
            "psycopg2",
            {"host": "db", "dbname": "shop"},
            {
                "cp_min": 2,
                "cp_max": 10,
                "cp_replays": 0,
                "cp_name": "shop",
                "cp_noisy": True,
                "cp_reconnect": False,
                "cp_good_sql": "SELECT 2",
                "cp_health_check": 0.0,
                "cp_max_lifetime": 1800.0,
                "cp_stall_timeout": 12.5,
                "cp_conflict_retries": 3,
            },
        )

    def test_secondsMayBeTurnedOff(self) -> None:
        """
        C{none} or C{off} (any case) turns off the health check, the
        recycling and the stall bound.
        """
        parsed = parse_url("mysql://db?cp_health_check=none&cp_max_lifetime=OFF&cp_stall_timeout=None")
        self.assertEqual(
            parsed.pool_kwargs, {"cp_health_check": None, "cp_max_lifetime": None, "cp_stall_timeout": None}
        )

    def test_booleanWords(self) -> None:
        for word, value in [("true", True), ("YES", True), ("on", True), ("1", True),
                            ("false", False), ("No", False), ("off", False), ("0", False)]:
            self.assertEqual(parse_url("sqlite://?cp_noisy=" + word).pool_kwargs, {"cp_noisy": value})

    def test_policyFailFast(self) -> None:
        policy = parse_url("postgresql://db?cp_policy=fail_fast").pool_kwargs["cp_policy"]
        self.assertIsInstance(policy, FailFast)

    def test_policyWait(self) -> None:
        """
        C{cp_policy=wait} is L{WaitForDatabase} with its defaults, or with
        the C{cp_wait_*} settings given.
        """
        policy = parse_url("postgresql://db?cp_policy=wait").pool_kwargs["cp_policy"]
        self.assertEqual(repr(policy), repr(WaitForDatabase()))
        policy = parse_url(
            "postgresql://db?cp_policy=WAIT&cp_wait_initial_delay=0.5&cp_wait_factor=3"
            "&cp_wait_max_delay=20&cp_wait_deadline=120"
        ).pool_kwargs["cp_policy"]
        self.assertIsInstance(policy, WaitForDatabase)
        self.assertEqual(
            (policy.initial_delay, policy.factor, policy.max_delay, policy.deadline), (0.5, 3.0, 20.0, 120.0)
        )
        policy = parse_url("postgresql://db?cp_wait_deadline=none&cp_policy=wait").pool_kwargs["cp_policy"]
        self.assertIsNone(policy.deadline)
        for text, interval in [("0.02", 0.02), ("none", None)]:
            policy = parse_url("postgresql://db?cp_policy=wait&cp_wait_fast_probe_interval=" + text).pool_kwargs[
                "cp_policy"
            ]
            self.assertEqual(policy.fast_probe_interval, interval)
        self.assertRaises(
            ConfigurationError, parse_url, "postgresql://db?cp_policy=wait&cp_wait_fast_probe_interval=-1"
        )
        policy = parse_url("postgresql://db?cp_policy=wait&cp_wait_fast_probe_ratio=0.01").pool_kwargs["cp_policy"]
        self.assertEqual(policy.fast_probe_ratio, 0.01)
        for bad in ("2", "-0.1", "x"):
            error = self.assertRaises(
                ConfigurationError, parse_url, "postgresql://db?cp_policy=wait&cp_wait_fast_probe_ratio=" + bad
            )
            self.assertIn("cp_wait_fast_probe_ratio", str(error))

    def test_emptyQueryPiecesAreIgnored(self) -> None:
        self.assertEqual(parse_url("sqlite://?&cp_max=2&&").pool_kwargs, {"cp_max": 2})
        self.assertEqual(parse_url("sqlite://?").pool_kwargs, {})

    def test_whitespaceAroundIsIgnored(self) -> None:
        """
        A URL read from a file or an environment variable may end with a
        newline.
        """
        self.assertEqual(parse_url("  postgresql://db/shop\n").connect_kwargs, {"host": "db", "dbname": "shop"})

    def test_reprHidesPasswords(self) -> None:
        """
        A L{ParsedURL}'s repr shows everything but passwords, whether from
        the user part or from the query.
        """
        for url in [
            "postgresql://app:%s@db/shop" % (PASSWORD,),
            "postgresql://app@db/shop?password=%s" % (PASSWORD,),
            "postgresql://app@db/shop?sslpassword=%s" % (PASSWORD,),
            "mysql://app@db/shop?passwd=%s" % (PASSWORD,),
        ]:
            text = repr(parse_url(url))
            self.assertNotIn(PASSWORD, text)
            self.assertIn("'***'", text)
            self.assertIn("'db'", text)
        for url in [
            "postgresql://app:%s@db:5433,h2/shop" % (PASSWORD,),
            "mysql+mysqldb://app:%s@db,h2:3307/shop" % (PASSWORD,),
        ]:
            text = repr(parse_url(url))
            self.assertNotIn(PASSWORD, text)
            self.assertIn("'***'", text)
            self.assertIn("'db,h2'", text)

    def test_argumentsMergeOverrides(self) -> None:
        """
        L{ParsedURL.arguments} gives the pool's arguments; overrides win
        over the URL, for pool options and connect() keywords alike.
        """
        parsed = parse_url("postgresql://app:%s@db/shop?cp_max=5&cp_policy=wait" % (PASSWORD,))
        args, kwargs = parsed.arguments(cp_max=2, password="other", cp_policy=FailFast(), sslmode="disable")
        self.assertEqual(args, ("psycopg2",))
        self.assertEqual(kwargs["cp_max"], 2)
        self.assertEqual(kwargs["password"], "other")
        self.assertIsInstance(kwargs["cp_policy"], FailFast)
        self.assertEqual(kwargs["sslmode"], "disable")
        self.assertEqual((kwargs["host"], kwargs["user"], kwargs["dbname"]), ("db", "app", "shop"))
        # The parsed URL itself is unchanged.
        self.assertEqual(parsed.pool_kwargs["cp_max"], 5)

    def test_memoryDatabaseGetsOneConnection(self) -> None:
        """
        Each connection to C{:memory:} is a database of its own, so a
        memory URL gets C{cp_min=1, cp_max=1} unless told otherwise, and
        never C{cp_min > cp_max}.
        """
        self.assertEqual(parse_url("sqlite://").arguments()[1]["cp_max"], 1)
        self.assertEqual(parse_url("sqlite://").arguments()[1]["cp_min"], 1)
        for query, overrides, expected in [
            ("?cp_max=4", {}, (1, 4)),
            ("?cp_min=3", {}, (3, 3)),
            ("", {"cp_min": 2}, (2, 2)),
            ("?cp_max=3", {"cp_min": 0}, (0, 3)),
        ]:
            kwargs = parse_url("sqlite:///:memory:" + query).arguments(**overrides)[1]
            self.assertEqual((kwargs["cp_min"], kwargs["cp_max"]), expected, (query, overrides))
        kwargs = parse_url("sqlite:///file.db").arguments()[1]
        self.assertNotIn("cp_max", kwargs)

    def test_urlOptionsMatchThePool(self) -> None:
        """
        The URL knows every C{cp_*} keyword the pool takes, no more: a new
        pool option must be taught to the URL parser too.
        """
        pool_options = {"cp_" + name for name in ReconnectingConnectionPool.CP_ARGS} | {"cp_reactor"}
        url_options = (
            set(url_module._POOL_OPTIONS) | {"cp_policy"} | set(url_module._NOT_IN_URLS)
        )
        self.assertEqual(url_options, pool_options)

    def test_exported(self) -> None:
        self.assertIs(txreconnect.parse_url, url_module.parse_url)
        self.assertIn("parse_url", txreconnect.__all__)


def chained_text(error: BaseException) -> str:
    """
    Everything an exception can show: its str, repr and args, the
    formatted traceback, and the same for every exception chained to it
    as its cause or context, shown or not.
    """
    texts: List[str] = ["".join(traceback.format_exception(type(error), error, error.__traceback__))]
    seen = set()
    current: BaseException | None = error
    pending = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current), repr(current.args)]
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]
    return "\n".join(texts)


class ErrorTests(SynchronousTestCase):
    """
    Bad URLs raise L{ConfigurationError} naming the bad part, never
    showing the password, chaining nothing.
    """

    def assertRejected(self, url: Any, *fragments: str, secret: str = PASSWORD) -> ConfigurationError:
        error = self.assertRaises(ConfigurationError, parse_url, url)
        message = str(error)
        self.assertTrue(message.startswith("invalid database URL: ") or "must be a str" in message, message)
        for fragment in fragments:
            self.assertIn(fragment, message, url)
        text = chained_text(error)
        for leak in {secret, q(secret)}:
            self.assertNotIn(leak, text, url)
        self.assertIsNone(error.__cause__)
        self.assertIsNone(error.__context__)
        return error

    def url(self, rest: str) -> str:
        return "postgresql://app:%s@db%s" % (PASSWORD, rest)

    def test_badPort(self) -> None:
        for rest in [":99999/shop", ":0/shop", ":65536/shop", ":-1/shop"]:
            self.assertRejected(self.url(rest), "port", "out of range")
        for rest in [":port/shop", ":54x/shop"]:
            self.assertRejected(self.url(rest), "port", "not a number")
        self.assertRejected(self.url(":/shop"), "port", "empty")

    def test_badHost(self) -> None:
        self.assertRejected("postgresql://app:%s@[::1/shop" % (PASSWORD,), "host")

    def test_malformedHostList(self) -> None:
        """
        An empty entry, a bad or missing port, a bad host: the message
        says which host of the list, without quoting it.
        """
        for hosts, fragments in [
            ("h1,,h2", ["host 2 of 3", "empty"]),
            ("h1,h2,", ["host 3 of 3", "empty"]),
            (",h1", ["host 1 of 2", "empty"]),
            ("h1:x,h2", ["host 1 of 2", "port", "not a number"]),
            ("h1,h2:54x", ["host 2 of 2", "port", "not a number"]),
            ("h1,h2:+54", ["host 2 of 2", "port", "not a number"]),
            ("h1,h2:99999", ["host 2 of 2", "port", "out of range"]),
            ("h1:0,h2", ["host 1 of 2", "port", "out of range"]),
            ("h1,h2:65536", ["host 2 of 2", "port", "out of range"]),
            ("h1,h2:", ["host 2 of 2", "port", "empty"]),
            ("h1,[::1", ["host 2 of 2", "host is not valid"]),
            ("h1,h[2]", ["host 2 of 2", "host is not valid"]),
            ("h1,h2:1:2", ["host 2 of 2", "port"]),
            ("h1,:5433", ["host 2 of 2", "no host name"]),
            ("h1,h%2C2", ["host 2 of 2", "','"]),
            ("h1,h%ff", ["host 2 of 2", "UTF-8"]),
        ]:
            for scheme in ["postgresql", "mysql"]:
                self.assertRejected("%s://app:%s@%s/shop" % (scheme, PASSWORD, hosts), *fragments)

    def test_hostListPortsGivenTwice(self) -> None:
        """
        A host list that gives ports refuses C{?port=}; one that gives none
        takes it for every host.
        """
        self.assertRejected("mysql://app:%s@h1:1,h2/shop?port=3307" % (PASSWORD,), "port", "both", "h1:port,h2:port")
        self.assertRejected("postgresql://app:%s@h1:1,h2/shop?port=5433" % (PASSWORD,), "port", "both")
        parsed = parse_url("mysql://h1,h2/shop?port=3307")
        self.assertEqual(parsed.connect_kwargs, {"host": "h1,h2", "port": 3307, "database": "shop"})
        self.assertRejected("postgresql://app:%s@h1,h2/shop?host=h3" % (PASSWORD,), "host", "both")

    def test_sqliteHostList(self) -> None:
        self.assertRejected("sqlite://h1,h2/x.db", "sqlite", "no host list")
        self.assertRejected("sqlite://app:%s@h1:1,h2:2/x.db" % (PASSWORD,), "sqlite", "no host list")

    def test_badTargetSessionAttrs(self) -> None:
        """
        A value libpq 15 does not know, or that the MySQL driver layer does
        not support, is refused now, naming the value.
        """
        for url, fragments in [
            ("postgresql://app:%s@h1,h2/shop?target_session_attrs=read_write", ["target_session_attrs=read_write"]),
            ("postgresql+psycopg://app:%s@h1/shop?target_session_attrs=Primary", ["target_session_attrs=Primary"]),
            ("postgresql://app:%s@h1/shop?target_session_attrs=", ["target_session_attrs="]),
            ("mysql://app:%s@h1,h2/shop?target_session_attrs=read-only", ["target_session_attrs=read-only", "read-write"]),
            ("mysql+mysqldb://app:%s@h1/shop?target_session_attrs=primary", ["target_session_attrs=primary"]),
        ]:
            self.assertRejected(url % (PASSWORD,), *fragments)
        self.assertRejected("sqlite:///x.db?target_session_attrs=any", "unknown sqlite3 option target_session_attrs")

    def test_unknownScheme(self) -> None:
        self.assertRejected("oracle://app:%s@db/shop" % (PASSWORD,), "unknown scheme 'oracle'", "postgresql")
        self.assertRejected("http://app:%s@db/shop" % (PASSWORD,), "'http'")

    def test_unknownDriver(self) -> None:
        self.assertRejected("postgresql+pgx://app:%s@db/shop" % (PASSWORD,), "'pgx'", "pg8000", "psycopg2")
        self.assertRejected("mysql+connector://app:%s@db/shop" % (PASSWORD,), "'connector'", "mysqldb")
        self.assertRejected("sqlite+pysqlcipher:///x.db", "'pysqlcipher'")

    def test_noScheme(self) -> None:
        self.assertRejected("", "no scheme")
        self.assertRejected("//app:%s@db/shop" % (PASSWORD,), "no scheme")
        # Without "scheme://" the user name looks like a scheme.
        self.assertRejected("app:%s@db/shop" % (PASSWORD,), "scheme 'app'")

    def test_noSlashes(self) -> None:
        self.assertRejected("postgresql:shop", "'postgresql:' must be followed by '//'")

    def test_notText(self) -> None:
        self.assertRejected(("postgresql://app:%s@db" % (PASSWORD,)).encode(), "str", "bytes")
        self.assertRejected(None, "str")

    def test_fragment(self) -> None:
        self.assertRejected(self.url("/shop#top"), "#fragment")

    def test_badDatabase(self) -> None:
        self.assertRejected(self.url("/shop/more"), "database name")
        self.assertRejected(self.url("//shop"), "database name")

    def test_badPercentEncoding(self) -> None:
        self.assertRejected("postgresql://app:%%ff%s@db/shop" % (PASSWORD,), "password", "UTF-8")
        self.assertRejected("postgresql://%%ff:%s@db/shop" % (PASSWORD,), "user name", "UTF-8")
        self.assertRejected(self.url("/shop?application_name=%ff"), "application_name", "UTF-8")

    def test_unencodedReservedCharactersInThePassword(self) -> None:
        """
        A C{/}, C{?}, C{#} or C{@} left unencoded in the password changes
        how the URL splits; whatever part then looks wrong, the message
        says to percent-encode the password and quotes none of it.
        """
        for password in [
            "ab/" + PASSWORD,
            "12345/" + PASSWORD,
            "12345?" + PASSWORD,
            "12345#" + PASSWORD,
            "ab?" + PASSWORD,
            PASSWORD + "@x",
            "ab@" + PASSWORD,
            "99999/" + PASSWORD,
            # With a comma before the '/', what hyperlink would take for
            # the host is a host list.
            "ab,cd/" + PASSWORD,
            "12,34/" + PASSWORD,
            "12,:34/" + PASSWORD,
            "12,,34/" + PASSWORD,
            "ab@cd," + PASSWORD,
        ]:
            url = "postgresql://app:%s@db/shop" % (password,)
            error = self.assertRejected(url, "percent-encode", secret=password)
            self.assertNotIn(PASSWORD, chained_text(error))

    def test_sqliteWithServerParts(self) -> None:
        self.assertRejected("sqlite://app:%s@/x.db" % (PASSWORD,), "no user, host or port")
        self.assertRejected("sqlite://host/x.db", "no user, host or port")
        self.assertRejected("sqlite://:1/x.db", "no user, host or port")
        self.assertRejected("sqlite:///", "empty path")
        self.assertRejected("sqlite:x.db", "'sqlite:' must be followed by '//'")

    def test_badPoolValues(self) -> None:
        for query, fragment in [
            ("cp_max=lots", "cp_max=lots"),
            ("cp_max=0", "cp_max=0"),
            ("cp_max=2.5", "cp_max=2.5"),
            ("cp_min=-1", "cp_min=-1"),
            ("cp_replays=once", "cp_replays=once"),
            ("cp_conflict_retries=-2", "cp_conflict_retries=-2"),
            ("cp_noisy=maybe", "cp_noisy=maybe"),
            ("cp_reconnect=", "cp_reconnect="),
            ("cp_health_check=soon", "cp_health_check=soon"),
            ("cp_health_check=-1", "cp_health_check"),
            ("cp_max_lifetime=0", "cp_max_lifetime"),
            ("cp_stall_timeout=inf", "cp_stall_timeout=inf"),
            ("cp_stall_timeout=nan", "cp_stall_timeout=nan"),
            ("cp_policy=sometimes", "cp_policy=sometimes"),
            ("cp_policy=wait&cp_wait_factor=0.5", "cp_wait_factor=0.5"),
            ("cp_policy=wait&cp_wait_initial_delay=0", "cp_wait_initial_delay"),
            ("cp_policy=wait&cp_wait_max_delay=never", "cp_wait_max_delay=never"),
            ("cp_policy=wait&cp_wait_deadline=-5", "cp_wait_deadline"),
        ]:
            self.assertRejected(self.url("/shop?" + query), fragment)

    def test_waitSettingsNeedTheWaitPolicy(self) -> None:
        self.assertRejected(self.url("/shop?cp_wait_deadline=10"), "cp_wait_deadline", "cp_policy=wait")
        self.assertRejected(
            self.url("/shop?cp_policy=fail_fast&cp_wait_factor=3"), "cp_wait_factor", "cp_policy=wait"
        )

    def test_unknownPoolOption(self) -> None:
        self.assertRejected(self.url("/shop?cp_maxx=3"), "unknown pool option cp_maxx", "cp_max")

    def test_objectOptionsAreNotForURLs(self) -> None:
        for name in ["cp_openfun", "cp_reactor"]:
            self.assertRejected(self.url("/shop?%s=x" % (name,)), name, "from_url()")

    def test_badQueryParameters(self) -> None:
        self.assertRejected(self.url("/shop?cp_max=2&cp_max=3"), "cp_max", "more than once")
        self.assertRejected(self.url("/shop?sslmode=a&sslmode=b"), "sslmode", "more than once")
        self.assertRejected(self.url("/shop?cp_max"), "cp_max", "no value")
        self.assertRejected(self.url("/shop?connect-timeout=3"), "'connect-timeout'", "not valid")
        self.assertRejected(self.url("/shop?=3"), "not valid")

    def test_partGivenTwice(self) -> None:
        """
        A part of the URL given again in the query is refused, rather than
        one silently winning.
        """
        self.assertRejected(self.url("/shop?host=/tmp"), "host", "both")
        self.assertRejected(self.url("/shop?dbname=other"), "dbname", "both")
        self.assertRejected(self.url("/shop?password=other"), "password", "both")
        self.assertRejected("mysql://app:%s@db:3306/shop?port=3307" % (PASSWORD,), "port", "both")

    def test_badDriverValues(self) -> None:
        for url, fragment in [
            ("mysql://app:%s@db/shop?connect_timeout=soon", "connect_timeout=soon"),
            ("mysql://app:%s@db/shop?ssl_disabled=perhaps", "ssl_disabled=perhaps"),
            ("mysql://app:%s@db/shop?autocommit=2", "autocommit=2"),
            ("mysql://app:%s@db/shop?port=x", "port=x"),
            ("mysql+mysqldb://app:%s@db/shop?read_timeout=2.5", "read_timeout=2.5"),
        ]:
            self.assertRejected(url % (PASSWORD,), fragment)
        self.assertRejected("sqlite:///x.db?timeout=long", "timeout=long")

    def test_unknownSqliteOption(self) -> None:
        """
        sqlite3.connect() has a fixed set of keywords: another is refused
        now, not when a pool thread connects.
        """
        self.assertRejected("sqlite:///x.db?journal_mode=wal", "journal_mode", "check_same_thread")

    def test_passwordNeverEchoed(self) -> None:
        """
        Even where a value is quoted in the message, a password (from the
        user part or the query) is masked.
        """
        error = self.assertRejected(self.url("/shop?cp_max=" + PASSWORD), "cp_max=***")
        self.assertIn("not an integer", str(error))
        self.assertRejected(
            "postgresql://app@db/shop?password=%s&cp_noisy=%s" % (PASSWORD, PASSWORD), "cp_noisy=***"
        )
        self.assertRejected(
            "postgresql://app:%s@db/shop?cp_name=x&cp_policy=%s" % (q(PASSWORD + "/"), q(PASSWORD + "/")),
            "cp_policy=***",
            secret=PASSWORD + "/",
        )

    def test_fromURLRaisesTheSame(self) -> None:
        """
        L{ReconnectingConnectionPool.from_url} raises before making a pool.
        """
        error = self.assertRaises(
            ConfigurationError, ReconnectingConnectionPool.from_url, self.url(":99999/shop")
        )
        self.assertNotIn(PASSWORD, chained_text(error))
        self.assertIn("port", str(error))


class FromURLTests(TestCase):
    """
    L{ReconnectingConnectionPool.from_url} builds a configured pool
    (without connecting: nothing here runs a query).
    """

    def from_url(self, url: str, **pool_kw: Any) -> ReconnectingConnectionPool:
        pool = ReconnectingConnectionPool.from_url(url, **pool_kw)
        self.addCleanup(pool.close)
        return pool

    def test_optionsReachThePool(self) -> None:
        pool = self.from_url(
            "sqlite:///%s?cp_min=1&cp_max=3&cp_replays=2&cp_health_check=5&cp_max_lifetime=600"
            "&cp_stall_timeout=off&cp_name=orders&cp_policy=wait&cp_wait_deadline=30&timeout=2"
            % (self.mktemp(),)
        )
        self.assertIsInstance(pool, ReconnectingConnectionPool)
        self.assertIs(pool.dbapi, sqlite3)
        self.assertEqual((pool.min, pool.max, pool.name), (1, 3, "orders"))
        self.assertEqual((pool.replays, pool.health_check, pool.max_lifetime), (2, 5.0, 600.0))
        self.assertIsNone(pool.stall_timeout)
        self.assertIsInstance(pool.policy, WaitForDatabase)
        self.assertEqual(pool.policy.deadline, 30.0)  # type: ignore[attr-defined]
        self.assertEqual((pool.connkw["timeout"], pool.connkw["check_same_thread"]), (2, False))

    def test_keywordsOverrideTheURL(self) -> None:
        policy = FailFast()
        pool = self.from_url(
            "sqlite:///x.db?cp_max=5&cp_policy=wait&timeout=2", cp_max=2, cp_policy=policy, timeout=9
        )
        self.assertEqual(pool.max, 2)
        self.assertIs(pool.policy, policy)
        self.assertEqual(pool.connkw["timeout"], 9)

    def test_subclass(self) -> None:
        class Mine(ReconnectingConnectionPool):
            pass

        self.assertIsInstance(self.from_url_of(Mine, "sqlite://"), Mine)

    def from_url_of(self, cls: Type[ReconnectingConnectionPool], url: str) -> ReconnectingConnectionPool:
        pool = cls.from_url(url)
        self.addCleanup(pool.close)
        return pool

    def test_reprHidesThePassword(self) -> None:
        for scheme, driver in [("postgresql", "psycopg2"), ("postgresql+psycopg", "psycopg"),
                               ("mysql", "pymysql"), ("mysql+mysqldb", "MySQLdb")]:
            require_driver(driver)
            pool = self.from_url("%s://app:%s@db.example:4321/shop?cp_name=web" % (scheme, q(PASSWORD)))
            text = repr(pool)
            self.assertNotIn(PASSWORD, text)
            self.assertIn("db.example", text)
            self.assertIn("4321", text)
            self.assertIn("shop", text)
            self.assertEqual(pool.connkw["password"], PASSWORD)


class _ServerRoundTrip(TestCase):
    """
    C{from_url} against a real server: the shared test user, whose
    password is percent-encoded, and a user with every reserved
    character in its name and password.
    """

    server_class: ClassVar[Type[ThrowawayServer]]
    scheme: ClassVar[str]
    driver_name: ClassVar[str]

    def setUp(self) -> None:
        require_driver(self.driver_name)
        self.server = shared_server(self, self.server_class)

    def url(self, user: str, password: str, query: str = "") -> str:
        return "%s://%s:%s@127.0.0.1:%d/%s%s" % (
            self.scheme,
            q(user),
            q(password),
            self.server.port,
            q(self.server.database),
            query,
        )

    @defer.inlineCallbacks
    def select_one(self, url: str) -> Any:
        pool = ReconnectingConnectionPool.from_url(url)
        self.addCleanup(pool.close)
        pool.start()
        rows = yield pool.runQuery("SELECT 1")
        self.assertEqual([tuple(row) for row in rows], [(1,)])
        self.assertEqual(pool.dbapi.__name__, self.driver_name)
        return pool

    @defer.inlineCallbacks
    def test_selectOne(self) -> Any:
        server: Any = self.server
        pool = yield self.select_one(
            self.url(server.user, server.password, "?cp_min=1&cp_max=2&cp_health_check=30&cp_policy=wait&cp_wait_deadline=20")
        )
        self.assertEqual(pool.connkw["password"], server.password)
        self.assertEqual(pool.max, 2)
        self.assertEqual(pool.health_check, 30.0)
        self.assertNotIn(server.password, repr(pool))

    @defer.inlineCallbacks
    def test_awkwardUserAndPassword(self) -> Any:
        """
        A user whose name and password hold C{@ : / ? # [ ] % & = +},
        spaces and C{;} connects with a URL made by C{quote()}.
        """
        self.create_user(AWKWARD_USER, AWKWARD_PASSWORD)
        pool = yield self.select_one(self.url(AWKWARD_USER, AWKWARD_PASSWORD, "?cp_max=1"))
        self.assertEqual(pool.connkw["user"], AWKWARD_USER)
        self.assertNotIn(AWKWARD_PASSWORD, repr(pool))

    def create_user(self, user: str, password: str) -> None:
        """
        Create a login with access to the test database; a cleanup drops
        it (after the pool closes, since cleanups run last first).
        """
        raise NotImplementedError


class _PostgresRoundTrip(_ServerRoundTrip):
    server_class = PostgresServer

    def create_user(self, user: str, password: str) -> None:
        server: Any = self.server
        ident = '"%s"' % (user.replace('"', '""'),)
        self.addCleanup(server.admin_sql, "DROP ROLE IF EXISTS %s" % (ident,))
        server.admin_sql("CREATE ROLE %s LOGIN PASSWORD '%s'" % (ident, password.replace("'", "''")))



class Psycopg2RoundTripTests(_PostgresRoundTrip):
    scheme = "postgresql"
    driver_name = "psycopg2"

    @defer.inlineCallbacks
    def test_hostListSkipsADeadHost(self) -> Any:
        """
        libpq takes the multi-host keywords a host list gives: with nothing
        listening on the first host's port, it connects to the second.
        """
        server: Any = self.server
        dead = free_port()
        url = "%s://%s:%s@127.0.0.1:%d,127.0.0.1:%d/%s?target_session_attrs=read-write&cp_max=1" % (
            self.scheme,
            q(server.user),
            q(server.password),
            dead,
            server.port,
            q(server.database),
        )
        pool = yield self.select_one(url)
        self.assertEqual(pool.connkw["host"], "127.0.0.1,127.0.0.1")
        self.assertEqual(pool.connkw["port"], "%d,%d" % (dead, server.port))
        self.assertEqual(pool.connkw["target_session_attrs"], "read-write")
        self.assertNotIn(server.password, repr(pool))


class PsycopgRoundTripTests(Psycopg2RoundTripTests):
    scheme = "postgresql+psycopg"
    driver_name = "psycopg"


class Pg8000RoundTripTests(_PostgresRoundTrip):
    scheme = "postgresql+pg8000"
    driver_name = "pg8000"


class PyMySQLRoundTripTests(_ServerRoundTrip):
    server_class = MariaDBServer
    scheme = "mysql+pymysql"
    driver_name = "pymysql"

    def create_user(self, user: str, password: str) -> None:
        server: Any = self.server
        account = "'%s'@'%%'" % (user.replace("'", "''"),)
        self.addCleanup(server.admin_sql, "DROP USER IF EXISTS %s" % (account,))
        server.admin_sql(
            "CREATE USER %s IDENTIFIED BY '%s'; GRANT SELECT ON `%s`.* TO %s"
            % (account, password.replace("'", "''").replace("\\", "\\\\"), server.database, account)
        )


class MySQLdbRoundTripTests(PyMySQLRoundTripTests):
    scheme = "mysql+mysqldb"
    driver_name = "MySQLdb"


# Not a test case of its own: only its subclasses are.
del _ServerRoundTrip, _PostgresRoundTrip


class SqliteRoundTripTests(TestCase):
    """
    C{from_url} with sqlite files, relative and absolute, and memory.
    """

    @defer.inlineCallbacks
    def store_and_read(self, url: str) -> Any:
        pool = ReconnectingConnectionPool.from_url(url)
        self.addCleanup(pool.close)
        pool.start()
        yield pool.runOperation("CREATE TABLE t (x INTEGER)")
        yield pool.runOperation("INSERT INTO t VALUES (42)")
        rows = yield pool.runQuery("SELECT x FROM t")
        self.assertEqual(rows, [(42,)])
        return pool

    @defer.inlineCallbacks
    def test_absolutePath(self) -> Any:
        path = os.path.abspath(self.mktemp()) + " ü.db"
        yield self.store_and_read("sqlite:///" + quote(path))
        with sqlite3.connect(path) as check:
            self.assertEqual(check.execute("SELECT x FROM t").fetchall(), [(42,)])
        check.close()

    @defer.inlineCallbacks
    def test_relativePath(self) -> Any:
        path = self.mktemp()
        self.assertFalse(os.path.isabs(path))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        yield self.store_and_read("sqlite:///%s?cp_max=2" % (quote(path),))
        self.assertTrue(os.path.exists(path))

    @defer.inlineCallbacks
    def test_memory(self) -> Any:
        """
        Every call of a memory database's pool sees the same database.
        """
        for url in ["sqlite://", "sqlite:///:memory:"]:
            pool = yield self.store_and_read(url)
            self.assertEqual(pool.max, 1)

    @defer.inlineCallbacks
    def test_closeClosesConnections(self) -> Any:
        """
        Closing the pool, in the reactor thread, closes every thread's
        connection (sqlite3 refuses that unless C{check_same_thread} is
        false, which file URLs make the default).
        """
        pool = yield self.store_and_read("sqlite:///%s" % (quote(os.path.abspath(self.mktemp())),))
        connections = list(pool.connections.values())
        self.assertTrue(connections)
        pool.close()
        for connection in connections:
            self.assertRaises(sqlite3.ProgrammingError, connection.execute, "SELECT 1")
