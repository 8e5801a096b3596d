"""
C{twistd txreconnect-proxy}: L{FaultProxy} as a service, to rehearse
outages against a staging database.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.application import service
from twisted.python import usage

from txreconnect.testing.proxy import PROTOCOLS, FaultProxy

__all__ = ["FaultProxyService", "Options", "makeService"]


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise ValueError("a TCP port is between 0 and 65535")
    return port


class Options(usage.Options):
    """
    Command-line options of C{twistd txreconnect-proxy}.
    """

    synopsis = "--connect HOST:PORT [--listen PORT] [--interface ADDR] [--protocol NAME]"
    optParameters = [
        ["connect", "c", None, "the database server to forward to, as HOST:PORT"],
        ["listen", "l", 0, "the port to listen on (0: any free port)", _port],
        ["interface", "i", "127.0.0.1", "the address to listen on"],
        ["protocol", "p", None, "the wire protocol, %s (default: tell per connection)" % (" or ".join(PROTOCOLS),)],
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
        if self["protocol"] is not None and self["protocol"] not in PROTOCOLS:
            raise usage.UsageError(
                "--protocol must be one of %s, not %r" % (", ".join(PROTOCOLS), self["protocol"])
            )


class FaultProxyService(service.Service):
    """
    Runs a L{FaultProxy} while the service runs.

    @ivar proxy: the proxy.
    """

    def __init__(self, proxy: FaultProxy, port: int = 0, interface: str = "127.0.0.1") -> None:
        """
        @param proxy: the proxy to start and stop.
        @param port: the port to listen on.
        @param interface: the address to listen on.
        """
        self.proxy = proxy
        self._port = port
        self._interface = interface

    def startService(self) -> None:
        service.Service.startService(self)
        self.proxy.start(self._port, self._interface)

    def stopService(self) -> Optional[Any]:
        service.Service.stopService(self)
        return self.proxy.stop()


def makeService(options: Options) -> service.IService:
    """
    Build the service that C{twistd txreconnect-proxy} runs.

    @param options: parsed L{Options}.
    @return: a L{FaultProxyService}.
    """
    host, port = options["target"]
    proxy = FaultProxy(port, target_host=host, protocol=options["protocol"])
    return FaultProxyService(proxy, options["listen"], options["interface"])
