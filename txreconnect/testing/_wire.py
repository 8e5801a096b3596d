"""
Reading a database session's wire protocol as it passes, to find the
client's COMMITs: the PostgreSQL frontend protocol and the MySQL /
MariaDB client protocol, for L{FaultProxy
<txreconnect.testing.proxy.FaultProxy>}'s C{cut_after_commit} and
C{cut_before_commit}.

The detectors frame the client's messages as they pass, without holding
any back; each COMMIT has two points in the stream: where the message
that makes the server execute it starts (for C{cut_before_commit}), and
where the message after which the server answers it ends (for
C{cut_after_commit}):

  - PostgreSQL: after the untyped startup packets (StartupMessage, and the
    SSLRequest / GSSENCRequest that libpq sends first, answered C{N} by a
    server without encryption), each message is a type byte and an int32
    length.  A COMMIT is a simple Query (C{Q}) whose text is a COMMIT, or,
    in the extended protocol, an Execute (C{E}) of a portal bound (C{B})
    to a statement parsed (C{P}) from a COMMIT, which the server executes
    (and commits) as soon as it has the Execute, and answers at the next
    Sync (C{S}), whatever else comes between: libpq and psycopg 3 send
    C{P B D E S} at once, pg8000 C{P H S}, C{D H S B H}, C{E H S} in three
    round trips.  The detector follows the prepared statements and the portals
    by name, as the server does (Close (C{C}) and a simple Query forget
    them).
  - MySQL / MariaDB: each packet is a 3-byte little-endian length and a
    sequence id.  Every command starts a new sequence (id 0), so a COMMIT
    is a packet with id 0 holding COM_QUERY (C{0x03}) and a COMMIT text,
    which the server executes and answers as soon as it has the whole
    packet (as PostgreSQL does a simple Query).
  - A statement is a COMMIT when it is C{COMMIT}, optionally followed by
    C{WORK} or C{TRANSACTION}, C{AND [NO] CHAIN} and C{[NO] RELEASE}, in any
    case, with whitespace, comments and one semicolon around it.  Several
    statements in one query are not recognised.
  - When the session is encrypted (the server accepted TLS or GSS) or
    compressed, they cannot read it, and never report a COMMIT in it.

The public names are re-exported by L{txreconnect.testing.proxy}.
"""

from __future__ import annotations

import re
import struct
from typing import Dict, Optional, Set, Union

__all__ = [
    "PROTOCOLS",
    "MySQLCommitDetector",
    "PostgresCommitDetector",
    "ProtocolDetector",
    "detector",
    "is_commit",
]

#: the wire protocols the detectors read
PROTOCOLS = ("postgresql", "mysql")

_GAP = rb"(?:\s+|--[^\n]*(?:\n|\Z)|\#[^\n]*(?:\n|\Z)|/\*.*?\*/)*"
_COMMIT = re.compile(
    rb"\A" + _GAP + rb"COMMIT"
    rb"(?:\s+(?:WORK|TRANSACTION))?"
    rb"(?:\s+AND\s+(?:NO\s+)?CHAIN)?"
    rb"(?:\s+(?:NO\s+)?RELEASE)?"
    + _GAP + rb";?" + _GAP + rb"\Z",
    re.IGNORECASE | re.DOTALL,
)

#: the most of a message examined: a longer query is not a COMMIT, nor a
#: statement or portal with a longer name
_CAPTURE = 4096

#: what a complete message means, as C{_Framer._end} says it: the server
#: executes a COMMIT on receiving it; the server answers a COMMIT once it
#: has received it
_EXECUTES = 1
_ANSWERS = 2


def is_commit(sql: bytes) -> bool:
    """
    Whether C{sql} is one COMMIT statement.

    @param sql: the statement text, in an ASCII-compatible encoding.
    @return: C{True} for C{COMMIT}, optionally followed by C{WORK} or
        C{TRANSACTION}, C{AND [NO] CHAIN} and C{[NO] RELEASE}, in any case,
        with whitespace, comments and one semicolon around it.
    """
    return _COMMIT.match(sql) is not None


