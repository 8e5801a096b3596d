"""
Quoting names and values into the SQL the throwaway servers run as their
administrator (never with a user's data: the drivers' parameters are for
that).
"""

from __future__ import annotations

__all__ = ["quote_ident", "quote_literal"]


def quote_ident(name: str, quote: str = '"') -> str:
    """
    Quote an SQL identifier: in double quotes, as standard SQL, PostgreSQL
    and PgBouncer's admin console (1.18) read them, or in MySQL's and
    MariaDB's backquotes with C{quote="`"}; the quote character is
    doubled inside.

    @param name: the identifier.
    @param quote: C{'"'} or C{"`"}.
    @return: the quoted identifier, whose case is kept.
    """
    return quote + name.replace(quote, quote * 2) + quote


def quote_literal(value: str, backslashes: bool = False) -> str:
    """
    Quote an SQL string literal, doubling single quotes.

    @param value: the text.
    @param backslashes: escape backslashes too, for MySQL and MariaDB,
        where a backslash escapes the next character (unless the
        C{NO_BACKSLASH_ESCAPES} SQL mode is set); PostgreSQL's standard
        strings take it as it is.
    @return: the literal.
    """
    if backslashes:
        value = value.replace("\\", "\\\\")
    return "'" + value.replace("'", "''") + "'"
