"""
Per-driver knowledge, looked up by the DB-API module's C{__name__}.

Every public module of this package describes one driver: its C{DRIVER}
is a L{Driver} subclass whose C{name} is the driver module's C{__name__}
(C{txreconnect/drivers/pymysql.py} describes C{pymysql}).  Adding a
driver means adding one module here; nothing else names it.

Use L{driver_for} with the module the pool imported (C{pool.dbapi}), or
L{driver_class} with a module name when the driver need not be
installed.  None of the modules here imports its driver, so txreconnect
imports whatever drivers are installed.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Dict, List, Optional, Set, Type

from twisted.logger import Logger

from txreconnect.drivers._base import Driver

__all__ = ["Driver", "driver_class", "driver_for", "known_drivers"]

_log = Logger()

# Driver module __name__ -> its Driver class, filled on first use.
_registry: Optional[Dict[str, Type[Driver]]] = None

# Names of unknown drivers already logged, so each is logged once.
_reported: Set[str] = set()


def _drivers() -> Dict[str, Type[Driver]]:
    """
    @return: every driver this package describes, by module name; the
        package's public modules are imported once.
    """
    global _registry
    if _registry is None:
        found: Dict[str, Type[Driver]] = {}
        for info in pkgutil.iter_modules(__path__):
            if info.name.startswith("_"):
                continue
            cls: Type[Driver] = importlib.import_module("%s.%s" % (__name__, info.name)).DRIVER
            found[cls.name] = cls
        _registry = found
    return _registry


def known_drivers() -> List[Type[Driver]]:
    """
    @return: the L{Driver} class of every driver txreconnect knows, sorted
        by module name (case-insensitive).
    """
    return sorted(_drivers().values(), key=lambda cls: cls.name.lower())


def driver_class(name: str) -> Type[Driver]:
    """
    Get what txreconnect knows about a driver without importing it.

    @param name: a DB-API module's C{__name__}, e.g. C{"psycopg2"}.
    @return: its L{Driver} subclass, or L{Driver} itself (the generic
        rules, whose C{family} is C{""}) for a driver txreconnect does not
        know.
    """
    return _drivers().get(name, Driver)


def driver_for(module: Any) -> Driver:
    """
    Get the knowledge txreconnect has about a DB-API driver.

    An unknown driver gets the generic DB-API rules of L{Driver}, and one
    warning per driver name (per process) says so.

    @param module: the imported DB-API module, e.g. C{pool.dbapi}.
    @return: a L{Driver} for C{module}.
    """
    name = getattr(module, "__name__", repr(module))
    cls = driver_class(name)
    if cls is Driver and name not in _reported:
        _reported.add(name)
        _log.warn(
            "txreconnect has no rules for driver {name!r}; using generic DB-API rules",
            name=name,
        )
    return cls(module)
