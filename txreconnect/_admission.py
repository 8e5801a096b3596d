"""
Admission of a pool's calls to its threads: a bound on how many calls
may wait for a thread (C{cp_max_waiting}), a deadline for each call's
wait (C{cp_wait_timeout}), and the wait and use timings.

adbapi hands every call to its thread pool, whose queue has no bound.
L{Gate.submit} does what C{threads.deferToThreadPool} does, and also
counts the calls that wait, refuses a call beyond the bound at once,
fails a call whose wait outlasts its deadline at that deadline (the
thread that picks it up later skips it: it never reaches the database),
and lets a caller cancel a call that has not started.  A pool without
these options and without timings does not use it.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from txreconnect._timing import Timings
from txreconnect.errors import PoolOverloaded

__all__ = ["Gate"]

_monotonic = time.monotonic


class _Late(Exception):
    """
    A pool thread took a call after its deadline had passed.
    """


class _Ticket:
    """
    One call on its way to a pool thread.

    @ivar queued: when it was submitted (C{time.monotonic()}).
    @ivar started: a pool thread took it.
    @ivar dropped: it failed (deadline) or was cancelled before starting.
    """

    __slots__ = ("queued", "started", "dropped", "timer")

    def __init__(self) -> None:
        self.queued = _monotonic()
        self.started = False
        self.dropped = False
        self.timer: Optional[IDelayedCall] = None


class Gate:
    """
    The admission of one pool's calls.  L{submit} and the deadlines run in
    the reactor thread; L{_start} in pool threads; C{waiting} and each
    ticket's state change under C{_lock}.

    @ivar waiting: how many calls wait for a pool thread now.
    @ivar timings: the histograms to feed, or C{None}.
    """

    def __init__(
        self,
        pool: Any,
        max_waiting: Optional[int],
        wait_timeout: Optional[float],
        timings: Optional[Timings],
    ) -> None:
        """
        @param pool: the pool, whose C{_reactor}, C{threadpool} and
            C{_stats} are read at each call (a forked child replaces
            them).
        @param max_waiting: C{cp_max_waiting}, or C{None}.
        @param wait_timeout: C{cp_wait_timeout}, or C{None}.
        @param timings: the histograms to feed, or C{None}.
        """
        self._pool = pool
        self.max_waiting = max_waiting
        self.wait_timeout = wait_timeout
        self.timings = timings
        self.waiting = 0
        self._lock = threading.Lock()

    def submit(self, function: Callable[..., Any], *args: Any, **kw: Any) -> "defer.Deferred[Any]":
        """
        Run C{function(*args, **kw)} in a pool thread, as
        C{threads.deferToThreadPool} does, within the pool's bounds.

        @return: a Deferred that fires with its result; or fails with
            L{PoolOverloaded} at once (too many calls wait) or at the
            call's deadline (it waited too long), or with
            C{CancelledError} if cancelled before it started.
        """
        limit = self.max_waiting
        if limit is not None and self.waiting >= limit:
            self._pool._stats.add("rejected")
            return defer.fail(
                PoolOverloaded(
                    "no pool thread for the call: %d calls were already waiting for one "
                    "(cp_max_waiting=%d); nothing was sent to the database, so retrying the "
                    "call later is safe" % (self.waiting, limit)
                )
            )
        ticket = _Ticket()
        def cancel(result: "defer.Deferred[Any]") -> None:
            self._drop(ticket)

        result: "defer.Deferred[Any]" = defer.Deferred(cancel)
        with self._lock:
            self.waiting += 1
        if self.wait_timeout is not None:
            ticket.timer = self._pool._reactor.callLater(self.wait_timeout, self._expire, ticket, result)

        def done(success: bool, value: Any) -> None:
            if not ticket.dropped or (not success and value.check(_Late)):
                self._pool._reactor.callFromThread(self._fire, ticket, result, success, value)
            if self._pool._outage.ending is not None:
                self._pool._hand_over()

        self._pool.threadpool.callInThreadWithCallback(done, self._start, ticket, function, args, kw)
        return result

    def _start(self, ticket: _Ticket, function: Callable[..., Any], args: Any, kw: Any) -> Any:
        """
        In a pool thread: run the call, unless it was dropped meanwhile.
        """
        began = _monotonic()
        late = self.wait_timeout is not None and began - ticket.queued > self.wait_timeout
        with self._lock:
            if ticket.dropped:
                return None
            self.waiting -= 1
            if late:
                # Its deadline passed while the reactor was busy: it
                # fails as if the timer had fired.
                ticket.dropped = True
                raise _Late()
            ticket.started = True
        timings = self.timings
        if timings is None:
            return function(*args, **kw)
        timings.wait.observe(began - ticket.queued)
        try:
            return function(*args, **kw)
        finally:
            timings.use.observe(_monotonic() - began)

    def _drop(self, ticket: _Ticket) -> bool:
        """
        Take a call that has not started off the queue (its thread will
        skip it).

        @return: whether it had not started.
        """
        with self._lock:
            if ticket.started or ticket.dropped:
                return False
            ticket.dropped = True
            self.waiting -= 1
        if ticket.timer is not None and ticket.timer.active():
            ticket.timer.cancel()
        return True

    def _expire(self, ticket: _Ticket, result: "defer.Deferred[Any]") -> None:
        """
        The call's deadline passed: fail it if it has not started.
        """
        if self._drop(ticket):
            self._timed_out(result)

    def _timed_out(self, result: "defer.Deferred[Any]") -> None:
        """
        Fail a call that waited past its deadline.
        """
        if result.called:
            return
        self._pool._stats.add("wait_timeouts")
        result.errback(
            PoolOverloaded(
                "the call waited %g s for a pool thread (cp_wait_timeout) and was dropped "
                "before it started; nothing was sent to the database, so retrying the call "
                "later is safe" % (self.wait_timeout or 0,)
            )
        )

    def _fire(self, ticket: _Ticket, result: "defer.Deferred[Any]", success: bool, value: Any) -> None:
        """
        In the reactor thread: hand the call's outcome to its caller.
        """
        if ticket.timer is not None and ticket.timer.active():
            ticket.timer.cancel()
        if not success and value.check(_Late):
            self._timed_out(result)
            return
        if result.called:
            # Cancelled after it started: its outcome is nobody's.
            return
        if success:
            result.callback(value)
        else:
            assert isinstance(value, Failure)
            result.errback(value)
