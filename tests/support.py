"""
Small helpers shared by the tests: waiting for a condition with a
deadline (never sleeping and hoping) and closing connections quietly.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Union

from twisted.internet import defer

from txreconnect import ReconnectingConnectionPool
from txreconnect.testing import warm
from txreconnect.testing.fixtures import _unavailable
from txreconnect.testing._wait import WaitTimeout, wait_until as _wait_until, wait_until_async as _wait_until_async

__all__ = ["DEADLINE", "WaitTimeout", "close_quietly", "started_pool", "wait_until", "wait_until_async", "warm"]

#: how long a test waits, unless it says otherwise, for what must happen
DEADLINE = 15.0


def wait_until(
    condition: Callable[[], bool], timeout: float = DEADLINE, what: str = "the condition", **options: Any
) -> float:
    """
    Poll C{condition}, blocking, until it holds (see
    L{txreconnect.testing._wait.wait_until} for C{options}).

    @return: how many seconds it took.
    @raise WaitTimeout: it did not hold within C{timeout} seconds.
    """
    return _wait_until(condition, timeout, what, **options)


def wait_until_async(
    condition: Callable[[], Union[bool, "defer.Deferred[bool]"]],
    timeout: float = DEADLINE,
    what: str = "the condition",
    **options: Any,
) -> "defer.Deferred[float]":
    """
    Poll C{condition} on the reactor's clock until it holds (see
    L{txreconnect.testing._wait.wait_until_async} for C{options}).

    @return: a Deferred that fires with how many seconds it took, or fails
        with L{WaitTimeout} after C{timeout} seconds.
    """
    return _wait_until_async(condition, timeout, what, **options)


def close_quietly(conn: Any) -> None:
    """
    Close a raw DB-API connection, ignoring errors from a dead one.
    """
    try:
        conn.close()
    except Exception:
        pass


def unavailable(message: str) -> Exception:
    """
    The exception for a tool or package a test needs and cannot find, as
    L{txreconnect.testing.require_driver} raises it: a failure in CI, a
    skip elsewhere.

    @param message: what is missing and how to install it.
    @return: a C{RuntimeError} in CI, else a C{SkipTest}.
    """
    return _unavailable(message)


def started_pool(testcase: Any, driver: str, connect: Dict[str, Any], **options: Any) -> ReconnectingConnectionPool:
    """
    A started pool of one thread (C{cp_min=1, cp_max=1}, unless
    C{options} say otherwise), closed by the test's cleanup.

    @param connect: the driver's connect keywords.
    @param options: more pool options.
    """
    kwargs: Dict[str, Any] = dict(connect, cp_min=1, cp_max=1)
    kwargs.update(options)
    pool = ReconnectingConnectionPool(driver, **kwargs)
    pool.start()
    testcase.addCleanup(pool.close)
    return pool
