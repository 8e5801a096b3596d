"""
Reconnect policies: what a pool thread does when it needs a new connection
and the database may be down.

  - L{FailFast} (the default), for request handlers: one attempt, then
    L{DisconnectionError} at once.
  - L{WaitForDatabase}, for scripts and workers: retry with exponential
    backoff and full jitter until the database is back (or a deadline).
"""

from __future__ import annotations

import random
import time
from typing import Callable, Optional, TypeVar

from twisted.application.internet import backoffPolicy

from txreconnect._options import optional_seconds, seconds
from txreconnect._outage import DOWN, PROBING, Outage, describe
from txreconnect.errors import ConfigurationError, DisconnectionError

__all__ = ["FailFast", "ReconnectPolicy", "WaitForDatabase"]

_T = TypeVar("_T")


class ReconnectPolicy:
    """
    How a pool opens a connection when a thread needs one.  Policies are
    immutable settings; the state of the database lives in the pool.
    """

    def open(self, outage: Outage, open_connection: Callable[[], _T]) -> _T:
        """
        Open a connection, in a pool thread.

        @param outage: the pool's record of whether the database is up.
        @param open_connection: makes one attempt and returns the
            connection, or raises the driver's error.
        @return: the connection.
        @raise DisconnectionError: no connection could be had; it chains
            the driver's last error.
        """
        raise NotImplementedError


class FailFast(ReconnectPolicy):
    """
    Make one connection attempt; if it fails, raise L{DisconnectionError}
    at once.

    While the database is known to be down, one call at a time makes an
    attempt (a probe) and every other call fails immediately, instead of
    each waiting out a connect timeout.  The first successful probe ends
    the outage for everyone.
    """

    def __repr__(self) -> str:
        return "FailFast()"

    def open(self, outage: Outage, open_connection: Callable[[], _T]) -> _T:
        with outage.condition:
            outage.check_open()
            if outage.state == PROBING:
                raise outage.down_error("failing fast while another call checks whether it is back")
            prober = outage.state == DOWN
            if prober:
                outage.state = PROBING
        try:
            return outage.attempt(open_connection, prober)
        except outage.errors as error:
            if prober:
                outage.give_up_probing()
            raise DisconnectionError(
                "could not connect to the database (%s); nothing was sent, so retrying the "
                "call is safe" % (describe(error),)
            ) from error


class WaitForDatabase(ReconnectPolicy):
    """
    Wait for the database to come back: retry with exponential backoff and
    full jitter (each delay is uniform between 0 and C{min(max_delay,
    initial_delay * factor ** n)}), until it accepts a connection or
    C{deadline} seconds pass.

    One thread at a time probes the database; the others wait for its
    news, so a down database sees one attempt per delay, not one per
    thread.  Waiting happens in the pool thread and ends at once when the
    pool is closed (or the reactor stops), with L{DisconnectionError}.
    """

    def __init__(
        self,
        initial_delay: float = 0.1,
        factor: float = 2.0,
        max_delay: float = 5.0,
        deadline: Optional[float] = None,
    ) -> None:
        """
        @param initial_delay: the first delay's ceiling, in seconds.
        @param factor: how much the ceiling grows after each failure (>= 1).
        @param max_delay: the largest ceiling, in seconds.
        @param deadline: how long one call may wait in all, in seconds;
            L{None} (the default) waits as long as it takes.
        @raise ConfigurationError: a value is not a positive number, or
            C{factor} is below 1.
        """
        self.initial_delay = seconds("initial_delay", initial_delay)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor >= 1:
            raise ConfigurationError("factor must be a number >= 1, not %r" % (factor,))
        self.factor = float(factor)
        self.max_delay = seconds("max_delay", max_delay)
        self.deadline = optional_seconds("deadline", deadline)
        # Twisted's own exponential ceiling; the full jitter is ours.
        self._ceiling = backoffPolicy(
            self.initial_delay, self.max_delay, self.factor, jitter=lambda: 0
        )

    def __repr__(self) -> str:
        return "WaitForDatabase(initial_delay=%g, factor=%g, max_delay=%g, deadline=%r)" % (
            self.initial_delay,
            self.factor,
            self.max_delay,
            self.deadline,
        )

    def delay(self, failures: int) -> float:
        """
        @param failures: how many attempts failed so far, minus one.
        @return: a delay in seconds, with full jitter.
        """
        return random.uniform(0, self._ceiling(failures))

    def open(self, outage: Outage, open_connection: Callable[[], _T]) -> _T:
        deadline = None if self.deadline is None else time.monotonic() + self.deadline
        failures = 0
        prober = False
        try:
            while True:
                with outage.condition:
                    while True:
                        outage.check_open()
                        if prober or outage.state != PROBING:
                            break
                        outage.wait(self._left(deadline, outage))
                    if outage.state == DOWN:
                        prober = True
                        outage.state = PROBING
                try:
                    return outage.attempt(open_connection, prober)
                except outage.errors:
                    pass
                pause = self.delay(failures)
                failures += 1
                with outage.condition:
                    outage.check_open()
                    left = self._left(deadline, outage)
                    outage.wait(pause if left is None else min(pause, left))
        except BaseException:
            if prober:
                outage.give_up_probing()
            raise

    def _left(self, deadline: Optional[float], outage: Outage) -> Optional[float]:
        """
        @return: the seconds left before C{deadline}, or L{None} for none.
        @raise DisconnectionError: none are left.
        """
        if deadline is None:
            return None
        left = deadline - time.monotonic()
        if left <= 0:
            raise outage.down_error("gave up after waiting %s s for it" % (self.deadline,))
        return left
