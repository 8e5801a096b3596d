"""
A pool whose construction fails leaves nothing behind: no thread, no
reactor trigger, no process that cannot stop; and sizes that adbapi would
accept and then hang on are refused.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from typing import Any, List

from twisted.trial.unittest import TestCase

from txreconnect import ConfigurationError, ReconnectingConnectionPool
from txreconnect import _fork

#: a host list that the MySQL driver layer refuses (an empty entry, and
#: three ports for three hosts... of which one is empty)
_BAD_HOST_LIST = dict(host="a,,b", port="1,2,3", user="u", target_session_attrs="read-write")


def _pool_threads() -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("PoolThread")]


class _RunningReactor:
    """
    The parts of a running reactor that adbapi's pool uses at
    construction: C{callWhenRunning} calls at once (so the pool starts its
    threads), and system event triggers are kept in L{triggers}.
    """

    def __init__(self) -> None:
        self.triggers: List[Any] = []

    def callWhenRunning(self, function: Any) -> None:
        function()

    def addSystemEventTrigger(self, phase: str, event: str, trigger: Any) -> Any:
        handle = (phase, event, trigger)
        self.triggers.append(handle)
        return handle

    def removeSystemEventTrigger(self, handle: Any) -> None:
        self.triggers.remove(handle)


class FailedConstructionTests(TestCase):
    """
    With a running reactor, adbapi's __init__ starts a pool's threads at
    once: the case that once left three threads behind, and a process
    that SIGTERM could not stop.
    """

    def test_badHostListWithARunningReactorLeavesNoThreadAndNoTrigger(self) -> None:
        """
        A malformed MySQL host list is a L{ConfigurationError}, and no pool
        thread or reactor trigger is left.
        """
        running = _RunningReactor()
        threads = len(_pool_threads())
        error = self.assertRaises(
            ConfigurationError, ReconnectingConnectionPool, "pymysql", cp_reactor=running, **_BAD_HOST_LIST
        )
        self.assertIn("host list", str(error))
        self.assertEqual(len(_pool_threads()), threads)
        self.assertEqual(running.triggers, [])

    def test_failureAfterAdbapiStartedTheThreadsUndoesThem(self) -> None:
        """
        Should anything fail after adbapi's __init__ started the pool
        (here: registering for fork safety), the pool is closed before
        the error reaches the caller: its threads end and its shutdown
        trigger is removed.
        """
        running = _RunningReactor()
        threads = len(_pool_threads())
        started = []

        def broken(pool: Any) -> None:
            started.append((pool.running, len(_pool_threads()) - threads, list(running.triggers)))
            raise RuntimeError("registration failed")

        self.patch(_fork, "track", broken)
        self.assertRaises(RuntimeError, ReconnectingConnectionPool, "sqlite3", ":memory:", cp_reactor=running)
        [(was_running, new_threads, triggers)] = started
        self.assertTrue(was_running)
        self.assertGreater(new_threads, 0)
        self.assertEqual(len(triggers), 1)
        self.assertEqual(len(_pool_threads()), threads)
        self.assertEqual(running.triggers, [])

    def test_processWithAFailedPoolStopsWithTheReactor(self) -> None:
        """
        A process whose reactor runs, builds a pool with a bad option and
        then stops its reactor exits promptly, with no pool thread alive.
        """
        script = textwrap.dedent(
            """
            import threading
            from twisted.internet import reactor
            from txreconnect import ConfigurationError, ReconnectingConnectionPool

            def build():
                try:
                    ReconnectingConnectionPool("pymysql", **%r)
                except ConfigurationError:
                    print("refused")
                reactor.stop()

            reactor.callWhenRunning(build)
            reactor.run()
            print("threads", sorted(t.name for t in threading.enumerate() if t.name.startswith("PoolThread")))
            """
            % (_BAD_HOST_LIST,)
        )
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        try:
            done = subprocess.run(
                [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
            )
        except subprocess.TimeoutExpired as e:
            self.fail("the process did not exit within 60 s: %r" % (e.stdout,))
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(done.stdout.split("\n")[:2], ["refused", "threads []"], done.stderr)
        self.assertNotIn("AttributeError", done.stderr)


class SizeTests(TestCase):
    """
    C{cp_min} and C{cp_max} that adbapi would accept and then hang on, or
    silently change, are refused, naming the option.
    """

    def test_cpMaxZeroIsRefused(self) -> None:
        """
        C{cp_max=0} would make every call wait for ever.
        """
        error = self.assertRaises(ConfigurationError, ReconnectingConnectionPool, "sqlite3", ":memory:", cp_max=0)
        self.assertIn("cp_max", str(error))

    def test_cpMinLargerThanCpMaxIsRefused(self) -> None:
        """
        A C{cp_min} larger than C{cp_max}, given or default (5), is
        refused, where adbapi would silently lower it.
        """
        for kwargs in [{"cp_min": 4, "cp_max": 2}, {"cp_min": 8}]:
            error = self.assertRaises(
                ConfigurationError, ReconnectingConnectionPool, "sqlite3", ":memory:", **kwargs
            )
            self.assertIn("cp_min", str(error))
            self.assertIn("cp_max", str(error))

    def test_sizesMustBeIntegers(self) -> None:
        """
        Negative, fractional, boolean or text sizes are refused.
        """
        for keyword, bad in [("cp_min", -1), ("cp_max", 2.5), ("cp_max", True), ("cp_min", "1")]:
            error = self.assertRaises(
                ConfigurationError, ReconnectingConnectionPool, "sqlite3", ":memory:", **{keyword: bad}
            )
            self.assertIn(keyword, str(error))

    def test_smallerCpMaxLowersTheDefaultCpMinAsAdbapiDoes(self) -> None:
        """
        C{cp_max=2} alone lowers adbapi's default C{cp_min} of 3, as
        adbapi does.
        """
        pool = ReconnectingConnectionPool("sqlite3", ":memory:", cp_max=2)
        self.addCleanup(pool.close)
        self.assertEqual((pool.min, pool.max), (2, 2))
