"""
L{FaultProxy}: a TCP proxy that sits between a database client and a
server, all on 127.0.0.1 and in your reactor, and on command makes the
network fail the way real networks do.

Faults
======
  - L{FaultProxy.drop}: close both sides of every connection (FIN).
  - L{FaultProxy.reset}: abort every connection (RST).
  - L{FaultProxy.blackhole} / L{FaultProxy.heal}: stop forwarding in both
    directions while the sockets stay open, as when a route or a firewall
    silently loses packets; then mend the path.
  - L{FaultProxy.refuse}: for a while, close new connections as soon as
    they are accepted.
  - L{FaultProxy.cut_after_commit}: let the next COMMIT through, withhold
    the server's reply, and close the connection: the transaction is
    committed but the client cannot know it.
  - L{FaultProxy.cut_before_commit}: withhold the next COMMIT and close
    the connection: the transaction is rolled back, and again the client
    cannot know it.

Use in your own trial tests
===========================
Point your pool at the proxy rather than at the server, and stop the proxy
in a cleanup::

    from twisted.internet import defer
    from twisted.trial import unittest
    from txreconnect import ReconnectingConnectionPool
    from txreconnect.testing import FaultProxy, PostgresServer, shared_server

    class OutageTests(unittest.TestCase):
        def setUp(self):
            self.server = shared_server(self, PostgresServer)
            self.proxy = FaultProxy(self.server.port, protocol="postgresql")
            self.proxy.start()
            self.addCleanup(self.proxy.stop)
            kwargs = self.server.connect_kwargs("psycopg2", port=self.proxy.port)
            self.pool = ReconnectingConnectionPool("psycopg2", **kwargs)
            self.pool.start()
            self.addCleanup(self.pool.close)

        @defer.inlineCallbacks
        def test_survivesAReset(self):
            yield self.pool.runQuery("SELECT 1")
            yield self.proxy.reset()
            rows = yield self.pool.runQuery("SELECT 1")
            self.assertEqual(rows, [(1,)])

Cleanups run last-added first, so in this C{setUp} the pool closes before
the proxy stops.  A client that blocks (every DB-API driver) must run in a
thread, as adbapi does, since the proxy needs the reactor thread.

How the protocols are read
==========================
The proxy forwards every byte at once (but while L{cut_before_commit
<FaultProxy.cut_before_commit>} is armed it holds back a client's
unfinished message until it is complete, to judge it before the server
can execute it), and finds COMMITs by framing the client's messages as
they pass (L{txreconnect.testing._wire} says how,
for PostgreSQL and for MySQL / MariaDB).  A statement is a COMMIT when it
is C{COMMIT}, optionally followed by C{WORK} or C{TRANSACTION}, C{AND
[NO] CHAIN} and C{[NO] RELEASE}, in any case, with whitespace, comments
and one semicolon around it.  When the session is encrypted (the server
accepted TLS or GSS) or compressed, the proxy cannot read it: it forwards
it and never cuts it.
"""

from __future__ import annotations

