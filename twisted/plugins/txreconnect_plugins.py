"""
twistd plugins of txreconnect: thin pointers at code in C{txreconnect}.
"""

from twisted.application.service import ServiceMaker

txreconnectProxy = ServiceMaker(
    "txreconnect fault proxy",
    "txreconnect._proxy_service",
    "A TCP proxy in front of a database that drops, resets, black-holes or "
    "refuses connections on command (--control: an HTTP API), to rehearse "
    "outages.",
    "txreconnect-proxy",
)

txreconnectExampleWeb = ServiceMaker(
    "txreconnect example web service",
    "txreconnect.examples.webservice",
    "An example twisted.web service that answers from the database through "
    "a ReconnectingConnectionPool and keeps serving through a restart.",
    "txreconnect-example-web",
)
