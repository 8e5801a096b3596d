"""
The workloads of the steady-state sections: what L{bench.overhead} and
L{bench.resolve_cost} time and L{bench.instructions} counts.  Each is one
call, through a pool's public API or directly through
C{pool._runInteraction}, on the table C{bench_kv}.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, NamedTuple, Sequence, Tuple

from twisted.enterprise import adbapi
from twisted.internet import defer

from bench._common import Target, run_sql

__all__ = [
    "KEYS",
    "LABELS",
    "STEADY",
    "Call",
    "Workload",
    "create_table",
    "pool_options",
    "setup_sql",
    "sqlite_openfun",
    "workloads",
]

#: rows in bench_kv
KEYS = 64

#: each workload's label in the tables, by its key
LABELS = {
    "select1": 'runQuery("SELECT 1")',
    "write1": "runOperation: UPDATE",
    "txn3": "runInteraction: SELECT, UPDATE, SELECT",
}

#: the workloads of the steady-state overhead section (L{bench.overhead})
STEADY = ("select1", "txn3")

#: one call through a pool's public API, given the pool and the caller's lane
Call = Callable[[adbapi.ConnectionPool, int], "defer.Deferred[Any]"]


class Workload(NamedTuple):
    """
    One workload.

    @ivar label: for tables (L{LABELS}).
    @ivar call: one call through the public API.
    @ivar direct: given a pool, the interaction function and its arguments
        for direct C{pool._runInteraction} calls.
    """

    label: str
    call: Call
    direct: Callable[[adbapi.ConnectionPool], Tuple[Any, ...]]


def setup_sql(target: Target) -> List[str]:
    """
    @return: the statements that create C{bench_kv} and fill it.
    """
    return [
        "DROP TABLE IF EXISTS bench_kv",
        "CREATE TABLE bench_kv (k INTEGER PRIMARY KEY, v BIGINT NOT NULL)",
    ] + [target.sql("INSERT INTO bench_kv (k, v) VALUES (%d, 0)" % (k,)) for k in range(KEYS)]


def create_table(target: Target) -> None:
    """
    Create and fill C{bench_kv} on a server (blocking).
    """
    run_sql(target, setup_sql(target))


def sqlite_openfun(target: Target) -> Callable[[Any], None]:
    """
    sqlite3 C{:memory:} gives each connection a database of its own:
    fill it as the pool opens it.
    """

    def openfun(conn: Any) -> None:
        cursor = conn.cursor()
        for statement in setup_sql(target):
            cursor.execute(statement)
        conn.commit()

    return openfun


def pool_options(target: Target) -> Dict[str, Any]:
    """
    @return: the C{cp_*} keywords a pool on C{target} needs for the
        workloads: on sqlite3, a C{cp_openfun} that fills each
        connection's database (a server's table is made once, with
        L{create_table}).
    """
    return {"cp_openfun": sqlite_openfun(target)} if target.server is None else {}


def workloads(target: Target, keys: Sequence[str] = STEADY) -> Dict[str, Workload]:
    """
    @param target: the database the calls go to.
    @param keys: which workloads (keys of L{LABELS}), in this order.
    @return: those workloads on C{target}, by key.
    """
    select_v = target.sql("SELECT v FROM bench_kv WHERE k = %s")
    update_v = target.sql("UPDATE bench_kv SET v = v + 1 WHERE k = %s")

    def three(txn: Any, key: int) -> None:
        txn.execute(select_v, (key,))
        txn.fetchall()
        txn.execute(update_v, (key,))
        txn.execute("SELECT 1")
        txn.fetchall()

    def query(pool: adbapi.ConnectionPool, lane: int) -> "defer.Deferred[Any]":
        return pool.runQuery("SELECT 1")

    def operation(pool: adbapi.ConnectionPool, lane: int) -> "defer.Deferred[Any]":
        return pool.runOperation(update_v, (lane % KEYS,))

    def interaction(pool: adbapi.ConnectionPool, lane: int) -> "defer.Deferred[Any]":
        return pool.runInteraction(three, lane % KEYS)

    every = {
        "select1": Workload(LABELS["select1"], query, lambda pool: (pool._runQuery, "SELECT 1")),
        "write1": Workload(LABELS["write1"], operation, lambda pool: (pool._runOperation, update_v, (1,))),
        "txn3": Workload(LABELS["txn3"], interaction, lambda pool: (three, 1)),
    }
    return {key: every[key] for key in keys}
