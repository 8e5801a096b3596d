"""
Fixtures for trial tests: throwaway servers shared across a test run, and
drivers or servers that are required in CI but may be missing elsewhere.

In CI (the environment variable C{CI} is C{true}, or
C{TXRECONNECT_REQUIRE_ALL} is C{1}) a missing server or driver fails the
test.  Elsewhere the test is skipped with a message that says exactly what
to install.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from types import ModuleType
from typing import Any, Dict, Protocol, Tuple, Type, TypeVar

from twisted.internet import defer
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from txreconnect.drivers import driver_class
from txreconnect.testing._process import ServerNotAvailable, ThrowawayServer, SettingValue

__all__ = ["destroy_shared", "private_server", "require_driver", "required", "shared_server", "started", "warm"]

_S = TypeVar("_S", bound=ThrowawayServer)

#: what to install for the modules a test may require that are no
#: database drivers (a driver's own hint is its C{install_hint})
_OTHER_PACKAGES = {
    "twistar": "twistar (pip install 'txreconnect[twistar]')",
}

_shared: Dict[Tuple[type, Tuple[Tuple[str, str], ...]], ThrowawayServer] = {}


def required() -> bool:
    """
    @return: whether a missing server or driver must fail (in CI) rather
        than skip.
    """
    return os.environ.get("CI", "").lower() == "true" or os.environ.get(
        "TXRECONNECT_REQUIRE_ALL"
    ) == "1"


def _unavailable(message: str) -> Exception:
    if required():
        return RuntimeError(message + " (CI requires it: this is a failure, not a skip)")
    return SkipTest(message + " (outside CI this test is skipped)")


def require_driver(name: str) -> ModuleType:
    """
    Import the DB-API module C{name} (or twistar) for a test.

    @param name: the module's name.
    @return: the module.
    @raise SkipTest: it is not installed and we are not in CI; the message
        says what to install.
    @raise RuntimeError: it is not installed and we are in CI.
    """
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise _unavailable(
            "driver %r is not importable (%s); install %s"
            % (name, e, _OTHER_PACKAGES.get(name) or driver_class(name).install_hint or name)
        )


class _Startable(Protocol):
    def start(self) -> None: ...

    def destroy(self) -> None: ...


_T = TypeVar("_T", bound=_Startable)


def _start(server: _T) -> _T:
    try:
        server.start()
    except ServerNotAvailable as e:
        server.destroy()
        raise _unavailable(str(e))
    except BaseException:
        server.destroy()
        raise
    return server


def shared_server(
    testcase: SynchronousTestCase,
    server_class: Type[_S],
    **settings: SettingValue,
) -> _S:
    """
    A running server of C{server_class} with C{settings}, started once per
    test process and shared by every test that asks for the same kind.

    The test may stop, kill or restart it: a cleanup makes sure it runs
    again (and that no test's sessions linger) before the next test.  It is
    destroyed when the process exits.

    @raise SkipTest: the server is not installed and we are not in CI.
    @raise RuntimeError: it is not installed and we are in CI.
    """
    key = (server_class, tuple(sorted((k, str(v)) for k, v in settings.items())))
    server = _shared.get(key)
    if server is None:
        server = _start(server_class(settings=settings))
        _shared[key] = server
        # Name what really runs in the test output.
        sys.stderr.write("txreconnect.testing: started %r\n" % (server,))
    elif not server.running:
        server.start()
    testcase.addCleanup(_reset, server)
    return server  # type: ignore[return-value]


def _reset(server: ThrowawayServer) -> None:
    server.start()
    server.terminate_sessions()


def private_server(
    testcase: SynchronousTestCase,
    server_class: Type[_S],
    **settings: SettingValue,
) -> _S:
    """
    A running server of C{server_class} for this test alone, destroyed by
    the test's cleanup even when it fails.

    @raise SkipTest: the server is not installed and we are not in CI.
    @raise RuntimeError: it is not installed and we are in CI.
    """
    return started(testcase, server_class(settings=settings))


def started(testcase: SynchronousTestCase, thing: _T) -> _T:
    """
    Start C{thing} (a server, a L{PostgresCluster
    <txreconnect.testing.PostgresCluster>}, a L{PgBouncer
    <txreconnect.testing.PgBouncer>}: anything with C{start()} and
    C{destroy()}) for this test alone; the test's cleanup destroys it,
    even when the test fails.

    @return: C{thing}, started.
    @raise SkipTest: its binaries are not installed and we are not in CI;
        the message says what to install.
    @raise RuntimeError: they are not installed and we are in CI.
    """
    testcase.addCleanup(thing.destroy)
    return _start(thing)


def destroy_shared() -> None:
    """
    Destroy every shared server now (they are also destroyed at exit).
    """
    while _shared:
        _shared.popitem()[1].destroy()


def warm(pool: Any, timeout: float = 30.0) -> "defer.Deferred[Any]":
    """
    Make every one of a pool's C{cp_max} threads open its connection:
    C{cp_max} interactions that wait for each other, so each runs on a
    thread of its own (a warmed pool, as a long-running service has).

    @param pool: an C{adbapi.ConnectionPool} (or ours), started.
    @param timeout: how long the interactions wait for each other.
    @return: a Deferred that fires when all have run.
    """
    barrier = threading.Barrier(pool.max)

    def hold(txn: Any) -> None:
        txn.execute("SELECT 1")
        txn.fetchall()
        barrier.wait(timeout=timeout)

    return defer.gatherResults([pool.runInteraction(hold) for _ in range(pool.max)], consumeErrors=True)