class _Framer:
    """
    Frames one direction of a stream of length-prefixed messages as it
    passes, keeping only the headers and the first bytes of the messages it
    must read.

    Subclasses say how long a header is, how long a message's body is, and
    what a complete message means.

    @ivar opaque: the stream can no longer be read (encrypted, compressed or
        not understood); it is no longer framed.
    @ivar commit_start: after L{feed}, the offset in the data it was given
        of the first byte of the first message completed in it that makes
        the server execute a COMMIT (negative when that message began in
        earlier data), or C{None}.
    """

    opaque = False
    commit_start: Optional[int] = None

    def __init__(self) -> None:
        self._header = bytearray()
        self._remaining: Optional[int] = None
        self._body = bytearray()
        self._capture = 0
        # bytes of the message being framed received so far, header
        # included
        self._partial = 0

    @property
    def unfinished(self) -> int:
        """
        How many of the last bytes fed belong to a message not yet
        complete: 0 between messages, and once the stream is opaque.
        """
        return 0 if self.opaque else self._partial

    def _header_size(self) -> int:
        raise NotImplementedError

    def _start(self, header: bytes) -> Optional[int]:
        """
        A header is complete.

        @return: how long the body is, or C{None} when the stream cannot be
            framed.  Sets C{self._capture} to how many of its first bytes
            L{_end} needs.
        """
        raise NotImplementedError

    def _end(self, header: bytes, body: bytes) -> int:
        """
        A message is complete.

        @return: what it means for a COMMIT: C{_EXECUTES} and C{_ANSWERS},
            or'ed, or 0.
        """
        raise NotImplementedError

    def feed(self, data: bytes) -> Optional[int]:
        """
        Frame the next bytes of the stream, and set L{commit_start}.

        @return: the offset in C{data} just past the first message of it
            after which the server answers a COMMIT, or C{None}.
        """
        found: Optional[int] = None
        self.commit_start = None
        pos = 0
        while not self.opaque:
            if self._remaining is None:
                need = self._header_size() - len(self._header)
                if pos >= len(data):
                    break
                taken = min(need, len(data) - pos)
                self._header += data[pos:pos + taken]
                pos += taken
                self._partial += taken
                if len(self._header) < self._header_size():
                    break
                self._remaining = self._start(bytes(self._header))
                if self._remaining is None or self._remaining < 0:
                    self.opaque = True
                    break
            take = min(self._remaining, len(data) - pos)
            if len(self._body) < self._capture:
                self._body += data[pos:pos + min(take, self._capture - len(self._body))]
            pos += take
            self._partial += take
            self._remaining -= take
            if self._remaining:
                break
            meaning = self._end(bytes(self._header), bytes(self._body))
            if meaning & _EXECUTES and self.commit_start is None:
                self.commit_start = pos - self._partial
            if meaning & _ANSWERS and found is None:
                found = pos
            self._header.clear()
            self._body.clear()
            self._remaining = None
            self._capture = 0
            self._partial = 0
        return found


