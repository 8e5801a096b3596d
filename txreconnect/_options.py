"""
Checking the values of the pool's own options; a bad one is a
L{ConfigurationError} that names it.
"""

from __future__ import annotations

from typing import Optional

from txreconnect.errors import ConfigurationError

__all__ = ["count", "flag", "optional_seconds", "seconds", "sizes"]


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
    Like L{seconds}, but C{None} (off) is allowed.
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


def sizes(cp_min: object, cp_max: object, min_given: bool) -> None:
    """
    Check a pool's size: adbapi would wait for ever on C{cp_max=0}, and
    silently lower a C{cp_min} larger than C{cp_max}.  A default
    C{cp_min} follows a smaller C{cp_max}, as in adbapi (C{cp_max=2}
    alone lowers the default C{cp_min} of 3 to 2).

    @param cp_min: the value of C{cp_min}.
    @param cp_max: the value of C{cp_max}, given or default.
    @param min_given: whether the user gave C{cp_min}.
    @raise ConfigurationError: C{cp_min} is not an integer >= 0,
        C{cp_max} not an integer >= 1, or C{cp_min} was given and is
        larger.
    """
    low = count("cp_min", cp_min)
    high = count("cp_max", cp_max)
    if high < 1:
        raise ConfigurationError("cp_max must be at least 1, not %r: no call could ever run" % (high,))
    if min_given and low > high:
        raise ConfigurationError("cp_min (%d) must not be larger than cp_max (%d)" % (low, high))


def flag(name: str, value: object) -> bool:
    """
    @return: C{value}, a boolean.
    @raise ConfigurationError: it is not C{True} or C{False}.
    """
    if not isinstance(value, bool):
        raise ConfigurationError("%s must be True or False, not %r" % (name, value))
    return value
