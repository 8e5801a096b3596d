"""
Per-driver knowledge, looked up by the DB-API module's C{__name__}.

Use L{driver_for} with the module the pool imported (C{pool.dbapi}).  The
driver classes are imported only when asked for, and none of them imports
its driver, so txreconnect imports whatever drivers are installed.
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, Set, Type

from twisted.logger import Logger

from txreconnect.drivers._base import Driver

__all__ = ["Driver", "driver_for"]

_log = Logger()

# Driver module __name__ -> "module:class" of its Driver.
_DRIVERS: Dict[str, str] = {
    "psycopg2": "txreconnect.drivers.psycopg2:Psycopg2Driver",
    "psycopg": "txreconnect.drivers.psycopg:PsycopgDriver",
    "pymysql": "txreconnect.drivers.pymysql:PyMySQLDriver",
    "MySQLdb": "txreconnect.drivers.mysqldb:MySQLdbDriver",
    "sqlite3": "txreconnect.drivers.sqlite3:Sqlite3Driver",
}

# Names of unknown drivers already logged, so each is logged once.
_reported: Set[str] = set()


def _driver_class(path: str) -> Type[Driver]:
    """
    @param path: C{"package.module:ClassName"}.
    @return: the class, importing its module.
    """
    module_name, _, class_name = path.partition(":")
    cls: Type[Driver] = getattr(importlib.import_module(module_name), class_name)
    return cls


def driver_for(module: Any) -> Driver:
    """
    Get the knowledge txreconnect has about a DB-API driver.

    An unknown driver gets the generic DB-API rules of L{Driver}, and one
    warning per driver name (per process) says so.

    @param module: the imported DB-API module, e.g. C{pool.dbapi}.
    @return: a L{Driver} for C{module}.
    """
    name = getattr(module, "__name__", repr(module))
    path = _DRIVERS.get(name)
    if path is not None:
        return _driver_class(path)(module)
    if name not in _reported:
        _reported.add(name)
        _log.warn(
            "txreconnect has no rules for driver {name!r}; using generic DB-API rules",
            name=name,
        )
    return Driver(module)
