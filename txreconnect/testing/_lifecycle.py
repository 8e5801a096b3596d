"""
What the throwaway servers and clusters share as things a caller owns:
C{with thing:} starts it, and destroys it when the block ends, as
C{testing.postgresql}'s servers do.
"""

from __future__ import annotations

from types import TracebackType
from typing import Optional, Type, TypeVar

__all__ = ["Owned"]

_Self = TypeVar("_Self", bound="Owned")


class Owned:
    """
    A context manager for anything with C{start()} and C{destroy()}::

        with PostgresServer() as server:
            pool = ReconnectingConnectionPool.from_url(server.url())

    Entering the block starts it (and destroys it at once if it cannot
    start); leaving the block destroys it, even when the block raised.
    """

    def start(self) -> None:
        """
        Start it; defined by subclasses.
        """
        raise NotImplementedError

    def destroy(self) -> None:
        """
        Stop it and remove all it left; defined by subclasses.
        """
        raise NotImplementedError

    def __enter__(self: _Self) -> _Self:
        """
        L{start}; if that fails, L{destroy} before raising.

        @return: C{self}, started.
        @raise ServerNotAvailable: the server software is missing.
        @raise RuntimeError: it did not come up.
        """
        try:
            self.start()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        """
        L{destroy}; an exception raised in the block goes on.
        """
        self.destroy()
