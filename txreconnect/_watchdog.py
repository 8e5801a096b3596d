"""
A watchdog that ends calls stuck on a silent network path.

Keepalives do not help when a proxy or a hung middlebox still acknowledges
at the TCP level, and libpq has no client-side read timeout: a pool thread
would wait forever (and block C{pool.close()} and reactor shutdown).  The
watchdog shuts down the socket of a call that has run longer than its
bound, so the driver's blocked read returns with an error.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Dict, Optional, Tuple

from twisted.logger import Logger

#: a socket as (descriptor, inode): the inode tells a reused descriptor
SocketId = Tuple[int, int]

#: one watched call: when (C{time.monotonic()}) its socket is shut down,
#: and the socket
Watched = Tuple[float, SocketId]

__all__ = ["SocketId", "Watchdog", "socket_id"]

_log = Logger()


def socket_id(fileno: Optional[int]) -> Optional[SocketId]:
    """
    @param fileno: a socket's descriptor, or C{None}.
    @return: the descriptor and its inode, or C{None} if it is not an open
        descriptor.
    """
    if fileno is None or fileno < 0:
        return None
    try:
        return fileno, os.fstat(fileno).st_ino
    except OSError:
        return None


def shutdown_socket(sid: SocketId) -> None:
    """
    Shut down both directions of the socket C{sid}, without closing the
    descriptor (its owner, the driver, still holds it).  Nothing happens
    if the descriptor now refers to another file: the driver closed the
    socket meanwhile and the number was reused.
    """
    fileno, inode = sid
    try:
        if os.fstat(fileno).st_ino != inode:
            return
        sock = socket.socket(fileno=os.dup(fileno))
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


class Watchdog:
    """
    Watches the calls of one pool's threads, from a daemon thread started
    on first use.  Calls are identified by their connection's socket,
    found when the connection was opened (some drivers refuse to be asked
    while another thread uses the connection).
    """

    def __init__(self, name: str = "txreconnect") -> None:
        """
        @param name: for the thread's name and log lines.
        """
        self._name = name
        self._lock = threading.Lock()
        #: the watched calls, by the id of the thread that makes them.
        #: Each pool thread sets and removes only its own entry, so no lock
        #: is taken; the pool does it inline, without a method call, on the
        #: path every call takes (after L{start}).
        self.watched: Dict[int, Watched] = {}
        #: the entries the watchdog has fired (each is fired once)
        self._fired: Dict[int, Watched] = {}
        self._interval = 1.0
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self, seconds: float) -> None:
        """
        Start the watchdog thread unless it runs: before any entry is put
        into L{watched} directly.

        @param seconds: the bound of the calls it will watch (it looks at
            them ten times per shortest bound, between every 50 ms and
            every second).
        """
        interval = max(0.05, min(1.0, seconds / 10))
        if interval < self._interval:
            self._interval = interval
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._start()

    def watch(self, tid: int, sid: SocketId, seconds: float) -> float:
        """
        Start watching the call that thread C{tid} makes on the socket
        C{sid}; called by that thread only.

        @param seconds: how long it may take.
        @return: its deadline (C{time.monotonic()}).
        """
        deadline = time.monotonic() + seconds
        self.watched[tid] = (deadline, sid)
        self.start(seconds)
        return deadline

    def unwatch(self, tid: int) -> None:
        """
        Stop watching the call of thread C{tid}; called by that thread.
        """
        self.watched.pop(tid, None)

    def _start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, name="%s watchdog" % (self._name,), daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """
        Stop the watchdog thread (it starts again if needed).
        """
        with self._lock:
            thread, self._thread = self._thread, None
            self._stopping.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        stopping = self._stopping
        watched = self.watched
        fired = self._fired
        while not stopping.wait(self._interval):
            now = time.monotonic()
            # A snapshot (list() of a dict is atomic in CPython); an entry
            # is fired once, and only if it is still its thread's current
            # one (entries are never reused: a new call makes a new tuple).
            for tid, entry in list(watched.items()):
                if entry[0] <= now and fired.get(tid) is not entry and watched.get(tid) is entry:
                    fired[tid] = entry
                    self._fire(entry[1])

    def _fire(self, sid: SocketId) -> None:
        _log.warn("{name}: no answer from the database in time; shutting the socket down", name=self._name)
        shutdown_socket(sid)
