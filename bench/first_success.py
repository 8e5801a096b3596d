"""
Recovery at the speed of a connect: in wait mode, how long after the
server accepts connections again does the first call succeed?

For each database, a pool with C{WaitForDatabase} under load (callers
writing back to back) meets a series of restarts.  The moment the server
accepts connections again is read off the wire, outside the pool and
outside this process, by L{ServerReady}: a process that opens a TCP
connection every half millisecond and waits for the server's first
answer (PostgreSQL: the start of the first connection it let through,
the one before refused as starting up; MariaDB: its first greeting,
since a connection made while mariadbd starts waits in the kernel's
queue until it accepts).  Against it:

  - I{before}: C{WaitForDatabase(fast_probe_interval=None)} (backoff with
    full jitter after every failure) and a C{pool.dbapi} replaced by a
    pass-through wrapper, so that PyMySQL builds its TLS context on every
    connect, as before issue 14;
  - I{after}: C{WaitForDatabase()} with its defaults.

In restarts of its own after the pools', with no pool connected while
the server is down (a pool writes as the load does before each stop, and
is closed right before it, so that the server stops with as much work in
hand), a L{RawClient} process (the pool's driver and keywords, no pool)
tries to connect, INSERT and COMMIT every millisecond: the best any
client could do on this server and machine, which a fresh server's first
sessions slow down for everyone.  (Not beside the pool's restarts: on two
cores, the pool's reconnecting threads and the raw client would slow
each other's connects, each by whoever came first.)  The I{connect
floor} is the median time of a plain successful connect made as each
pool makes them (the same driver and keywords) on a warm server; the
I{first connect} is the raw client's connect to the fresh server; the
I{listening before accepting} is how long MariaDB kept the connection
that it greeted first in its queue; and the connect attempts per second
against the stopped server are the pool's own C{connect_attempts}
between the stop and the start.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, Dict, List, Sequence

from twisted.internet import defer

from bench._common import (
    Contender,
    CountingDBAPI,
    Report,
    Settings,
    Target,
    clock,
    in_thread,
    make_pool,
    quantile,
    sleep,
    warm,
)
from bench._render import fmt_ms, markdown_table
from bench.recovery import INSERT, TIMEOUT, _create_table, _reactor, _writer, load
from txreconnect import ReconnectingConnectionPool, WaitForDatabase

__all__ = ["RawClient", "ServerReady", "run", "section"]

#: a deadline, so that nothing in the benchmark can wait for ever
_DEADLINE = 60

BEFORE = Contender(
    "before",
    "before: WaitForDatabase(fast_probe_interval=None), a TLS context per connect",
    ReconnectingConnectionPool,
    {"cp_policy": WaitForDatabase(deadline=_DEADLINE, fast_probe_interval=None)},
)
AFTER = Contender(
    "after",
    "after: WaitForDatabase() (defaults)",
    ReconnectingConnectionPool,
    {"cp_policy": WaitForDatabase(deadline=_DEADLINE)},
)

#: how many plain connects measure the floor
_FLOOR_CONNECTS = 30


def _floor(pool: Any, n: int) -> float:
    """
    @return: the median seconds of C{n} successful connects made as
        C{pool} makes them (its driver, its keywords, its C{dbapi}).
    """
    times = []
    for _ in range(n):
        started = clock()
        conn = pool._driver.connect(pool.connargs, dict(pool.connkw), pool.dbapi.connect)
        times.append(clock() - started)
        conn.close()
    return quantile(times, 0.5)


_READY = r"""
import socket, struct, sys, time
port, family, user, database, timeout = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
startup = b""
if family == "postgresql":
    body = struct.pack("!I", 196608) + b"user\0" + user.encode() + b"\0database\0" + database.encode() + b"\0\0"
    startup = struct.pack("!I", len(body) + 4) + body
