"""
Checking the values of the pool's own options; a bad one is a
L{ConfigurationError} that names it.
"""

from __future__ import annotations

from typing import Optional

from txreconnect.errors import ConfigurationError

__all__ = ["count", "flag", "seconds", "optional_seconds"]


def seconds(name: str, value: object, allow_zero: bool = False) -> float:
    """
    @param name: the option's name, for the message.
    @param value: the value given.
    @param allow_zero: whether 0 is allowed.
    @return: C{value} as a float.
    @raise ConfigurationError: C{value} is not a number > 0 (or >= 0).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        value > 0 or (allow_zero and value == 0)
    ):
        raise ConfigurationError(
            "%s must be a number of seconds %s 0, not %r" % (name, ">=" if allow_zero else ">", value)
        )
    return float(value)


def optional_seconds(name: str, value: object, allow_zero: bool = False) -> Optional[float]:
    """
    Like L{seconds}, but L{None} (off) is allowed.
    """
    return None if value is None else seconds(name, value, allow_zero)


def count(name: str, value: object) -> int:
    """
    @return: C{value}, an integer >= 0.
    @raise ConfigurationError: it is not.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError("%s must be an integer >= 0, not %r" % (name, value))
    return value


def flag(name: str, value: object) -> bool:
    """
    @return: C{value}, a boolean.
    @raise ConfigurationError: it is not L{True} or L{False}.
    """
    if not isinstance(value, bool):
        raise ConfigurationError("%s must be True or False, not %r" % (name, value))
    return value
