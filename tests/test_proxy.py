"""
L{FaultProxy} produces real faults.

Three layers: the COMMIT detectors on byte strings (pure, split at every
offset); the proxy's TCP behaviour against a Twisted echo server (exact: FIN
or RST, what reaches the server and when, with a fake clock for
L{FaultProxy.refuse}); and each fault proved with a raw driver connection
(psycopg2, pg8000 and PyMySQL, no pool) against throwaway servers.
"""

from __future__ import annotations

import struct
import uuid
from typing import Any, Callable, ClassVar, List, Optional, Sequence, Tuple, Type, Union

from twisted.internet import defer, error, protocol, task, threads
from twisted.internet import reactor as _reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support import DEADLINE, close_quietly, wait_until, wait_until_async
from txreconnect.testing import (
    FaultProxy,
    MariaDBServer,
    PostgresServer,
    ThrowawayServer,
    free_port,
    require_driver,
    shared_server,
)
from txreconnect.testing.proxy import (
    MySQLCommitDetector,
    PostgresCommitDetector,
    ProtocolDetector,
    is_commit,
)

#: the global reactor, which provides IReactorTCP and IReactorTime
reactor: Any = _reactor

# --- the COMMIT detectors, on byte strings ---------------------------------


def pg_untyped(code: int, payload: bytes = b"") -> bytes:
    return struct.pack("!ii", 8 + len(payload), code) + payload


