"""
The exceptions txreconnect raises.

Every exception raised because of a driver error chains that error as
C{__cause__}, so applications and logs keep the driver's own words.
"""

from twisted.enterprise.adbapi import ConnectionLost

__all__ = ["ConfigurationError", "DisconnectionError", "PoolOverloaded", "TransactionOutcomeUnknown", "WrongServerError"]


class DisconnectionError(ConnectionLost):
    """
    The database connection was lost and the call could not be completed.

    Nothing the call did was committed, so it is safe to retry the whole
    request.  The driver's original exception is chained as C{__cause__}.
    """


class TransactionOutcomeUnknown(DisconnectionError):
    """
    The connection was lost while the transaction was committing (or, in
    autocommit mode, after a statement had already run).

    The transaction may or may not have been committed.  txreconnect never
    replays such a call; do not retry it blindly: check whether its effect
    is present first, or make the operation idempotent.
    """


class WrongServerError(DisconnectionError):
    """
    The server refused a write because it is read-only (an old primary
    after a failover, or a standby), or any statement because it is not
    ready (a Galera node outside the primary component, error 1047), and
    reconnecting did not reach a server that would take it: none is
    listed, or none is up yet.

    Nothing the call did was committed, so it is safe to retry once a
    writable server is reachable.  List every server in the connection
    target with C{target_session_attrs=read-write} so that the pool can
    find the writer by itself.  The driver's refusal is chained as
    C{__cause__}.
    """


class PoolOverloaded(DisconnectionError):
    """
    The pool could not start the call: as many calls as
    C{cp_max_waiting} were already waiting for a pool thread, or the call
    waited for one longer than C{cp_wait_timeout}.

    Nothing was sent to the database, so retrying the call is safe (best
    later, or elsewhere: the pool is busy, or the database is down).  A
    subclass of L{DisconnectionError}, whose promise it keeps (nothing was
    committed, a retry is safe), so that code that already handles that
    error handles this one; it chains no driver error.  It does not count
    as an outage.
    """


class ConfigurationError(ValueError):
    """
    A pool option, driver name or database URL is invalid.

    Raised at construction time.  The message names the bad part and never
    contains a password.
    """
