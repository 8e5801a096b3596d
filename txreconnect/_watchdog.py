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

#: a socket as (descriptor, inode): the inode tells a reused descriptor
SocketId = Tuple[int, int]

from twisted.logger import Logger

__all__ = ["SocketId", "Watch", "Watchdog", "socket_id"]

_log = Logger()


class Watch:
    """
    One watched call.

    @ivar deadline: when (C{time.monotonic()}) its socket is shut down.
    @ivar fired: whether that happened.
    """

    __slots__ = ("deadline", "socket", "fired")

    def __init__(self, deadline: float, socket: SocketId) -> None:
        self.deadline = deadline
        self.socket = socket
        self.fired = False


def socket_id(fileno: Optional[int]) -> Optional[SocketId]:
    """
    @param fileno: a socket's descriptor, or L{None}.
    @return: the descriptor and its inode, or L{None} if it is not an open
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
        self._watched: Dict[int, Watch] = {}
        self._interval = 1.0
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def watch(self, tid: int, sid: SocketId, seconds: float) -> Watch:
        """
        Start watching the call that thread C{tid} makes on the socket
        C{sid}.  Called by that thread only: each pool thread writes only
        its own entry, so no lock is taken on this path, which every call
        takes.

        @param seconds: how long it may take.
        @return: the watch, for L{unwatch}.
        """
        entry = Watch(time.monotonic() + seconds, sid)
        self._watched[tid] = entry
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._start(seconds)
        return entry

    def unwatch(self, tid: int) -> None:
        """
        Stop watching the call of thread C{tid}; called by that thread.
        """
        self._watched.pop(tid, None)

    def _start(self, seconds: float) -> None:
        self._interval = max(0.05, min(1.0, seconds / 10))
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
        while not stopping.wait(self._interval):
            now = time.monotonic()
            # A snapshot (list() of a dict is atomic in CPython); an entry
            # is fired only if it is still its thread's current one.
            for tid, entry in list(self._watched.items()):
                if not entry.fired and entry.deadline <= now and self._watched.get(tid) is entry:
                    entry.fired = True
                    self._fire(entry)

    def _fire(self, entry: Watch) -> None:
        _log.warn("{name}: no answer from the database in time; shutting the socket down", name=self._name)
        shutdown_socket(entry.socket)
