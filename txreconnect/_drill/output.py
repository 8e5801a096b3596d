"""
What a drill shows: its lines, with a live progress line under them on a
terminal; and what it does with the log, which it only counts unless asked
to keep it, so that adbapi's tracebacks never flood the terminal.
"""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from typing import Any, Dict, Optional

from twisted.logger import ILogObserver, LogLevel, textFileLogObserver
from zope.interface import implementer

__all__ = ["Log", "Screen"]


class Screen:
    """
    The drill's output: lines, and on a terminal a live progress line
    under them, rewritten in place.
    """

    def __init__(self, live: bool) -> None:
        self.live = live
        self._status = ""

    def line(self, text: str = "") -> None:
        self._erase()
        sys.stdout.write(text + "\n")
        self._draw()
        sys.stdout.flush()

    def status(self, text: str) -> None:
        if self.live:
            self._erase()
            self._status = text[: shutil.get_terminal_size().columns - 1]
            self._draw()

    def done(self) -> None:
        self._erase()
        self._status = ""

    def _draw(self) -> None:
        if self._status:
            sys.stdout.write("\r" + self._status)
            sys.stdout.flush()

    def _erase(self) -> None:
        if self._status:
            sys.stdout.write("\r" + " " * len(self._status) + "\r")


@implementer(ILogObserver)
class Log:
    """
    The log observer: counts warnings and errors, and writes everything to
    a file if asked, so that adbapi's tracebacks never reach the terminal.
    """

    def __init__(self, path: Optional[str]) -> None:
        self.path = path
        self.counts: Counter[str] = Counter()
        self._file = None if path is None else textFileLogObserver(open(path, "a"))

    def __call__(self, event: Dict[str, Any]) -> None:
        level = event.get("log_level")
        if level is LogLevel.warn:
            self.counts["warnings"] += 1
        elif level in (LogLevel.error, LogLevel.critical):
            self.counts["errors"] += 1
        if self._file is not None:
            self._file(event)

    def summary(self) -> str:
        counted = "%d warnings and %d errors" % (self.counts["warnings"], self.counts["errors"])
        if self.path is None:
            return "log: %s, not shown (--log FILE keeps them)" % (counted,)
        return "log: %s, in %s" % (counted, self.path)
