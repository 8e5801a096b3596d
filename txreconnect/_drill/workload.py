"""
The clients of one pool: each loops over reads and writes until told to
stop, waits a moment after a failure as a real client would, and records
every call in a L{Record}.
"""

from __future__ import annotations

import itertools
import random
from typing import Any, Generator, List, Optional

from twisted.enterprise import adbapi
from twisted.internet import defer, task

from txreconnect._drill.record import Record
from txreconnect._drill.sql import Statements

__all__ = ["Workload"]

#: the share of calls that are writes
WRITE_SHARE = 0.5
#: seconds a client waits after a failed call before its next one
PAUSE_AFTER_FAILURE = 0.05


class Workload:
    """
    C{clients} concurrent clients of C{pool}.
    """

    def __init__(
        self,
        reactor: Any,
        pool: adbapi.ConnectionPool,
        sql: Statements,
        record: Record,
        clients: int,
        seed: object,
    ) -> None:
        self._reactor = reactor
        self._pool = pool
        self._sql = sql
        self._record = record
        self._clients = clients
        self._seed = seed
        self._stopping = False

    def start(self) -> "defer.Deferred[List[None]]":
        """
        Start the clients.

        @return: a Deferred that fires once every client has stopped.
        """
        return defer.gatherResults([self._client(n) for n in range(self._clients)], consumeErrors=True)

    def stop(self) -> None:
        """
        Ask the clients to stop after their current call.
        """
        self._stopping = True

    def _write(self, txn: adbapi.Transaction, write_id: str, client: int) -> None:
        txn.execute(self._sql.insert, (write_id, client))
        txn.execute(self._sql.count, (write_id,))
        txn.fetchall()

    @defer.inlineCallbacks
    def _client(self, n: int) -> Generator[Any, Any, None]:
        rng = random.Random("%s/%d" % (self._seed, n))
        for i in itertools.count(1):
            if self._stopping:
                return
            started = self._reactor.seconds()
            write_id: Optional[str] = None
            if rng.random() < WRITE_SHARE:
                write_id = "%d-%d" % (n, i)
                call = self._pool.runInteraction(self._write, write_id, n)
            else:
                call = self._pool.runQuery(self._sql.count, ("%d-%d" % (n, max(1, i - 1)),))
            try:
                yield call
            except Exception as error:
                self._record.call(started, self._reactor.seconds(), error, write_id)
                yield task.deferLater(self._reactor, PAUSE_AFTER_FAILURE, lambda: None)
            else:
                self._record.call(started, self._reactor.seconds(), None, write_id)
