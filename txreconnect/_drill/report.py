"""
The report table: one column per pool, one row per measure, with the audit
at the bottom.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from txreconnect._drill.audit import Audit
from txreconnect._drill.faults import Fault
from txreconnect._drill.record import Record

__all__ = ["table"]

_LABEL = 34
_COLUMN = 14


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "never"
    if seconds < 1:
        return "%d ms" % (round(seconds * 1000),)
    return "%.2f s" % (seconds,)


def _stat(name: str) -> Callable[[Record], str]:
    def cell(record: Record) -> str:
        return "-" if record.stats is None else str(record.stats.get(name, 0))

    return cell


def _resolved(record: Record) -> str:
    stats = record.stats
    if stats is None:
        return "-"
    return "%d / %d" % (stats.get("resolved_committed", 0), stats.get("resolved_aborted", 0))


def _audited(show: Callable[[Audit], object]) -> Callable[[Record], str]:
    def cell(record: Record) -> str:
        return "-" if record.audit is None else str(show(record.audit))

    return cell


def _recovery(faults: Sequence[Fault]) -> Callable[[Record], str]:
    def cell(record: Record) -> str:
        times = [record.recovery(fault.started) for fault in faults]
        return "never" if None in times else _duration(max(t for t in times if t is not None))

    return cell


def _failed_after(windows: Sequence[Tuple[float, float]]) -> Callable[[Record], str]:
    def cell(record: Record) -> str:
        return str(sum(record.failed_between(since, until) for since, until in windows))

    return cell


def table(records: Sequence[Record], faults: Sequence[Fault], end: float) -> List[str]:
    """
    For each kind of fault, the table shows the calls that failed from the
    fault to the next one, and the recovery time: from the fault to the
    end of the first successful call made after it (the worst, if it
    happened several times).

    @param records: what each pool's clients saw, audited.
    @param faults: the faults injected, in order.
    @param end: when the workload ended, on the reactor's clock.
    @return: the lines of the table.
    """
    rows: List[Any] = [
        ("interactions", lambda r: str(len(r.calls))),
        ("  reads", lambda r: str(r.reads)),
        ("  writes", lambda r: str(len(r.writes))),
        ("  succeeded", lambda r: str(r.succeeded)),
        ("  failed", lambda r: str(r.failed)),
    ]
    kinds = sorted(set().union(*(r.failures for r in records)))
    rows += [("    " + kind, lambda r, kind=kind: str(r.failures[kind])) for kind in kinds]
    rows += [
        ("replays", _stat("replays")),
        ("lost COMMITs resolved (done / not)", _resolved),
        ("outcome unknown (stored / not)", _audited(lambda a: "%d / %d" % (a.unknown_stored, a.unknown_not_stored))),
        ("downtime", lambda r: _duration(r.downtime(end))),
    ]
    by_kind: Dict[str, List[Fault]] = {}
    for fault in faults:
        by_kind.setdefault(fault.kind, []).append(fault)
    ends = {id(fault): until.started for fault, until in zip(faults, faults[1:])}
    for kind, some in by_kind.items():
        several = " (%d times)" % (len(some),) if len(some) > 1 else ""
        windows = [(fault.started, ends.get(id(fault), end)) for fault in some]
        rows.append(("%s%s: failed calls" % (kind, several), _failed_after(windows)))
        rows.append(("%s%s: recovery" % (kind, several), _recovery(some)))
    rows += [
        ("audit: lost rows", _audited(lambda a: a.lost)),
        ("audit: duplicate rows", _audited(lambda a: a.duplicate)),
        ("audit: stored after an error", _audited(lambda a: a.stored_after_error)),
        ("audit: rows nobody wrote", _audited(lambda a: a.strangers)),
        ("audit", _audited(lambda a: "clean" if a.clean else "NOT CLEAN")),
    ]
    header = "".rjust(_LABEL) + "".join(r.label.rjust(_COLUMN) for r in records)
    lines = [header, "-" * len(header)]
    lines += [label.ljust(_LABEL) + "".join(cell(r).rjust(_COLUMN) for r in records) for label, cell in rows]
    return lines
