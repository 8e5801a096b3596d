"""
The SQL of a drill: one table of writes, each row tagged with the unique
id of the write that stored it, and no unique constraint on that id, so
that a write stored twice shows up as two rows.
"""

from __future__ import annotations

from typing import Tuple

__all__ = ["Statements"]


class Statements:
    """
    The statements for one pool's table.

    @ivar create: the statements that make the table.
    @ivar drop: the statement that removes it.
    @ivar insert: store one write: C{(write_id, client)}.
    @ivar count: count the rows of one write: C{(write_id,)}.
    @ivar audit: every write id with its number of rows.
    """

    def __init__(self, table: str, paramstyle: str) -> None:
        """
        @param table: the table's name (an SQL identifier, not quoted).
        @param paramstyle: the driver's C{paramstyle}: C{"qmark"} (sqlite3)
            or a C{%s} style (the other drivers).
        """
        p = "?" if paramstyle == "qmark" else "%s"
        self.create: Tuple[str, ...] = (
            "CREATE TABLE %s (write_id VARCHAR(40) NOT NULL, client INTEGER NOT NULL)" % (table,),
            "CREATE INDEX %s_write_id ON %s (write_id)" % (table, table),
        )
        self.drop = "DROP TABLE IF EXISTS %s" % (table,)
        self.insert = "INSERT INTO %s (write_id, client) VALUES (%s, %s)" % (table, p, p)
        self.count = "SELECT count(*) FROM %s WHERE write_id = %s" % (table, p)
        self.audit = "SELECT write_id, count(*) FROM %s GROUP BY write_id" % (table,)