def pg(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!i", 4 + len(body)) + body


def my(seq: int, payload: bytes) -> bytes:
    return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload


PG_SSL_REQUEST = pg_untyped(80877103)
PG_STARTUP = pg_untyped(196608, b"user\0u\0database\0d\0\0")


def pg_parse(sql: bytes, statement: bytes = b"") -> bytes:
    return pg(b"P", statement + b"\0" + sql + b"\0\0\0")


def pg_bind(portal: bytes = b"", statement: bytes = b"") -> bytes:
    return pg(b"B", portal + b"\0" + statement + b"\0\0\0\0\0\0\0")


def pg_execute(portal: bytes = b"") -> bytes:
    return pg(b"E", portal + b"\0\0\0\0\0")


PG_FLUSH = pg(b"H")
PG_SYNC = pg(b"S")
# libpq's PQexecParams, as psycopg 3 sends it: Parse, Bind, Describe the
# portal, Execute (then Sync).
PG_PARSE_COMMIT = pg_parse(b"COMMIT") + pg_bind() + pg(b"D", b"P\0") + pg_execute()

MY_GREETING = my(0, b"\x0a5.5.5-10.11.19-MariaDB\0" + b"\0" * 40)
MY_FLAGS = struct.pack("<I", 0x003AA20D)  # PyMySQL's, without CLIENT_SSL
MY_HANDSHAKE = my(1, MY_FLAGS + b"\0" * 28 + b"u\0\x14" + b"x" * 20 + b"d\0")


def splits(stream: bytes) -> List[List[bytes]]:
    """
    @return: C{stream} in two pieces split at every offset, and byte by byte.
    """
    cuts = [[stream[:i], stream[i:]] for i in range(len(stream) + 1)]
    return cuts + [[stream[i:i + 1] for i in range(len(stream))]]


Detector = Union[PostgresCommitDetector, MySQLCommitDetector, ProtocolDetector]


def commit_points(detector: Detector, pieces: Sequence[bytes]) -> Tuple[List[int], List[int]]:
    """
    Feed C{pieces} to C{detector} in order.

    @return: the absolute offsets at which COMMITs were reported: where
        the messages on which the server executes them start, and where
        the messages after which it answers them end.
    """
    starts, ends, base = [], [], 0
    for piece in pieces:
        end = detector.feed_client(piece)
        if detector.commit_start is not None:
            starts.append(base + detector.commit_start)
        if end is not None:
            ends.append(base + end)
        base += len(piece)
    return starts, ends


class IsCommitTests(SynchronousTestCase):
    def test_commitStatementsAreRecognised(self) -> None:
        """
        COMMIT in any case, with its optional words, whitespace, comments
        and one semicolon around it, is a COMMIT.
        """
        for sql in [
            b"COMMIT",
            b"commit",
            b"  Commit ;  ",
            b"COMMIT WORK",
            b"COMMIT TRANSACTION;",
            b"COMMIT AND NO CHAIN",
            b"COMMIT WORK AND CHAIN NO RELEASE",
            b"/* txn 42 */ COMMIT",
            b"-- done\nCOMMIT -- yes\n",
            b"# mysql\nCOMMIT",
            b"\n\tCOMMIT\n",
        ]:
            self.assertTrue(is_commit(sql), sql)

    def test_otherStatementsAreNot(self) -> None:
        """
        Statements that merely contain the word, other statements, and
        several statements are not a COMMIT.
        """
        for sql in [
            b"",
            b"SELECT 'COMMIT'",
            b"COMMITTED",
            b"COMMIT; SELECT 1",
            b"COMMIT PREPARED 'x'",
            b"ROLLBACK",
            b"END",
            b"BEGIN",
            b"INSERT INTO t VALUES ('COMMIT')",
            b"/* COMMIT */ SELECT 1",
            b"-- COMMIT",
        ]:
            self.assertFalse(is_commit(sql), sql)


class PostgresCommitDetectorTests(SynchronousTestCase):
    """
    The frontend framer finds COMMIT wherever TCP splits the stream.
    """

    def conversation(self) -> Tuple[bytes, int]:
        """
        @return: what a client sends after the SSLRequest, and the offset
            just past its COMMIT.
        """
        before = (
            PG_STARTUP
            + pg(b"p", b"SCRAM-SHA-256\0\0\0\0\x20n,,n=,r=abc")
            + pg(b"Q", b"BEGIN\0")
            + pg(b"Q", b"INSERT INTO t VALUES ('COMMIT')\0")
            + pg(b"P", b"\0SELECT 'COMMIT'\0\0\0")
            + pg(b"S")
            + pg(b"d", b"COMMIT\0")
            + pg(b"Q", b"COMMIT\0")
        )
        return before + pg(b"Q", b"SELECT 1\0") + pg(b"X"), len(before)

    def detect(self, pieces: Sequence[bytes]) -> Tuple[List[int], List[int]]:
        detector = PostgresCommitDetector()
        for piece in splits(PG_SSL_REQUEST)[3]:
            self.assertIsNone(detector.feed_client(piece))
        detector.feed_server(b"N")
        return commit_points(detector, pieces)

    def assertCommitsEndAt(self, stream: bytes, ends: List[int], starts: Optional[List[int]] = None) -> None:
        """
        Wherever C{stream} (after the SSLRequest) is split, COMMITs are
        reported at C{ends} (and their executing messages at C{starts}, if
        given) and nowhere else.
        """
        for pieces in splits(stream):
            found_starts, found_ends = self.detect(pieces)
            self.assertEqual(found_ends, ends, pieces)
            if starts is not None:
                self.assertEqual(found_starts, starts, pieces)

    def test_simpleQueryCommitFoundAtEverySplit(self) -> None:
        """
        A simple Query COMMIT is reported exactly once, executed from its
        start and answered just past its end, wherever the stream is
        split; nothing else is a COMMIT.
        """
        stream, end = self.conversation()
        self.assertCommitsEndAt(stream, [end], [end - len(pg(b"Q", b"COMMIT\0"))])

    def test_extendedCommitFoundAtTheNextSync(self) -> None:
        """
        A COMMIT sent with the extended protocol in one go (libpq, and
        psycopg 3's pipeline mode: Parse, Bind, Describe, Execute, Sync) is
        executed from the start of its Execute (the server commits on
        receiving it) and reported answered just past the Sync.
        """
        before = PG_STARTUP + PG_PARSE_COMMIT + PG_SYNC
        execute = len(PG_STARTUP + PG_PARSE_COMMIT) - len(pg_execute())
        self.assertCommitsEndAt(before + pg(b"Q", b"SELECT 1\0"), [len(before)], [execute])

    def test_pg8000CommitFoundAfterItsExecuteNotItsParse(self) -> None:
        """
        pg8000 commits in three round trips (Parse, Flush, Sync; Describe,
        Flush, Sync, Bind, Flush; Execute, Flush, Sync): the COMMIT is
        executed from the start of the last Execute and reported answered
        just past the last Sync, and not past the first, when the server
        has only parsed it.
        """
        before = (
            PG_STARTUP
            + pg_parse(b"commit") + PG_FLUSH + PG_SYNC
            + pg(b"D", b"S\0") + PG_FLUSH + PG_SYNC + pg_bind() + PG_FLUSH
            + pg_execute() + PG_FLUSH + PG_SYNC
        )
        execute = len(before) - len(pg_execute() + PG_FLUSH + PG_SYNC)
        self.assertCommitsEndAt(before + pg(b"Q", b"SELECT 1\0"), [len(before)], [execute])

    def test_parsedCommitNeverExecutedIsNotACommit(self) -> None:
        """
        A COMMIT that is parsed and synced but never executed (its
        unnamed statement replaced by the next Parse, or destroyed by a
        simple Query) is not reported.
        """
        self.assertCommitsEndAt(
            PG_STARTUP
            + pg_parse(b"COMMIT") + PG_SYNC
            + pg_parse(b"SELECT 1") + pg_bind() + pg_execute() + PG_SYNC
            + pg_parse(b"COMMIT") + pg_bind() + pg(b"Q", b"SELECT 1\0")
            + pg_execute() + PG_SYNC,
            [],
            [],
        )

    def test_namedCommitStatementFoundWhenExecuted(self) -> None:
        """
        A COMMIT prepared as a named statement, bound and executed later
        through a named portal, is reported at the Sync after that Execute.
        """
        before = (
            PG_STARTUP
            + pg_parse(b"COMMIT", b"s1") + PG_SYNC
            + pg(b"Q", b"BEGIN\0")
            + pg_parse(b"INSERT INTO t VALUES (1)") + pg_bind() + pg_execute() + PG_SYNC
            + pg_bind(b"p1", b"s1") + PG_SYNC
            + pg_execute(b"p1") + PG_SYNC
        )
        execute = len(before) - len(pg_execute(b"p1") + PG_SYNC)
        self.assertCommitsEndAt(before + pg_execute(b"p1") + PG_SYNC, [len(before)], [execute])

    def test_closedStatementsAndPortalsAreForgotten(self) -> None:
        """
        Once a Close has destroyed a COMMIT statement (and with it the
        portals bound to it) or a COMMIT portal, executing those names is
        not a COMMIT.
        """
        self.assertCommitsEndAt(
            PG_STARTUP
            + pg_parse(b"COMMIT", b"s1") + pg_bind(b"p1", b"s1") + pg_bind(b"p2", b"s1")
            + pg(b"C", b"Pp1\0") + pg_execute(b"p1") + PG_SYNC
            + pg(b"C", b"Ss1\0") + pg_execute(b"p2") + PG_SYNC
            + pg_bind(b"p3", b"s1") + pg_execute(b"p3") + PG_SYNC,
            [],
            [],
        )

    def test_startupWithoutSSLRequest(self) -> None:
        """
        A client that sends its StartupMessage first is framed too.
        """
        detector = PostgresCommitDetector()
        stream = PG_STARTUP + pg(b"Q", b"commit;\0")
        self.assertEqual(commit_points(detector, [stream]), ([len(PG_STARTUP)], [len(stream)]))

    def test_encryptedSessionIsNeverCut(self) -> None:
        """
        When the server accepts SSL, the rest cannot be read: no COMMIT is
        reported, whatever the bytes look like.
        """
        detector = PostgresCommitDetector()
        detector.feed_client(PG_SSL_REQUEST)
        detector.feed_server(b"S")
        self.assertIsNone(detector.feed_client(b"\x16\x03\x01" + PG_STARTUP + pg(b"Q", b"COMMIT\0")))
        self.assertIsNone(detector.commit_start)
        self.assertEqual(detector.unfinished, 0)
        self.assertTrue(detector.opaque)

    def test_longQueryIsNotBuffered(self) -> None:
        """
        A query longer than what is examined passes as not a COMMIT, and
        the messages after it are still framed.
        """
        detector = PostgresCommitDetector()
        detector.feed_client(PG_STARTUP)
        long_query = pg(b"Q", b"SELECT '" + b"x" * 100000 + b"'\0")
        self.assertIsNone(detector.feed_client(long_query))
        self.assertEqual(detector.feed_client(pg(b"Q", b"COMMIT\0")), 12)


class MySQLCommitDetectorTests(SynchronousTestCase):
    """
    The MySQL packet framer finds COM_QUERY COMMIT wherever TCP splits the
    stream.
    """

    def test_comQueryCommitFoundAtEverySplit(self) -> None:
        """
        A COM_QUERY COMMIT that starts a command (sequence id 0) is
        reported exactly once, executed from its start and answered just
        past its end; the handshake, other
        queries and COMMIT-looking packets inside a sequence are not.
        """
        before = (
            MY_HANDSHAKE
            + my(3, b"\x03COMMIT")  # auth data inside a sequence
            + my(0, b"\x03SET autocommit=0")
            + my(0, b"\x03SELECT 'COMMIT'")
            + my(0, b"\x16COMMIT")  # COM_STMT_PREPARE
            + my(0, b"\x03 /* app */ commit work ;")
        )
        stream = before + my(0, b"\x03SELECT 1") + my(0, b"\x01")
        start = len(before) - len(my(0, b"\x03 /* app */ commit work ;"))
        for pieces in splits(stream):
            detector = MySQLCommitDetector()
            detector.feed_server(MY_GREETING)
            self.assertEqual(commit_points(detector, pieces), ([start], [len(before)]), pieces)

    def test_tlsSessionIsNeverCut(self) -> None:
        """
        A client that asks for TLS (CLIENT_SSL in its first packet) is not
        read any further.
        """
        detector = MySQLCommitDetector()
        ssl_request = my(1, struct.pack("<I", 0x003AA20D | 0x800) + b"\0" * 28)
        self.assertIsNone(detector.feed_client(ssl_request + my(0, b"\x03COMMIT")))
        self.assertTrue(detector.opaque)

    def test_queryAttributes(self) -> None:
        """
        With CLIENT_QUERY_ATTRIBUTES, a COM_QUERY starts with its parameter
        counts; a COMMIT without attributes is still found.
        """
        detector = MySQLCommitDetector()
        flags = struct.pack("<I", 0x003AA20D | 1 << 27)
        detector.feed_client(my(1, flags + b"\0" * 28))
        self.assertIsNone(detector.feed_client(my(0, b"\x03COMMIT")))
        self.assertEqual(detector.feed_client(my(0, b"\x03\x00\x01COMMIT")), 13)


class ProtocolDetectorTests(SynchronousTestCase):
    def test_clientSpeaksFirstIsPostgreSQL(self) -> None:
        """
        A client that speaks first is read as PostgreSQL.
        """
        detector = ProtocolDetector()
        self.assertIsNone(detector.feed_client(PG_SSL_REQUEST))
        detector.feed_server(b"N")
        self.assertEqual(detector.protocol, "postgresql")
        stream = PG_STARTUP + pg(b"Q", b"COMMIT\0")
        self.assertEqual(detector.feed_client(stream), len(stream))

    def test_serverSpeaksFirstIsMySQL(self) -> None:
        """
        A server that speaks first (its greeting) is read as MySQL.
        """
        detector = ProtocolDetector()
        detector.feed_server(MY_GREETING)
        self.assertEqual(detector.protocol, "mysql")
        stream = MY_HANDSHAKE + my(0, b"\x03COMMIT")
        self.assertEqual(detector.feed_client(stream), len(stream))


# --- what the proxy forwards, on fake transports, split at every offset ----


class _Wire(StringTransport):
    """
    One end of a fake connection: records what is written to it; closing
    it tells its protocol at once, and unregistering a producer that is
    gone is no error (as with TCP).
    """

    def __init__(self, protocol: protocol.Protocol) -> None:
        super().__init__()
        self.protocol = protocol

    def unregisterProducer(self) -> None:
        self.producer = None

    def loseConnection(self) -> None:
        if self.connected:
            self.connected = False
            self.protocol.connectionLost(Failure(error.ConnectionDone()))


class _FakeTCP:
    """
    A reactor whose TCP is fake: it keeps the factories it is given, for
    the test to build connections from.
    """

    def __init__(self) -> None:
        self.listening: Any = None
        self.connecting: List[Any] = []

    def listenTCP(self, port: int, factory: Any, interface: str = "") -> Any:
        self.listening = factory
        return _FakeTCPPort()

    def connectTCP(self, host: str, port: int, factory: Any) -> Any:
        self.connecting.append(factory)
        return _FakeTCPPort()


class _FakeTCPPort:
    port = 5999

    def getHost(self) -> "_FakeTCPPort":
        return self

    def stopConnecting(self) -> None:
        pass


class _Proxied:
    """
    One client connection through a L{FaultProxy} on fake transports.

    @ivar client: the client's end: what the proxy sends the client.
    @ivar server: the server's end: what the proxy forwards to the server.
    """

    def __init__(self, protocol_name: Optional[str], greeting: bytes = b"") -> None:
        """
        @param greeting: what the server says first.
        """
        tcp = _FakeTCP()
        self.proxy = FaultProxy(5432, reactor=tcp, protocol=protocol_name)
        self.proxy.start()
        self.front = tcp.listening.buildProtocol(None)
        self.client = _Wire(self.front)
        self.front.makeConnection(self.client)
        self.back = tcp.connecting[0].buildProtocol(None)
        self.server = _Wire(self.back)
        self.back.makeConnection(self.server)
        if greeting:
            self.back.dataReceived(greeting)

    def send(self, pieces: Sequence[bytes]) -> None:
        """
        The client sends C{pieces}, one read each, until the proxy closes
        its connection.
        """
        for piece in pieces:
            if not self.client.connected:
                break
            self.front.dataReceived(piece)

    @property
    def closed(self) -> bool:
        """
        Both sides are closed.
        """
        return not self.client.connected and not self.server.connected


def pg_conversation(commit: bytes) -> Tuple[bytes, int]:
    """
    @return: a PostgreSQL session, after the SSLRequest, that inserts and
        commits with C{commit} and then goes on, and the offset where
        C{commit} starts in it.
    """
    before = PG_STARTUP + pg(b"Q", b"BEGIN\0") + pg(b"Q", b"INSERT INTO t VALUES ('COMMIT')\0")
    after = pg(b"Q", b"SELECT 1\0") + pg(b"X")
    return before + commit + after, len(before)


PG_SIMPLE_COMMIT = pg(b"Q", b"COMMIT\0")
# pg8000's three round trips, as one stream, up to the COMMIT's Execute
PG8000_COMMIT_PREPARED = (
    pg_parse(b"commit") + PG_FLUSH + PG_SYNC
    + pg(b"D", b"S\0") + PG_FLUSH + PG_SYNC + pg_bind() + PG_FLUSH
)
MY_COMMIT = my(0, b"\x03COMMIT")


def my_conversation() -> Tuple[bytes, int]:
    """
    @return: what a MySQL client sends after the server's greeting: an
        INSERT, a COMMIT, then more; and the offset where the COMMIT
        starts.
    """
    before = MY_HANDSHAKE + my(0, b"\x03SET autocommit=0") + my(0, b"\x03INSERT INTO t VALUES (1)")
    return before + MY_COMMIT + my(0, b"\x03SELECT 1") + my(0, b"\x01"), len(before)


class CutBeforeCommitForwardingTests(SynchronousTestCase):
    """
    With C{cut_before_commit} armed, the server gets every byte before the
    message that would make it commit, and none from there on, wherever
    TCP splits what the client sends; then both sides are closed.
    """

    def assertWithheldFrom(
        self, protocol_name: Optional[str], stream: bytes, start: int, greeting: bytes = b""
    ) -> None:
        """
        At every split of C{stream}, the armed proxy forwards exactly
        C{stream[:start]}, closes both sides and fires the cut with
        C{None}; the proxy is disarmed.
        """
        for pieces in splits(stream):
            proxied = _Proxied(protocol_name, greeting)
            cut = proxied.proxy.cut_before_commit()
            proxied.send(pieces)
            self.assertEqual(proxied.server.value(), stream[:start], pieces)
            self.assertTrue(proxied.closed, pieces)
            self.assertIsNone(self.successResultOf(cut))
            self.assertIsNone(proxied.proxy.armed)

    def test_simpleQueryCommitIsWithheldWhole(self) -> None:
        """
        psycopg2's C{commit()}: the simple Query COMMIT, and all after it,
        never reaches the server.
        """
        stream, start = pg_conversation(PG_SIMPLE_COMMIT)
        self.assertWithheldFrom("postgresql", stream, start)

    def test_extendedCommitIsWithheldFromItsExecute(self) -> None:
        """
        psycopg 3's pipeline (Parse, Bind, Describe, Execute, Sync): the
        server may get the COMMIT's Parse, Bind and Describe, which do not
        commit, but not its Execute, on which it would.
        """
        stream, start = pg_conversation(PG_PARSE_COMMIT + PG_SYNC)
        execute = start + len(PG_PARSE_COMMIT) - len(pg_execute())
        self.assertWithheldFrom("postgresql", stream, execute)

    def test_pg8000CommitIsWithheldFromItsExecute(self) -> None:
        """
        pg8000's three round trips: the first two (Parse; Describe, Bind)
        reach the server, the third (Execute, Flush, Sync) does not.
        """
        stream, start = pg_conversation(PG8000_COMMIT_PREPARED + pg_execute() + PG_FLUSH + PG_SYNC)
        self.assertWithheldFrom("postgresql", stream, start + len(PG8000_COMMIT_PREPARED))

    def test_mysqlCommitIsWithheldWhole(self) -> None:
        """
        PyMySQL's C{commit()}: the COM_QUERY COMMIT packet, and all after
        it, never reaches the server.
        """
        stream, start = my_conversation()
        self.assertWithheldFrom("mysql", stream, start, greeting=MY_GREETING)

    def test_detectedProtocolsAreCutTheSame(self) -> None:
        """
        A proxy told no protocol withholds COMMIT just the same in either.
        """
        stream, start = pg_conversation(PG_SIMPLE_COMMIT)
        self.assertWithheldFrom(None, stream, start)
        stream, start = my_conversation()
        self.assertWithheldFrom(None, stream, start, greeting=MY_GREETING)

    def test_armedProxyHoldsBackOnlyUnfinishedMessages(self) -> None:
        """
        Armed, the proxy forwards each message as soon as it is complete,
        and holds back the first bytes of one not yet complete; a session
        without COMMIT all reaches the server and the cut stays armed.
        """
        messages = [PG_STARTUP, pg(b"Q", b"BEGIN\0"), pg_parse(b"SELECT 1"), pg_bind(), pg_execute(), PG_SYNC]
        stream = b"".join(messages)
        ends = [sum(map(len, messages[:i])) for i in range(len(messages) + 1)]
        for i in range(len(stream) + 1):
            proxied = _Proxied("postgresql")
            cut = proxied.proxy.cut_before_commit()
            proxied.send([stream[:i]])
            complete = max(end for end in ends if end <= i)
            self.assertEqual(proxied.server.value(), stream[:complete], i)
            proxied.send([stream[i:]])
            self.assertEqual(proxied.server.value(), stream, i)
            self.assertFalse(proxied.closed or cut.called, i)

    def test_unarmedProxyForwardsEveryByteAtOnce(self) -> None:
        """
        Unarmed, the proxy holds nothing back: each piece is forwarded as
        it comes, COMMIT included.
        """
        stream, _ = pg_conversation(PG_SIMPLE_COMMIT)
        for pieces in splits(stream):
            proxied = _Proxied("postgresql")
            sent = b""
            for piece in pieces:
                proxied.send([piece])
                sent += piece
                self.assertEqual(proxied.server.value(), sent, pieces)
            self.assertFalse(proxied.closed)

    def test_cancelledCutForwardsWhatItHeld(self) -> None:
        """
        Cancelling the cut while a COMMIT is half received disarms it: the
        held bytes are forwarded with the rest, and nothing is closed.
        """
        stream, start = pg_conversation(PG_SIMPLE_COMMIT)
        proxied = _Proxied("postgresql")
        cut = proxied.proxy.cut_before_commit()
        proxied.send([stream[:start + 3]])
        self.assertEqual(proxied.server.value(), stream[:start])
        cut.cancel()
        self.failureResultOf(cut, defer.CancelledError)
        proxied.send([stream[start + 3:]])
        self.assertEqual(proxied.server.value(), stream)
        self.assertFalse(proxied.closed)

    def test_commitBegunBeforeArmingIsCutShort(self) -> None:
        """
        When the cut is armed after the first bytes of a COMMIT were
        forwarded, the rest is withheld: the server never gets the whole
        message, so never executes it.
        """
        stream, start = pg_conversation(PG_SIMPLE_COMMIT)
        proxied = _Proxied("postgresql")
        proxied.send([stream[:start + 3]])
        cut = proxied.proxy.cut_before_commit()
        proxied.send([stream[start + 3:]])
        self.assertEqual(proxied.server.value(), stream[:start + 3])
        self.assertTrue(proxied.closed)
        self.assertIsNone(self.successResultOf(cut))

    def test_cutAfterCommitForwardsTheCommitAtEverySplit(self) -> None:
        """
        Its twin, C{cut_after_commit}, forwards exactly up to the end of
        the COMMIT, and cuts when the server's reply comes, firing with
        C{True}.
        """
        stream, start = pg_conversation(PG_SIMPLE_COMMIT)
        for pieces in splits(stream):
            proxied = _Proxied("postgresql")
            cut = proxied.proxy.cut_after_commit()
            proxied.send(pieces)
            self.assertEqual(proxied.server.value(), stream[:start + len(PG_SIMPLE_COMMIT)], pieces)
            self.assertFalse(proxied.closed or cut.called)
            proxied.back.dataReceived(pg(b"C", b"COMMIT\0") + pg(b"Z", b"I"))
            self.assertEqual(proxied.client.value(), b"")
            self.assertTrue(proxied.closed)
            self.assertTrue(self.successResultOf(cut))


# --- the proxy's TCP behaviour, against an echo server ---------------------


class _Peer(protocol.Protocol):
    """
    One end of a test connection: records what it receives and how its
    connection ended; echoes when C{echo} is set.
    """

    echo = False
    transport: Any

    def __init__(self) -> None:
        self.received = b""
        self.reason: Optional[BaseException] = None
        #: fires with the exception that ended the connection
        self.lost: defer.Deferred[BaseException] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.echo:
            self.transport.write(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        exc = reason.value
        assert exc is not None
        self.reason = exc
        self.lost.callback(exc)


class _EchoServer(protocol.ServerFactory):
    def __init__(self, echo: bool = True) -> None:
        self.echo = echo
        self.peers: List[_Peer] = []

    def buildProtocol(self, addr: Any) -> _Peer:
        peer = _Peer()
        peer.echo = self.echo
        self.peers.append(peer)
        return peer


class _ClockedReactor:
    """
    The real reactor for TCP, with a fake clock: windows of time pass when
    the test says so.
    """

    def __init__(self) -> None:
        self.clock = task.Clock()

    def callLater(self, *args: Any, **kwargs: Any) -> Any:
        return self.clock.callLater(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(reactor, name)


class FaultProxyTCPTests(TestCase):
    """
    What each fault does to both sides of a connection, to the byte and
    to the FIN or RST.
    """

    def setUp(self) -> None:
        self.echo = _EchoServer()
        listening = reactor.listenTCP(0, self.echo, interface="127.0.0.1")
        self.addCleanup(self.closeEveryone)
        self.addCleanup(listening.stopListening)
        self.clients: List[_Peer] = []
        self.proxy = self.startProxy(listening.getHost().port)

    def startProxy(self, port: int, **kwargs: Any) -> FaultProxy:
        proxy = FaultProxy(port, **kwargs)
        proxy.start()
        self.addCleanup(proxy.stop)
        return proxy

    def closeEveryone(self) -> defer.Deferred[Any]:
        peers = self.clients + self.echo.peers
        for peer in peers:
            if peer.reason is None:
                peer.transport.abortConnection()
        return defer.gatherResults([peer.lost for peer in peers])

    @defer.inlineCallbacks
    def connect(self, proxy: Optional[FaultProxy] = None) -> Any:
        proxy = proxy or self.proxy
        client = _Peer()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", proxy.port)
        yield connectProtocol(endpoint, client)
        self.clients.append(client)
        return client

    @defer.inlineCallbacks
    def connectEchoing(self, proxy: Optional[FaultProxy] = None) -> Any:
        """
        Connect through the proxy and check that it echoes.
        """
        client = yield self.connect(proxy)
        client.transport.write(b"hello")
        yield wait_until_async(lambda: client.received == b"hello", what="the echo")
        return client

    def test_startListensOnALoopbackPort(self) -> None:
        """
        C{start} listens on a free port of 127.0.0.1, not the target's.
        """
        self.assertTrue(self.proxy.port)
        self.assertNotEqual(self.proxy.port, self.proxy.target_port)
        self.assertRaises(RuntimeError, self.proxy.start)

    def test_unknownProtocolIsRejected(self) -> None:
        """
        Only the protocols the proxy can read, or C{None}, are accepted.
        """
        self.assertRaises(ValueError, FaultProxy, 1, protocol="oracle")

    @defer.inlineCallbacks
    def test_forwardsBothWaysAndCountsConnections(self) -> Any:
        """
        Bytes flow both ways; C{connections} counts client connections.
        """
        yield self.connectEchoing()
        yield self.connectEchoing()
        self.assertEqual(self.proxy.connections, 2)
        self.assertEqual(len(self.echo.peers), 2)

    @defer.inlineCallbacks
    def assertBothSidesEnd(
        self, fault: Callable[[], defer.Deferred[int]], how: Type[Exception]
    ) -> Any:
        """
        C{fault} fires with 1 once the client's and the server's side of
        the one connection have both ended C{how}.
        """
        client = yield self.connectEchoing()
        closed = yield fault()
        self.assertEqual(closed, 1)
        self.assertEqual(self.proxy.connections, 0)
        reasons = yield defer.gatherResults([client.lost, self.echo.peers[0].lost])
        for reason in reasons:
            self.assertIsInstance(reason, how)

    def test_dropClosesBothSidesWithFIN(self) -> Any:
        """
        C{drop} closes the client's and the server's side cleanly, and
        fires with how many connections it dropped once they are closed.
        """
        return self.assertBothSidesEnd(self.proxy.drop, error.ConnectionDone)

    def test_resetAbortsBothSidesWithRST(self) -> Any:
        """
        C{reset} aborts both sides: each sees a connection reset, not an
        orderly close.
        """
        return self.assertBothSidesEnd(self.proxy.reset, error.ConnectionLost)

    @defer.inlineCallbacks
    def test_blackholeHoldsBytesUntilHealDeliversThem(self) -> Any:
        """
        While black-holed nothing is forwarded either way, yet the sockets
        stay open; after C{heal} the held bytes arrive, in order.
        """
        client = yield self.connectEchoing()
        server_side = self.echo.peers[0]
        self.proxy.blackhole()
        client.transport.write(b" world")
        server_side.transport.write(b"!")
        yield task.deferLater(reactor, 0.3, lambda: None)
        self.assertEqual(server_side.received, b"hello")
        self.assertEqual(client.received, b"hello")
        self.assertIsNone(client.reason)
        self.assertIsNone(server_side.reason)
        self.proxy.heal()
        yield wait_until_async(lambda: client.received == b"hello! world", what="the held bytes")
        self.assertEqual(server_side.received, b"hello world")

    @defer.inlineCallbacks
    def test_connectionDuringBlackholeReachesTheServerOnlyAfterHeal(self) -> Any:
        """
        A connection made while black-holed is accepted, but the server
        knows nothing of it until C{heal}; then it works.
        """
        self.proxy.blackhole()
        client = yield self.connect()
        client.transport.write(b"early")
        yield task.deferLater(reactor, 0.3, lambda: None)
        self.assertEqual(self.echo.peers, [])
        self.assertEqual(self.proxy.connections, 1)
        self.proxy.heal()
        yield wait_until_async(lambda: client.received == b"early", what="the echo after heal")

    @defer.inlineCallbacks
    def test_closeDuringBlackholeIsPassedOnAfterHeal(self) -> Any:
        """
        A client that gives up during the black hole is not noticed by the
        server until C{heal}, which delivers its last bytes and its close.
        """
        client = yield self.connectEchoing()
        server_side = self.echo.peers[0]
        self.proxy.blackhole()
        client.transport.write(b"bye")
        client.transport.loseConnection()
        yield client.lost
        yield task.deferLater(reactor, 0.3, lambda: None)
        self.assertIsNone(server_side.reason)
        self.proxy.heal()
        reason = yield server_side.lost
        self.assertIsInstance(reason, error.ConnectionDone)
        self.assertEqual(server_side.received, b"hellobye")

    @defer.inlineCallbacks
    def test_dropDuringBlackholeStillClosesWithFIN(self) -> Any:
        """
        C{drop} during a black hole discards the held bytes (the
        connection is gone) and still closes both sides cleanly.
        """
        client = yield self.connectEchoing()
        self.proxy.blackhole()
        client.transport.write(b"lost")
        yield task.deferLater(reactor, 0.1, lambda: None)
        yield self.proxy.drop()
        reasons = yield defer.gatherResults([client.lost, self.echo.peers[0].lost])
        for reason in reasons:
            self.assertIsInstance(reason, error.ConnectionDone)
        self.assertEqual(self.echo.peers[0].received, b"hello")

    @defer.inlineCallbacks
    def test_refuseAbortsNewConnectionsForTheWindowOnly(self) -> Any:
        """
        During C{refuse(seconds)}, on the reactor's clock, each new
        connection is reset at once and never reaches the server; existing
        ones keep working; after the window new ones work again.
        """
        clocked = _ClockedReactor()
        proxy = self.startProxy(self.proxy.target_port, reactor=clocked)
        existing = yield self.connectEchoing(proxy)
        window = proxy.refuse(5)
        self.assertTrue(proxy.refusing)
        refused = yield self.connect(proxy)
        reason = yield refused.lost
        self.assertIsInstance(reason, error.ConnectionLost)
        self.assertEqual(len(self.echo.peers), 1)
        existing.transport.write(b" again")
        yield wait_until_async(lambda: existing.received == b"hello again", what="the existing echo")
        clocked.clock.advance(4.9)
        self.assertFalse(window.called)
        clocked.clock.advance(0.1)
        self.assertTrue(window.called)
        self.assertFalse(proxy.refusing)
        yield self.connectEchoing(proxy)

    @defer.inlineCallbacks
    def test_stopClosesTheListeningPortAndEveryConnection(self) -> Any:
        """
        C{stop} fires once the port and all connections are closed, and
        ends a refuse window early.
        """
        client = yield self.connectEchoing()
        window = self.proxy.refuse(60)
        yield self.proxy.stop()
        self.assertTrue(window.called)
        self.assertEqual(self.proxy.connections, 0)
        yield client.lost
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy.port)
        yield self.assertFailure(connectProtocol(endpoint, _Peer()), error.ConnectionRefusedError)

    @defer.inlineCallbacks
    def test_unreachableServerClosesTheClient(self) -> Any:
        """
        When the server cannot be reached, the client's connection is
        closed.
        """
        proxy = self.startProxy(free_port())
        client = yield self.connect(proxy)
        yield client.lost
        self.assertEqual(proxy.connections, 0)

    def test_cutsAreOneShotAndCancellable(self) -> None:
        """
        Arming a cut, after or before COMMIT, while one of either kind is
        armed is an error; cancelling the Deferred disarms; C{armed} says
        which is armed.
        """
        arms: List[Tuple[Callable[[], defer.Deferred[Any]], str]] = [
            (self.proxy.cut_after_commit, "after-commit"),
            (self.proxy.cut_before_commit, "before-commit"),
        ]
        for arm, kind in arms:
            cut = arm()
            self.assertEqual(self.proxy.armed, kind)
            self.assertRaises(RuntimeError, self.proxy.cut_after_commit)
            error = self.assertRaises(RuntimeError, self.proxy.cut_before_commit)
            self.assertIn(kind.replace("-", "_"), str(error))
            cut.cancel()
            self.failureResultOf(cut, defer.CancelledError)
            self.assertIsNone(self.proxy.armed)
            again = arm()
            again.cancel()
            self.failureResultOf(again, defer.CancelledError)

    @defer.inlineCallbacks
    def test_cutBeforeCommitClosesBothSidesWithFIN(self) -> Any:
        """
        Over TCP, C{cut_before_commit} forwards what comes before the
        COMMIT, then closes the client's and the server's side cleanly;
        the cut fires once both are closed.
        """
        silent = _EchoServer(echo=False)
        listening = reactor.listenTCP(0, silent, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        proxy = self.startProxy(listening.getHost().port, protocol="postgresql")
        client = yield self.connect(proxy)
        yield wait_until_async(lambda: len(silent.peers) == 1, what="the server's connection")
        server_side = silent.peers[0]
        # closed by the cleanups too, should the test fail
        self.echo.peers.append(server_side)
        stream, start = pg_conversation(PG_SIMPLE_COMMIT)
        cut = proxy.cut_before_commit()
        client.transport.write(stream)
        reasons = yield defer.gatherResults([client.lost, server_side.lost])
        for reason in reasons:
            self.assertIsInstance(reason, error.ConnectionDone)
        self.assertEqual(server_side.received, stream[:start])
        self.assertEqual(client.received, b"")
        self.assertIsNone((yield cut))
        self.assertEqual(proxy.connections, 0)


# --- each fault proved with a real driver and server -----------------------


class _DatabaseFaultsMixin(TestCase):
    """
    Each fault, through the proxy, with a raw driver connection; the
    subclasses name the server, the driver and their SQL.
    """

    server_class: ClassVar[Type[ThrowawayServer]]
    driver_name: ClassVar[str]
    protocol: ClassVar[str]
    create_table: ClassVar[str]
    #: SQL that answers the session's id on the server
    session_id: ClassVar[str]

    TABLE = "txreconnect_proxy_cut"

    def setUp(self) -> Any:
        self.driver = require_driver(self.driver_name)
        self.server = shared_server(self, self.server_class)
        self.proxy = self.startProxy(self.protocol)

    def startProxy(self, protocol: Optional[str]) -> FaultProxy:
        proxy = FaultProxy(self.server.port, protocol=protocol)
        proxy.start()
        self.addCleanup(proxy.stop)
        return proxy

    def count_rows(self, tag: str) -> int:
        raise NotImplementedError

    def session_open(self, session: int) -> bool:
        """
        @return: whether the server still has the session C{session}.
        """
        raise NotImplementedError

    def assertDisconnectError(self, exc: BaseException) -> None:
        """
        C{exc} is how the driver reports a lost connection.
        """
        self.assertIsInstance(exc, (self.driver.OperationalError, self.driver.InterfaceError))

    @defer.inlineCallbacks
    def connect(self, proxy: Optional[FaultProxy] = None, **extra: Any) -> Any:
        kwargs = self.server.connect_kwargs(self.driver_name, port=(proxy or self.proxy).port)
        kwargs.update(extra)
        conn = yield threads.deferToThread(self.driver.connect, **kwargs)
        self.addCleanup(threads.deferToThread, close_quietly, conn)
        return conn

    def execute(self, conn: Any, *statements: str, commit: bool = True) -> defer.Deferred[Any]:
        """
        In a thread: execute C{statements}, then commit (as adbapi does).

        @return: a Deferred of the first column of the last row.
        """

        def execute() -> Any:
            cursor = conn.cursor()
            rows = None
            for sql in statements:
                cursor.execute(sql)
                if cursor.description:
                    rows = cursor.fetchall()
            if commit:
                conn.commit()
            return rows[-1][0] if rows else None

        return threads.deferToThread(execute)

    def query(self, conn: Any) -> defer.Deferred[Any]:
        return self.execute(conn, "SELECT 1")

    @defer.inlineCallbacks
    def assertDisconnects(self, d: defer.Deferred[Any]) -> Any:
        """
        C{d} fails with the driver's disconnect error.
        """
        exc = yield self.assertFailure(d, Exception)
        self.assertDisconnectError(exc)

    @defer.inlineCallbacks
    def test_queryWorksThroughTheProxy(self) -> Any:
        """
        Through the proxy a connection opens and a query answers.
        """
        conn = yield self.connect()
        value = yield self.query(conn)
        self.assertEqual(value, 1)
        self.assertEqual(self.proxy.connections, 1)

    @defer.inlineCallbacks
    def assertNewConnectionWorks(self) -> Any:
        value = yield self.query((yield self.connect()))
        self.assertEqual(value, 1)

    @defer.inlineCallbacks
    def assertNextQueryFailsAfter(self, fault: Callable[[], defer.Deferred[int]]) -> Any:
        """
        After C{fault}, the next query on an open connection fails with the
        driver's disconnect error; a new connection works.
        """
        conn = yield self.connect()
        yield self.query(conn)
        closed = yield fault()
        self.assertEqual(closed, 1)
        yield self.assertDisconnects(self.query(conn))
        yield self.assertNewConnectionWorks()

    def test_dropMakesTheNextQueryFailWithADisconnect(self) -> Any:
        """
        After C{drop}, the next query on an open connection fails with the
        driver's disconnect error; a new connection works.
        """
        return self.assertNextQueryFailsAfter(self.proxy.drop)

    def test_resetMakesTheNextQueryFailWithADisconnect(self) -> Any:
        """
        After C{reset}, the next query on an open connection fails with the
        driver's disconnect error; a new connection works.
        """
        return self.assertNextQueryFailsAfter(self.proxy.reset)

    @defer.inlineCallbacks
    def cutAndCheck(self, proxy: FaultProxy) -> Any:
        conn = yield self.connect(proxy)
        yield self.execute(conn, self.create_table % (self.TABLE,))
        tag = uuid.uuid4().hex
        cut = proxy.cut_after_commit()
        insert = "INSERT INTO %s VALUES ('%s')" % (self.TABLE, tag)
        yield self.execute(conn, insert, commit=False)
        self.assertFalse(cut.called)
        yield self.assertDisconnects(threads.deferToThread(conn.commit))
        yield self.assertCommittedDespiteTheCut(cut, tag)

    @defer.inlineCallbacks
    def assertCommittedDespiteTheCut(self, cut: defer.Deferred[bool], tag: str) -> Any:
        """
        The cut happened after the server's reply, and the row tagged
        C{tag} is committed.
        """
        replied = yield cut
        self.assertTrue(replied)
        count = yield threads.deferToThread(self.count_rows, tag)
        self.assertEqual(count, 1)

    def test_cutAfterCommitLosesTheReplyButTheRowIsCommitted(self) -> Any:
        """
        With C{cut_after_commit} armed, an INSERT passes, then C{commit()}
        fails with a disconnect, yet the server committed the row: the
        client cannot know its transaction succeeded.
        """
        return self.cutAndCheck(self.proxy)

    def test_cutAfterCommitWithTheProtocolDetected(self) -> Any:
        """
        A proxy told no protocol tells it by who speaks first, and cuts
        after COMMIT just the same.
        """
        return self.cutAndCheck(self.startProxy(None))

    @defer.inlineCallbacks
    def test_cutBeforeCommitLosesTheCommitAndTheRowIsRolledBack(self) -> Any:
        """
        With C{cut_before_commit} armed after an INSERT, C{commit()} fails
        with a disconnect, and the server, which never got the COMMIT,
        rolls the row back when it sees its client gone: the client cannot
        know its transaction failed.
        """
        conn = yield self.connect()
        yield self.execute(conn, self.create_table % (self.TABLE,))
        session = yield self.execute(conn, self.session_id)
        tag = uuid.uuid4().hex
        yield self.execute(conn, "INSERT INTO %s VALUES ('%s')" % (self.TABLE, tag), commit=False)
        cut = self.proxy.cut_before_commit()
        yield self.assertDisconnects(threads.deferToThread(conn.commit))
        yield self.assertRolledBackByTheCut(cut, session, tag)

    @defer.inlineCallbacks
    def assertRolledBackByTheCut(self, cut: defer.Deferred[None], session: int, tag: str) -> Any:
        """
        The cut closed the connection of the server's session C{session};
        once the server has ended it, the row tagged C{tag} is not stored.
        """
        yield cut
        yield threads.deferToThread(
            wait_until, lambda: not self.session_open(session), what="the server to end the cut session"
        )
        count = yield threads.deferToThread(self.count_rows, tag)
        self.assertEqual(count, 0)

    @defer.inlineCallbacks
    def test_blackholeBlocksAQueryUntilHealDeliversIt(self) -> Any:
        """
        A query sent into the black hole gets no answer (the driver has no
        read timeout: it would wait for ever); after C{heal} the held
        query reaches the server and its answer arrives, and new
        connections work.
        """
        conn = yield self.connect()
        yield self.query(conn)
        self.proxy.blackhole()
        pending = self.query(conn)
        yield task.deferLater(reactor, 1.0, lambda: None)
        self.assertFalse(pending.called)
        self.proxy.heal()
        value = yield pending
        self.assertEqual(value, 1)
        yield self.assertNewConnectionWorks()

    @defer.inlineCallbacks
    def test_blackholeThenDropFailsTheBlockedQuery(self) -> Any:
        """
        A query stuck in the black hole fails with a disconnect when the
        proxy then drops the connection (a path that never came back).
        """
        conn = yield self.connect()
        yield self.query(conn)
        self.proxy.blackhole()
        pending = self.query(conn)
        yield task.deferLater(reactor, 0.5, lambda: None)
        self.assertFalse(pending.called)
        yield self.proxy.drop()
        yield self.assertDisconnects(pending)

    @defer.inlineCallbacks
    def test_connectDuringBlackholeWaitsUntilHeal(self) -> Any:
        """
        A connection attempt during the black hole hangs (the proxy
        accepts it, the server never hears of it); after C{heal} it
        completes and works.
        """
        self.proxy.blackhole()
        pending = self.connect()
        yield task.deferLater(reactor, 0.5, lambda: None)
        self.assertFalse(pending.called)
        self.proxy.heal()
        conn = yield pending
        value = yield self.query(conn)
        self.assertEqual(value, 1)

    @defer.inlineCallbacks
    def test_refuseFailsNewConnectionsAtOnceUntilTheWindowEnds(self) -> Any:
        """
        During C{refuse(seconds)} a new connection fails at once (before
        the window ends) while an open one keeps working; once the window
        has ended, new connections succeed.
        """
        existing = yield self.connect()
        window = self.proxy.refuse(3.0)
        yield self.assertDisconnects(self.connect())
        self.assertFalse(window.called, "the connection did not fail at once")
        value = yield self.query(existing)
        self.assertEqual(value, 1)
        yield window
        yield self.assertNewConnectionWorks()


class _PostgresFaultsMixin(_DatabaseFaultsMixin):
    """
    The faults against PostgreSQL; the subclasses name the driver.
    """

    server_class = PostgresServer
    protocol = "postgresql"
    create_table = "CREATE TABLE IF NOT EXISTS %s (tag text)"
    session_id = "SELECT pg_backend_pid()"

    def count_rows(self, tag: str) -> int:
        sql = "SELECT count(*) FROM %s WHERE tag = '%s'" % (self.TABLE, tag)
        return int(self.server.admin_sql(sql, database=self.server.database))  # type: ignore[call-arg]

    def session_open(self, session: int) -> bool:
        return int(self.server.admin_sql("SELECT count(*) FROM pg_stat_activity WHERE pid = %d" % (session,))) > 0


class Pg8000ProxyTests(_PostgresFaultsMixin):
    """
    pg8000, the pure-Python driver, commits with the extended protocol in
    three round trips (Parse, Sync; Describe, Sync, Bind; Execute, Sync):
    C{cut_after_commit} cuts after the last Sync, once the server has
    executed the COMMIT, not after the first, when it has only parsed it.
    """

    driver_name = "pg8000"

    def assertDisconnectError(self, exc: BaseException) -> None:
        """
        pg8000: C{InterfaceError} ("network error", "connection is
        closed"), or a bare L{OSError} when the first read of a reply
        fails (since pg8000 1.31.5).
        """
        self.assertIsInstance(exc, (self.driver.InterfaceError, OSError))


class PostgresProxyTests(_PostgresFaultsMixin):
    driver_name = "psycopg2"

    @defer.inlineCallbacks
    def psycopgPipeline(self) -> Any:
        """
        A psycopg 3 connection through the proxy, with the table.

        @return: the driver, the connection, and a function that INSERTs a
            tag and commits, in pipeline mode: psycopg then sends COMMIT
            with the extended protocol (Parse, Bind, Describe, Execute,
            then Sync).
        """
        psycopg = require_driver("psycopg")
        kwargs = self.server.connect_kwargs("psycopg", port=self.proxy.port)
        conn = yield threads.deferToThread(psycopg.connect, **kwargs)
        self.addCleanup(threads.deferToThread, close_quietly, conn)
        yield threads.deferToThread(conn.execute, self.create_table % (self.TABLE,))
        yield threads.deferToThread(conn.commit)

        def insertInPipeline(tag: str) -> None:
            with conn.pipeline():
                conn.execute("INSERT INTO %s VALUES (%%s)" % (self.TABLE,), (tag,))
                conn.commit()

        return psycopg, conn, insertInPipeline

    @defer.inlineCallbacks
    def test_cutAfterCommitInAPsycopgPipeline(self) -> Any:
        """
        psycopg 3 in pipeline mode sends COMMIT with the extended protocol:
        the proxy cuts after the Sync, and the row is committed.
        """
        psycopg, _, insertInPipeline = yield self.psycopgPipeline()
        tag = uuid.uuid4().hex
        cut = self.proxy.cut_after_commit()
        yield self.assertFailure(threads.deferToThread(insertInPipeline, tag), psycopg.OperationalError)
        yield self.assertCommittedDespiteTheCut(cut, tag)

    @defer.inlineCallbacks
    def test_cutBeforeCommitInAPsycopgPipeline(self) -> Any:
        """
        psycopg 3 in pipeline mode sends the INSERT and the COMMIT in one
        batch: the proxy forwards the INSERT, withholds the COMMIT's
        Execute, and the row is rolled back.
        """
        psycopg, conn, insertInPipeline = yield self.psycopgPipeline()
        tag = uuid.uuid4().hex
        cut = self.proxy.cut_before_commit()
        yield self.assertFailure(threads.deferToThread(insertInPipeline, tag), psycopg.OperationalError)
        yield self.assertRolledBackByTheCut(cut, conn.info.backend_pid, tag)


class MariaDBProxyTests(_DatabaseFaultsMixin):
    server_class = MariaDBServer
    driver_name = "pymysql"
    protocol = "mysql"
    create_table = "CREATE TABLE IF NOT EXISTS %s (tag VARCHAR(64)) ENGINE=InnoDB"
    session_id = "SELECT CONNECTION_ID()"

    def count_rows(self, tag: str) -> int:
        sql = "SELECT count(*) FROM `%s`.%s WHERE tag = '%s'" % (self.server.database, self.TABLE, tag)
        return int(self.server.admin_sql(sql))

    def session_open(self, session: int) -> bool:
        sql = "SELECT count(*) FROM information_schema.PROCESSLIST WHERE ID = %d" % (session,)
        return int(self.server.admin_sql(sql)) > 0

    def assertDisconnectError(self, exc: BaseException) -> None:
        """
        PyMySQL: C{OperationalError} 2013 (lost during query), 2006 (gone
        away) or 2003 (cannot connect, as for a refused connection), or
        C{InterfaceError} on a connection it knows is closed.
        """
        super().assertDisconnectError(exc)
        if isinstance(exc, self.driver.OperationalError):
            self.assertIn(exc.args[0], (2003, 2006, 2013), exc)

    @defer.inlineCallbacks
    def test_blackholeMakesAReadTimeoutFire(self) -> Any:
        """
        With PyMySQL's C{read_timeout}, a query in the black hole fails
        with error 2013 after that timeout; after C{heal} a new connection
        works.
        """
        conn = yield self.connect(read_timeout=1)
        yield self.query(conn)
        self.proxy.blackhole()
        pending = self.query(conn)
        pending.addTimeout(DEADLINE, reactor)
        exc = yield self.assertFailure(pending, self.driver.OperationalError)
        self.assertEqual(exc.args[0], 2013)
        self.proxy.heal()
        yield self.assertNewConnectionWorks()


del _DatabaseFaultsMixin, _PostgresFaultsMixin
