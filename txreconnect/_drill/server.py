"""
A drill on a PostgreSQL or MariaDB server: a throwaway one of our own
(C{--spawn}, so that it can be restarted) or one given by its URL
(C{--url}).  Each pool connects through a L{FaultProxy} of its own, which
drops, resets and cuts its connections; the drill kills the pools'
sessions from a connection of its own, as the same database user.
"""

from __future__ import annotations

import threading
from typing import Any, Dict, List, Optional, Set, Tuple, Type

from twisted.internet import defer, threads
from twisted.python.failure import Failure

from txreconnect._drill.site import Site, Target
from txreconnect.drivers import driver_class, known_drivers
from txreconnect.testing import FaultProxy, MariaDBServer, PostgresServer, ThrowawayServer
from txreconnect.testing.proxy import PROTOCOLS

__all__ = ["SERVERS", "ServerSite", "drivers_of", "proxied"]

#: the throwaway servers a drill (or C{txreconnect smoke}) can start, by
#: their name on the command line: the server class and its database
#: family (a L{Driver.family<txreconnect.drivers.Driver>})
SERVERS: Dict[str, Tuple[Type[ThrowawayServer], str]] = {
    "postgres": (PostgresServer, "postgresql"),
    "mariadb": (MariaDBServer, "mysql"),
}


def drivers_of(family: str) -> List[str]:
    """
    @param family: a database family, such as C{"postgresql"}.
    @return: the names of the drivers txreconnect knows for it, the
        family's default driver (the one a bare URL scheme means) first.
    """
    found = [cls for cls in known_drivers() if cls.family == family]
    return [cls.name for cls in sorted(found, key=lambda cls: not cls.url_default)]


def proxied(driver: str) -> bool:
    """
    @param driver: a DB-API module's name.
    @return: whether a server drill can use it: its family's wire
        protocol is one a L{FaultProxy} reads.
    """
    return driver_class(driver).family in PROTOCOLS


#: MySQL's ER_NO_SUCH_THREAD: the session had already ended
_NO_SUCH_THREAD = 1094


class ServerSite(Site):
    """
    A drill on a server, through one L{FaultProxy} per pool.
    """

    def __init__(
        self,
        reactor: Any,
        driver: str,
        connect_kwargs: Dict[str, Any],
        description: str,
        server: Optional[ThrowawayServer] = None,
    ) -> None:
        """
        @param driver: a driver for which L{proxied} is true.
        @param connect_kwargs: the driver's C{connect()} keywords for the
            server itself: a TCP host and port, and the others.
        @param server: the server, if it is ours to restart.
        """
        super().__init__(reactor, driver)
        self.description = description
        self.drop_tables = server is None
        spelling = driver_class(driver)
        self._protocol = spelling.family
        self._postgres = self._protocol == "postgresql"
        self._host = spelling.keywords["host"]
        self._port = spelling.keywords["port"]
        self._kwargs = connect_kwargs
        self._server = server
        self._proxies: List[Tuple[str, FaultProxy]] = []
        self._cuts: Dict[FaultProxy, "defer.Deferred[bool]"] = {}
        self._sessions: Set[int] = set()
        self._lock = threading.Lock()
        self.faults = {"kill": self._kill, "drop": self._drop, "reset": self._reset, "cut": self._cut}
        if server is not None:
            self.faults["restart"] = self._restart

    def _connect_args(self, label: str) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
        proxy = FaultProxy(
            self._kwargs[self._port], target_host=self._kwargs[self._host], reactor=self.reactor,
            protocol=self._protocol,
        )
        proxy.start()
        self._proxies.append((label, proxy))
        through = {self._host: "127.0.0.1", self._port: proxy.port}
        return (), dict(self._kwargs, **through, cp_openfun=self._remember_session)

    def _connect(self, target: Target) -> Any:
        return self.module.connect(**self._kwargs)

    def _remember_session(self, conn: Any) -> None:
        """
        The pools' C{cp_openfun}: note the session id of each new
        connection, so that L{_kill} ends the pools' sessions and no other.
        """
        cursor = conn.cursor()
        cursor.execute("SELECT pg_backend_pid()" if self._postgres else "SELECT CONNECTION_ID()")
        (session,) = cursor.fetchone()
        cursor.close()
        conn.rollback()
        with self._lock:
            self._sessions.add(int(session))

    # --- faults --------------------------------------------------------------

    def _kill(self) -> "defer.Deferred[str]":
        with self._lock:
            sessions = sorted(self._sessions)
            self._sessions.clear()

        def kill(conn: Any) -> int:
            cursor = conn.cursor()
            if self._postgres:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM unnest(ARRAY[%s]::integer[]) AS pid"
                    % (",".join(map(str, sessions)),)
                )
                return sum(1 for (ended,) in cursor.fetchall() if ended)
            killed = 0
            for session in sessions:
                try:
                    cursor.execute("KILL CONNECTION %d" % (session,))
                except self.module.Error as error:
                    if error.args[:1] != (_NO_SUCH_THREAD,):
                        raise
                else:
                    killed += 1
            return killed

        d = self._direct(self.targets[0], kill)  # any target: all are on this server
        return d.addCallback(lambda n: "ended %d of the pools' sessions, as an administrator would" % (n,))

    def _restart(self) -> "defer.Deferred[str]":
        assert self._server is not None
        d = threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self._server.restart)
        return d.addCallback(lambda _: "stopped and started the server")

    def _drop(self) -> "defer.Deferred[str]":
        d = defer.gatherResults([proxy.drop() for _, proxy in self._proxies])
        return d.addCallback(lambda ns: "closed the pools' %d connections (FIN)" % (sum(ns),))

    def _reset(self) -> "defer.Deferred[str]":
        d = defer.gatherResults([proxy.reset() for _, proxy in self._proxies])
        return d.addCallback(lambda ns: "reset the pools' %d connections (RST)" % (sum(ns),))

    def _cut(self) -> "defer.Deferred[str]":
        for label, proxy in self._proxies:
            if proxy not in self._cuts:
                cut = self._cuts[proxy] = proxy.cut_after_commit()
                cut.addBoth(self._cut_done, label, proxy)
        return defer.succeed("armed: each pool's next COMMIT goes through, then its connection is cut")

    def _cut_done(self, result: Any, label: str, proxy: FaultProxy) -> None:
        del self._cuts[proxy]
        if isinstance(result, Failure):
            result.trap(defer.CancelledError)
        else:
            self.announce("%s: a COMMIT went through, then its connection was cut before the reply" % (label,))

    def stop(self) -> "defer.Deferred[None]":
        for cut in list(self._cuts.values()):
            cut.cancel()
        d = defer.gatherResults([proxy.stop() for _, proxy in self._proxies])
        return d.addCallback(lambda _: None)
