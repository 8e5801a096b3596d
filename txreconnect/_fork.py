"""
Fork safety: a child process never uses, and never closes, the
connections it inherited from its parent.

Closing them would not just close the child's copy of the socket: the
driver would first say goodbye to the server (libpq's Terminate, MySQL's
COM_QUIT) on the socket the parent still uses, ending the parent's
session.  So the child keeps the inherited connection objects alive,
untouched, for as long as it runs, and opens its own.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any, List, Protocol

__all__ = ["track"]


class _ForkAware(Protocol):
    def _after_fork_in_child(self, inherited: List[Any]) -> None: ...


#: connections inherited from the parent; never used, never closed
_inherited: List[Any] = []
_pools: "weakref.WeakSet[_ForkAware]" = weakref.WeakSet()
_registered = False
_lock = threading.Lock()


def _after_fork_in_child() -> None:
    for pool in list(_pools):
        pool._after_fork_in_child(_inherited)


def track(pool: _ForkAware) -> None:
    """
    Have C{pool._after_fork_in_child} called in every child made by
    C{os.fork()} while C{pool} exists.
    """
    global _registered
    with _lock:
        _pools.add(pool)
        if not _registered:
            os.register_at_fork(after_in_child=_after_fork_in_child)
            _registered = True
