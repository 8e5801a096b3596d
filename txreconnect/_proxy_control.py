"""
The control endpoint of C{twistd txreconnect-proxy}: a small HTTP API that
injects faults into a running L{FaultProxy}, so that a team can rehearse
outages against a staging database from a shell, a script or a CI job.

Every fault is a C{POST}; every answer is a JSON object; every answer but
an error holds the proxy's C{status} after the request::

    GET  /status                 {"status": {...}}
    POST /drop                   {"dropped": N, "status": {...}}   FIN every connection
    POST /reset                  {"reset": N, "status": {...}}     RST every connection
    POST /blackhole              {"status": {...}}                 stop forwarding, keep sockets
    POST /heal                   {"status": {...}}                 end the black hole
    POST /refuse?seconds=N       {"refusing_for": N, ...}          reset new connections for N s
                                                                   (seconds=0 ends a window)
    POST /cut-after-commit       {"armed": true, ...}              cut the next COMMIT's reply
    POST /cut-before-commit      {"armed": true, ...}              withhold the next COMMIT and cut
    POST /disarm                 {"disarmed": true|false, ...}     cancel an armed cut

C{/drop} and C{/reset} answer once every affected socket is closed, so
the fault has happened when the answer arrives.  The status is::

    {"listen": {"host": "127.0.0.1", "port": 6432},
     "target": {"host": "db", "port": 5432},
     "protocol": "postgresql" | "mysql" | null,
     "connections": 2, "blackholed": false, "refusing": false,
     "cut_armed": false, "cut": null, "cuts": 0}

C{cut} is the cut armed, C{"after-commit"} or C{"before-commit"}, or
C{null}; C{cuts} counts the connections cut after or before a COMMIT so
far.  Errors are C{{"error": "..."}} with status 400 (a bad C{seconds}),
404 (an unknown path; the answer lists the paths), 405 (wrong method;
C{Allow} says which) or 409 (C{/cut-after-commit} or C{/cut-before-commit}
while a cut of either kind is already armed).

The API has no authentication: bind it to a loopback address (the
default for C{--control PORT}) or a UNIX socket.

For example::

    curl -s localhost:7000/status
    curl -s -X POST localhost:7000/drop
    curl -s -X POST 'localhost:7000/refuse?seconds=30'
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Dict, Optional, Tuple

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server

from txreconnect.testing.proxy import FaultProxy

__all__ = ["ControlResource", "control_site"]

_log = Logger()


class _BadRequest(Exception):
    """
    The request cannot be served: C{code} and the message go back as JSON.
    """

    def __init__(self, code: int, message: str, headers: Optional[Dict[str, str]] = None) -> None:
        super().__init__(message)
        self.code = code
        self.headers = headers or {}


class ControlResource(resource.Resource):
    """
    The control API of one L{FaultProxy}; see the module docstring.

    @ivar proxy: the proxy it controls.
    @ivar cuts: how many connections were cut after or before a COMMIT
        through it.
    """

    isLeaf = True

    def __init__(self, proxy: FaultProxy, interface: str = "127.0.0.1") -> None:
        """
        @param proxy: the proxy to control.
        @param interface: the address the proxy listens on, for the status.
        """
        super().__init__()
        self.proxy = proxy
        self.interface = interface
        self.cuts = 0
        self._cut: Optional[defer.Deferred[Any]] = None
        # "after-commit" or "before-commit", while _cut is set
        self._cut_kind: Optional[str] = None
        # path -> (method, handler(request) -> JSON object or a Deferred of one)
        self._routes: Dict[bytes, Tuple[bytes, Callable[[server.Request], Any]]] = {
            b"/status": (b"GET", lambda request: {}),
            b"/drop": (b"POST", self._drop),
            b"/reset": (b"POST", self._reset),
            b"/blackhole": (b"POST", self._blackhole),
            b"/heal": (b"POST", self._heal),
            b"/refuse": (b"POST", self._refuse),
            b"/cut-after-commit": (b"POST", lambda request: self._arm_cut(before=False)),
            b"/cut-before-commit": (b"POST", lambda request: self._arm_cut(before=True)),
            b"/disarm": (b"POST", self._disarm),
        }

    # --- state -------------------------------------------------------------

    def status(self) -> Dict[str, Any]:
        """
        @return: the proxy's state, as C{GET /status} shows it.
        """
        proxy = self.proxy
        return {
            "listen": {"host": self.interface, "port": proxy.port},
            "target": {"host": proxy.target_host, "port": proxy.target_port},
            "protocol": proxy.protocol,
            "connections": proxy.connections,
            "blackholed": proxy.blackholed,
            "refusing": proxy.refusing,
            "cut_armed": self._cut is not None,
            "cut": self._cut_kind if self._cut is not None else None,
            "cuts": self.cuts,
        }

    def disarm(self) -> bool:
        """
        Cancel an armed C{cut-after-commit} or C{cut-before-commit}.

        @return: whether one was armed.
        """
        cut, self._cut = self._cut, None
        if cut is None:
            return False
        cut.cancel()
        return True

    # --- HTTP --------------------------------------------------------------

    def render(self, request: server.Request) -> Any:
        path = request.path.rstrip(b"/") or b"/"
        try:
            route = self._routes.get(path)
            if route is None:
                raise _BadRequest(
                    404,
                    "no such path %r; the paths are: %s"
                    % (path.decode("latin-1"), ", ".join(
                        "%s %s" % (m.decode(), p.decode()) for p, (m, _) in self._routes.items()
                    )),
                )
            method, handler = route
            allowed = (method, b"HEAD") if method == b"GET" else (method,)
            if request.method not in allowed:
                raise _BadRequest(
                    405,
                    "%s needs %s, not %s"
                    % (path.decode(), method.decode(), request.method.decode("latin-1")),
                    {"Allow": ", ".join(m.decode() for m in allowed)},
                )
            result = handler(request)
        except _BadRequest as e:
            return self._answer(request, {"error": str(e)}, e.code, e.headers)
        if not isinstance(result, defer.Deferred):
            return self._answer(request, result)
        finished = [False]
        request.notifyFinish().addBoth(lambda _: finished.__setitem__(0, True))

        def reply(body: Dict[str, Any]) -> None:
            if not finished[0]:
                request.write(self._answer(request, body))
                request.finish()

        def fail(failure: Failure) -> None:
            _log.failure("control request {path} failed", failure, path=path.decode("latin-1"))
            if not finished[0]:
                request.write(self._answer(request, {"error": failure.getErrorMessage()}, 500))
                request.finish()

        result.addCallbacks(reply, fail)
        return server.NOT_DONE_YET

    def _answer(
        self,
        request: server.Request,
        body: Dict[str, Any],
        code: int = 200,
        headers: Optional[Dict[str, str]] = None,
    ) -> bytes:
        if code == 200:
            body = dict(body, status=self.status())
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        for name, value in (headers or {}).items():
            request.setHeader(name.encode("ascii"), value.encode("ascii"))
        return json.dumps(body, sort_keys=True).encode("utf-8") + b"\n"

    # --- faults ------------------------------------------------------------

    def _drop(self, request: server.Request) -> defer.Deferred[Dict[str, Any]]:
        _log.info("control: drop")
        return self.proxy.drop().addCallback(lambda n: {"dropped": n})

    def _reset(self, request: server.Request) -> defer.Deferred[Dict[str, Any]]:
        _log.info("control: reset")
        return self.proxy.reset().addCallback(lambda n: {"reset": n})

    def _blackhole(self, request: server.Request) -> Dict[str, Any]:
        self.proxy.blackhole()
        return {}

    def _heal(self, request: server.Request) -> Dict[str, Any]:
        self.proxy.heal()
        return {}

    def _refuse(self, request: server.Request) -> Any:
        values = request.args.get(b"seconds") if request.args else None
        if not values:
            raise _BadRequest(400, "/refuse needs seconds, e.g. POST /refuse?seconds=10")
        raw = values[-1].decode("latin-1")
        try:
            seconds = float(raw)
        except ValueError:
            seconds = math.nan
        if not (math.isfinite(seconds) and seconds >= 0):
            raise _BadRequest(400, "seconds must be a number of seconds >= 0, not %r" % (raw,))
        ended = self.proxy.refuse(seconds)
        if seconds == 0:
            # The window ends on the reactor's next turn: answer after it.
            return ended.addCallback(lambda _: {"refusing_for": 0})
        return {"refusing_for": seconds}

    def _arm_cut(self, before: bool) -> Dict[str, Any]:
        if self._cut is not None:
            raise _BadRequest(409, "/cut-%s is already armed (POST /disarm cancels it)" % (self._cut_kind,))
        cut: defer.Deferred[Any]
        cut = self._cut = self.proxy.cut_before_commit() if before else self.proxy.cut_after_commit()
        self._cut_kind = "before-commit" if before else "after-commit"

        def done(replied: Optional[bool]) -> None:
            if self._cut is cut:
                self._cut = None
            self.cuts += 1
            if before:
                what = "it was withheld"
            else:
                what = "the reply was withheld" if replied else "it ended before any reply"
            _log.info(
                "control: cut a connection {where} COMMIT ({what})",
                where="before" if before else "after",
                what=what,
            )

        cut.addCallbacks(done, lambda f: f.trap(defer.CancelledError))
        return {"armed": True}

    def _disarm(self, request: server.Request) -> Dict[str, Any]:
        return {"disarmed": self.disarm()}


def control_site(proxy: FaultProxy, interface: str = "127.0.0.1") -> server.Site:
    """
    @param proxy: the proxy to control.
    @param interface: the address the proxy listens on, for the status.
    @return: a web site that serves L{ControlResource} at its root; its
        C{resource} attribute is the L{ControlResource}.
    """
    site = server.Site(ControlResource(proxy, interface))
    site.displayTracebacks = False
    return site
