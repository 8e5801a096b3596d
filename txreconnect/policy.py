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
from typing import Optional

from twisted.application.internet import backoffPolicy

from txreconnect._options import optional_seconds, seconds
from txreconnect.errors import ConfigurationError

__all__ = ["FailFast", "ReconnectPolicy", "WaitForDatabase"]


class ReconnectPolicy:
    """
    How a pool thread gets a new connection while the database may be
    down: whether a call waits for it, how long between attempts, and
    for how long in all.  Policies are immutable settings: they only
    decide delays.  The pool keeps the state of the database (up, down,
    one thread probing) and makes the attempts.

    A subclass sets L{waits} and L{deadline} and overrides L{delay}.

    @ivar waits: whether a call waits for the database while it is down
        (C{False}: it fails at once with L{DisconnectionError
        <txreconnect.DisconnectionError>}).
    @ivar deadline: how long one call may wait in all, in seconds, or
        C{None} for as long as it takes.
    """

    waits = False
    deadline: Optional[float] = None

    def delay(self, failures: int) -> float:
        """
        @param failures: how many attempts of this call failed so far,
            minus one.
        @return: how many seconds to wait before the next attempt.
        """
        return 0.0


class FailFast(ReconnectPolicy):
    """
    Make one connection attempt; if it fails, raise L{DisconnectionError
    <txreconnect.DisconnectionError>} at once.

    While the database is known to be down, one call at a time makes an
    attempt (a probe) and every other call fails immediately, instead of
    each waiting out a connect timeout.  The first successful probe ends
    the outage for everyone.
    """

    def __repr__(self) -> str:
        return "FailFast()"


class WaitForDatabase(ReconnectPolicy):
    """
    Wait for the database to come back: retry with exponential backoff and
    full jitter (each delay is uniform between 0 and C{min(max_delay,
    initial_delay * factor ** n)}), until it accepts a connection or
    C{deadline} seconds pass.

    One thread at a time probes the database; the others wait for its
    news, so a down database sees one attempt per delay, not one per
    thread.  Waiting happens in the pool thread and ends at once when the
    pool is closed (or the reactor stops), with L{DisconnectionError
    <txreconnect.DisconnectionError>}.
    """

    waits = True

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
            C{None} (the default) waits as long as it takes.
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
