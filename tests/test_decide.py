"""
The replay decision (L{txreconnect._decide}), as a table of every
combination of what can happen in a failed attempt.
"""

from __future__ import annotations

import itertools
from typing import Dict, Iterator, Optional, Tuple

from twisted.trial.unittest import SynchronousTestCase

from txreconnect._decide import Attempt, Kind, Outcome, action, conflict_delay, counters, decide, message
from txreconnect.errors import DisconnectionError, TransactionOutcomeUnknown, WrongServerError

_D, _W, _O, _C = Kind.DISCONNECT, Kind.WRONG_SERVER, Kind.OTHER, Kind.CONFLICT
P, R, RC, RS, OK, CR, U, S, G, GW = (
    Outcome.PASS_ON,
    Outcome.REPLAY,
    Outcome.RETRY_CONFLICT,
    Outcome.RESOLVE_COMMIT,
    Outcome.COMMITTED,
    Outcome.COMMIT_REFUSED,
    Outcome.OUTCOME_UNKNOWN,
    Outcome.STALLED,
    Outcome.GAVE_UP,
    Outcome.GAVE_UP_WRONG_SERVER,
)

#: (kind, commit started, committed in autocommit?, idempotent, stalled,
#: allowed, resolvable, committed) -> outcome.  "commit started" is a COMMIT
#: sent after a statement (a transaction that sent none commits nothing).  "committed in autocommit?" is a statement sent in
#: autocommit mode; "allowed" is (runInteraction or idempotent) and budget
#: left: C{cp_conflict_retries} for a conflict, C{cp_replays} otherwise.
_Key = Tuple[Kind, bool, bool, bool, bool, bool, bool, Optional[bool]]
_TABLE: Dict[_Key, Outcome] = {}


def _rows() -> Iterator[Tuple[_Key, Outcome]]:
    for commit, auto, idem, stalled, allowed, resolvable in itertools.product([False, True], repeat=6):
        for committed in (None, True, False):
            rest = (commit, auto, idem, stalled, allowed, resolvable, committed)
            # Errors that are not lost connections pass on, whatever else
            # holds.
            yield (_O,) + rest, P
            # A lost connection.  A COMMIT in flight is resolved when it
            # can be; once known not to have committed, it is as if it
            # never started.
            if not idem and auto:
                disconnect = U
            elif not idem and commit and committed is True:
                disconnect = OK
            elif not idem and commit and committed is None:
                disconnect = RS if resolvable else U
            elif stalled:
                disconnect = S
            else:
                disconnect = R if allowed else G
            yield (_D,) + rest, disconnect
            # A server that refused the statement (never stalled: it
            # answered): a refused COMMIT is resolved when it can be, as a
            # lost one is.
            if not idem and commit and committed is None and not resolvable:
                wrong = CR
            elif not idem and auto:
                wrong = U
            elif not idem and commit and committed is True:
                wrong = OK
            elif not idem and commit and committed is None:
                wrong = RS
            else:
                wrong = R if allowed else GW
            yield (_W,) + rest, wrong
            # A conflict: the server rolled back, so nothing was committed,
            # even when it answered COMMIT; but in autocommit an earlier
            # statement may have committed.
            yield (_C,) + rest, RC if allowed and (idem or not auto) else P


_TABLE.update(_rows())


def _attempts() -> Iterator[Attempt]:
    """
    Every combination of the inputs of L{decide}.
    """
    for kind in Kind:
        for commit, sent, auto, idem, replayable, stalled in itertools.product([False, True], repeat=6):
            for replayed, replays in [(0, 0), (0, 1), (1, 1), (1, 2), (2, 2)]:
                for conflicts, conflict_retries in [(0, 0), (0, 3), (2, 3), (3, 3)]:
                    for resolvable, committed in itertools.product([False, True], [None, True, False]):
                        yield Attempt(
                            kind,
                            commit,
                            sent,
                            auto,
                            idem,
                            replayable,
                            stalled,
                            replayed,
                            replays,
                            conflicts,
                            conflict_retries,
                            resolvable,
                            committed,
                        )


