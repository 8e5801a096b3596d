"""
The stall watchdog on its own, with real sockets (a socketpair): the pool's
end-to-end stall tests are in L{tests.test_outage}.
"""

from __future__ import annotations

import os
import socket
from typing import List, Tuple

from twisted.trial.unittest import SynchronousTestCase

from txreconnect._watchdog import SocketId, Watchdog, shutdown_socket, socket_id

#: how long a test waits for the watchdog before it fails (it looks every 50 ms here)
PATIENCE = 10.0


class WatchdogTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.watchdog = Watchdog(name="test")
        self.addCleanup(self.watchdog.stop)

    def pair(self) -> Tuple[socket.socket, socket.socket, SocketId]:
        """
        @return: a connected pair of sockets, and the watchable id of the
            first.
        """
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        b.settimeout(PATIENCE)
        sid = socket_id(a.fileno())
        assert sid is not None
        return a, b, sid

    def assertShutDown(self, peer: socket.socket) -> None:
        """
        The other end of C{peer} is shut down: C{peer} reads end-of-file
        (waiting up to L{PATIENCE}; a timeout fails the test).
        """
        self.assertEqual(peer.recv(1), b"")

    def assertOpen(self, peer: socket.socket) -> None:
        """
        The other end of C{peer} is still open: nothing to read, no
        end-of-file.
        """
        peer.setblocking(False)
        self.assertRaises(BlockingIOError, peer.recv, 1)

    def test_shutsDownTheSocketOfACallPastItsDeadline(self) -> None:
        """
        A call still watched after its deadline gets its socket shut down,
        which ends a blocked read; the descriptor stays open for its owner.
        """
        a, b, sid = self.pair()
        deadline = self.watchdog.watch(1, sid, 0.1)
        self.assertShutDown(b)
        self.assertEqual(os.fstat(a.fileno()).st_ino, sid[1])
        self.assertIn(1, self.watchdog.watched)  # the caller unwatches it
        self.assertEqual(self.watchdog.watched[1][0], deadline)

    def test_leavesACallUnwatchedInTimeAlone(self) -> None:
        """
        A call unwatched before its deadline is never shut down, even once
        the deadline has passed.
        """
        a, b, sid = self.pair()
        self.watchdog.watch(1, sid, 0.1)
        self.watchdog.unwatch(1)
        # A second call, watched after, with the same bound: once it is shut
        # down, the watchdog has looked past the first one's deadline.
        _, sentinel, other = self.pair()
        self.watchdog.watch(2, other, 0.1)
        self.assertShutDown(sentinel)
        self.assertOpen(b)

    def test_firesEachCallOnce(self) -> None:
        """
        A call that stays watched past its deadline is fired once, not at
        every look; the next call of the same thread is a new one.
        """
        fired: List[SocketId] = []
        real = self.watchdog._fire

        def fire(sid: SocketId) -> None:
            fired.append(sid)
            real(sid)

        self.watchdog._fire = fire  # type: ignore[method-assign]
        _, b, sid = self.pair()
        self.watchdog.watch(1, sid, 0.1)
        self.assertShutDown(b)
        _, later, other = self.pair()
        self.watchdog.watch(2, other, 0.3)  # several looks after the first fired
        self.assertShutDown(later)
        self.assertEqual([sid, other], fired)
        _, again, third = self.pair()
        self.watchdog.watch(1, third, 0.1)  # thread 1's next call
        self.assertShutDown(again)
        self.assertEqual([sid, other, third], fired)

    def test_startLooksAsOftenAsTheShortestBoundNeeds(self) -> None:
        """
        The watchdog looks ten times per bound, between every 50 ms and
        every second, and a shorter bound given later makes it look more
        often; a longer one does not make it look less often.
        """
        self.watchdog.start(300)
        self.assertEqual(1.0, self.watchdog._interval)
        self.watchdog.start(2)
        self.assertAlmostEqual(0.2, self.watchdog._interval)
        self.watchdog.start(0.1)
        self.assertEqual(0.05, self.watchdog._interval)
        self.watchdog.start(300)
        self.assertEqual(0.05, self.watchdog._interval)

    def test_aReusedDescriptorIsNotShutDown(self) -> None:
        """
        If the watched descriptor now refers to another file (the driver
        closed its socket and the number was reused), nothing is shut down.
        """
        a, b, sid = self.pair()
        shutdown_socket((sid[0], sid[1] + 1))
        self.assertOpen(b)
        shutdown_socket(sid)
        b.setblocking(True)
        self.assertShutDown(b)
