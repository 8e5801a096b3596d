"""
What twistar 2.0 needs to run on L{ReconnectingConnectionPool} with
PyMySQL (and psycopg 3) on Python 3.10+: call L{install} once, then set
C{Registry.DBPOOL} as usual::

    from twistar.registry import Registry
    import txreconnect.twistar

    txreconnect.twistar.install()
    Registry.DBPOOL = ReconnectingConnectionPool("pymysql", host="db", ...)

L{install} changes three things in twistar, and nothing else:

  - B{SQL dialect by database, not by driver name.}
    C{Registry.getConfig} picks twistar's SQL dialect from
    C{Registry.DBPOOL.dbapi.__name__} and knows only C{MySQLdb},
    C{sqlite3}, C{psycopg2} and C{pyodbc}; any other driver raises
    C{NotImplementedError}.  After L{install}, every driver txreconnect
    knows for MySQL or PostgreSQL (such as C{pymysql} or C{psycopg}, i.e.
    psycopg 3) gets the dialect of its database, L{DIALECTS}.

  - B{Table names on Python 3.11+.}  twistar infers a table name from the
    class name with the bundled BermiInflector, whose plural rule
    C{'^(?i)(ox)$'} puts its global flag after C{^}.  Python 3.11 rejects
    that (C{re.error: global flags not at the start of the expression}),
    and since the rules are tried in order, every class name that no
    earlier rule matches (C{User}, C{Picture}, C{Box}, ...) fails.
    L{install} moves such flags to the start of the pattern.

  - B{A lost connection while reading a table's columns.}  The first time
    twistar saves a model of a table, it reads the table's columns, and
    turns any error of that query into C{ImaginaryTableError("Table ...
    does not exist.")}.  When the error is a lost connection, L{install}
    lets the driver's own error through instead, so that the pool sees
    the disconnection and replays the save, rather than failing with a
    misleading error.

This module imports twistar; C{import txreconnect} does not import this
module, so nothing changes for programs that do not use twistar.
"""

from __future__ import annotations

import importlib
import re
import sys
from typing import Any, Callable, Dict, Optional

import BermiInflector.Rules.English as _english_rules
from twistar.dbconfig.base import InteractionBase
from twistar.exceptions import ImaginaryTableError
from twistar.registry import Registry

from txreconnect.drivers import driver_class, driver_for

__all__ = ["DIALECTS", "flags_first", "install"]


def _mysql_dialect() -> Any:
    """
    Import twistar's MySQL dialect, C{MySQLDBConfig}, even where only
    PyMySQL is installed.

    C{twistar/dbconfig/mysql.py} imports C{MySQLdb} on its line 2, only
    for its own C{ReconnectingMySQLConnectionPool}, which we do not use.
    If C{MySQLdb} (mysqlclient) cannot be imported, PyMySQL stands in for
    it during that import alone, as C{pymysql.install_as_MySQLdb()} would
    do for the whole process; C{sys.modules} is then put back as it was.
    (These driver names are about twistar's import, not about the pool's
    driver, whichever MySQL driver that is.)

    @return: the C{MySQLDBConfig} class.
    @raise ImportError: neither mysqlclient nor PyMySQL is importable.
    """
    name = "twistar.dbconfig.mysql"
    try:
        return importlib.import_module(name).MySQLDBConfig
    except ImportError as e:
        if e.name != "MySQLdb":
            raise
    missing = object()
    previous = sys.modules.get("MySQLdb", missing)
    # twistar's import needs a module named MySQLdb; PyMySQL can be one.
    sys.modules["MySQLdb"] = importlib.import_module("pymysql")
    try:
        return importlib.import_module(name).MySQLDBConfig
    finally:
        if previous is missing:
            del sys.modules["MySQLdb"]
        else:
            sys.modules["MySQLdb"] = previous  # type: ignore[assignment]


def _postgres_dialect() -> Any:
    """
    @return: twistar's PostgreSQL dialect, the C{PostgreSQLDBConfig} class.
    """
    return importlib.import_module("twistar.dbconfig.postgres").PostgreSQLDBConfig


#: Database families (the L{Driver.family<txreconnect.drivers.Driver>} of
#: C{pool.dbapi}), each with a function that returns the twistar config
#: class of its SQL dialect.  Drivers of other families (SQLite, unknown
#: drivers) are left to twistar.
DIALECTS: Dict[str, Callable[[], Any]] = {
    "mysql": _mysql_dialect,
    "postgresql": _postgres_dialect,
}