import socket
import struct
from typing import Any, Callable, List, Optional, Set

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IAddress, IConnector, IPushProducer
from twisted.logger import Logger
from twisted.protocols.portforward import (
    ProxyClient,
    ProxyClientFactory,
    ProxyFactory,
    ProxyServer,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from txreconnect.testing._wire import (
    PROTOCOLS,
    MySQLCommitDetector,
    PostgresCommitDetector,
    ProtocolDetector,
    detector as _detector,
    is_commit,
)

__all__ = [
    "FaultProxy",
    "MySQLCommitDetector",
    "PostgresCommitDetector",
    "ProtocolDetector",
    "is_commit",
]

_log = Logger()
@implementer(IPushProducer)
class _Valve:
    """
    What one side's transport registers as its producer: the other side's
    transport, which stops reading when flow control asks (the writer's
    buffer is full) or while the path is black-holed, and reads again only
    when neither holds.
    """

    def __init__(self, source: Any) -> None:
        self.source = source
        self.flow_paused = False
        self.held = False

    def _apply(self) -> None:
        if self.flow_paused or self.held:
            self.source.pauseProducing()
        else:
            self.source.resumeProducing()

    def hold(self, held: bool) -> None:
        self.held = held
        self._apply()

    def pauseProducing(self) -> None:
        self.flow_paused = True
        self._apply()

    def resumeProducing(self) -> None:
        self.flow_paused = False
        self._apply()

    def stopProducing(self) -> None:
        self.source.loseConnection()


class _Side:
    """
    What both ends of a proxied connection share: a place in the proxy's
    books, and Deferreds for their closing.
    """

    transport: Any
    proxy: "FaultProxy"

    def _begin(self) -> None:
        self.closed = False
        self._waiters: List[defer.Deferred[None]] = []
        self.proxy._sides.add(self)

    def _end(self) -> None:
        self.closed = True
        self.proxy._sides.discard(self)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def when_closed(self) -> defer.Deferred[None]:
        if self.closed:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._waiters.append(d)
        return d

    def abort(self) -> None:
        # SO_LINGER (1, 0): close() sends RST, not FIN.
        try:
            self.transport.getHandle().setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        except (OSError, AttributeError):
            pass
        self.transport.abortConnection()

    def close(self) -> None:
        self._discard_unread()
        # A producer that flow control paused would keep the transport open.
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def _discard_unread(self) -> None:
        # Closing a socket with unread bytes (held by a black hole) sends
        # RST, not FIN: read them first, and say they are lost.
        discarded = 0
        try:
            handle = self.transport.getHandle()
            while True:
                chunk = handle.recv(65536)
                if not chunk:
                    break
                discarded += len(chunk)
        except (OSError, AttributeError):
            pass
        if discarded:
            _log.info(
                "FaultProxy {proxy}: discarded {n} unforwarded bytes of a dropped connection",
                proxy=self.proxy.port,
                n=discarded,
            )


class _Back(_Side, ProxyClient):
    """
    The proxy's connection to the database server.
    """

    peer: "_Front"

    def __init__(self, front: "_Front") -> None:
        self.front = front
        self.proxy = front.proxy

    def connectionMade(self) -> None:
        self._begin()
        front = self.front
        if front.closed:
            # The client left while we were connecting.
            self.transport.loseConnection()
            return
        front.setPeer(self)
        front.back = self
        front.connector = None
        # Flow control as in portforward, through valves that the black
        # hole can also close.
        front.from_client = _Valve(front.transport)
        front.from_server = _Valve(self.transport)
        self.transport.registerProducer(front.from_client, True)
        front.transport.registerProducer(front.from_server, True)
        front.hold(self.proxy.blackholed)

    def dataReceived(self, data: bytes) -> None:
        front = self.front
        if front.severed:
            # Cut before COMMIT: both sides are closing, and what the server
            # still says (answers to what came before the COMMIT) is lost.
            return
        front.detector.feed_server(data)
        if front.cutting:
            _log.info(
                "FaultProxy {proxy}: withheld {n} bytes of the server's reply to COMMIT; "
                "cutting the connection",
                proxy=self.proxy.port,
                n=len(data),
            )
            front.replied = True
            front.close()
            self.close()
            return
        front.transport.write(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        ProxyClient.connectionLost(self, reason)
        self._end()


class _BackFactory(ProxyClientFactory):
    protocol = _Back  # type: ignore[assignment]
    server: "_Front"

    def buildProtocol(self, addr: IAddress) -> _Back:  # type: ignore[override]
        back = _Back(self.server)
        back.factory = self
        back.setPeer(self.server)
        return back

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        if not self.server.closed:
            _log.info(
                "FaultProxy {proxy}: cannot reach the server: {reason}",
                proxy=self.server.proxy.port,
                reason=reason.getErrorMessage(),
            )
            self.server.connector = None
            self.server.transport.loseConnection()


class _Front(_Side, ProxyServer):
    """
    A connection from a database client; it owns the link to the server.
    """

    factory: "_FrontFactory"
    peer: Optional[_Back]

    def __init__(self, proxy: "FaultProxy") -> None:
        self.proxy = proxy
        self.reactor = proxy.reactor
        self.back: Optional[_Back] = None
        # IConnector, while connecting to the server
        self.connector: Any = None
        self.from_client: Optional[_Valve] = None
        self.from_server: Optional[_Valve] = None
        self.detector = _detector(proxy.protocol)
        # The COMMIT was let through; its reply is withheld.
        self.cutting = False
        self.replied = False
        self.cut: Optional[defer.Deferred[bool]] = None
        # The COMMIT was withheld; both sides are closing.
        self.severed = False
        # What the client sent that is not forwarded yet: the start of an
        # unfinished message, while a cut before COMMIT is armed.
        self.held = bytearray()

    def connectionMade(self) -> None:
        self._begin()
        proxy = self.proxy
        if proxy.refusing:
            _log.info("FaultProxy {proxy}: refusing a new connection", proxy=proxy.port)
            self.abort()
            return
        # Nothing is read from the client until the server is connected.
        self.transport.pauseProducing()
        if not proxy.blackholed:
            self.connect()

    def connect(self) -> None:
        """
        Connect to the server (at once, or when the black hole heals).
        """
        factory = self.clientProtocolFactory()
        factory.setServer(self)
        self.connector = self.proxy.reactor.connectTCP(
            self.proxy.target_host, self.proxy.target_port, factory
        )

    def hold(self, held: bool) -> None:
        """
        Stop (or resume) reading from both sides.
        """
        if self.from_client is not None and self.from_server is not None:
            self.from_client.hold(held)
            self.from_server.hold(held)
        elif not held and self.back is None and self.connector is None and not self.closed:
            # Accepted while black-holed: connect now.
            self.connect()

    def dataReceived(self, data: bytes) -> None:
        if self.cutting or self.severed:
            self._discarded(len(data), "after COMMIT")
            return
        end = self.detector.feed_client(data)
        start = self.detector.commit_start
        back = self.back
        assert back is not None
        proxy = self.proxy
        # Offsets in data become offsets in held.
        held = self.held
        base = len(held)
        held += data
        if proxy._cut is not None and proxy._cut_before:
            if start is not None:
                # A COMMIT that began before the cut was armed may be
                # partly forwarded: the server never gets all of it.
                self._sever(max(base + start, 0))
                return
            # Hold an unfinished message back until it can be judged.
            send = len(held) - min(self.detector.unfinished, len(held))
        elif end is not None and proxy._cut is not None:
            self.cut, proxy._cut = proxy._cut, None
            self.cutting = True
            _log.info(
                "FaultProxy {proxy}: COMMIT seen; forwarding it and withholding the reply",
                proxy=proxy.port,
            )
            self._discarded(len(data) - end, "after COMMIT")
            send = base + end
            del held[send:]
        else:
            send = len(held)
        back.transport.write(bytes(held[:send]))
        del held[:send]

    def _sever(self, start: int) -> None:
        """
        Forward what is held up to C{start}, where the COMMIT begins, and
        close both sides; fire the armed cut once both are closed.
        """
        proxy, back, held = self.proxy, self.back, self.held
        assert proxy._cut is not None and back is not None
        cut, proxy._cut = proxy._cut, None
        self.severed = True
        _log.info(
            "FaultProxy {proxy}: COMMIT seen; withholding it and cutting the connection",
            proxy=proxy.port,
        )
        self._discarded(len(held) - start, "from COMMIT on")
        back.transport.write(bytes(held[:start]))
        del held[:]
        closed = defer.gatherResults([self.when_closed(), back.when_closed()])
        closed.addCallback(lambda _: cut.callback(None))
        self.close()
        back.close()

    def _discarded(self, n: int, which: str) -> None:
        if n:
            _log.info(
                "FaultProxy {proxy}: discarded {n} bytes the client sent {which}",
                proxy=self.proxy.port,
                n=n,
                which=which,
            )

    def _stop_connecting(self) -> None:
        if self.connector is not None:
            self.connector.stopConnecting()
            self.connector = None

    def close(self) -> None:
        self._stop_connecting()
        _Side.close(self)

    def abort(self) -> None:
        self._stop_connecting()
        _Side.abort(self)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._stop_connecting()
        ProxyServer.connectionLost(self, reason)
        self._end()
        if self.cut is not None:
            cut, self.cut = self.cut, None
            cut.callback(self.replied)


class _FrontFactory(ProxyFactory):
    def __init__(self, proxy: "FaultProxy") -> None:
        ProxyFactory.__init__(self, proxy.target_host, proxy.target_port)
        self.proxy = proxy

    def buildProtocol(self, addr: IAddress) -> _Front:  # type: ignore[override]
        front = _Front(self.proxy)
        front.factory = self
        return front


_Front.clientProtocolFactory = _BackFactory


class FaultProxy:
    """
    A TCP proxy on 127.0.0.1 in front of a database server, running in the
    caller's reactor, that drops, resets, black-holes or refuses
    connections, or cuts one right after or right before the server gets
    a client's COMMIT.

    The faults act on the connections the proxy holds when they are called
    (and, for L{blackhole} and L{refuse}, on the ones that come while they
    last); they never touch the server itself.

    @ivar port: the port the proxy listens on, once L{start}ed; 0 before.
    @ivar target_port: the server's port.
    @ivar target_host: the server's address.
    @ivar protocol: C{"postgresql"}, C{"mysql"}, or C{None} to tell each
        connection's protocol by who speaks first.
    @ivar reactor: the reactor the proxy runs in.
    @ivar blackholed: whether the path is black-holed now.
    """

    def __init__(
        self,
        target_port: int,
        target_host: str = "127.0.0.1",
        reactor: Any = None,
        protocol: Optional[str] = None,
    ) -> None:
        """
        @param target_port: the server's TCP port.
        @param target_host: the server's address.
        @param reactor: a reactor providing C{IReactorTCP} and
            C{IReactorTime}; the global reactor by default.
        @param protocol: the wire protocol, C{"postgresql"} or C{"mysql"},
            so that L{cut_after_commit} and L{cut_before_commit} can find
            COMMITs; C{None} tells them apart on each connection (the
            PostgreSQL client speaks first, the MySQL server does).
        @raise ValueError: C{protocol} is not one of those.
        """
        if protocol is not None and protocol not in PROTOCOLS:
            raise ValueError(
                "protocol must be one of %s or None, not %r" % (", ".join(PROTOCOLS), protocol)
            )
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.reactor: Any = reactor
        self.target_port = target_port
        self.target_host = target_host
        self.protocol = protocol
        self.port = 0
        self.blackholed = False
        self._listening: Any = None
        self._sides: Set[_Side] = set()
        # the armed cut, and whether it is before the COMMIT
        self._cut: Optional[defer.Deferred[Any]] = None
        self._cut_before = False
        # IDelayedCall that ends the refuse window
        self._refuse_call: Any = None
        self._refuse_ended: List[defer.Deferred[None]] = []

    def __repr__(self) -> str:
        return "<FaultProxy 127.0.0.1:%d -> %s:%d>" % (self.port, self.target_host, self.target_port)

    # --- lifecycle -----------------------------------------------------------

    def start(self, port: int = 0, interface: str = "127.0.0.1") -> int:
        """
        Listen and start forwarding.

        @param port: the port to listen on; 0 (the default) picks a free
            one.
        @param interface: the address to listen on.
        @return: the port, also in L{port}.
        @raise RuntimeError: the proxy is already listening.
        @raise twisted.internet.error.CannotListenError: the port is taken.
        """
        if self._listening is not None:
            raise RuntimeError("%r is already started" % (self,))
        self._listening = self.reactor.listenTCP(port, _FrontFactory(self), interface=interface)
        self.port = self._listening.getHost().port
        _log.info("{proxy!r} started", proxy=self)
        return self.port

    def stop(self) -> defer.Deferred[None]:
        """
        Stop listening, abort every connection still open, and end any
        L{refuse} window (an armed L{cut_after_commit} or
        L{cut_before_commit} stays pending: cancel its Deferred to disarm
        it).

        @return: a Deferred that fires once the port is closed and every
            connection is closed; for C{addCleanup}.
        """
        self._end_refusal()
        waits: List[defer.Deferred[Any]] = []
        if self._listening is not None:
            waits.append(defer.maybeDeferred(self._listening.stopListening))
            self._listening = None
        sides = list(self._sides)
        waits.extend(side.when_closed() for side in sides)
        for side in sides:
            side.abort()
        d = defer.gatherResults(waits, consumeErrors=True)
        return d.addCallback(lambda _: None)

    # --- faults --------------------------------------------------------------

    def _fronts(self) -> List[_Front]:
        return [side for side in self._sides if isinstance(side, _Front)]

    def _close_all(self, how: Callable[[_Side], None], what: str) -> defer.Deferred[int]:
        fronts = self._fronts()
        sides: List[_Side] = list(self._sides)
        waits = [side.when_closed() for side in sides]
        for side in sides:
            how(side)
        _log.info("FaultProxy {proxy}: {what} {n} connection(s)", proxy=self.port, what=what, n=len(fronts))
        d = defer.gatherResults(waits)
        return d.addCallback(lambda _: len(fronts))

    def drop(self) -> defer.Deferred[int]:
        """
        Close both sides of every current connection in order (FIN), as a
        server or a middlebox that ends connections would.  The client sees
        the connection closed at its next read.

        @return: a Deferred that fires with the number of client
            connections dropped once all their sockets are closed.
        """
        return self._close_all(lambda side: side.close(), "dropped")

    def reset(self) -> defer.Deferred[int]:
        """
        Abort every current connection with a TCP reset (RST) on both
        sides: C{SO_LINGER} is set to (1, 0) before the sockets close.

        @return: a Deferred that fires with the number of client
            connections reset once all their sockets are closed.
        """
        return self._close_all(lambda side: side.abort(), "reset")

    def blackhole(self) -> None:
        """
        Stop forwarding in both directions, keeping every socket open: a
        route or a firewall that silently loses packets.

        Nothing is discarded: the proxy stops reading, so the bytes wait in
        the kernel's buffers, as unacknowledged segments wait in a real
        sender's.  The proxy's kernel still acknowledges (so TCP keepalives
        succeed, as through a middlebox that still answers); a client that
        writes a lot blocks once the buffers are full.  Closes are not seen
        either: a client that gives up is noticed only after L{heal}.

        New connections are accepted, but the proxy connects them to the
        server only after L{heal}: the server sees nothing of them before.

        A client waits until its own timeout, if it has one (PyMySQL's
        C{read_timeout}); psycopg2 and PyMySQL by default wait for ever.
        To model a path that never comes back, call L{drop} or L{reset}
        while black-holed (a middlebox that forgot the connection).
        """
        if not self.blackholed:
            _log.info("FaultProxy {proxy}: black hole", proxy=self.port)
        self.blackholed = True
        for front in self._fronts():
            front.hold(True)

    def heal(self) -> None:
        """
        End a L{blackhole}: as TCP delivers what it retransmits once a
        short outage ends, the connections resume where they stopped, with
        every byte held back delivered in order, and the closes that
        happened meanwhile passed on.  Connections accepted during the
        black hole are connected to the server now.
        """
        if self.blackholed:
            _log.info("FaultProxy {proxy}: healed", proxy=self.port)
        self.blackholed = False
        for front in self._fronts():
            front.hold(False)

    @property
    def refusing(self) -> bool:
        """
        Whether a L{refuse} window is open now.
        """
        return self._refuse_call is not None

    def refuse(self, seconds: float) -> defer.Deferred[None]:
        """
        For C{seconds}, on the reactor's clock, abort (RST) each new
        connection as soon as it is accepted, as a server that is down or
        restarting turns clients away.  Current connections are untouched.
        Calling it again during a window restarts the window.

        @param seconds: how long the window lasts.
        @return: a Deferred that fires when the window ends (or when the
            proxy is stopped).
        @raise ValueError: C{seconds} is negative.
        """
        if seconds < 0:
            raise ValueError("seconds must not be negative: %r" % (seconds,))
        if self._refuse_call is not None:
            self._refuse_call.cancel()
        _log.info("FaultProxy {proxy}: refusing new connections for {s} s", proxy=self.port, s=seconds)
        self._refuse_call = self.reactor.callLater(seconds, self._end_refusal)
        d: defer.Deferred[None] = defer.Deferred()
        self._refuse_ended.append(d)
        return d

    def _end_refusal(self) -> None:
        if self._refuse_call is not None:
            if self._refuse_call.active():
                self._refuse_call.cancel()
            self._refuse_call = None
            _log.info("FaultProxy {proxy}: accepting new connections again", proxy=self.port)
        waiters, self._refuse_ended = self._refuse_ended, []
        for d in waiters:
            d.callback(None)

    def cut_after_commit(self) -> defer.Deferred[bool]:
        """
        Arm a one-shot fault: the next time a client sends COMMIT, on any
        connection, the proxy forwards it to the server, withholds what the
        server answers, and closes the connection (FIN, both sides) as soon
        as that answer arrives, so the server has certainly committed but
        the client never learns it (its C{commit()} fails with a
        disconnect).  Whatever the client sends after the COMMIT is
        discarded.

        See the module docstring for what counts as a COMMIT in each
        protocol; encrypted or compressed sessions are never cut.

        @return: a Deferred that fires once the client's connection is
            closed, with C{True} if the server's reply arrived (and was
            withheld), C{False} if the connection ended before any reply.
            Cancel it to disarm the fault.
        @raise RuntimeError: a cut (after or before COMMIT) is already
            armed.
        """
        cut: defer.Deferred[bool] = self._arm(before=False)
        return cut

    def cut_before_commit(self) -> defer.Deferred[None]:
        """
        Arm a one-shot fault, the twin of L{cut_after_commit}: the next time
        a client sends COMMIT, on any connection, the proxy withholds it,
        and everything after it, and closes the connection (FIN, both
        sides) at once.  The server sees its client vanish in the middle of
        a transaction and rolls it back; the client sees its connection
        lost while COMMIT is in flight (its C{commit()} fails with a
        disconnect), so it cannot know the transaction was not committed.

        What the server receives of the client's last bytes:
          - PostgreSQL, simple Query: everything before the C{Q} message
            of the COMMIT, none of it.
          - PostgreSQL, extended protocol: everything before the Execute
            of the COMMIT's portal, which may include the Parse, Bind and
            Describe of the COMMIT itself (they do not commit); not the
            Execute (on which the server would commit at once), nor the
            Sync or anything after it.
          - MySQL / MariaDB: everything before the COM_QUERY packet of the
            COMMIT, none of it.

        To judge each message before the server can act on it, the proxy
        holds back a client's unfinished message (its first bytes, until
        the rest arrives) while this fault is armed.  A COMMIT whose first
        bytes were forwarded before the fault was armed is still cut: the
        server gets only that part of it, which it cannot execute.

        See the module docstring for what counts as a COMMIT in each
        protocol; encrypted or compressed sessions are never cut.

        @return: a Deferred that fires with C{None} once both sides of the
            cut connection are closed.  Cancel it to disarm the fault.
        @raise RuntimeError: a cut (after or before COMMIT) is already
            armed.
        """
        cut: defer.Deferred[None] = self._arm(before=True)
        return cut

    def _arm(self, before: bool) -> defer.Deferred[Any]:
        if self._cut is not None:
            raise RuntimeError("cut_%s is already armed on %r" % (str(self.armed).replace("-", "_"), self))

        def disarm(d: defer.Deferred[Any]) -> None:
            if self._cut is d:
                self._cut = None

        self._cut = defer.Deferred(disarm)
        self._cut_before = before
        _log.info(
            "FaultProxy {proxy}: armed to cut {where} the next COMMIT",
            proxy=self.port,
            where="before" if before else "after",
        )
        return self._cut

    @property
    def armed(self) -> Optional[str]:
        """
        The cut armed now: C{"after-commit"}, C{"before-commit"}, or
        C{None} (also once a connection has met the COMMIT and is being
        cut).
        """
        if self._cut is None:
            return None
        return "before-commit" if self._cut_before else "after-commit"

    # --- observation ---------------------------------------------------------

    @property
    def connections(self) -> int:
        """
        How many client connections the proxy holds now.
        """
        return len(self._fronts())
