"""
txreconnect: a Twisted C{adbapi.ConnectionPool} that survives lost
database connections.
"""

from txreconnect._replay import idempotent
from txreconnect.errors import ConfigurationError, DisconnectionError, TransactionOutcomeUnknown
from txreconnect.pool import ReconnectingConnectionPool

__all__ = [
    "ConfigurationError",
    "DisconnectionError",
    "ReconnectingConnectionPool",
    "TransactionOutcomeUnknown",
    "idempotent",
]
