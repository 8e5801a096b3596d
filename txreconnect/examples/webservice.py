"""
An example: a C{twisted.web} service that asks the database something on
every request, through a L{ReconnectingConnectionPool}, and keeps serving
through a database restart.

Run it under twistd (the C{txreconnect-example-web} plugin)::

    TXRECONNECT_DB_PASSWORD=secret twistd -n txreconnect-example-web \\
        --db-host 127.0.0.1 --db-port 5432 --db-user app --db-name app \\
        --listen 8080

    curl -s localhost:8080/          # {"database_time": "...", "pool": "up"}
    curl -s localhost:8080/stats     # the pool's counters
    curl -s localhost:8080/metrics   # the same for Prometheus (txreconnect[metrics])

Restart the database (C{systemctl restart postgresql}) and ask again: the
first request after the restart finds its connection dead, and the pool
opens a new one and runs the query again, so the answer is still 200.
While the database is down, requests get 503 with C{Retry-After} at once
(the pool's default L{FailFast} policy), never a hung request, and the
service is back as soon as the database is.

With C{prometheus_client} installed (C{pip install txreconnect[metrics]}),
C{GET /metrics} serves the pool's metrics (L{txreconnect.metrics}) and
the process's, in Prometheus's text format, with
C{prometheus_client.twisted.MetricsResource}.

How errors map to HTTP (L{DatabaseClock}):

  - L{DisconnectionError}: the database is unreachable and nothing was
    committed: 503, C{Retry-After: 1}; the client may retry.
  - L{TransactionOutcomeUnknown} (a subclass): the connection was lost
    while committing; for a write, the client must check before retrying:
    503 too, saying so.
  - anything else: 500, logged with its traceback.

The same in a C{.tac} file, for C{twistd -ny web.tac}::

    from twisted.application import service
    from txreconnect.examples.webservice import WebService

    application = service.Application("clock")
    WebService("tcp:8080:interface=127.0.0.1", "psycopg2",
               host="127.0.0.1", port=5432, user="app", dbname="app",
               cp_max=4).setServiceParent(application)
"""

from __future__ import annotations

import importlib
import json
import os
from typing import Any, Dict, List, Optional

from twisted.application import internet, service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.web import resource, server

from txreconnect.drivers import driver_class, known_drivers
from txreconnect.errors import DisconnectionError, TransactionOutcomeUnknown
from txreconnect.pool import ReconnectingConnectionPool

__all__ = ["DRIVERS", "DatabaseClock", "Options", "WebService", "makeService"]

_log = Logger()

#: the drivers C{--driver} takes: those txreconnect knows for a database
#: server (one with a default port), by module name
DRIVERS = [cls.name for cls in known_drivers() if cls.default_port is not None]

#: C{--driver}'s default: PostgreSQL's default driver
_DEFAULT_DRIVER = next(cls.name for cls in known_drivers() if cls.family == "postgresql" and cls.url_default)

#: the environment variable the password is read from when not given
PASSWORD_ENV = "TXRECONNECT_DB_PASSWORD"


