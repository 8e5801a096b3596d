"""
Waiting until a condition holds, with a deadline: the one poll loop of
C{txreconnect.testing} and of txreconnect's own tests, blocking
(L{wait_until}) or on the reactor's clock (L{wait_until_async}).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Generator, Optional, Tuple, Type, Union

from twisted.internet import defer, task

__all__ = ["WaitTimeout", "wait_until", "wait_until_async"]

#: exception classes a condition may raise to mean "not yet"
_Retried = Tuple[Type[BaseException], ...]


class WaitTimeout(RuntimeError):
    """
    A condition did not hold before its deadline.  The message names what
    was awaited, for how long, the last error the condition raised (if it
    was allowed to), and any detail the waiter adds (a server's log).
    """


class _Deadline:
    """
    The bookkeeping both loops share: when the wait ends, the last error,
    and the message once it has ended.
    """

    def __init__(
        self,
        timeout: float,
        what: str,
        clock: Callable[[], float],
        detail: Optional[Callable[[], str]],
    ) -> None:
        """
        @param timeout: seconds to wait.
        @param what: what is awaited, for the message.
        @param clock: the clock to read, in seconds.
        @param detail: called once the wait has failed, for more to say.
        """
        self.timeout = timeout
        self.what = what
        self.clock = clock
        self.detail = detail
        self.started = clock()
        self.last_error: Optional[BaseException] = None

    def elapsed(self) -> float:
        """
        @return: the seconds since the wait started.
        """
        return self.clock() - self.started

    def check(self) -> None:
        """
        @raise WaitTimeout: the deadline has passed.
        """
        if self.elapsed() <= self.timeout:
            return
        message = "gave up after %g s waiting for %s" % (self.timeout, self.what)
        if self.last_error is not None:
            error = self.last_error
            text = getattr(error, "stderr", None) or str(error) or type(error).__name__
            message += " (last error: %s)" % (str(text).strip(),)
        if self.detail is not None:
            message += "; " + self.detail()
        raise WaitTimeout(message)


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.02,
    detail: Optional[Callable[[], str]] = None,
    retry_on: _Retried = (),
) -> float:
    """
    Poll C{condition}, blocking, until it returns true.

    @param condition: what to ask, again and again.
    @param timeout: how many seconds to wait at most.
    @param what: what is awaited, for the error: C{"<server> to accept
        connections"}.
    @param interval: seconds between two polls.
    @param detail: called if the wait fails; its text ends the error's
        message (say, the end of a server's log).
    @param retry_on: exceptions of C{condition} that mean "not yet"; the
        last one is named in the error.
    @return: how many seconds it took.
    @raise WaitTimeout: C{condition} did not hold within C{timeout}
        seconds.
    """
    deadline = _Deadline(timeout, what, time.monotonic, detail)
    while True:
        try:
            if condition():
                return deadline.elapsed()
        except retry_on as error:
            deadline.last_error = error
        deadline.check()
        time.sleep(interval)


def wait_until_async(
    condition: Callable[[], Union[bool, "defer.Deferred[bool]"]],
    timeout: float,
    what: str,
    interval: float = 0.02,
    detail: Optional[Callable[[], str]] = None,
    retry_on: _Retried = (),
    clock: Any = None,
) -> "defer.Deferred[float]":
    """
    Poll C{condition} on the reactor's clock, without blocking the
    reactor, until it returns (or its Deferred fires with) a true value.

    @param condition: what to ask; it may return a Deferred.
    @param timeout: how many seconds to wait at most.
    @param what: what is awaited, for the error.
    @param interval: seconds between two polls.
    @param detail: called if the wait fails; its text ends the error's
        message.
    @param retry_on: exceptions of C{condition} that mean "not yet"; the
        last one is named in the error.
    @param clock: an C{IReactorTime} (default: the global reactor).
    @return: a Deferred that fires with how many seconds it took, or fails
        with L{WaitTimeout}.
    """
    if clock is None:
        from twisted.internet import reactor as clock

    @defer.inlineCallbacks
    def poll() -> Generator["defer.Deferred[Any]", Any, float]:
        deadline = _Deadline(timeout, what, clock.seconds, detail)
        while True:
            try:
                held = yield defer.maybeDeferred(condition)
                if held:
                    return deadline.elapsed()
            except retry_on as error:
                deadline.last_error = error
            deadline.check()
            yield task.deferLater(clock, interval, lambda: None)

    return poll()