def _getConfig(registry: Any) -> Any:
    """
    C{Registry.getConfig}, knowing every driver of the families in
    L{DIALECTS} too: for them, set C{Registry.IMPL} (twistar's cache of
    the dialect) before twistar's own C{getConfig} reads it.
    """
    if Registry.IMPL is None and Registry.DBPOOL is not None:
        dialect = DIALECTS.get(driver_class(Registry.DBPOOL.dbapi.__name__).family)
        if dialect is not None:
            Registry.IMPL = dialect()()
    return _twistar_getConfig()


#: twistar's own C{Registry.getConfig}, kept by L{install}.
_twistar_getConfig: Callable[[], Any] = Registry.getConfig

# '^(?i)...': an anchor, then a group of global flags.
_ANCHOR_THEN_FLAGS = re.compile(r"\^(\(\?[aiLmsux]+\))")


def flags_first(pattern: str) -> str:
    """
    Move the global flags of a pattern that starts with C{^} and then
    global flags to the very start, where Python 3.11+ requires them:
    C{'^(?i)(ox)$'} becomes C{'(?i)^(ox)$'}, which matches the same
    strings.  Any other pattern is returned unchanged.

    @param pattern: a regular expression.
    @return: the same expression, with its flags first.
    """
    found: Optional[re.Match[str]] = _ANCHOR_THEN_FLAGS.match(pattern)
    if found is None:
        return pattern
    return found.group(1) + "^" + pattern[found.end() :]


class _FlagsFirstRe:
    """
    The C{re} module as BermiInflector's English rules see it after
    L{install}: C{search} and C{sub} (the only functions they call, in
    C{pluralize} and C{singularize}) apply L{flags_first} to the pattern;
    everything else is C{re}'s own.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(re, name)

    @staticmethod
    def search(pattern: str, string: str, flags: int = 0) -> Optional[re.Match[str]]:
        return re.search(flags_first(pattern), string, flags)

    @staticmethod
    def sub(pattern: str, repl: Any, string: str, count: int = 0, flags: int = 0) -> str:
        return re.sub(flags_first(pattern), repl, string, count=count, flags=flags)


def _lost_connection(error: BaseException, txn: Any) -> bool:
    """
    @param error: an exception raised by a query on C{txn}.
    @param txn: the C{adbapi.Transaction} the query ran on.
    @return: whether C{error} is a driver error that means the connection
        is lost, as the pool's driver rules (L{driver_for}) judge it.
    """
    pool = Registry.DBPOOL
    if pool is None or not isinstance(error, pool.dbapi.Error):
        return False
    # adbapi.Transaction._connection is the adbapi.Connection, whose
    # _connection is the driver's connection (its closed flag counts).
    raw = getattr(getattr(txn, "_connection", None), "_connection", None)
    return driver_for(pool.dbapi).is_disconnect(error, raw)


def _getSchema(config: Any, tablename: str, txn: Any = None) -> Any:
    """
    C{InteractionBase.getSchema}, except that when its query failed
    because the connection is lost, the driver's error is raised rather
    than C{ImaginaryTableError}, which twistar raises for any error of
    that query (C{twistar/dbconfig/base.py}, lines 314-317).
    """
    try:
        return _twistar_getSchema(config, tablename, txn)
    except ImaginaryTableError as e:
        error = e.__context__
        if error is not None and _lost_connection(error, txn):
            raise error from None
        raise


#: twistar's own C{InteractionBase.getSchema}, kept by L{install}.
_twistar_getSchema: Callable[..., Any] = InteractionBase.getSchema


def install() -> None:
    """
    Make twistar work with L{ReconnectingConnectionPool} (or any adbapi
    pool) on every MySQL and PostgreSQL driver txreconnect knows, such as
    PyMySQL and psycopg 3, and infer table names on Python 3.11+.

    It replaces C{twistar.registry.Registry.getConfig} with one that also
    knows the drivers of the families in L{DIALECTS}; the C{re} module
    seen by C{BermiInflector.Rules.English} with one that applies
    L{flags_first}; and C{twistar.dbconfig.base.InteractionBase.getSchema}
    with one that lets a lost connection through to the pool.  Call it
    once, before the first twistar query; calling it again does nothing.
    On drivers twistar knows (which get the same dialect from L{DIALECTS}
    as from twistar), on class names it already handled and on errors
    other than a lost connection, twistar behaves exactly as before.
    """
    if Registry.__dict__["getConfig"].__func__ is not _getConfig:
        Registry.getConfig = classmethod(_getConfig)
    if InteractionBase.getSchema is not _getSchema:
        InteractionBase.getSchema = _getSchema
    if not isinstance(_english_rules.re, _FlagsFirstRe):
        _english_rules.re = _FlagsFirstRe()