class DatabaseClock(resource.Resource):
    """
    C{GET /}: the database's clock, as JSON: C{{"database_time": ISO 8601,
    "pool": "up" | "down" | "probing"}}, one query per request.
    C{GET /stats}: L{ReconnectingConnectionPool.stats}.
    C{GET /metrics}: C{metrics}, if given.
    Other paths: 404.  Errors: see the module docstring.
    """

    #: the query each request runs (standard SQL: PostgreSQL and MySQL)
    query = "SELECT CURRENT_TIMESTAMP"

    def __init__(self, pool: ReconnectingConnectionPool, metrics: Optional[resource.IResource] = None) -> None:
        """
        @param pool: the pool to query.
        @param metrics: what serves C{/metrics} (C{None}: 404 there).
        """
        super().__init__()
        self.pool = pool
        self.metrics = metrics

    def getChild(self, path: bytes, request: server.Request) -> resource.IResource:
        # Every path but /metrics is this resource's (render_GET reads
        # request.path).
        if path == b"metrics" and self.metrics is not None:
            return self.metrics
        request.postpath = []
        return self

    def render_GET(self, request: server.Request) -> Any:
        path = request.path.rstrip(b"/")
        if path == b"/stats":
            return _json(request, 200, self.pool.stats())
        if path != b"":
            return _json(request, 404, {"error": "no such page; try / or /stats"})
        gone: List[Failure] = []

        def went_away(reason: Failure) -> None:
            gone.append(reason)  # the client closed the connection first

        request.notifyFinish().addErrback(went_away)
        d = self.pool.runQuery(self.query)
        d.addCallback(self._found, request)
        d.addErrback(self._failed, request)

        def send(body: bytes) -> None:
            if not gone:
                request.write(body)
                request.finish()

        d.addCallback(send)
        return server.NOT_DONE_YET

    def _found(self, rows: Any, request: server.Request) -> bytes:
        value = rows[0][0]
        when = value.isoformat() if hasattr(value, "isoformat") else str(value)
        return _json(request, 200, {"database_time": when, "pool": self.pool.stats()["state"]})

    def _failed(self, failure: Failure, request: server.Request) -> bytes:
        if failure.check(TransactionOutcomeUnknown):
            # Not for this read-only query, but a writing handler would
            # land here: the client must check before it retries.
            _log.warn("{path}: outcome unknown: {error}", path=request.path.decode("latin-1"), error=failure.value)
            return _json(request, 503, {"error": "database connection lost while committing; "
                                                 "the change may or may not be stored"})
        if failure.check(DisconnectionError):
            # One line, not a traceback: the pool already logged the outage.
            _log.warn("{path}: database unavailable: {error}", path=request.path.decode("latin-1"), error=failure.value)
            request.setHeader(b"Retry-After", b"1")
            return _json(request, 503, {"error": "database unavailable, retry shortly"})
        _log.failure("{path} failed", failure, path=request.path.decode("latin-1"))
        return _json(request, 500, {"error": "internal error"})


def _json(request: server.Request, code: int, body: Dict[str, Any]) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    return json.dumps(body, sort_keys=True).encode("utf-8") + b"\n"


class WebService(service.MultiService):
    """
    The web server and the pool it uses: the pool is made at once (it
    starts with the reactor, as adbapi pools do), the web server listens
    when the service starts, and stopping the service stops listening,
    then closes the pool.  It is not meant to be started again.

    With C{prometheus_client} installed, the pool's metrics are served at
    C{/metrics} (L{txreconnect.metrics.track}), until the service stops.

    @ivar pool: the L{ReconnectingConnectionPool}.
    @ivar site: the web site (a L{DatabaseClock} at its root).
    @ivar metrics: the L{PoolCollector <txreconnect.metrics.PoolCollector>}
        that exports the pool, or C{None} without C{prometheus_client}.
    """

    def __init__(self, listen: str, driver: str, *connargs: Any, registry: Any = None, **connkw: Any) -> None:
        """
        @param listen: where to listen: a server endpoint description.
        @param driver: the DB-API module's name.
        @param connargs: the positional arguments of the pool.
        @param registry: the C{prometheus_client} registry C{/metrics}
            serves (default: C{prometheus_client.REGISTRY}).
        @param connkw: the keyword arguments of the pool (C{connect()}'s
            and the C{cp_*} ones).
        @raise ConfigurationError: a bad pool option, or another pool of
            the same C{cp_name} is exported to the registry.
        """
        super().__init__()
        from twisted.internet import reactor

        self.pool = ReconnectingConnectionPool(driver, *connargs, **connkw)
        self.metrics: Any = None
        page: Optional[resource.IResource] = None
        try:
            from prometheus_client.twisted import MetricsResource

            from txreconnect import metrics
        except ImportError:
            pass
        else:
            try:
                self.metrics = metrics.track(self.pool, registry=registry)
            except BaseException:
                self.pool.close()
                raise
            page = MetricsResource() if registry is None else MetricsResource(registry)
        self.site = server.Site(DatabaseClock(self.pool, page))
        self.site.displayTracebacks = False
        web = internet.StreamServerEndpointService(serverFromString(reactor, listen), self.site)
        web._raiseSynchronously = True
        web.setServiceParent(self)

    def stopService(self) -> defer.Deferred[None]:
        d = defer.maybeDeferred(super().stopService)
        d.addBoth(lambda _: self._close())
        return d

    def _close(self) -> None:
        if self.metrics is not None:
            self.metrics.remove(self.pool)
            self.metrics = None
        self.pool.close()


