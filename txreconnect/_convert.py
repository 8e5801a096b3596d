"""
Converting option values given as text (a database URL's query) into
Python values; a bad one is a L{ConfigurationError} that names it.

Each converter is called as C{convert(name, text)}, with the option's
name for the message.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

from txreconnect._options import seconds as _seconds_value
from txreconnect.errors import ConfigurationError

__all__ = [
    "Converter",
    "at_least_one",
    "boolean",
    "fraction",
    "integer",
    "number",
    "one_of",
    "seconds",
    "text",
    "text_or_none",
]

#: converts an option's text, given its name for the message
Converter = Callable[[str, str], Any]

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_NONE = ("none", "off")


def text(name: str, value: str) -> str:
    """
    @return: C{value} unchanged.
    """
    return value


def boolean(name: str, value: str) -> bool:
    """
    @return: C{value} read as a boolean: C{true}/C{false}, C{yes}/C{no},
        C{on}/C{off} or C{1}/C{0}, in any case.
    @raise ConfigurationError: it is none of these.
    """
    word = value.lower()
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    raise ConfigurationError("%s=%s is not a boolean (true or false)" % (name, value))


def integer(minimum: int = 0) -> Converter:
    """
    @param minimum: the smallest value allowed.
    @return: a converter of decimal integers >= C{minimum}.
    """

    def convert(name: str, value: str) -> int:
        if not (value.isascii() and value.isdigit()) or int(value) < minimum:
            raise ConfigurationError("%s=%s is not an integer >= %d" % (name, value, minimum))
        return int(value)

    return convert


def number(name: str, value: str) -> float:
    """
    @return: C{value} as a finite number: an C{int} if written without a
        decimal point and whole, else a C{float}.
    @raise ConfigurationError: it is not a finite number.
    """
    try:
        parsed = float(value)
    except ValueError:
        parsed = math.nan
    if not math.isfinite(parsed):
        raise ConfigurationError("%s=%s is not a number" % (name, value))
    return int(parsed) if parsed.is_integer() and "." not in value else parsed


def seconds(allow_zero: bool = False, allow_none: bool = False) -> Converter:
    """
    @param allow_zero: whether 0 is allowed.
    @param allow_none: whether C{none} or C{off} (C{None}: no bound) is
        allowed.
    @return: a converter of a number of seconds > 0 (or >= 0).
    """

    def convert(name: str, value: str) -> Optional[float]:
        if allow_none and value.lower() in _NONE:
            return None
        return _seconds_value(name, number(name, value), allow_zero)

    return convert


def at_least_one(name: str, value: str) -> float:
    """
    @return: C{value} as a number >= 1.
    @raise ConfigurationError: it is not.
    """
    parsed = number(name, value)
    if parsed < 1:
        raise ConfigurationError("%s=%s is not a number >= 1" % (name, value))
    return float(parsed)


def fraction(name: str, value: str) -> float:
    """
    @return: C{value} as a number between 0 and 1.
    @raise ConfigurationError: it is not.
    """
    parsed = number(name, value)
    if not 0 <= parsed <= 1:
        raise ConfigurationError("%s=%s is not a number between 0 and 1" % (name, value))
    return float(parsed)


def text_or_none(name: str, value: str) -> Optional[str]:
    """
    @return: C{value}, or C{None} for C{none}.
    """
    return None if value.lower() == "none" else value


def one_of(*values: str) -> Converter:
    """
    @param values: the values allowed, as written.
    @return: a converter that accepts only those.
    """

    def convert(name: str, value: str) -> str:
        if value not in values:
            raise ConfigurationError("%s=%s is not one of %s" % (name, value, ", ".join(values)))
        return value

    return convert
