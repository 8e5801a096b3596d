"""
The audit: what the clients were told about each write, against the rows
the database holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

__all__ = ["Audit", "FAILED", "OK", "UNKNOWN", "audit"]

#: what a client was told about a write
OK = "ok"
UNKNOWN = "unknown"  # TransactionOutcomeUnknown: it may or may not be stored
FAILED = "failed"  # any other error: it must not be stored


@dataclass
class Audit:
    """
    The verdict on one pool's writes.

    @ivar lost: writes reported successful with no row.
    @ivar duplicate: writes with more than one row.
    @ivar stored_after_error: writes reported failed (not as an unknown
        outcome) that were stored all the same.
    @ivar strangers: rows of writes no client made.
    @ivar unknown_stored: writes with an unknown outcome, stored once.
    @ivar unknown_not_stored: writes with an unknown outcome, not stored.
    """

    lost: int = 0
    duplicate: int = 0
    stored_after_error: int = 0
    strangers: int = 0
    unknown_stored: int = 0
    unknown_not_stored: int = 0

    @property
    def clean(self) -> bool:
        """
        Whether every write is stored as its client was told.
        """
        return not (self.lost or self.duplicate or self.stored_after_error or self.strangers)


def audit(writes: Mapping[str, str], rows: Mapping[str, int]) -> Audit:
    """
    @param writes: each write id with what its client was told (L{OK},
        L{UNKNOWN} or L{FAILED}).
    @param rows: each stored write id with its number of rows.
    @return: the verdict.
    """
    verdict = Audit(strangers=sum(n for write_id, n in rows.items() if write_id not in writes))
    for write_id, told in writes.items():
        stored = rows.get(write_id, 0)
        if stored > 1:
            verdict.duplicate += 1
        elif told == OK and not stored:
            verdict.lost += 1
        elif told == FAILED and stored:
            verdict.stored_after_error += 1
        elif told == UNKNOWN:
            if stored:
                verdict.unknown_stored += 1
            else:
                verdict.unknown_not_stored += 1
    return verdict
