"""
The default drill site: an SQLite database in a temporary file, nothing to
install.  With no server and no network, faults are made by the
connections themselves, through a C{sqlite3.Connection} subclass given to
C{connect(factory=...)}:

  - kill: every connection open now closes itself before its next
    statement or COMMIT, in its own thread, so the pool finds it closed
    mid-transaction, as it finds a session a server ended.  (Closing it
    from another thread while a statement runs crashes CPython 3.11's
    sqlite3 module: a segfault within seconds under load.)
  - restart: the same, and for a while new connections are refused;
  - cut: the next COMMIT of a write succeeds, then the connection closes
    before C{commit()} returns, so the pool cannot know it committed.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import threading
from typing import Any, Callable, Dict, Tuple, Type, cast

from twisted.internet import defer, task

from txreconnect._drill.site import Site, Target

__all__ = ["SqliteSite"]

#: seconds a "restart" refuses new connections
RESTART_SECONDS = 1.0


class _Control:
    """
    The faults of one pool's database, shared with its connections'
    threads.

    @ivar generation: connections opened in an older generation close
        themselves at their next use.
    @ivar down: whether new connections are refused.
    """

    def __init__(self, on_cut: Callable[[], None]) -> None:
        self.generation = 0
        self.down = False
        self._on_cut = on_cut
        self._armed = False
        self._lock = threading.Lock()

    def kill(self) -> None:
        with self._lock:
            self.generation += 1

    def arm_cut(self) -> None:
        with self._lock:
            self._armed = True

    def take_cut(self) -> bool:
        """
        @return: whether this COMMIT is the one to cut (only once per arming).
        """
        with self._lock:
            armed, self._armed = self._armed, False
        if armed:
            self._on_cut()
        return armed


def _connection_class(control: _Control) -> Type[sqlite3.Connection]:
    """
    @return: a C{sqlite3.Connection} subclass that obeys C{control}.
    """

    class Connection(sqlite3.Connection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if control.down:
                # What sqlite3.connect() says when it cannot open the file.
                raise sqlite3.OperationalError("unable to open database file")
            super().__init__(*args, **kwargs)
            self._generation = control.generation
            super().execute("PRAGMA synchronous=OFF")

        def check(self) -> None:
            if self._generation != control.generation:
                self.close()  # the next call raises "Cannot operate on a closed database."

        def cursor(self, factory: Any = None) -> Any:
            # Making a cursor is local, as with a server's drivers: the
            # closed connection shows at the first statement.
            return super().cursor(factory or Cursor)

        def commit(self) -> None:
            self.check()
            cut = self.in_transaction and control.take_cut()
            super().commit()
            if cut:
                self.close()
                super().commit()  # raises: the caller cannot know it committed

    class Cursor(sqlite3.Cursor):
        def execute(self, *args: Any) -> Any:
            cast(Connection, self.connection).check()
            return super().execute(*args)

        def executemany(self, *args: Any) -> Any:
            cast(Connection, self.connection).check()
            return super().executemany(*args)

    return Connection


class SqliteSite(Site):
    """
    A drill on SQLite databases in a temporary directory, one per pool.
    """

    description = "SQLite (a temporary file)"
    #: the one driver this site works with: its connections subclass the
    #: module's own
    driver = sqlite3.__name__

    def __init__(self, reactor: Any) -> None:
        super().__init__(reactor, self.driver)
        self._directory = tempfile.mkdtemp(prefix="txreconnect-drill-")
        self._controls: Dict[str, _Control] = {}
        self.faults = {"kill": self._kill, "restart": self._restart, "cut": self._cut}

    def _connect_args(self, label: str) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
        def on_cut() -> None:
            self.reactor.callFromThread(
                self.announce, "%s: a COMMIT went through, then its connection was closed" % (label,)
            )

        control = self._controls[label] = _Control(on_cut)
        path = os.path.join(self._directory, label + ".sqlite3")
        # check_same_thread=False: the pool closes connections from the
        # reactor thread when it shuts down.
        return (path,), {"timeout": 10, "check_same_thread": False, "factory": _connection_class(control)}

    def _connect(self, target: Target) -> Any:
        conn = sqlite3.connect(target.connargs[0], timeout=10)
        conn.execute("PRAGMA journal_mode=WAL")  # readers and a writer at once
        return conn

    def _kill(self) -> "defer.Deferred[str]":
        for control in self._controls.values():
            control.kill()
        return defer.succeed("every open connection closes under its pool before its next statement")

    def _restart(self) -> "defer.Deferred[str]":
        for control in self._controls.values():
            control.kill()
            control.down = True

        def up() -> str:
            for control in self._controls.values():
                control.down = False
            return "every open connection closed; new ones refused for %g s" % (RESTART_SECONDS,)

        return task.deferLater(self.reactor, RESTART_SECONDS, up)

    def _cut(self) -> "defer.Deferred[str]":
        for control in self._controls.values():
            control.arm_cut()
        return defer.succeed("armed: the next COMMIT of a write succeeds, then its connection closes")

    def destroy(self) -> None:
        shutil.rmtree(self._directory, ignore_errors=True)
