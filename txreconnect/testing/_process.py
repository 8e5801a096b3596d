"""
What every throwaway server shares: a temporary directory, a free loopback
port, an unprivileged user when running as root, and a server process that
the caller owns and can stop, kill and restart.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import weakref
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Type, Union

from twisted.logger import Logger

from txreconnect.testing import _target
from txreconnect.testing._lifecycle import Owned
from txreconnect.testing._wait import WaitTimeout, wait_until

__all__ = ["ServerNotAvailable", "ThrowawayServer", "free_port"]

_log = Logger()

SettingValue = Union[str, int, float, bool]


class ServerNotAvailable(Exception):
    """
    The server software needed for a throwaway server is not installed.

    The message says what to install.
    """


#: where Linux keeps its range of ephemeral ports, from which it takes the
#: local port of every outgoing connection
_EPHEMERAL_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"
#: the lowest port L{free_port} picks: above the well-known ports and most
#: services' registered ones
_LOWEST_PORT = 10000
#: how many ports outside the ephemeral range are enough to pick from
_ENOUGH_PORTS = 1000
_pick = random.SystemRandom()


def _outside_ephemeral_range() -> List[range]:
    """
    @return: the ports from L{_LOWEST_PORT} up that the kernel never gives
        an outgoing connection, or none if its ephemeral range is unknown
        (not Linux).
    """
    try:
        with open(_EPHEMERAL_RANGE) as f:
            low, high = (int(field) for field in f.read().split())
    except (OSError, ValueError):
        return []
    return [r for r in (range(_LOWEST_PORT, low), range(max(high + 1, _LOWEST_PORT), 65536)) if r]


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """
    Pick a port for a server to listen on.

    The port is outside the kernel's ephemeral range where there is one
    (Linux): a port that the kernel picked for us (C{bind} to port 0) is an
    ephemeral one, and any outgoing connection made before the server
    binds it, by the server's own peers even, may be given it as its local
    port, so that the server cannot start.

    @return: a TCP port on 127.0.0.1 that nothing is bound to right now.
    """
    ranges = _outside_ephemeral_range()
    sizes = [len(r) for r in ranges]
    if sum(sizes) >= _ENOUGH_PORTS:
        for _ in range(100):
            port = _pick.choice(_pick.choices(ranges, weights=sizes)[0])
            if _bindable(port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _die_with_parent() -> None:
    # Linux: the server gets SIGKILL if the test process dies without
    # cleaning up, so a crashed test run never leaves a server behind.
    # Runs in the child after setuid, which would otherwise clear it.  The
    # signal really comes when the *thread* that started the child ends,
    # so it is only asked for when the main thread starts the server.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class _RunAs:
    """
    The unprivileged account a server runs as when we are root (PostgreSQL
    and MariaDB refuse to run as root), or nobody in particular otherwise.
    """

    def __init__(self, candidates: Sequence[str]) -> None:
        self.name: Optional[str] = None
        self.uid: Optional[int] = None
        self.gid: Optional[int] = None
        if os.geteuid() != 0 or not candidates:
            return
        for name in (*candidates, "nobody"):
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                continue
            self.name, self.uid, self.gid = name, entry.pw_uid, entry.pw_gid
            return
        raise ServerNotAvailable(
            "running as root, and none of the users %s exists to run the "
            "server as" % (", ".join((*candidates, "nobody")),)
        )

    @classmethod
    def ourselves(cls) -> "_RunAs":
        """
        @return: an instance that runs children as ourselves.
        """
        return cls(())

    def chown(self, path: str) -> None:
        """
        Give C{path} and everything below it to this account.
        """
        if self.uid is None or self.gid is None:
            return
        for root, dirs, files in os.walk(path):
            os.chown(root, self.uid, self.gid)
            for name in files:
                os.chown(os.path.join(root, name), self.uid, self.gid)

    @property
    def extra_groups(self) -> Optional[List[int]]:
        """
        Supplementary groups for the child: none at all when we switch
        users, so it does not keep root's.
        """
        return None if self.uid is None else []


class ThrowawayServer(Owned):
    """
    Base class of L{PostgresServer} and L{MariaDBServer}: a database server
    in a temporary directory, on a free loopback port, owned by this
    process.

    Subclasses define how to initialise the data directory, the command
    line, and how to run SQL as the administrator.

    C{with server:} starts it and destroys it when the block ends, even
    on error (see L{Owned}).

    @ivar port: the TCP port on 127.0.0.1; it stays the same across
        restarts.
    @ivar database: the name of the database made for the tests.
    @ivar user: the name of the (non-administrator) user made for the tests.
    @ivar password: that user's password.
    @ivar settings: server settings given at start; change them before
        L{restart} to restart with other settings.
    """

    #: the product name, for messages
    product = ""
    #: the family of database it is, as a driver names it (a
    #: L{Driver <txreconnect.drivers.Driver>}'s C{family}, such as
    #: C{"postgresql"}): which drivers L{connect_kwargs} accepts
    family: ClassVar[str] = ""
    #: accounts to run the server as when we are root, in order of preference
    run_as_candidates: Sequence[str] = ()
    #: how long start() waits for the server to accept connections
    start_timeout = 60.0
    #: how long stop() waits for a clean shutdown before killing
    stop_timeout = 30.0
    #: the signal that shuts the server down cleanly, closing its sessions
    stop_signal = signal.SIGTERM

    def __init__(
        self,
        settings: Optional[Mapping[str, SettingValue]] = None,
        database: str = "txreconnect",
        user: str = "txreconnect",
        password: str = "s3cret-pw!",
    ) -> None:
        """
        @param settings: server settings applied at every start
            (PostgreSQL: C{-c name=value}; MariaDB: C{--name=value}).
        @param database: name of the database to create.
        @param user: name of the user to create; it owns the database.
        @param password: the user's password.
        """
        self.settings: Dict[str, SettingValue] = dict(settings or {})
        self.database = database
        self.user = user
        self.password = password
        self.port = 0
        self.version = ""
        self._process: Optional[subprocess.Popen[bytes]] = None
        self._directory: Optional[str] = None
        self._run_as = _RunAs(self.run_as_candidates)
        # What the finalizer cleans up, even if this object is simply
        # dropped: the process (updated on every start) and the directory.
        self._owned: List[Optional["subprocess.Popen[bytes]"]] = [None]
        self._finalizer: Optional[weakref.finalize] = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return "<%s %s on 127.0.0.1:%d (%s)>" % (
            type(self).__name__,
            self.version or self.product,
            self.port,
            state,
        )

    # --- to be defined by subclasses ---------------------------------------

    def _initialise(self, datadir: str) -> None:
        raise NotImplementedError

    def _command(self, datadir: str) -> List[str]:
        raise NotImplementedError

    def _bootstrap(self) -> None:
        """
        Create the database and the user, once, after the first start.
        """
        raise NotImplementedError

    def admin_sql(self, sql: str) -> str:
        """
        Run C{sql} as the administrator over the server's Unix socket (so it
        never counts as a client connection of the tests), and return what
        it printed, one row per line, columns separated by tabs.

        @raise subprocess.CalledProcessError: the SQL failed.
        """
        raise NotImplementedError

    def terminate_sessions(self) -> int:
        """
        End every client session but the controller's, as an administrator
        would (PostgreSQL C{pg_terminate_backend}; MariaDB C{KILL}).

        @return: how many sessions were terminated.
        """
        raise NotImplementedError

    def client_connections(self) -> int:
        """
        @return: how many client connections the server has now, not
            counting the controller's own.
        """
        raise NotImplementedError

    def connect_kwargs(self, driver: str, port: Optional[int] = None) -> Dict[str, object]:
        """
        Keyword arguments for a driver's C{connect()} to this server, as
        L{user}, into L{database}, spelled as that driver wants them (its
        L{Driver <txreconnect.drivers.Driver>}'s C{connect_kwargs}).

        @param driver: the DB-API module's name, one of the drivers of
            L{family} (see L{txreconnect.drivers.known_drivers}).
        @param port: connect to this port on 127.0.0.1 instead of the
            server's (e.g. a L{FaultProxy} in front of it).
        @return: keyword arguments for C{driver.connect()}.
        @raise ValueError: txreconnect knows no driver C{driver} of
            L{family}; the message names those it knows.
        """
        return _target.connect_kwargs(self, driver, [port or self.port])

    def url(self, driver: Optional[str] = None, port: Optional[int] = None) -> str:
        """
        A database URL of this server, for
        L{ReconnectingConnectionPool.from_url
        <txreconnect.ReconnectingConnectionPool.from_url>}: as L{user},
        into L{database}.

        @param driver: the DB-API module's name, one of the drivers of
            L{family}: the scheme is C{family+driver} (in lower case, such
            as C{postgresql+psycopg}); by default the scheme is the family
            (C{postgresql://}, C{mysql://}), which means its default
            driver.
        @param port: this port on 127.0.0.1 instead of the server's (a
            proxy's).
        @return: C{family[+driver]://user:password@127.0.0.1:port/database},
            the user, password and database percent-encoded.
        @raise ValueError: txreconnect knows no driver C{driver} of
            L{family}.
        """
        return _target.url(self, driver, [port or self.port])

    # --- lifecycle ---------------------------------------------------------

    @property
    def directory(self) -> str:
        """
        The temporary directory holding the data directory and the logs.
        """
        if self._directory is None:
            raise RuntimeError("%r has no directory: it was never started" % (self,))
        return self._directory

    @property
    def datadir(self) -> str:
        return os.path.join(self.directory, "data")

    @property
    def logfile(self) -> str:
        return os.path.join(self.directory, "server.log")

    @property
    def running(self) -> bool:
        """
        Whether the server process is alive.
        """
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """
        Start the server (initialising its data directory the first time)
        and return once it accepts connections.

        @raise ServerNotAvailable: the server software is missing.
        @raise RuntimeError: the server did not come up; the message has
            the end of its log.
        """
        if self.running:
            return
        first = self._directory is None
        if first:
            self._directory = tempfile.mkdtemp(prefix="txreconnect-%s-" % (self.product.lower(),))
            self._finalizer = weakref.finalize(self, _destroy, self._directory, self._owned)
            self.port = free_port()
            os.mkdir(self.datadir, 0o700)
            self._run_as.chown(self.directory)
            self._initialise(self.datadir)
        self._spawn()
        self.wait_started()
        if first:
            self._bootstrap()
        _log.info("{server!r} started", server=self)

    def launch(self) -> None:
        """
        Start the process of a server that has run before (after L{stop}
        or L{kill}) and return at once, without waiting for it to accept
        connections; L{wait_started} waits.  For measuring how clients
        meet a server as it comes up: L{start}'s own check that it
        answers (a client process that asks C{SELECT 1}) would compete
        with them for the processor just then.

        @raise RuntimeError: it never ran (L{start} sets it up), or it
            runs.
        """
        if self._directory is None or self.running:
            raise RuntimeError("%r: launch() restarts a stopped server; use start() first" % (self,))
        self._spawn()

    def wait_started(self) -> None:
        """
        Wait until the server accepts connections and answers C{SELECT 1}.

        @raise RuntimeError: it exited, or did not come up within
            C{start_timeout}; the message has the end of its log.
        """
        self._wait_until(self._ready, self.start_timeout, "accept connections")

    def _spawn(self) -> None:
        """
        Start the server's process, its output going to its log.
        """
        log = open(self.logfile, "ab")
        try:
            self._process = subprocess.Popen(
                self._command(self.datadir),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if _in_main_thread() else None,
                user=self._run_as.uid,
                group=self._run_as.gid,
                extra_groups=self._run_as.extra_groups,
            )
        finally:
            log.close()
        self._owned[0] = self._process

    def pids(self) -> List[int]:
        """
        @return: the server's processes: its main process and every
            process descended from it (PostgreSQL's backends), while it
            runs (Linux C{/proc}; elsewhere only the main process).
        """
        process = self._process
        if process is None or process.poll() is not None:
            return []
        found = [process.pid]
        for pid in found:  # grows as it goes: breadth first
            found.extend(children(pid))
        return found

    def stop(self) -> None:
        """
        Shut the server down cleanly, ending its sessions as an
        administrator's shutdown would, and wait until it has exited and its
        port is free.
        """
        self._signal(self.stop_signal)

    def kill(self) -> None:
        """
        Kill the server and all its processes with SIGKILL, as a crash
        would, and wait until they are gone.
        """
        self._signal(signal.SIGKILL)

    def restart(self) -> None:
        """
        L{stop} then L{start}, on the same port and data directory.
        """
        self.stop()
        self.start()

    def destroy(self) -> None:
        """
        Kill the server if it runs and remove its temporary directory.
        Safe to call more than once, and from C{addCleanup}.
        """
        if self._finalizer is not None:
            self._finalizer()
        self._finalizer = None
        self._process = None
        self._owned[0] = None
        self._directory = None

    # --- helpers -------------------------------------------------------------

    def _signal(self, signum: int) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        try:
            if signum == signal.SIGKILL:
                # The whole session: PostgreSQL's backends must die too, or
                # they keep the old shared memory and block the next start.
                os.killpg(process.pid, signum)
            else:
                process.send_signal(signum)
        except ProcessLookupError:
            pass
        try:
            process.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            _log.warn("{server!r} ignored signal {signum}; killing it", server=self, signum=signum)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        _wait_for_group_exit(process.pid, self.stop_timeout)
        self._wait_until(lambda: not _port_accepts(self.port), self.stop_timeout, "free its port")

    def _ready(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(
                "%s exited with status %s while starting; its log ends with:\n%s"
                % (self.product, self._process.returncode, self.log_tail())
            )
        return _port_accepts(self.port) and self._answers()

    def _answers(self) -> bool:
        try:
            self.admin_sql("SELECT 1")
        except subprocess.CalledProcessError:
            return False
        return True

    def _wait_until(
        self,
        condition: Callable[[], bool],
        timeout: float,
        what: str,
        retry_on: Tuple[Type[BaseException], ...] = (),
    ) -> None:
        """
        Poll C{condition} until it holds (see L{wait_until}).

        @param what: what the server is awaited to do: C{"accept
            connections"}.
        @raise WaitTimeout: it did not hold within C{timeout} seconds; the
            message has the end of the server's log.
        """
        wait_until(
            condition,
            timeout,
            "%r to %s" % (self, what),
            interval=0.05,
            detail=lambda: "its log ends with:\n" + self.log_tail(),
            retry_on=retry_on,
        )

    def log_tail(self, lines: int = 20) -> str:
        """
        @return: the last C{lines} lines of the server's log.
        """
        try:
            with open(self.logfile, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode("utf-8", "replace")
        except OSError:
            return "(no log)"

    def _run(self, argv: Sequence[str], as_server_user: bool = False, input: Optional[str] = None) -> str:
        """
        Run a setup or client tool and return what it printed.  It runs in
        a session of its own, killed whole if we are interrupted, so that
        no helper it started (mariadb-install-db starts a server) keeps
        writing into a directory being removed.

        @raise subprocess.CalledProcessError: it failed.
        """
        run_as = self._run_as if as_server_user else _RunAs.ourselves()
        with subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            user=run_as.uid,
            group=run_as.gid,
            extra_groups=run_as.extra_groups,
        ) as process:
            try:
                stdout, stderr = process.communicate(input, timeout=120)
            except BaseException:
                _kill_group(process)
                raise
        result = subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)
        if result.returncode != 0:
            raise subprocess.CalledProcessError(
                result.returncode, argv, result.stdout, result.stderr
            )
        return result.stdout


def children(pid: int) -> List[int]:
    """
    @return: the pids of C{pid}'s child processes (Linux C{/proc}; empty
        elsewhere).
    """
    children = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % (entry,)) as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            children.append(int(entry))
    return children


def _group_gone(pgid: int) -> bool:
    """
    @return: whether no process of the process group C{pgid} is left (or
        none that we may signal).
    """
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return True
    return False


def _wait_for_group_exit(pgid: int, timeout: float) -> None:
    """
    Wait until every process of the process group C{pgid} has exited;
    kill those left after C{timeout} seconds.
    """
    try:
        wait_until(lambda: _group_gone(pgid), timeout, "process group %d to exit" % (pgid,))
    except WaitTimeout as e:
        _log.warn("{error}; killing it", error=e)
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _kill_group(process: "subprocess.Popen[Any]") -> None:
    """
    Kill C{process} and every process of its session, and reap it.
    """
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()
    _wait_for_group_exit(process.pid, 10)


def _destroy(directory: Optional[str], processes: List[Optional["subprocess.Popen[bytes]"]]) -> None:
    for process in processes:
        if process is not None:
            _kill_group(process)
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)


def find_binary(name: str, env_var: str, search_dirs: Sequence[str], install_hint: str) -> str:
    """
    Find a server binary: in the directory named by C{env_var}, on C{PATH},
    then in C{search_dirs} (newest first).

    @raise ServerNotAvailable: it is nowhere; the message says what to
        install.
    """
    override = os.environ.get(env_var)
    if override:
        candidate = os.path.join(override, name)
        if os.access(candidate, os.X_OK):
            return candidate
        raise ServerNotAvailable("%s=%s has no executable %r" % (env_var, override, name))
    found = shutil.which(name)
    if found:
        return os.path.realpath(found)
    for directory in search_dirs:
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    raise ServerNotAvailable(
        "%r was not found on PATH nor in %s. Install it (%s), or set %s to "
        "the directory that holds it." % (name, ", ".join(search_dirs) or "-", install_hint, env_var)
    )
