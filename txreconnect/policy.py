"""
Reconnect policies: what a pool thread does when it needs a new connection
and the database may be down.

  - L{FailFast} (the default), for request handlers: one attempt, then
    L{DisconnectionError} at once.
  - L{WaitForDatabase}, for scripts and workers: retry with exponential
    backoff and full jitter until the database is back (or a deadline);
    while the server only refuses outright (a failure that costs it
    nothing), probe every millisecond instead (less often as the outage
    lasts), so that the first call succeeds about one connect after the
    server is back.

Policies are pure arithmetic: they answer how long to wait, and the
pool's outage state (C{txreconnect._outage}) makes the attempts.
"""

from __future__ import annotations

import random
from typing import Optional, Tuple

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

    A subclass sets L{waits} and L{deadline} and overrides L{delay}; it
    may set L{fast_probe_interval} to probe quickly while each attempt
    fails cheaply (see L{retry_delay}).

    @ivar waits: whether a call waits for the database while it is down
        (C{False}: it fails at once with L{DisconnectionError
        <txreconnect.DisconnectionError>}).
    @ivar deadline: how long one call may wait in all, in seconds, or
        C{None} for as long as it takes.
    @ivar fast_probe_interval: the pause, in seconds, after an attempt
        that failed I{cheaply} (the server refused outright: nothing
        listening, or not yet accepting sessions), or C{None}: every
        failure waits L{delay}.
    """

    waits = False
    deadline: Optional[float] = None
    fast_probe_interval: Optional[float] = None

    def delay(self, failures: int) -> float:
        """
        @param failures: how many attempts of this call failed so far,
            minus one (with L{fast_probe_interval} set: how many backoff
            steps it took so far, see L{retry_delay}).
        @return: how many seconds to wait before the next attempt.
        """
        return 0.0

    def retry_delay(self, steps: int, cheap: bool, down_for: float = 0.0) -> Tuple[float, int]:
        """
        The pause after a failed attempt, from what the attempt cost the
        server.

        A I{cheap} failure is one the server answered without doing any
        work for it (the driver decides: a refused connection, a server
        still starting up); every other failure (a failed login, too many
        connections, a timeout, anything unknown) is I{costly}.  After a
        cheap failure the pause is L{fast_probe_interval}, if set, and the
        backoff stays where it is; after any other failure the pause is
        C{delay(steps)} and the backoff moves one step on.  So every
        costly attempt is preceded by a full backoff step, however cheap
        failures interleave with costly ones, and with
        L{fast_probe_interval} unset this is L{delay} after every
        failure, as for a policy that predates it.

        @param steps: how many backoff steps this call took so far.
        @param cheap: whether the last attempt failed cheaply.
        @param down_for: how long, in seconds, the database has been
            unreachable (since the pool's first failed attempt of this
            outage); unused here, see L{WaitForDatabase.retry_delay}.
        @return: how many seconds to wait before the next attempt, and how
            many backoff steps the call will have taken then.
        """
        if cheap and self.fast_probe_interval is not None:
            return self.fast_probe_interval, steps
        return self.delay(steps), steps + 1


class FailFast(ReconnectPolicy):
    """
    Make one connection attempt; if it fails, raise L{DisconnectionError
    <txreconnect.DisconnectionError>} at once.  (Nothing waits, so the
    cost of a failure changes nothing: the probes follow the calls.)

    While the database is known to be down, one call at a time makes an
    attempt (a probe) and every other call fails immediately, instead of
    each waiting out a connect timeout.  The first successful probe ends
    the outage for everyone.
    """

    def __repr__(self) -> str:
        return "FailFast()"


class WaitForDatabase(ReconnectPolicy):
    """
    Wait for the database to come back: retry until it accepts a
    connection or C{deadline} seconds pass.

    How long between attempts depends on what the last one cost the
    server (see L{ReconnectPolicy.retry_delay}):

      - I{cheap} failures (the server refused outright: nothing listens
        on its port or socket, or it is starting up or shutting down)
        are retried after C{fast_probe_interval} seconds (1 ms), or
        C{fast_probe_ratio} (0.001) of how long the database has been
        unreachable if that is longer (at most C{max_delay}): a refused
        connect costs the server a reset packet, and the first success
        comes about one connect after the server is back, instead of up
        to a whole backoff step later.  A restart of a second is noticed
        within about a millisecond, an outage of a minute within 60 ms;
        a stopped server sees at most about 1,000 attempts per second
        per pool in the first second, one at a time, 100 per second
        after 10 s, 10 after 100 s (some 9,000 attempts in an hour,
        where a fixed interval of 5 ms would make 720,000);
      - I{costly} failures (a failed login, too many connections, a
        timeout, an error the driver does not know) back off
        exponentially with full jitter: each delay is uniform between 0
        and C{min(max_delay, initial_delay * factor ** n)}, where I{n}
        counts the costly failures of the call so far.

    One thread at a time probes the database; the others wait for its
    news, so a down database sees one attempt per delay, not one per
    thread.  When a probe succeeds, its call gets the database to itself
    until its result has reached its caller (at most 0.1 s); then the
    waiting threads connect.
    Waiting happens in the pool thread and ends at once when the pool is
    closed (or the reactor stops), with L{DisconnectionError
    <txreconnect.DisconnectionError>}.
    """

    waits = True

    def __init__(
        self,
        initial_delay: float = 0.1,
        factor: float = 2.0,
        max_delay: float = 5.0,
        deadline: Optional[float] = None,
        fast_probe_interval: Optional[float] = 0.001,
        fast_probe_ratio: float = 0.001,
    ) -> None:
        """
        @param initial_delay: the first delay's ceiling, in seconds.
        @param factor: how much the ceiling grows after each failure (>= 1).
        @param max_delay: the largest ceiling, in seconds.
        @param deadline: how long one call may wait in all, in seconds;
            C{None} (the default) waits as long as it takes.
        @param fast_probe_interval: the shortest pause after a cheap
            failure, in seconds (default 1 ms), or C{None} to back off
            after every failure alike, as before this option existed.
        @param fast_probe_ratio: how the pause after a cheap failure
            grows with the outage: it is at least this fraction of the
            time the database has been unreachable (default 0.001; 0: it
            stays C{fast_probe_interval}), and at most C{max_delay}.
        @raise ConfigurationError: a value is not a positive number,
            C{factor} is below 1, or C{fast_probe_ratio} is not between 0
            and 1 (the message names the option).
        """
        self.initial_delay = seconds("initial_delay", initial_delay)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor >= 1:
            raise ConfigurationError("factor must be a number >= 1, not %r" % (factor,))
        self.factor = float(factor)
        self.max_delay = seconds("max_delay", max_delay)
        self.deadline = optional_seconds("deadline", deadline)
        self.fast_probe_interval = optional_seconds("fast_probe_interval", fast_probe_interval)
        if (
            isinstance(fast_probe_ratio, bool)
            or not isinstance(fast_probe_ratio, (int, float))
            or not 0 <= fast_probe_ratio <= 1
        ):
            raise ConfigurationError(
                "fast_probe_ratio must be a number between 0 and 1, not %r" % (fast_probe_ratio,)
            )
        self.fast_probe_ratio = float(fast_probe_ratio)
        # Twisted's own exponential ceiling; the full jitter is ours.
        self._ceiling = backoffPolicy(
            self.initial_delay, self.max_delay, self.factor, jitter=lambda: 0
        )

    def __repr__(self) -> str:
        return (
            "WaitForDatabase(initial_delay=%g, factor=%g, max_delay=%g, deadline=%r, "
            "fast_probe_interval=%r, fast_probe_ratio=%g)"
            % (
                self.initial_delay,
                self.factor,
                self.max_delay,
                self.deadline,
                self.fast_probe_interval,
                self.fast_probe_ratio,
            )
        )

    def retry_delay(self, steps: int, cheap: bool, down_for: float = 0.0) -> Tuple[float, int]:
        """
        As L{ReconnectPolicy.retry_delay}, except that the pause after a
        cheap failure grows with the outage: it is the larger of
        C{fast_probe_interval} and C{fast_probe_ratio * down_for}, and no
        more than C{max_delay}.  The longer a database has been down,
        the less a millisecond of its return matters, and the less often
        it is asked.
        """
        interval = self.fast_probe_interval
        if cheap and interval is not None:
            return max(interval, min(self.fast_probe_ratio * down_for, self.max_delay)), steps
        return super().retry_delay(steps, cheap, down_for)

    def delay(self, failures: int) -> float:
        """
        @param failures: how many backoff steps this call took so far
            (see L{ReconnectPolicy.retry_delay}).
        @return: a delay in seconds, with full jitter.
        """
        return random.uniform(0, self._ceiling(failures))
