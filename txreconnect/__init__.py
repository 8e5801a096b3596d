"""
txreconnect: a Twisted C{adbapi.ConnectionPool} that survives lost
database connections.
"""

from txreconnect._replay import idempotent
from txreconnect.errors import (
    ConfigurationError,
    DisconnectionError,
    PoolOverloaded,
    TransactionOutcomeUnknown,
    WrongServerError,
)
from txreconnect.policy import FailFast, ReconnectPolicy, WaitForDatabase
from txreconnect.pool import ReconnectingConnectionPool
from txreconnect.url import parse_url

__all__ = [
    "ConfigurationError",
    "DisconnectionError",
    "FailFast",
    "PoolOverloaded",
    "ReconnectPolicy",
    "ReconnectingConnectionPool",
    "TransactionOutcomeUnknown",
    "WaitForDatabase",
    "WrongServerError",
    "idempotent",
    "parse_url",
]