print("ready", flush=True)
sys.stdin.readline()
deadline = time.perf_counter() + timeout
seen_down = False
while time.perf_counter() < deadline:
    s = socket.socket()
    s.settimeout(5)
    began = time.perf_counter()
    try:
        s.connect(("127.0.0.1", port))
        if startup:
            s.sendall(startup)
        first = s.recv(1)
    except OSError:
        first = b""
    answered = time.perf_counter()
    s.close()
    # PostgreSQL answers "E" (the database system is starting up or
    # shutting down) until it accepts sessions, then "R" (authentication);
    # MariaDB greets ("d", or its protocol version) only once it accepts.
    if not first or first == b"E":
        seen_down = True
    elif seen_down:
        print(repr(began), repr(answered), flush=True)
        # Quiet until the parent has read this: exiting now (the
        # interpreter's teardown) would take CPU from the server and its
        # first clients in the very milliseconds being measured.
        sys.stdin.read()
        sys.exit(0)
    time.sleep(0.0005)
sys.exit(1)
"""


class _Helper:
    """
    A process of the benchmark's (a script given to C{python -c}) that
    starts, says it is ready, waits to be told to go, then prints its
    answer and exits (non-zero if it has none), or waits for its input to
    end before it exits.  Outside this process, so that neither our GIL
    nor our reactor delays it.
    """

    def __init__(self, script: str, args: Sequence[str], label: str, timeout: float) -> None:
        """
        Start the process (it imports its modules, then waits for L{go}).

        @param args: its arguments.
        @param label: the target's, for errors.
        @param timeout: how long it may take after L{go}.
        """
        self._timeout = timeout
        self._label = label
        self._process = subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def ready(self) -> "defer.Deferred[Any]":
        """
        @return: a Deferred that fires once the process waits for L{go}.
        """
        stdout = self._process.stdout
        assert stdout is not None
        return in_thread(stdout.readline)

    def _go(self) -> None:
        """
        Tell the process to go.
        """
        process = self._process
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()

    def _answer(self, failed: str) -> "defer.Deferred[str]":
        """
        Read the process's answer (ending its input, for a process that
        waits for that before it exits), and wait for it to exit.

        @param failed: the error's message if it has no answer, with
            C{%s} for the target's label.
        @return: a Deferred firing with what it printed.
        """
        process = self._process

        def wait() -> str:
            try:
                out, err = process.communicate(timeout=self._timeout + 10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                raise
            if process.returncode != 0:
                raise RuntimeError("%s: %s" % (failed % (self._label,), err[-2000:]))
            return str(out)

        return in_thread(wait)


class ServerReady(_Helper):
    """
    A process that tells when a restarted server accepts connections
    again, from the wire alone (no driver, no login): once told to
    L{go}, it opens a TCP connection every half millisecond until the
    server has refused (nothing listening, or PostgreSQL's "starting up")
    and then answers as a server that accepts sessions: PostgreSQL's
    authentication request, MariaDB's greeting.

    The moment the server accepted is, for PostgreSQL, the start of that
    connection (its postmaster accepts and starts a backend at once; the
    attempt before was refused), and for MariaDB, the arrival of that
    greeting: mariadbd listens before it is ready, and a connection made
    meanwhile waits in the kernel's queue until it accepts it, then it is
    greeted at once.  (Counting from the start of such a connection would
    count the server's own startup, several to tens of milliseconds that
    no client can win back, as the client's.)
    """

    def __init__(self, target: Target, timeout: float) -> None:
        """
        Start the process (it waits for L{go}).

        @param timeout: how long it may try after L{go}.
        """
        server = target.server
        assert server is not None
        self._family = server.family
        args = [str(server.port), server.family, server.user, server.database, str(timeout)]
        super().__init__(_READY, args, target.label, timeout)

    def go(self) -> None:
        """
        Start watching (the server is being stopped).  Its answer waits,
        and the process stays quiet, until L{moments} asks for it: read
        at once, it would wake a thread of this process, and the process's
        exit would take a core, just as the server's first clients connect.
        """
        self._go()

    def moments(self) -> "defer.Deferred[Dict[str, float]]":
        """
        @return: a Deferred firing with the L{clock} times C{accepted}
            (the moment the server accepted, see above) and C{listening}
            (the start of the connection it accepted).
        """

        def moments(out: str) -> Dict[str, float]:
            began, answered = map(float, out.split())
            return {"accepted": began if self._family == "postgresql" else answered, "listening": began}

        return self._answer("%s did not accept connections again in time").addCallback(moments)


_RAW_CLIENT = r"""
import json, sys, time
from txreconnect.drivers import driver_for
name, timeout, connkw, pause, insert, run = sys.argv[1:7]
connkw, pause = eval(connkw), float(pause)
module = __import__(name)
driver = driver_for(module)
print("ready", flush=True)
sys.stdin.readline()
deadline = time.perf_counter() + float(timeout)
seen_down = False
attempts = 0
i = 0
error = None
while time.perf_counter() < deadline:
    conn = None
    try:
        attempts += 1
        began = time.perf_counter()
        conn = driver.connect((), dict(connkw))
        session = time.perf_counter()
        driver.prepare(conn)
        if seen_down:
            i += 1
            cursor = conn.cursor()
            cursor.execute(insert, (run, i))
            inserted = time.perf_counter()
            conn.commit()
            done = time.perf_counter()
            print(json.dumps({"began": began, "session": session, "inserted": inserted, "done": done, "attempts": attempts}))
            sys.exit(0)
    except module.Error as e:
        seen_down, error = True, e
    if conn is not None:
        driver.close(conn)
    time.sleep(pause)
sys.exit("no success in time; the last error: %r" % (error,))
"""


class RawClient(_Helper):
    """
    The best any client could do: a process with the pool's driver and
    keywords but no pool that, once told to L{go} (the server stopped),
    connects every millisecond until the server has refused once, then
    until a connect, the pool's INSERT and a COMMIT all succeed (a
    failure anywhere: again 1 ms later).
    """

    def __init__(self, target: Target, connkw: Dict[str, Any], run: str, timeout: float) -> None:
        """
        Start the process (it imports its modules, then waits for L{go}).

        @param connkw: the pool's C{connect()} keywords.
        @param run: the C{run} column of its row.
        @param timeout: how long it may try after L{go}.
        """
        args = [target.driver, str(timeout), repr(connkw), "0.001", target.sql(INSERT), run]
        super().__init__(_RAW_CLIENT, args, target.label, timeout)

    def go(self) -> "defer.Deferred[Dict[str, float]]":
        """
        Start trying (the server was stopped).

        @return: a Deferred firing with the L{clock} times of the
            successful attempt's start, session, INSERT and COMMIT
            (C{began}, C{session}, C{inserted}, C{done}) and the attempts
            made.
        """
        self._go()
        return self._answer("the raw client on %s never succeeded").addCallback(lambda out: dict(json.loads(out)))


@defer.inlineCallbacks
def _series(settings: Settings, target: Target, contender: Contender, restarts: int) -> Any:
    """
    One pool under load through C{restarts} restarts.

    @return: the raw numbers: per restart, the first success after the
        server accepted connections again (C{firsts}) and the attempts
        per second while it was stopped; the floor; failed calls.
    """
    server = target.server
    assert server is not None
    run = "%s-first-%s" % (target.key, contender.key)
    pool: Any = make_pool(contender, target, settings.recovery_cp_max)
    if contender is BEFORE:
        # A wrapper: PyMySQL's own connect, called as a replaced dbapi is.
        pool.dbapi = CountingDBAPI(pool.dbapi)
    firsts: List[float] = []
    rates: List[float] = []
    queued: List[float] = []
    try:
        yield warm(pool)
        floor = yield in_thread(_floor, pool, 3 if settings.smoke else _FLOOR_CONNECTS)
        until = [clock() + TIMEOUT * restarts]
        records: List[Any] = []
        running = load(pool, _writer(target), run, settings.callers, until, records)
        for _ in range(restarts):
            yield sleep(settings.load_before)
            ready = ServerReady(target, TIMEOUT / 2)
            yield ready.ready()
            ready.go()
            yield in_thread(server.stop)
            down_at = clock()
            # Calls that end from now on are appended after this: the
            # wait below reads only those (reading every record, well over
            # 100,000 by the last restarts, every 10 ms would hold the GIL
            # for milliseconds at a time, and delay the pool's threads).
            since = len(records)
            stopped_attempts = pool.stats()["connect_attempts"]
            yield sleep(settings.outage)
            start_at = clock()
            rates.append((pool.stats()["connect_attempts"] - stopped_attempts) / (start_at - down_at))
            # Not server.start: its check that the server answers (a
            # client process spawned from this one) would compete with the
            # pool just as it reconnects; that check comes after.
            server.launch()
            # Wait for the pool's first success (the load's records are
            # read when it ends: a shared list, appended in the reactor),
            # then for the moment the server accepted (see go).
            deadline = clock() + TIMEOUT
            while clock() < deadline and not any(r[2] and r[1] > down_at for r in records[since:]):
                yield sleep(0.01)
            moments = yield ready.moments()
            back_at = moments["accepted"]
            queued.append(back_at - moments["listening"])
            ok = sorted(r[1] for r in records[since:] if r[2] and r[1] > down_at)
            if ok:
                firsts.append(ok[0] - back_at)
            yield in_thread(server.wait_started)
            yield sleep(settings.load_after)
        until[0] = clock()
        yield running.addTimeout(TIMEOUT, _reactor())
    finally:
        pool.close()
    return {
        "firsts": firsts,
        "rates": rates,
        "queued": queued,
        "floor": floor,
        "calls": len(records),
        "failed": sum(1 for r in records if not r[2]),
        "restarts": restarts,
    }


@defer.inlineCallbacks
def _raw_series(settings: Settings, target: Target, restarts: int) -> Any:
    """
    A L{RawClient} through C{restarts} restarts, with no pool connected
    while the server is down: before each, a pool writes as the pools'
    load does (so the server stops with as much work in hand as in the
    pools' restarts, which its startup then pays for) and is closed
    right before the stop.

    @return: per restart, the raw client's session, INSERT and COMMIT
        (C{session}, C{inserted}, C{done}), in seconds after the server
        accepted connections again (see L{ServerReady}).
    """
    server = target.server
    assert server is not None
    raws: List[Dict[str, float]] = []
    for i in range(restarts):
        pool: Any = make_pool(AFTER, target, settings.recovery_cp_max)
        # The keywords a pool connects with (its defaults added).
        connkw = dict(pool.connkw)
        client = RawClient(target, connkw, "%s-raw-%d" % (target.key, i), TIMEOUT / 2)
        ready = ServerReady(target, TIMEOUT / 2)
        yield client.ready()
        yield ready.ready()
        yield warm(pool)
        until = [clock() + settings.load_before]
        yield load(pool, _writer(target), "%s-raw-load-%d" % (target.key, i), settings.callers, until)
        pool.close()
        ready.go()
        yield in_thread(server.stop)
        raw_done = client.go()
        yield sleep(settings.outage)
        server.launch()
        raw = yield raw_done
        moments = yield ready.moments()
        yield in_thread(server.wait_started)
        raws.append({key: raw[key] - moments["accepted"] for key in ("session", "inserted", "done")})
        yield sleep(settings.load_after)
    return raws


def _row(target: Target, contender: Contender, result: Dict[str, Any], raws: List[Dict[str, float]]) -> List[Any]:
    """
    @return: the table's row for one pool's series.
    """
    firsts = result["firsts"]
    raw = [r["done"] for r in raws]
    first_connect = [r["session"] for r in raws]
    restarts = result["restarts"]

    def ms(values: List[float], q: float) -> str:
        return fmt_ms(quantile(values, q)) if values else "—"

    return [
        target.label,
        contender.label,
        "%d / %d" % (len(firsts), restarts),
        ms(firsts, 0.5) if firsts else "never",
        ms(firsts, 1) if firsts else "never",
        ms(raw, 0.5),
        ms(raw, 1),
        fmt_ms(quantile(firsts, 0.5) - quantile(raw, 0.5)) if firsts and raw else "—",
        ms(first_connect, 0.5),
        ms(result["queued"], 0.5) if any(result["queued"]) else "—",
        fmt_ms(result["floor"]),
        fmt_ms(quantile(firsts, 0.5) - result["floor"]) if firsts else "—",
        fmt_ms(quantile(firsts, 1) - result["floor"]) if firsts else "—",
        "%.0f" % (quantile(result["rates"], 0.5),),
        "%d / %d" % (result["failed"], result["calls"]),
    ]


@defer.inlineCallbacks
def run(report: Report, settings: Settings, targets: Sequence[Target]) -> Any:
    """
    Add the table to C{report} (and the raw numbers to its data).
    """
    restarts = 1 if settings.smoke else 20
    rows = []
    raw: Dict[str, Any] = {}
    for target in targets:
        yield in_thread(_create_table, target)
        results = []
        for contender in (BEFORE, AFTER):
            results.append((contender, (yield _series(settings, target, contender, restarts))))
            print("  %s first success %s: done" % (target.key, contender.key), flush=True)
        # After the pools: the raw client then restarts a server that has
        # seen as much (its table as large) as the pools' last restarts did.
        raws = yield _raw_series(settings, target, restarts)
        raw[target.key] = {"raw_client": raws}
        for contender, result in results:
            raw[target.key][contender.key] = result
            rows.append(_row(target, contender, result, raws))
    report.add(
        "#### First success after a restart, in wait mode\n\n"
        "%d callers write back to back on a pool with cp_max=%d and "
        "`WaitForDatabase`; the server restarts %d times (down %g s each "
        "time). *First success*: from the moment the server accepts "
        "connections again (read off the wire by a process that opens a "
        "TCP connection every 0.5 ms: for PostgreSQL the start of the "
        "first connection it let through, the one before refused as "
        "starting up; for MariaDB the arrival of its first greeting) to "
        "the end of the pool's first successful call, median and worst "
        "over the restarts. *Raw client*: the same for the best any "
        "client could do, in %d restarts of its own after the pools', "
        "with no pool connected while the server is down (a pool loads "
        "the server as before the pools' restarts, and is closed right "
        "before the stop): a process with the pool's driver and keywords "
        "but no pool that tries to connect, INSERT and COMMIT every "
        "millisecond; *pool − raw client*: the difference of the "
        "medians; *first connect*: the raw client's connect to the fresh "
        "server (median). *Listening before accepting*: how long MariaDB "
        "held the connection it greeted first in its listen queue while "
        "it started (median; counted as the server's, not the "
        "client's). *Connect floor*: the "
        "median time of a plain successful connect made as the pool "
        "makes them, on a warm server. *Attempts/s*: the "
        "pool's connect attempts per second while the server was stopped "
        "(median over the restarts).\n\n"
        % (settings.callers, settings.recovery_cp_max, restarts, settings.outage, restarts)
        + markdown_table(
            [
                "database",
                "pool",
                "restarts with a success",
                "first success: median",
                "worst",
                "raw client: median",
                "worst",
                "pool − raw client",
                "first connect",
                "listening before accepting",
                "connect floor",
                "median − floor",
                "worst − floor",
                "attempts/s while stopped",
                "failed calls",
            ],
            rows,
        )
    )
    report.data["first_success"] = raw


@defer.inlineCallbacks
def section(settings: Settings, targets: Sequence[Target]) -> Any:
    """
    This measurement alone (C{python -m bench --only first_success}).

    @return: (a Deferred firing with) the section's L{Report}.
    """
    report = Report("first_success")
    report.add("### Recovery at the speed of a connect")
    servers = [t for t in targets if t.server is not None and t.key in settings.recovery_databases]
    yield run(report, settings, servers)
    return report