class _PostgresFrontend(_Framer):
    """
    The PostgreSQL frontend protocol, as a client sends it; message
    layouts from the PostgreSQL documentation, "Message Formats"
    (U{https://www.postgresql.org/docs/current/protocol-message-formats.html}).

    @ivar _commit_statements: the names of the prepared statements parsed
        from a COMMIT (C{b""} is the unnamed statement).
    @ivar _commit_portals: the names of the portals bound to one of those,
        each with the statement's name.
    @ivar _pending_commit: a COMMIT was executed since the last Sync.
    """

    # startup: untyped packets; awaiting: the server's one-byte answer to
    # an SSLRequest or GSSENCRequest; typed: the session proper.
    state = "startup"
    _pending_commit = False

    _ENCRYPTION_REQUESTS = (80877103, 80877104)  # SSLRequest, GSSENCRequest
    # the messages whose first bytes are read: Query, Parse, Bind, Execute,
    # Close
    _READ = (b"Q", b"P", b"B", b"E", b"C")

    def __init__(self) -> None:
        super().__init__()
        self._commit_statements: Set[bytes] = set()
        self._commit_portals: Dict[bytes, bytes] = {}

    def _header_size(self) -> int:
        return 5 if self.state == "typed" else 4

    def _start(self, header: bytes) -> Optional[int]:
        if self.state == "awaiting":
            # The client spoke before the server answered: not libpq.
            return None
        (length,) = struct.unpack("!i", header[-4:])
        if length < 4:
            return None
        if self.state == "startup":
            self._capture = 4
        elif header[:1] in self._READ:
            self._capture = _CAPTURE
        return length - 4

    def _end(self, header: bytes, body: bytes) -> int:
        if self.state == "startup":
            if len(body) < 4:
                self.opaque = True
                return 0
            (code,) = struct.unpack("!i", body[:4])
            if code in self._ENCRYPTION_REQUESTS:
                self.state = "awaiting"
            elif code >> 16 == 3:
                self.state = "typed"
            else:
                # CancelRequest or unknown: nothing to frame.
                self.opaque = True
            return 0
        kind = header[:1]
        if kind == b"S":
            # Sync: the server has executed everything before it and
            # answers.
            commit, self._pending_commit = self._pending_commit, False
            return _ANSWERS if commit else 0
        if kind == b"Q":
            # Query: the SQL text.  It destroys the unnamed statement and
            # the unnamed portal.
            self._commit_statements.discard(b"")
            self._commit_portals.pop(b"", None)
            if body.endswith(b"\0") and is_commit(body[:-1]):
                return _EXECUTES | _ANSWERS
        elif kind == b"P":
            # Parse: statement name, SQL text, parameter types.  It
            # replaces the unnamed statement.
            fields = body.split(b"\0", 2)
            if len(fields) == 3 and is_commit(fields[1]):
                self._commit_statements.add(fields[0])
            elif len(fields) >= 2:
                self._commit_statements.discard(fields[0])
        elif kind == b"B":
            # Bind: portal name, statement name, parameters.  It replaces
            # the unnamed portal.
            fields = body.split(b"\0", 2)
            if len(fields) == 3 and fields[1] in self._commit_statements:
                self._commit_portals[fields[0]] = fields[1]
            elif len(fields) >= 2:
                self._commit_portals.pop(fields[0], None)
        elif kind == b"E":
            # Execute: portal name, row limit.  The server runs a
            # transaction-control statement at once (it does not wait for
            # the Sync); a COMMIT ends the transaction, which closes every
            # portal.
            fields = body.split(b"\0", 1)
            if len(fields) == 2 and fields[0] in self._commit_portals:
                self._pending_commit = True
                self._commit_portals.clear()
                return _EXECUTES
        elif kind == b"C":
            # Close: 'S' and a statement name (which closes the portals
            # bound to it too), or 'P' and a portal name.
            fields = body[1:].split(b"\0", 1)
            if len(fields) == 2 and body[:1] == b"S":
                self._commit_statements.discard(fields[0])
                for portal, statement in list(self._commit_portals.items()):
                    if statement == fields[0]:
                        del self._commit_portals[portal]
            elif len(fields) == 2 and body[:1] == b"P":
                self._commit_portals.pop(fields[0], None)
        return 0

    def server_data(self, data: bytes) -> None:
        if self.state == "awaiting" and data:
            if data[:1] == b"N":
                self.state = "startup"
            else:
                # S or G: the session is encrypted from now on.
                self.opaque = True


class _MySQLClient(_Framer):
    _first = True
    _query_attributes = False

    CLIENT_COMPRESS = 0x20
    CLIENT_SSL = 0x800
    CLIENT_ZSTD_COMPRESSION = 1 << 26
    CLIENT_QUERY_ATTRIBUTES = 1 << 27
    COM_QUERY = 0x03

    def _header_size(self) -> int:
        return 4

    def _start(self, header: bytes) -> Optional[int]:
        length = header[0] | header[1] << 8 | header[2] << 16
        if self._first or header[3] == 0:
            self._capture = _CAPTURE
        return length

    def _end(self, header: bytes, body: bytes) -> int:
        if self._first:
            # The handshake response (or the SSL request that precedes
            # TLS): its first four bytes are the client's capabilities.
            self._first = False
            flags = int.from_bytes(body[:4], "little")
            if flags & (self.CLIENT_SSL | self.CLIENT_COMPRESS | self.CLIENT_ZSTD_COMPRESSION):
                self.opaque = True
            self._query_attributes = bool(flags & self.CLIENT_QUERY_ATTRIBUTES)
            return 0
        length = header[0] | header[1] << 8 | header[2] << 16
        if header[3] != 0 or length == 0xFFFFFF or body[:1] != bytes([self.COM_QUERY]):
            return 0
        sql = body[1:]
        if self._query_attributes:
            # Parameter count and parameter set count (length-encoded);
            # only a query without attributes can be a plain COMMIT.
            if sql[:2] != b"\x00\x01":
                return 0
            sql = sql[2:]
        return _EXECUTES | _ANSWERS if is_commit(sql) else 0

    def server_data(self, data: bytes) -> None:
        pass


