"""
Tools to rehearse database outages for real, in txreconnect's own tests
and in yours: throwaway PostgreSQL and MariaDB servers that a test owns
(restart them, kill them, end their sessions) and L{FaultProxy}, a TCP
proxy that drops, resets, black-holes or refuses connections, or cuts one
right after the client sends COMMIT; beyond one server, a primary with a
streaming standby (L{PostgresCluster}), a three-node MariaDB Galera
cluster (L{GaleraCluster}) and a L{PgBouncer} in front of a server.
"""

from txreconnect.testing._process import ServerNotAvailable, ThrowawayServer, free_port
from txreconnect.testing.fixtures import (
    private_server,
    require_driver,
    required,
    shared_server,
    started,
    warm,
)
from txreconnect.testing.galera import GaleraCluster, GaleraNode
from txreconnect.testing.mariadb import MariaDBServer
from txreconnect.testing.pgbouncer import PgBouncer
from txreconnect.testing.postgres import PostgresServer
from txreconnect.testing.proxy import FaultProxy
from txreconnect.testing.replication import PostgresCluster, StandbyServer

__all__ = [
    "FaultProxy",
    "GaleraCluster",
    "GaleraNode",
    "MariaDBServer",
    "PgBouncer",
    "PostgresCluster",
    "PostgresServer",
    "ServerNotAvailable",
    "StandbyServer",
    "ThrowawayServer",
    "free_port",
    "private_server",
    "require_driver",
    "required",
    "shared_server",
    "started",
    "warm",
]
