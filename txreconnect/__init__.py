"""
txreconnect: a Twisted C{adbapi.ConnectionPool} that survives lost
database connections.
"""

from txreconnect._replay import idempotent
from txreconnect.errors import ConfigurationError, DisconnectionError, TransactionOutcomeUnknown
from txreconnect.policy import FailFast, ReconnectPolicy, WaitForDatabase
from txreconnect.pool import ReconnectingConnectionPool
from txreconnect.url import parse_url

__all__ = [
    "ConfigurationError",
    "DisconnectionError",
    "FailFast",
    "ReconnectPolicy",
    "ReconnectingConnectionPool",
    "TransactionOutcomeUnknown",
    "WaitForDatabase",
    "idempotent",
    "parse_url",
]
