"""
What every place a drill runs in shares: a table per pool, reached by a
connection of the drill's own (never through the pool or a fault), and a
set of faults it can make under the pools.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Tuple, TypeVar

from twisted.internet import defer, threads

from txreconnect._drill.sql import Statements

__all__ = ["Site", "Target"]

_T = TypeVar("_T")


@dataclass
class Target:
    """
    What one pool of the drill connects to.

    @ivar label: the pool's name in the report.
    @ivar sql: the statements on its own table.
    @ivar connargs: the positional arguments of the pool (after the
        driver's name).
    @ivar connkw: the keyword arguments of the pool.
    """

    label: str
    sql: Statements
    connargs: Tuple[Any, ...]
    connkw: Dict[str, Any]


class Site:
    """
    Where a drill runs, and how it makes faults there.

    Subclasses fill L{faults} and say how a pool connects
    (L{_connect_args}) and how the drill itself does (L{_connect}).

    @ivar description: what the site is, for the report.
    @ivar driver: the DB-API module's name.
    @ivar module: the DB-API module.
    @ivar faults: each kind of fault the site can make, with the function
        that makes it and fires with what it did.
    @ivar targets: the pools' targets, in order.
    @ivar announce: called with a line to show when something happens
        outside the fault schedule (a COMMIT cut taking effect).
    """

    description = ""
    #: whether the tables are dropped at the end (a database not our own)
    drop_tables = False

    def __init__(self, reactor: Any, driver: str) -> None:
        """
        @raise ImportError: the driver is not installed.
        """
        self.reactor = reactor
        self.driver = driver
        self.module = importlib.import_module(driver)
        self.faults: Dict[str, Callable[[], "defer.Deferred[str]"]] = {}
        self.targets: List[Target] = []
        self.announce: Callable[[str], None] = lambda line: None
        self._suffix = os.urandom(3).hex()

    def add_target(self, label: str) -> Target:
        """
        @param label: the pool's name, a lower-case word.
        @return: what that pool connects to.
        """
        connargs, connkw = self._connect_args(label)
        table = "txreconnect_drill_%s_%s" % (label, self._suffix)
        target = Target(label, Statements(table, self.module.paramstyle), connargs, connkw)
        self.targets.append(target)
        return target

    def inject(self, kind: str) -> "defer.Deferred[str]":
        """
        Make a fault of this kind under every pool.

        @return: a Deferred that fires with what was done.
        """
        return defer.maybeDeferred(self.faults[kind])

    def create_table(self, target: Target) -> "defer.Deferred[None]":
        def create(conn: Any) -> None:
            cursor = conn.cursor()
            for statement in target.sql.create:
                cursor.execute(statement)
            conn.commit()

        return self._direct(target, create)

    def drop_table(self, target: Target) -> "defer.Deferred[None]":
        def drop(conn: Any) -> None:
            conn.cursor().execute(target.sql.drop)
            conn.commit()

        return self._direct(target, drop)

    def stored(self, target: Target) -> "defer.Deferred[Mapping[str, int]]":
        """
        @return: a Deferred that fires with every write id in the target's
            table and its number of rows.
        """

        def rows(conn: Any) -> Mapping[str, int]:
            cursor = conn.cursor()
            cursor.execute(target.sql.audit)
            return {str(write_id): int(n) for write_id, n in cursor.fetchall()}

        return self._direct(target, rows)

    def stop(self) -> "defer.Deferred[None]":
        """
        Undo what runs in the reactor (proxies, armed faults).
        """
        return defer.succeed(None)

    def destroy(self) -> None:
        """
        Remove what the site made outside the reactor (files); called
        after the reactor stopped, even on Ctrl-C.  Safe to call twice.
        """

    # --- for subclasses ------------------------------------------------------

    def _connect_args(self, label: str) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
        raise NotImplementedError

    def _connect(self, target: Target) -> Any:
        """
        Open a connection of the drill's own to C{target}'s database (in a
        thread).
        """
        raise NotImplementedError

    def _direct(self, target: Target, work: Callable[[Any], _T]) -> "defer.Deferred[_T]":
        """
        Run C{work} with a connection of the drill's own to C{target}'s
        database, in a thread.
        """

        def run() -> _T:
            conn = self._connect(target)
            try:
                return work(conn)
            finally:
                conn.close()

        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), run)
