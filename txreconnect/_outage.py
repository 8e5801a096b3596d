"""
Whether a pool's database is reachable, shared by the pool's threads: the
state the reconnect policies act on, and the one warning / one info line
per outage.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional, TypeVar

from twisted.logger import Logger

from txreconnect._stats import Stats
from txreconnect.errors import DisconnectionError

__all__ = ["DOWN", "Outage", "PROBING", "UP"]

_T = TypeVar("_T")

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

    # --- used by the policies, under the condition -----------------------

    def check_open(self) -> None:
        """
        @raise DisconnectionError: the pool was closed.
        """
        if self.closed:
            raise DisconnectionError(
                "the pool was closed while this call waited for the database"
            ) from self._last_error

    def down_error(self, why: str) -> DisconnectionError:
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

    def wait(self, seconds: Optional[float]) -> None:
        """
        Wait (releasing the condition) until notified, C{seconds} pass, or
        the pool closes; count the time waited.
        """
        started = time.monotonic()
        self.condition.wait(seconds)
        self._stats.add("seconds_waiting", time.monotonic() - started)

    # --- attempts (outside the condition) ----------------------------------

    def attempt(self, open_connection: Callable[[], _T], prober: bool) -> _T:
        """
        Make one connection attempt and record what it says about the
        database.

        @param open_connection: opens and returns a connection.
        @param prober: whether the caller holds the L{PROBING} state; on
            failure it keeps it (the caller releases it with
            L{give_up_probing} or tries again).
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
                self.give_up_probing()
            raise
        with self.condition:
            if self._down_since is not None:
                self._log.info(
                    "{pool}: the database is reachable again; outage ended after {downtime:.1f} s",
                    pool=self._name(),
                    downtime=time.monotonic() - self._down_since,
                )
                self._down_since = None
            self.state = UP
            self.condition.notify_all()
        return conn

    def give_up_probing(self) -> None:
        """
        The prober stops: another waiting thread may take over.
        """
        with self.condition:
            if self.state == PROBING:
                self.state = DOWN
            self.condition.notify_all()