class _CommitDetector:
    """
    The public face of a framer: see L{PostgresCommitDetector}.
    """

    protocol = ""

    def __init__(self) -> None:
        self._framer: Union[_PostgresFrontend, _MySQLClient, None] = None

    @property
    def opaque(self) -> bool:
        """
        Whether the session can no longer be read (encrypted, compressed, or
        not understood): its COMMITs are no longer recognised.
        """
        return self._framer is not None and self._framer.opaque

    @property
    def commit_start(self) -> Optional[int]:
        """
        After L{feed_client}: the offset in the data it was given of the
        first byte of the first message, completed in that data, on which
        the server executes a COMMIT (the simple Query or COM_QUERY, or the
        extended protocol's Execute), or C{None}.  It is negative when that
        message began in data fed earlier.
        """
        return None if self._framer is None else self._framer.commit_start

    @property
    def unfinished(self) -> int:
        """
        How many of the last bytes fed by L{feed_client} belong to a
        message not yet complete (0 between messages, or once the session
        is L{opaque}): withhold those and no message reaches the server
        unread.
        """
        return 0 if self._framer is None else self._framer.unfinished

    def feed_client(self, data: bytes) -> Optional[int]:
        """
        Read the next bytes the client sends, and set L{commit_start}.

        @return: the offset in C{data} just past the first message in it
            after which the server has executed a COMMIT and answers it
            (the simple Query or COM_QUERY, or the Sync after the extended
            protocol's Execute), or C{None}.
        """
        assert self._framer is not None
        return self._framer.feed(data)

    def feed_server(self, data: bytes) -> None:
        """
        Read the next bytes the server sends (the PostgreSQL framer needs
        the answer to an SSLRequest).
        """
        assert self._framer is not None
        self._framer.server_data(data)


class PostgresCommitDetector(_CommitDetector):
    """
    Finds COMMITs in what a PostgreSQL client sends (the frontend
    protocol), fed as it comes, in pieces of any size.

    A COMMIT is a simple Query whose text is a COMMIT (as psycopg2 and
    psycopg send for C{commit()}), or an Execute of a portal bound to a
    statement parsed from a COMMIT (psycopg's pipeline mode, pg8000),
    executed on the Execute and answered at the next Sync.
    """

    protocol = "postgresql"

    def __init__(self) -> None:
        self._framer = _PostgresFrontend()


class MySQLCommitDetector(_CommitDetector):
    """
    Finds COMMITs in what a MySQL or MariaDB client sends, fed as it comes,
    in pieces of any size: a COM_QUERY packet starting a command (sequence
    id 0) whose text is a COMMIT (as PyMySQL and mysqlclient send for
    C{commit()}).
    """

    protocol = "mysql"

    def __init__(self) -> None:
        self._framer = _MySQLClient()


class ProtocolDetector(_CommitDetector):
    """
    A COMMIT detector for a protocol found by who speaks first: the
    PostgreSQL client speaks first, the MySQL server does (its greeting).

    @ivar protocol: C{"postgresql"} or C{"mysql"} once known, C{""} before.
    """

    def feed_client(self, data: bytes) -> Optional[int]:
        if self._framer is None and data:
            self._framer = _PostgresFrontend()
            self.protocol = "postgresql"
        return super().feed_client(data) if data else None

    def feed_server(self, data: bytes) -> None:
        if self._framer is None and data:
            self._framer = _MySQLClient()
            self.protocol = "mysql"
        if data:
            super().feed_server(data)


def detector(protocol_name: Optional[str]) -> _CommitDetector:
    """
    @param protocol_name: C{"postgresql"}, C{"mysql"}, or C{None} to tell
        the protocol by who speaks first.
    @return: a new COMMIT detector for one connection.
    """
    if protocol_name == "postgresql":
        return PostgresCommitDetector()
    if protocol_name == "mysql":
        return MySQLCommitDetector()
    return ProtocolDetector()
