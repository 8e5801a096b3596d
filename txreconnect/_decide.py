"""
The replay decision: what the pool does after an attempt of a call
raised, as a pure function of what happened.

L{decide} takes an L{Attempt} (what kind of error, how far the call got,
how it is marked, what budget is left) and returns an L{Outcome}: pass
the error on, replay the call, or raise one of txreconnect's errors.  It
has no side effects, so that the rules that are the product can be read
in one place and tested as a table; the pool carries out what it says
(discarding the connection, counting, logging, raising).  L{message}
words the error an outcome raises.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import Optional, Tuple, Type

from txreconnect.errors import DisconnectionError, TransactionOutcomeUnknown, WrongServerError

__all__ = ["Attempt", "Kind", "Outcome", "action", "conflict_delay", "counters", "decide", "message"]

#: the first conflict retry's backoff ceiling, and the largest, in seconds
CONFLICT_DELAY = 0.02
CONFLICT_MAX_DELAY = 1.0


class Kind(enum.Enum):
    """
    What the driver's rules say an error means.
    """

    #: an error in the SQL, the data or the user's code: the connection
    #: is fine
    OTHER = "other"
    #: the connection is lost
    DISCONNECT = "disconnect"
    #: a statement refused by a server that another of the host list may
    #: serve: a write on a read-only server, anything on a Galera node
    #: outside the primary component
    WRONG_SERVER = "wrong server"
    #: the server rolled the transaction back because of a conflict with
    #: another (a deadlock, a serialization failure, a lock wait timeout)
    CONFLICT = "conflict"


class Outcome(enum.Enum):
    """
    What follows a failed attempt.  Each value carries the exception the
    call then fails with (C{None}: the original error, or none when the
    call is replayed) and the counter of L{pool.stats()
    <txreconnect.ReconnectingConnectionPool.stats>} it adds to (C{None}:
    none of its own).
    """

    #: roll back and raise the original error unchanged
    PASS_ON = ("pass on", None, None)
    #: run the call again on a new connection
    REPLAY = ("replay", None, "replays")
    #: run the call again, after a short backoff, on the same connection
    RETRY_CONFLICT = ("retry conflict", None, "conflict_retries")
    #: ask the database, on a new connection, whether the COMMIT that was
    #: in flight took effect; then decide again with the answer
    RESOLVE_COMMIT = ("resolve commit", None, None)
    #: the COMMIT in flight took effect: the call succeeded
    COMMITTED = ("committed", None, None)
    #: the server refused COMMIT: nothing committed, but COMMIT was sent
    COMMIT_REFUSED = ("commit refused", WrongServerError, None)
    #: lost while the outcome was unknown: COMMIT in flight, or autocommit
    OUTCOME_UNKNOWN = ("outcome unknown", TransactionOutcomeUnknown, "outcome_unknown")
    #: the stall bound ran out and shut the socket down
    STALLED = ("stalled", DisconnectionError, "stalls")
    #: lost, and the call may not (or may no longer) be replayed
    GAVE_UP = ("gave up", DisconnectionError, None)
    #: a read-only server again, and the call may not be replayed
    GAVE_UP_WRONG_SERVER = ("gave up on the wrong server", WrongServerError, None)

    def __init__(self, label: str, error: Optional[Type[DisconnectionError]], stat: Optional[str]) -> None:
        self.label = label
        self.error = error
        self.stat = stat


@dataclass(frozen=True)
class Attempt:
    """
    What happened in one failed attempt of a call.

    @ivar kind: what the driver's rules say the error means.
    @ivar commit_started: whether C{commit()} was called.
    @ivar statement_sent: whether a statement may have been sent.
    @ivar autocommit: whether the connection was in autocommit mode when
        the first statement was sent.
    @ivar idempotent: whether the user's function is marked
        L{txreconnect.idempotent}: it may run again whatever happened.
    @ivar replayable: whether an unmarked call may be replayed when
        nothing was committed (C{runInteraction}: yes;
        C{runWithConnection}: no, the function may commit by itself).
    @ivar stalled: whether the attempt ran past C{cp_stall_timeout}.
    @ivar replayed: how many times the call was replayed already.
    @ivar replays: how many times a call may be replayed (C{cp_replays}).
    @ivar conflicts: how many times the call was retried after a
        conflict already.
    @ivar conflict_retries: how many times a call may be retried after a
        conflict (C{cp_conflict_retries}).
    @ivar resolvable: whether the database can be asked whether a COMMIT
        in flight took effect (C{cp_resolve_commits}, and the transaction
        left its marker: it wrote, outside autocommit).
    @ivar committed: what the database answered, once asked: C{True} (it
        took effect), C{False} (it did not, and never will), or C{None}
        (not asked, or no answer).
    """

    kind: Kind
    commit_started: bool = False
    statement_sent: bool = False
    autocommit: bool = False
    idempotent: bool = False
    replayable: bool = True
    stalled: bool = False
    replayed: int = 0
    replays: int = 1
    conflicts: int = 0
    conflict_retries: int = 0
    resolvable: bool = False
    committed: Optional[bool] = None


def decide(attempt: Attempt) -> Outcome:
    """
    Decide what follows a failed attempt.  The rules, in order:

      1. An error that is neither a lost connection, a wrong server nor a
         conflict is passed on (after a rollback).
      2. A conflict (the server rolled the transaction back, even one
         raised at COMMIT: nothing was committed) is retried, budget
         allowing, if the call may run again: not in autocommit once a
         statement was sent (an earlier statement may have committed),
         nor C{runWithConnection}, unless marked idempotent.  Otherwise
         it is passed on unchanged.
      3. A call marked idempotent may always run again, budget allowing.
      4. A refused COMMIT is not replayed: COMMIT was sent.  Unless the
         database can tell its outcome: then it is resolved, as in 5.
      5. A call that may have committed (COMMIT in flight after a
         statement was sent, or a statement sent in autocommit) is never
         replayed; a transaction that sent no statement has nothing to
         commit.  But a COMMIT in flight
         whose outcome the database can tell is resolved first: if it took
         effect the call succeeded; if it did not, the call is treated as
         one whose COMMIT never started.
      6. A call that ran into the stall bound is not replayed: the
         network path is suspect and the caller has waited long enough.
      7. Otherwise the call is replayed if it may be and budget is left.

    @param attempt: what happened.
    @return: what to do.
    """
    if attempt.kind is Kind.OTHER:
        return Outcome.PASS_ON
    if attempt.kind is Kind.CONFLICT:
        may_run_again = attempt.idempotent or (
            attempt.replayable and not (attempt.statement_sent and attempt.autocommit)
        )
        if may_run_again and attempt.conflicts < attempt.conflict_retries:
            return Outcome.RETRY_CONFLICT
        return Outcome.PASS_ON
    wrong = attempt.kind is Kind.WRONG_SERVER
    if not attempt.idempotent:
        commit_started = attempt.commit_started and attempt.statement_sent
        if wrong and commit_started and attempt.committed is None and not attempt.resolvable:
            return Outcome.COMMIT_REFUSED
        if attempt.statement_sent and attempt.autocommit:
            # Even on a read-only server: in autocommit, an earlier
            # statement may have committed before the server turned.
            return Outcome.OUTCOME_UNKNOWN
        if commit_started and attempt.committed is not False:
            if attempt.committed:
                return Outcome.COMMITTED
            return Outcome.RESOLVE_COMMIT if attempt.resolvable else Outcome.OUTCOME_UNKNOWN
    if attempt.stalled and not wrong:
        return Outcome.STALLED
    if (attempt.replayable or attempt.idempotent) and attempt.replayed < attempt.replays:
        return Outcome.REPLAY
    return Outcome.GAVE_UP_WRONG_SERVER if wrong else Outcome.GAVE_UP


def conflict_delay(conflicts: int) -> float:
    """
    The backoff before retrying a conflict: full jitter under an
    exponential ceiling, from L{CONFLICT_DELAY} up to
    L{CONFLICT_MAX_DELAY}, so that the transactions that collided do not
    collide again.

    @param conflicts: how many times the call was retried already.
    @return: seconds.
    """
    return random.uniform(0, min(CONFLICT_MAX_DELAY, CONFLICT_DELAY * 2**conflicts))


def counters(outcome: Outcome, replayed: int) -> Tuple[str, ...]:
    """
    @param outcome: the decision.
    @param replayed: how many times the call was replayed already.
    @return: the counters of C{pool.stats()} that the decision adds one
        to: the outcome's own, and C{replays_failed} when a replayed call
        gives up.
    """
    if outcome in (Outcome.GAVE_UP, Outcome.GAVE_UP_WRONG_SERVER):
        return ("replays_failed",) if replayed else ()
    return (outcome.stat,) if outcome.stat else ()


def message(outcome: Outcome, what: str, cause: str, stall_timeout: Optional[float] = None) -> str:
    """
    Word the error that C{outcome} raises.  Each message says whether a
    retry is safe.

    @param outcome: an outcome whose C{error} is not C{None}.
    @param what: the call: C{"interaction"} or C{"function"}.
    @param cause: the driver's error, described (type and first line).
    @param stall_timeout: the stall bound in seconds, for L{Outcome.STALLED}.
    @return: the message.
    @raise ValueError: C{outcome} raises nothing.
    """
    if outcome is Outcome.COMMIT_REFUSED:
        return (
            "the database server refused to commit the %s because it is read-only or not "
            "ready (%s); nothing was committed, so retrying the call is safe, but it is not "
            "replayed once COMMIT was sent" % (what, cause)
        )
    if outcome is Outcome.OUTCOME_UNKNOWN:
        return (
            "lost the database connection (%s) after the %s may have committed "
            "(COMMIT was in flight, or autocommit was on); it may or may not have "
            "taken effect, so check before retrying" % (cause, what)
        )
    if outcome is Outcome.STALLED:
        return (
            "no answer from the database within %s s (cp_stall_timeout), so the "
            "connection was shut down (%s); nothing was committed, so retrying the "
            "call is safe" % (stall_timeout, cause)
        )
    if outcome is Outcome.GAVE_UP_WRONG_SERVER:
        return (
            "the database server refused a statement because it is read-only or not ready "
            "(%s), and reconnecting did not reach a server that would take it; nothing was "
            "committed, so retrying the call is safe: list every server (with "
            "target_session_attrs=read-write to find a writer) so that the pool can find "
            "one" % (cause,)
        )
    if outcome is Outcome.GAVE_UP:
        return (
            "lost the database connection (%s) before the %s could commit; nothing "
            "was committed, so retrying the call is safe" % (cause, what)
        )
    raise ValueError("%s raises no error" % (outcome,))


def action(outcome: Outcome, what: str, replayed: int, replays: int, stall_timeout: Optional[float]) -> str:
    """
    Say, for the log line, what the pool does about a failed attempt.

    @param outcome: the decision.
    @param what: the call: C{"interaction"} or C{"function"}.
    @param replayed: how many times the call was replayed already.
    @param replays: the pool's C{cp_replays}.
    @param stall_timeout: the stall bound in seconds.
    @return: e.g. C{"replaying the interaction (1 of 1)"}.
    """
    if outcome is Outcome.REPLAY:
        return "replaying the %s (%d of %d)" % (what, replayed + 1, replays)
    if outcome is Outcome.RETRY_CONFLICT:
        return "retrying the %s after a short backoff" % (what,)
    if outcome is Outcome.RESOLVE_COMMIT:
        return "asking the database whether the %s's COMMIT took effect" % (what,)
    if outcome is Outcome.COMMITTED:
        return "its COMMIT took effect: the %s succeeded" % (what,)
    if outcome is Outcome.PASS_ON:
        return "passing the error on"
    if outcome is Outcome.COMMIT_REFUSED:
        return "not replaying the %s: COMMIT was sent" % (what,)
    if outcome is Outcome.OUTCOME_UNKNOWN:
        return "not replaying the %s: its outcome is unknown" % (what,)
    if outcome is Outcome.STALLED:
        return "no answer within %s s: not replaying" % (stall_timeout,)
    return "giving up after %d replays" % (replayed,)
