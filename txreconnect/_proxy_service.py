"""
C{twistd txreconnect-proxy}: L{FaultProxy} as a service, to rehearse
outages against a staging database, with an optional HTTP control
endpoint to inject the faults from outside::

    twistd -n txreconnect-proxy --connect db.staging:5432 --listen 6432 \\
        --control 7000

Point the application at port 6432 instead of the database, then::

    curl -s localhost:7000/status                      # JSON state
    curl -s -X POST localhost:7000/drop                # FIN every connection
    curl -s -X POST localhost:7000/reset               # RST every connection
    curl -s -X POST localhost:7000/blackhole           # silence, sockets open
    curl -s -X POST localhost:7000/heal
    curl -s -X POST 'localhost:7000/refuse?seconds=30' # turn new clients away
    curl -s -X POST 'localhost:7000/refuse?seconds=0'  # ... and take them again
    curl -s -X POST localhost:7000/cut-after-commit    # lose the next COMMIT's reply
    curl -s -X POST localhost:7000/cut-before-commit   # withhold the next COMMIT
    curl -s -X POST localhost:7000/disarm

See L{txreconnect._proxy_control} for the answers.  C{--control PORT}
listens on 127.0.0.1 only; C{--control} also takes a Twisted server
endpoint description (C{tcp:7000:interface=10.0.0.5}, C{unix:/run/proxy.sock})
for anything else.  The API has no authentication: keep it on loopback or
a UNIX socket.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.application import internet, service
from twisted.internet import defer
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python import usage

from txreconnect._proxy_control import ControlResource, control_site
from txreconnect.testing.proxy import PROTOCOLS, FaultProxy

__all__ = ["FaultProxyService", "Options", "makeService"]

_log = Logger()


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise ValueError("a TCP port is between 0 and 65535")
    return port


def control_endpoint(description: str, reactor: Any = None) -> IStreamServerEndpoint:
    """
    The endpoint of C{--control}.

    @param description: a port number (listened on at 127.0.0.1 only) or
        a server endpoint description for
        C{twisted.internet.endpoints.serverFromString}.
    @param reactor: the reactor (default: the global one).
    @return: the endpoint.
    @raise ValueError: the description is malformed; the message says how.
    """
    from twisted.internet import endpoints

    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    if description.isdigit():
        port = _port(description)
        if port == 0:
            raise ValueError("the control port must be fixed, not 0, to be found")
        description = "tcp:%d:interface=127.0.0.1" % (port,)
    try:
        return endpoints.serverFromString(reactor, description)
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(str(e) or type(e).__name__)


class Options(usage.Options):
    """
    Command-line options of C{twistd txreconnect-proxy}:

      - C{--connect HOST:PORT} (required): the database server.
      - C{--listen PORT} (default 0, any free port): where clients connect.
      - C{--interface ADDR} (default 127.0.0.1): the address to listen on.
      - C{--protocol postgresql|mysql} (default: tell per connection), to
        find COMMITs for C{cut-after-commit} and C{cut-before-commit}.
      - C{--control PORT|ENDPOINT} (default: none): serve the HTTP control
        API (L{txreconnect._proxy_control}) on 127.0.0.1:PORT, or on a
        Twisted server endpoint such as C{unix:/run/txreconnect.sock}.

    After parsing, C{self["target"]} is C{(host, port)} and
    C{self["control_endpoint"]} the control endpoint or C{None}.
    """

    synopsis = (
        "--connect HOST:PORT [--listen PORT] [--interface ADDR] [--protocol NAME]"
        " [--control PORT|ENDPOINT]"
    )
    optParameters = [
        ["connect", "c", None, "the database server to forward to, as HOST:PORT"],
        ["listen", "l", "0", "the port to listen on (0: any free port)"],
        ["interface", "i", "127.0.0.1", "the address to listen on"],
        ["protocol", "p", None, "the wire protocol, %s (default: tell per connection)" % (" or ".join(PROTOCOLS),)],
        [
            "control",
            None,
            None,
            "serve the HTTP control API on 127.0.0.1:PORT, or on a server endpoint "
            "such as tcp:7000:interface=127.0.0.1 or unix:/run/proxy.sock (default: no control)",
        ],
    ]

    def postOptions(self) -> None:
        """
        Check the options.

        @raise usage.UsageError: one is missing or malformed; the message
            names it.
        """
        connect = self["connect"]
        if not connect:
            raise usage.UsageError("--connect HOST:PORT is required")
        host, sep, port = connect.rpartition(":")
        try:
            if not (sep and host):
                raise ValueError("no host")
            self["target"] = (host.strip("[]"), _port(port))
        except ValueError:
            raise usage.UsageError("--connect must be HOST:PORT, not %r" % (connect,))
        listen = self["listen"]
        try:
            self["listen"] = _port(str(listen))
        except ValueError:
            raise usage.UsageError("--listen must be a TCP port (0 to 65535), not %r" % (listen,))
        if self["protocol"] is not None and self["protocol"] not in PROTOCOLS:
            raise usage.UsageError(
                "--protocol must be one of %s, not %r" % (", ".join(PROTOCOLS), self["protocol"])
            )
        self["control_endpoint"] = None
        control = self["control"]
        if control is not None:
            if control.isdigit() and self["listen"] and int(control) == self["listen"]:
                raise usage.UsageError("--control and --listen must be different ports, not both %s" % (control,))
            try:
                self["control_endpoint"] = control_endpoint(control)
            except ValueError as e:
                raise usage.UsageError(
                    "--control must be a port or a server endpoint such as "
                    "tcp:7000:interface=127.0.0.1, not %r (%s)" % (control, e)
                )


class FaultProxyService(service.MultiService):
    """
    Runs a L{FaultProxy} while the service runs and, if asked, its HTTP
    control API (a child service).

    @ivar proxy: the proxy.
    @ivar control: the L{ControlResource}, or C{None} without a control
        endpoint.
    """

    def __init__(
        self,
        proxy: FaultProxy,
        port: int = 0,
        interface: str = "127.0.0.1",
        control: Optional[IStreamServerEndpoint] = None,
    ) -> None:
        """
        @param proxy: the proxy to start and stop.
        @param port: the port to listen on.
        @param interface: the address to listen on.
        @param control: where to serve the control API, or C{None}.
        """
        super().__init__()
        self.proxy = proxy
        self._port = port
        self._interface = interface
        self.control: Optional[ControlResource] = None
        if control is not None:
            site = control_site(proxy, interface)
            self.control = site.resource
            listener = internet.StreamServerEndpointService(control, site)
            # As strports.service does: a control port that cannot be
            # listened on stops twistd at once, with the reason.
            listener._raiseSynchronously = True
            listener.setServiceParent(self)

    def startService(self) -> None:
        # The proxy first, so that the control API never shows it unstarted.
        self.proxy.start(self._port, self._interface)
        try:
            super().startService()
        except BaseException:
            self.proxy.stop()
            raise

    def stopService(self) -> defer.Deferred[None]:
        stopped = defer.maybeDeferred(super().stopService)
        if self.control is not None:
            self.control.disarm()

        def stop_proxy(_: object) -> defer.Deferred[None]:
            return self.proxy.stop()

        return stopped.addBoth(stop_proxy)


def makeService(options: Options) -> service.IService:
    """
    Build the service that C{twistd txreconnect-proxy} runs.

    @param options: parsed L{Options}.
    @return: a L{FaultProxyService}.
    """
    host, port = options["target"]
    proxy = FaultProxy(port, target_host=host, protocol=options["protocol"])
    return FaultProxyService(proxy, options["listen"], options["interface"], options["control_endpoint"])
