"""
Resolving a COMMIT whose reply was lost (C{cp_resolve_commits}).

Each write transaction leaves a marker as its last statement before
COMMIT: it sets the marker row of its pool thread, in a table of the
pool's (L{TABLE}), to a number that grows with every transaction of the
pool.  The marker is committed, or not, with the transaction's own
writes: it is the same transaction.  It survives a crash exactly when
they do, and it is replicated with them, so after a failover it is on
the new primary exactly when they are.

When the connection is lost while COMMIT is in flight, the pool opens a
new connection (through host selection and its reconnect policy) and
reads the marker row with a locking read.  The lock waits for the old
session, if it is still alive (a COMMIT waiting for a synchronous
standby): for a bounded time, then the pool ends that session and waits
again.  Once the locking read returns, the old transaction has ended,
and the number says whether it committed: it is this transaction's
number (committed), or an older one (it never will).

The marker row exists, committed, before the first marked transaction
of each connection (L{CommitMarkers.prepare}): a locking read waits for
a row lock, but not for a row that an uncommitted transaction inserted.
Should the row still be missing, a transaction that wrote is treated as
marked, and its resolution answers that it cannot tell.

What each database runs is in its driver's module
(C{create_commit_marker}, C{mark_commit}, C{resolve_commit}).
"""

from __future__ import annotations

import itertools
import threading
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Tuple

from txreconnect._outage import describe

if TYPE_CHECKING:
    from txreconnect.pool import ReconnectingConnectionPool

__all__ = ["TABLE", "CommitMarkers", "Marker"]

#: the table of markers, in the database the pool connects to
TABLE = "txreconnect_commits"

#: how long a locking read waits for the old session before the pool
#: ends it, and again after (seconds)
LOCK_WAIT = 5.0


@dataclass(frozen=True)
class Marker:
    """
    The marker one transaction left before its COMMIT.

    @ivar key: its row: the pool's token and the pool thread.
    @ivar number: the number it set.
    @ivar session: the server's id of the session that set it (a
        PostgreSQL backend pid, a MySQL connection id), to end it if it
        still holds the row; C{None} if unknown.
    @ivar wrote: whether the transaction wrote anything (or may have); if
        not, whether its COMMIT took effect does not matter.
    @ivar marked: whether the marker row was set: if it was missing
        (deleted by someone), whether the COMMIT took effect cannot be
        told.
    """

    key: str
    number: int
    session: Any
    wrote: bool = True
    marked: bool = True


class CommitMarkers:
    """
    One pool's markers, in one process: a fresh token, and the numbers.
    Used from pool threads.
    """

    def __init__(self) -> None:
        self.token = uuid.uuid4().hex[:16]
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    def key(self, tid: int) -> str:
        """
        @param tid: a pool thread's id.
        @return: that thread's marker row.
        """
        return "%s:%d" % (self.token, tid)

    def prepare(self, pool: "ReconnectingConnectionPool", connection: Any, tid: int) -> None:
        """
        Make sure the table and this thread's row exist, committed, on the
        server of each new connection, before its first marked
        transaction: a new connection may reach another server (a
        promoted standby that the row had not reached yet, another node,
        another server of the host list).  The table is created once per
        connection too (C{IF NOT EXISTS}); the row's insert does nothing
        if it is there.

        @param pool: the pool, for its driver.
        @param connection: the thread's new raw connection.
        @param tid: the pool thread's id.
        @raise Exception: the driver's error if the table or row cannot be
            made (the connection attempt fails with it).
        """
        with self._lock:
            # One thread at a time: PostgreSQL's CREATE TABLE IF NOT EXISTS
            # is not safe against itself.
            pool._driver.create_commit_marker(connection, TABLE, self.key(tid))

    def mark(self, pool: "ReconnectingConnectionPool", connection: Any, tid: int) -> Marker:
        """
        Leave this transaction's marker, as its last statement before
        COMMIT, if it wrote anything.

        @return: the marker (C{wrote} false when the transaction wrote
            nothing: then its COMMIT needs no resolving).
        @raise Exception: the driver's error (the COMMIT is then not sent).
        """
        key = self.key(tid)
        number = next(self._numbers)
        wrote, marked, session = pool._driver.mark_commit(connection, TABLE, key, number)
        return Marker(key, number, session, wrote, marked)

    def resolve(self, pool: "ReconnectingConnectionPool", marker: Marker) -> Tuple[Optional[bool], str]:
        """
        Ask the database, on a new connection, whether the transaction that
        left C{marker} committed.

        @return: C{True} (it committed), C{False} (it did not and never
            will), or C{None} (no answer), and why, in words.
        """
        try:
            connection = pool.connect()
        except Exception as error:
            return None, "no new connection to ask on (%s)" % (describe(error),)
        try:
            return pool._driver.resolve_commit(connection, TABLE, marker.key, marker.number, marker.session, LOCK_WAIT)
        except Exception as error:
            if pool._driver.is_disconnect(error, connection):
                pool._lost(connection)
            else:
                try:
                    connection.rollback()
                except Exception:
                    pool._lost(connection)
            return None, "asking failed (%s)" % (describe(error),)
