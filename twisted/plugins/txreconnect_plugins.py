"""
twistd plugins of txreconnect: thin pointers at code in C{txreconnect}.
"""

from twisted.application.service import ServiceMaker

txreconnectProxy = ServiceMaker(
    "txreconnect fault proxy",
    "txreconnect._proxy_service",
    "A TCP proxy in front of a database that drops, resets, black-holes or "
    "refuses connections on command, to rehearse outages.",
    "txreconnect-proxy",
)
