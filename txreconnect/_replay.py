"""
Marking an interaction as safe to run twice.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

__all__ = ["idempotent", "is_idempotent"]

_F = TypeVar("_F", bound=Callable[..., Any])

_MARK = "__txreconnect_idempotent__"


def idempotent(function: _F) -> _F:
    """
    Mark an interaction (for C{runInteraction}) or a function (for
    C{runWithConnection}) as safe to run again after the connection was
    lost, even when its outcome is unknown.

    Without this mark, the pool never replays a call whose connection died
    while COMMIT was in flight (or, in autocommit mode, after a statement
    ran), nor a C{runWithConnection} function; with it, it replays them
    once like any other.  Use it only when running the function twice has
    the same effect as running it once, e.g. an C{INSERT ... ON CONFLICT
    DO NOTHING} keyed by a unique id, or a read.

    Usable as a decorator or as a wrapper::

        @idempotent
        def upsert(txn, key, value): ...

        pool.runInteraction(idempotent(txn_function), ...)

    @param function: the interaction or function.
    @return: a callable that behaves exactly like C{function}.
    """

    @functools.wraps(function)
    def marked(*args: Any, **kwargs: Any) -> Any:
        return function(*args, **kwargs)

    setattr(marked, _MARK, True)
    return marked  # type: ignore[return-value]


def is_idempotent(function: Callable[..., Any]) -> bool:
    """
    @return: whether C{function} was marked with L{idempotent}.
    """
    return getattr(function, _MARK, False) is True
