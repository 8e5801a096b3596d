"""
A driver txreconnect does not know gets the generic rules, which must
never be worse than adbapi's C{cp_reconnect}: here pg8000, known to
txreconnect, is loaded under another module name so that the pool does
not recognise it, against a real PostgreSQL server that restarts.
"""

from __future__ import annotations

import sys
import types
from typing import Any, List, Tuple

from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.trial.unittest import TestCase

from txreconnect import ReconnectingConnectionPool
from txreconnect.drivers import Driver, driver_for
from txreconnect.testing import PostgresServer, require_driver, shared_server, warm

#: the name under which pg8000 is unknown to txreconnect
_ALIAS = "txreconnect_tests_unknown_pg"

CP_MAX = 4
CALLS = 16


def _alias(module: types.ModuleType) -> types.ModuleType:
    """
    @return: a module named L{_ALIAS} with C{module}'s public names,
        importable by that name.
    """
    alias = types.ModuleType(_ALIAS)
    alias.__dict__.update({key: value for key, value in vars(module).items() if not key.startswith("__")})
    sys.modules[_ALIAS] = alias
    return alias


class UnknownDriverTests(TestCase):
    def setUp(self) -> None:
        self.alias = _alias(require_driver("pg8000"))
        self.addCleanup(sys.modules.pop, _ALIAS, None)
        self.server = shared_server(self, PostgresServer)
        self.kwargs = dict(self.server.connect_kwargs("pg8000"), cp_min=1, cp_max=CP_MAX)

    @defer.inlineCallbacks
    def outcomes_after_restart(self, pool: adbapi.ConnectionPool) -> Any:
        """
        Warm C{pool}, restart the server, then make L{CALLS} calls one
        after another.

        @return: (failures, whether the last call succeeded).
        """
        pool.start()
        self.addCleanup(pool.close)
        yield warm(pool)
        self.server.restart()
        results: List[Tuple[bool, Any]] = []
        for i in range(CALLS):
            try:
                rows = yield pool.runQuery("SELECT %d" % (i,))
                results.append((True, rows))
            except Exception as e:
                results.append((False, e))
        failures = sum(1 for ok, _ in results if not ok)
        return failures, results[-1][0]

    def test_theAliasReallyIsUnknown(self) -> None:
        """
        The pool uses the generic rules for the alias.
        """
        self.assertIs(type(driver_for(self.alias)), Driver)

    @defer.inlineCallbacks
    def test_afterARestartNoCallFailsAndNoWorseThanCpReconnect(self) -> Any:
        """
        After a server restart, every call on a pool of an unknown driver
        succeeds: an error after which the connection fails its ping gets
        the connection replaced, and the call replayed.  adbapi with
        C{cp_reconnect=True} fails some; ours fails no more than it.
        """
        ours, ours_recovered = yield self.outcomes_after_restart(
            ReconnectingConnectionPool(_ALIAS, **self.kwargs)
        )
        theirs, _ = yield self.outcomes_after_restart(
            adbapi.ConnectionPool(_ALIAS, cp_reconnect=True, **self.kwargs)
        )
        self.flushLoggedErrors()
        self.assertTrue(ours_recovered)
        self.assertEqual(ours, 0)
        self.assertLessEqual(ours, theirs)