class DecideTests(SynchronousTestCase):
    def test_everyCombinationMatchesTheTable(self) -> None:
        """
        Each of the 4 x 2**6 x 5 x 4 x 6 combinations gets the outcome the
        table gives for it.
        """
        seen = 0
        for attempt in _attempts():
            if attempt.kind is Kind.CONFLICT:
                budget = attempt.conflicts < attempt.conflict_retries
            else:
                budget = attempt.replayed < attempt.replays
            key = (
                attempt.kind,
                attempt.commit_started and attempt.statement_sent,
                attempt.statement_sent and attempt.autocommit,
                attempt.idempotent,
                attempt.stalled,
                (attempt.replayable or attempt.idempotent) and budget,
                attempt.resolvable,
                attempt.committed,
            )
            self.assertEqual(decide(attempt), _TABLE[key], attempt)
            seen += 1
        self.assertEqual(seen, 4 * 2**6 * 5 * 4 * 6)
        self.assertEqual(len(_TABLE), 4 * 2**6 * 3)

    def test_nothingThatMayHaveCommittedIsEverReplayed(self) -> None:
        """
        The rule that is the product: a call is replayed only if it is
        marked idempotent, or if no autocommit statement was sent and
        COMMIT either was never sent, or sent when no statement had been,
        or is known not to have committed; and it succeeds after a lost
        connection only if its COMMIT is known to have committed.
        """
        for attempt in _attempts():
            if decide(attempt) is Outcome.RETRY_CONFLICT:
                self.assertTrue(attempt.idempotent or not (attempt.statement_sent and attempt.autocommit), attempt)
                self.assertLess(attempt.conflicts, attempt.conflict_retries, attempt)
            if decide(attempt) is Outcome.COMMITTED:
                self.assertTrue(attempt.commit_started and attempt.statement_sent and attempt.committed is True, attempt)
            if decide(attempt) is Outcome.REPLAY:
                may_have_committed = (
                    attempt.commit_started and attempt.statement_sent and attempt.committed is not False
                ) or (
                    attempt.statement_sent and attempt.autocommit
                )
                self.assertTrue(attempt.idempotent or not may_have_committed, attempt)
                self.assertLess(attempt.replayed, attempt.replays, attempt)
                self.assertIsNot(attempt.kind, Kind.OTHER, attempt)

    def test_eachOutcomeRaisesItsError(self) -> None:
        """
        Each outcome that ends the call raises the documented error, and
        its message says whether a retry is safe.
        """
        expected = {
            CR: WrongServerError,
            U: TransactionOutcomeUnknown,
            S: DisconnectionError,
            G: DisconnectionError,
            GW: WrongServerError,
        }
        for outcome, error in expected.items():
            self.assertIs(outcome.error, error)
            text = message(outcome, "interaction", "OperationalError: gone", 300.0)
            self.assertIn("OperationalError: gone", text)
            self.assertTrue("safe" in text or "check before retrying" in text or "writable" in text, text)
        self.assertIsNone(P.error)
        self.assertIsNone(R.error)
        self.assertRaises(ValueError, message, R, "interaction", "x")

    def test_countersOfEachOutcome(self) -> None:
        """
        Replays, unknown outcomes and stalls count; giving up counts as a
        failed replay only after a replay.
        """
        self.assertEqual(counters(R, 0), ("replays",))
        self.assertEqual(counters(U, 0), ("outcome_unknown",))
        self.assertEqual(counters(S, 1), ("stalls",))
        self.assertEqual(counters(G, 0), ())
        self.assertEqual(counters(G, 1), ("replays_failed",))
        self.assertEqual(counters(GW, 2), ("replays_failed",))
        self.assertEqual(counters(CR, 0), ())
        self.assertEqual(counters(P, 0), ())
        self.assertEqual(counters(RC, 0), ("conflict_retries",))

    def test_actionsSayWhatThePoolDoes(self) -> None:
        """
        The log line's action names the replay and its number, or why
        there is none.
        """
        self.assertEqual(action(R, "interaction", 0, 1, None), "replaying the interaction (1 of 1)")
        self.assertIn("outcome is unknown", action(U, "function", 0, 1, None))
        self.assertIn("COMMIT was sent", action(CR, "interaction", 0, 1, None))
        self.assertIn("300", action(S, "interaction", 0, 1, 300.0))
        self.assertEqual(action(G, "interaction", 1, 1, None), "giving up after 1 replays")

    def test_conflictDelaysHaveFullJitterUnderAGrowingCeiling(self) -> None:
        """
        The backoff before a conflict retry is between 0 and a ceiling
        that doubles from 20 ms up to 1 s.
        """
        for conflicts, ceiling in [(0, 0.02), (1, 0.04), (3, 0.16), (10, 1.0)]:
            delays = [conflict_delay(conflicts) for _ in range(200)]
            self.assertTrue(all(0 <= d <= ceiling for d in delays), (conflicts, max(delays)))
            self.assertGreater(max(delays), ceiling / 2)
