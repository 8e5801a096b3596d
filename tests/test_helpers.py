"""
The small helpers of C{txreconnect.testing}: waiting with a deadline
(L{txreconnect.testing._wait}) and quoting SQL names and values
(L{txreconnect.testing._sql}).
"""

from __future__ import annotations

import subprocess
from typing import Any, List

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from txreconnect.testing._sql import quote_ident, quote_literal
from txreconnect.testing._wait import WaitTimeout, wait_until, wait_until_async


class WaitUntilTests(SynchronousTestCase):
    """
    L{wait_until} polls, blocking, until a condition holds or its
    deadline passes.
    """

    def test_returnsOnceTheConditionHolds(self) -> None:
        """
        It polls until the condition holds, and returns how long it took.
        """
        answers = iter([False, False, True])
        took = wait_until(lambda: next(answers), 5, "the third answer", interval=0)
        self.assertGreaterEqual(took, 0)
        self.assertRaises(StopIteration, next, answers)

    def test_aConditionThatNeverHoldsRaisesNamingWhatWasAwaited(self) -> None:
        """
        After its timeout it raises L{WaitTimeout}, a C{RuntimeError}, that
        names what was awaited, the timeout and the waiter's detail.
        """
        e = self.assertRaises(
            WaitTimeout, wait_until, lambda: False, 0.05, "the moon", interval=0.01, detail=lambda: "it is new"
        )
        self.assertIsInstance(e, RuntimeError)
        self.assertEqual(str(e), "gave up after 0.05 s waiting for the moon; it is new")

    def test_retriedErrorsMeanNotYetAndTheLastIsNamed(self) -> None:
        """
        An exception named in C{retry_on} means "not yet"; the last one is
        named in the error, a failed command by what it printed.
        """
        calls: List[int] = []

        def flaky() -> bool:
            calls.append(1)
            if len(calls) < 3:
                raise subprocess.CalledProcessError(2, ["psql"], "", "server starting\n")
            return True

        wait_until(flaky, 5, "the server", interval=0, retry_on=(subprocess.CalledProcessError,))
        self.assertEqual(len(calls), 3)

        def failing() -> bool:
            raise subprocess.CalledProcessError(2, ["psql"], "", "no such database\n")

        e = self.assertRaises(
            WaitTimeout, wait_until, failing, 0.02, "the database", interval=0.01,
            retry_on=(subprocess.CalledProcessError,),
        )
        self.assertIn("(last error: no such database)", str(e))

    def test_otherErrorsPassThrough(self) -> None:
        """
        An exception not named in C{retry_on} ends the wait at once.
        """

        def broken() -> bool:
            raise KeyError("x")

        self.assertRaises(KeyError, wait_until, broken, 5, "anything", retry_on=(OSError,))


class WaitUntilAsyncTests(SynchronousTestCase):
    """
    L{wait_until_async} polls on a reactor's clock.
    """

    def setUp(self) -> None:
        self.clock = task.Clock()

    def test_firesWithTheTimeItTook(self) -> None:
        """
        It polls every C{interval} on the clock and fires with the seconds
        it took once the condition holds.
        """
        ready: List[bool] = []
        d = wait_until_async(lambda: bool(ready), 10, "ready", interval=1, clock=self.clock)
        self.clock.advance(1)
        self.assertNoResult(d)
        ready.append(True)
        self.clock.advance(1)
        self.assertEqual(self.successResultOf(d), 2)

    def test_aConditionMayReturnADeferred(self) -> None:
        """
        A condition that returns a Deferred is judged by its result.
        """
        answers = iter([defer.succeed(False), defer.succeed(True)])
        d = wait_until_async(lambda: next(answers), 10, "an answer", interval=1, clock=self.clock)
        self.clock.advance(1)
        self.assertEqual(self.successResultOf(d), 1)

    def test_failsWithWaitTimeoutAfterTheTimeout(self) -> None:
        """
        After its timeout the Deferred fails with L{WaitTimeout}, with the
        last retried error.
        """

        def refused() -> Any:
            return defer.fail(ConnectionRefusedError("refused"))

        d = wait_until_async(refused, 2, "a connection", interval=1, clock=self.clock, retry_on=(OSError,))
        self.clock.pump([1, 1, 1])
        e = self.failureResultOf(d, WaitTimeout).value
        self.assertEqual(str(e), "gave up after 2 s waiting for a connection (last error: refused)")


class QuoteTests(SynchronousTestCase):
    """
    The quoters double the quote character inside (and backslashes for
    MySQL's literals); the throwaway servers' tests use odd names for
    real.
    """

    def test_identifiers(self) -> None:
        """
        Standard SQL's double quotes, or MySQL's backquotes.
        """
        self.assertEqual(quote_ident('My "db"'), '"My ""db"""')
        self.assertEqual(quote_ident("my `db`", "`"), "`my ``db```")

    def test_literals(self) -> None:
        """
        Single quotes are doubled; backslashes only when asked.
        """
        self.assertEqual(quote_literal("it's \\n"), "'it''s \\n'")
        self.assertEqual(quote_literal("it's \\n", backslashes=True), "'it''s \\\\n'")