def _listen_description(value: str) -> str:
    if value.isdigit():
        return "tcp:%s:interface=127.0.0.1" % (value,)
    return value


class Options(usage.Options):
    """
    Options of C{twistd txreconnect-example-web}:

      - C{--listen PORT|ENDPOINT} (default 8080): where to serve HTTP; a
        bare port listens on 127.0.0.1 only.
      - C{--driver} (default: PostgreSQL's default driver, psycopg2): any
        driver in L{DRIVERS}.
      - C{--db-host}, C{--db-port} (default: the driver's usual port),
        C{--db-user}, C{--db-name}: where the database is.  The password
        comes from C{$TXRECONNECT_DB_PASSWORD} (libpq also reads
        C{$PGPASSWORD} and C{~/.pgpass}), never from the command line,
        where C{ps} would show it.
      - C{--pool-size} (default 4): the pool's C{cp_max}.
    """

    longdesc = (
        "The database password is read from $%s (libpq also reads $PGPASSWORD "
        "and ~/.pgpass), never from the command line." % (PASSWORD_ENV,)
    )
    optParameters = [
        ["listen", "l", "8080", "where to serve HTTP: a port (on 127.0.0.1) or a server endpoint"],
        ["driver", "d", _DEFAULT_DRIVER, "the DB-API driver: %s" % (", ".join(DRIVERS),)],
        ["db-host", None, "127.0.0.1", "the database server's host"],
        ["db-port", None, None, "the database server's port (default: the driver's usual one)"],
        ["db-user", None, None, "the database user (default: the driver's)"],
        ["db-name", None, None, "the database (default: the driver's)"],
        ["pool-size", None, "4", "the most connections the pool opens"],
    ]

    def postOptions(self) -> None:
        """
        Check the options and build C{self["pool"]}: the arguments of
        L{WebService} after C{listen}, and C{self["listen"]}, an endpoint
        description.

        @raise usage.UsageError: one is malformed; the message names it.
        """
        driver = self["driver"]
        if driver not in DRIVERS:
            raise usage.UsageError("--driver must be one of %s, not %r" % (", ".join(DRIVERS), driver))
        try:
            importlib.import_module(driver)
        except ImportError as e:
            raise usage.UsageError("--driver %s is not installed (%s)" % (driver, e))
        known = driver_class(driver)
        port = self["db-port"]
        if port is None:
            port = known.default_port
        elif not (port.isdigit() and 0 < int(port) <= 65535):
            raise usage.UsageError("--db-port must be a TCP port (1 to 65535), not %r" % (port,))
        size = self["pool-size"]
        if not (size.isdigit() and int(size) > 0):
            raise usage.UsageError("--pool-size must be a positive integer, not %r" % (size,))
        listen = _listen_description(self["listen"])
        from twisted.internet import reactor

        try:
            serverFromString(reactor, listen)
        except (ValueError, TypeError, KeyError) as e:
            raise usage.UsageError(
                "--listen must be a port or a server endpoint such as "
                "tcp:8080:interface=127.0.0.1, not %r (%s)" % (self["listen"], e)
            )
        self["listen"] = listen
        connkw = known.connect_kwargs(
            host=self["db-host"],
            port=int(port),
            user=self["db-user"] or None,
            password=os.environ.get(PASSWORD_ENV) or None,
            database=self["db-name"] or None,
        )
        connkw.update(cp_min=1, cp_max=int(size), cp_name="txreconnect-example-web")
        self["pool"] = (driver, connkw)


def makeService(options: Options) -> service.IService:
    """
    Build the service that C{twistd txreconnect-example-web} runs.

    @param options: parsed L{Options}.
    @return: a L{WebService}.
    """
    driver, connkw = options["pool"]
    return WebService(options["listen"], driver, **connkw)
