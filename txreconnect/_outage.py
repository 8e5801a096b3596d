"""
Whether a pool's database is reachable, shared by the pool's threads:
the up / down / probing state, the connection attempts that change it
(paced by the pool's L{ReconnectPolicy <txreconnect.ReconnectPolicy>}),
and the one warning / one info line per outage.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

from twisted.logger import Logger

from txreconnect._stats import Stats
from txreconnect.drivers._base import failed_cheaply
from txreconnect.errors import DisconnectionError

if TYPE_CHECKING:
    from txreconnect.policy import ReconnectPolicy

__all__ = ["DOWN", "HEAD_START_LIMIT", "Outage", "PROBING", "UP"]

_T = TypeVar("_T")

#: the longest head start, in seconds, that the probe's connection gets:
#: once a probe succeeds, the threads that wait for the database connect
#: only once the call that the probe's thread runs on its new connection
#: has returned (or failed), or this long after the probe succeeded,
#: whichever comes first: a circuit breaker's half-open state, with one
#: trial call.  A server that has just started serves its first sessions
#: slowly (caches to fill, a first backend to start, the table to open);
#: the first call then runs and returns alone instead of among every other
#: thread's connects (on a machine with few cores, those delayed it by
#: several milliseconds, and by tens of milliseconds when the call took
#: longer than the probe's connect), and the server sees its connections
#: come back in two steps rather than all at once.
HEAD_START_LIMIT = 0.1

UP = "up"
DOWN = "down"
PROBING = "probing"


def describe(error: BaseException) -> str:
    """
    @return: the error's type and the first line of its message.
    """
    lines = str(error).strip().splitlines()
    return "%s: %s" % (type(error).__name__, lines[0] if lines else "")


class Outage:
    """
    The reachability of one pool's database.

    C{state} is L{UP} until a connection attempt fails, then L{DOWN}, or
    L{PROBING} while one thread checks whether the database is back.
    Everything here runs in pool threads, under C{condition}.

    @ivar state: L{UP}, L{DOWN} or L{PROBING}.
    @ivar closed: whether the pool was closed; waits end at once.
    """

    _log = Logger()

    def __init__(self, name: Callable[[], str], stats: Stats, errors: Any) -> None:
        """
        @param name: returns the pool's name for log lines (its repr).
        @param stats: the pool's counters.
        @param errors: the exception class (or tuple) a failed connection
            attempt raises, i.e. the driver's C{Error}.
        """
        self.condition = threading.Condition()
        self.state = UP
        self.closed = False
        self._name = name
        self._stats = stats
        self.errors = errors
        self._down_since: Optional[float] = None
        self._head_start_ends = 0.0
        self._head_start_owner: Optional[int] = None
        #: the probe's thread once its first call has ended, until it has
        #: handed that call's result to the reactor (see first_call_ended)
        self.ending: Optional[int] = None
        self._last_error: Optional[BaseException] = None

    def close(self) -> None:
        """
        End every wait at once: the pool is closing.
        """
        with self.condition:
            self.closed = True
            self.condition.notify_all()

    def reopen(self) -> None:
        """
        The pool was started again after L{close}.
        """
        with self.condition:
            self.closed = False

    def open(self, policy: "ReconnectPolicy", open_connection: Callable[[], _T]) -> _T:
        """
        Get a new connection, in a pool thread, as C{policy} says.

        While the database is known to be down, one thread at a time
        probes it; the others fail at once (C{policy.waits} false) or wait
        for its news.  When a probe succeeds, waiting threads (and any
        that come meanwhile, if C{policy.waits}) connect only after the
        probe's head start (see L{HEAD_START_LIMIT}).  A waiting thread
        tries again after the pause C{policy.retry_delay} gives for the
        attempt that failed (short if the driver found the failure cheap
        for the server, see L{failed_cheaply}; a backoff step if not),
        until C{policy.deadline} passes or the pool closes.  Either way,
        one attempt at a time is in flight once the database is known
        down.

        @param policy: the pool's reconnect policy.
        @param open_connection: makes one attempt and returns the
            connection, or raises the driver's error.
        @return: the connection.
        @raise DisconnectionError: no connection could be had; it chains
            the driver's last error.
        """
        deadline = None if policy.deadline is None else time.monotonic() + policy.deadline
        steps = 0
        prober = False
        try:
            while True:
                with self.condition:
                    while True:
                        self._check_open()
                        if prober:
                            break
                        if self.state == PROBING:
                            if not policy.waits:
                                raise self._down_error("failing fast while another call checks whether it is back")
                            self._pause(None, deadline, policy)
                            continue
                        if not policy.waits:
                            break
                        held = self._head_start_ends - time.monotonic()
                        if held <= 0:
                            break
                        self._pause(held, deadline, policy)
                    if self.state == DOWN:
                        prober = True
                        self.state = PROBING
                try:
                    return self._attempt(open_connection, prober)
                except self.errors as error:
                    if not policy.waits:
                        raise DisconnectionError(
                            "could not connect to the database (%s); nothing was sent, so retrying the "
                            "call is safe" % (describe(error),)
                        ) from error
                    since = self._down_since
                    down_for = 0.0 if since is None else time.monotonic() - since
                    pause, steps = policy.retry_delay(steps, failed_cheaply(error), down_for)
                with self.condition:
                    self._check_open()
                    self._pause(pause, deadline, policy)
        except BaseException:
            if prober:
                self._give_up_probing()
            raise

    def _left(self, deadline: Optional[float], policy: "ReconnectPolicy") -> Optional[float]:
        """
        @return: the seconds left before C{deadline}, or C{None} for none.
        @raise DisconnectionError: none are left.
        """
        if deadline is None:
            return None
        left = deadline - time.monotonic()
        if left <= 0:
            raise self._down_error("gave up after waiting %s s for it" % (policy.deadline,))
        return left

    # --- under the condition -------------------------------------------

    def _check_open(self) -> None:
        """
        @raise DisconnectionError: the pool was closed.
        """
        if self.closed:
            raise DisconnectionError(
                "the pool was closed while this call waited for the database"
            ) from self._last_error

    def _down_error(self, why: str) -> DisconnectionError:
        """
        @param why: what the pool did, e.g. C{"failing fast"}.
        @return: the error for a call that gives up while the database is
            down, chaining the last connection error.
        """
        since = self._down_since
        error = DisconnectionError(
            "the database is unreachable%s (last error: %s); %s. Nothing was sent, "
            "so retrying the call later is safe"
            % (
                "" if since is None else " for %.1f s" % (time.monotonic() - since,),
                describe(self._last_error) if self._last_error else "none",
                why,
            )
        )
        error.__cause__ = self._last_error
        return error

    def _pause(self, seconds: Optional[float], deadline: Optional[float], policy: "ReconnectPolicy") -> None:
        """
        L{_wait} for C{seconds} (C{None}: until notified), but no longer
        than the time left before C{deadline}.

        @raise DisconnectionError: no time is left.
        """
        left = self._left(deadline, policy)
        if left is not None and (seconds is None or left < seconds):
            seconds = left
        self._wait(seconds)

    def _wait(self, seconds: Optional[float]) -> None:
        """
        Wait (releasing the condition) until notified, C{seconds} pass, or
        the pool closes; count the time waited.
        """
        started = time.monotonic()
        self.condition.wait(seconds)
        self._stats.add("seconds_waiting", time.monotonic() - started)

    # --- attempts (outside the condition) ----------------------------------

    def _attempt(self, open_connection: Callable[[], _T], prober: bool) -> _T:
        """
        Make one connection attempt and record what it says about the
        database.

        @param open_connection: opens and returns a connection.
        @param prober: whether the caller holds the L{PROBING} state; on
            failure it keeps it (the caller releases it with
            L{_give_up_probing} or tries again).
        @raise Exception: the driver's error if the attempt failed.
        """
        try:
            conn = open_connection()
        except self.errors as error:
            with self.condition:
                self._last_error = error
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    self._log.warn(
                        "{pool}: the database is unreachable ({error}); outage started",
                        pool=self._name(),
                        error=describe(error),
                    )
                if not prober and self.state == UP:
                    self.state = DOWN
            raise
        except BaseException:
            if prober:
                self._give_up_probing()
            raise
        with self.condition:
            if self._down_since is not None:
                self._log.info(
                    "{pool}: the database is reachable again; outage ended after {downtime:.1f} s",
                    pool=self._name(),
                    downtime=time.monotonic() - self._down_since,
                )
                self._down_since = None
            if prober:
                # The first connection to a database that is back gets it
                # to itself until its first call ends (see HEAD_START_LIMIT
                # and end_head_start).
                self._head_start_ends = time.monotonic() + HEAD_START_LIMIT
                self._head_start_owner = threading.get_ident()
                self.ending = None
            self.state = UP
            self.condition.notify_all()
        return conn

    def holds_head_start(self) -> bool:
        """
        @return: whether the connection this thread just opened was the
            probe that found the database back: the pool then calls
            L{first_call_ended} once its first call on it has ended.
        """
        return self._head_start_owner == threading.get_ident()

    def first_call_ended(self) -> None:
        """
        In the probe's thread: its first call on its new connection has
        ended (returned or failed).  The head start ends once the call's
        result is on its way to the reactor: the pool's dispatch then
        sees L{ending} set to this thread and has the reactor call
        L{end_head_start}, after the result.  So the waiting threads'
        connects begin only after the first call's caller has its
        result, instead of competing with its way to the reactor.
        """
        if self._head_start_owner == threading.get_ident():
            self.ending = self._head_start_owner

    def end_head_start(self, owner: int) -> None:
        """
        The probe's first call has ended and its result has reached the
        reactor: the threads that wait for the database may connect now.

        @param owner: the probe's thread (C{threading.get_ident()}); a
            head start that has since ended, or belongs to a later
            probe, is left alone.
        """
        with self.condition:
            if self.ending == owner:
                self.ending = None
            if self._head_start_owner == owner:
                self._head_start_owner = None
                self._head_start_ends = 0.0
                self.condition.notify_all()

    def _give_up_probing(self) -> None:
        """
        The prober stops: another waiting thread may take over.
        """
        with self.condition:
            if self.state == PROBING:
                self.state = DOWN
            self.condition.notify_all()
