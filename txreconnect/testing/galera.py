"""
A throwaway MariaDB Galera cluster: three L{MariaDBServer}s with the
Galera 4 provider, each in a temporary directory of its own and on free
loopback ports, replicating synchronously to each other, owned by the
caller, to rehearse what clients of a multi-primary cluster see when a
node crashes or leaves the primary component.

Each node (a L{GaleraNode}) has its own client port, data directory, log,
C{connect_kwargs}, C{start}/C{stop}/C{kill}/C{restart} and C{admin_sql};
L{GaleraCluster} adds what the faults need: kill a node and wait until the
other two form the primary component, restart it and wait until it has
caught up (IST, or an C{rsync} SST), isolate it from the others while its
process and client port stay up, and heal it again.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Union

from twisted.logger import Logger

from txreconnect.testing import _target
from txreconnect.testing._lifecycle import Owned
from txreconnect.testing._process import ServerNotAvailable, SettingValue, free_port
from txreconnect.testing._sql import quote_literal
from txreconnect.testing._wait import wait_until
from txreconnect.testing.mariadb import MariaDBServer

__all__ = ["GaleraCluster", "GaleraNode", "find_provider"]

_log = Logger()

_INSTALL_HINT = "install Debian's galera-4 (and rsync): apt-get install galera-4 rsync"
_PROVIDER_ENV = "TXRECONNECT_GALERA_PROVIDER"
#: where Debian, Ubuntu and the RPM distributions put Galera 4's provider
_PROVIDER_PATHS = (
    "/usr/lib/galera/libgalera_smm.so",
    "/usr/lib/galera-4/libgalera_smm.so",
    "/usr/lib64/galera-4/libgalera_smm.so",
    "/usr/lib64/galera/libgalera_smm.so",
)

#: how long the cluster's own waits (joining, syncing, leaving) last
_DEFAULT_TIMEOUT = 90.0

#: Galera provider options that make a lost node leave the primary
#: component within a few seconds (the defaults take 5 to 15 s) and keep
#: each node's write-set cache small
_FAST_PROVIDER_OPTIONS: Mapping[str, str] = {
    "evs.keepalive_period": "PT0.2S",
    "evs.inactive_check_period": "PT0.2S",
    "evs.suspect_timeout": "PT1.5S",
    "evs.inactive_timeout": "PT3S",
    "evs.install_timeout": "PT3S",
    "evs.join_retrans_period": "PT0.2S",
    "gmcast.peer_timeout": "PT1S",
    "gmcast.time_wait": "PT1S",
    "pc.announce_timeout": "PT1S",
    "pc.wait_prim_timeout": "PT10S",
    "pc.recovery": "FALSE",
    "gcache.size": "32M",
}

#: what a node's log says when it leaves because its state transfer
#: failed, on its side or the donor's (Galera then needs a restart)
_STATE_TRANSFER_FAILED = re.compile(
    r"WSREP_SST: \[ERROR\]|SST request callback failed|State transfer .* failed|Will never receive state"
)

#: the primary component's state, as every node of it reports it
_SYNCED = {
    "wsrep_cluster_status": "Primary",
    "wsrep_ready": "ON",
    "wsrep_connected": "ON",
    "wsrep_local_state_comment": "Synced",
}


@functools.lru_cache(maxsize=None)
def find_provider() -> str:
    """
    Find Galera 4's provider library, C{libgalera_smm.so}: the file named
    by C{$TXRECONNECT_GALERA_PROVIDER}, else where the distributions put
    it.  C{rsync} (for state transfers) must be on C{PATH} too.

    @return: the provider's path.
    @raise ServerNotAvailable: Galera or rsync is not installed; the
        message says what to install.
    """
    override = os.environ.get(_PROVIDER_ENV)
    candidates = (override,) if override else _PROVIDER_PATHS
    found = next((path for path in candidates if os.path.isfile(path)), None)
    if found is None:
        raise ServerNotAvailable(
            "Galera's provider libgalera_smm.so is not in %s: %s, or set %s to the library"
            % (", ".join(candidates), _INSTALL_HINT, _PROVIDER_ENV)
        )
    if shutil.which("rsync") is None:
        raise ServerNotAvailable(
            "rsync (Galera's state transfer) is not on PATH: %s" % (_INSTALL_HINT,)
        )
    return found


def _distinct_ports(count: int, avoid: Sequence[int] = ()) -> List[int]:
    """
    @param avoid: ports not to return.
    @return: C{count} different free ports on 127.0.0.1 (none is bound
        yet, so two calls of L{free_port} may name the same one).
    """
    ports: List[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports and port not in avoid:
            ports.append(port)
    return ports


class GaleraNode(MariaDBServer):
    """
    One node of a L{GaleraCluster}: a L{MariaDBServer} with the Galera
    provider loaded (C{wsrep_on=ON}), its own ports for the group
    communication (C{gmcast.listen_addr}), incremental state transfers
    (C{ist.recv_addr}) and C{rsync} state snapshots
    (C{wsrep_sst_receive_address}), all on 127.0.0.1.

    The cluster sets its ports and the address of every node before its
    first start.  The node that starts with L{new_cluster} set bootstraps
    a new cluster; the others join it and receive its data by an C{rsync}
    snapshot (so their data directories start empty).

    @ivar name: the node's C{wsrep_node_name}.
    @ivar gcomm_port: the port of its group communication.
    @ivar ist_port: the port it receives incremental state transfers on.
    @ivar sst_port: the port it receives state snapshots on.
    @ivar cluster_address: its C{wsrep_cluster_address}
        (C{gcomm://127.0.0.1:p1,...}).
    @ivar new_cluster: whether its next start bootstraps a new cluster
        (C{--wsrep-new-cluster}); cleared once it has started.
    @ivar provider_options: its C{wsrep_provider_options} besides its
        addresses.
    @cvar join_attempts: how many times L{start} starts a joining node
        whose state transfer failed.
    """

    join_attempts = 3

    def __init__(
        self,
        name: str,
        settings: Optional[Mapping[str, SettingValue]] = None,
        provider_options: Optional[Mapping[str, str]] = None,
        database: str = "txreconnect",
        user: str = "txreconnect",
        password: str = "s3cret-pw!",
    ) -> None:
        """
        @param name: see L{name}.
        @param settings: server settings, as for L{MariaDBServer}; they
            win over the Galera settings the node needs.
        @param provider_options: see L{provider_options}; they win over
            the node's fast defaults.
        @param database: name of the database to create.
        @param user: name of the user to create.
        @param password: the user's password.
        """
        super().__init__(settings=settings, database=database, user=user, password=password)
        self.name = name
        self.gcomm_port = 0
        self.ist_port = 0
        self.sst_port = 0
        self.cluster_address = ""
        self.new_cluster = False
        self._start_position: Optional[str] = None
        self.provider_options: Dict[str, str] = dict(_FAST_PROVIDER_OPTIONS)
        self.provider_options.update(provider_options or {})

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return "<%s %s %s on 127.0.0.1:%d (%s)>" % (
            type(self).__name__,
            self.name,
            self.version or self.product,
            self.port,
            state,
        )

    def _initialise(self, datadir: str) -> None:
        find_provider()
        if self.new_cluster:
            super()._initialise(datadir)
        # A joiner's empty data directory is filled by its first state
        # snapshot (rsync), before the storage engines start.

    def _extra_options(self) -> List[str]:
        options = {
            "base_host": _target.HOST,
            "base_port": str(self.gcomm_port),
            "gmcast.listen_addr": "tcp://%s:%d" % (_target.HOST, self.gcomm_port),
            "ist.recv_addr": "%s:%d" % (_target.HOST, self.ist_port),
        }
        options.update(self.provider_options)
        argv = [
            "--wsrep-on=ON",
            "--wsrep-provider=" + find_provider(),
            "--wsrep-provider-options=" + ";".join("%s=%s" % item for item in options.items()),
            "--wsrep-cluster-name=txreconnect",
            "--wsrep-cluster-address=" + self.cluster_address,
            "--wsrep-node-name=" + self.name,
            "--wsrep-node-address=" + _target.HOST,
            "--wsrep-node-incoming-address=%s:%d" % (_target.HOST, self.port),
            "--wsrep-sst-method=rsync",
            "--wsrep-sst-receive-address=%s:%d" % (_target.HOST, self.sst_port),
            "--binlog-format=ROW",
            "--default-storage-engine=InnoDB",
            "--innodb-autoinc-lock-mode=2",
        ]
        if self.new_cluster:
            argv.append("--wsrep-new-cluster")
        if self._start_position is not None:
            argv.append("--wsrep-start-position=" + self._start_position)
        return argv

    def start(self) -> None:
        """
        Start the node (see L{ThrowawayServer.start}).  After a crash it
        first recovers its last committed position from InnoDB
        (C{--wsrep-recover}, as the distributions' C{galera_recovery}
        does) and starts from there, so that it catches up with an
        incremental state transfer instead of a whole snapshot.

        A joining node whose state transfer fails (rsync's daemon could
        not listen, the donor's script failed) exits; Galera cannot
        resume it.  It is started again, up to L{join_attempts} times in
        all, with an empty data directory and new ports to receive state
        on, so that it asks for a whole snapshot.

        @raise ServerNotAvailable: MariaDB, Galera or rsync is missing.
        @raise RuntimeError: the node did not come up; the message has
            the end of its log.
        """
        if self.running:
            return
        if self._directory is not None and self._crashed():
            self._start_position = self._recover_position()
        attempts = 1 if self.new_cluster else self.join_attempts
        for attempt in range(1, attempts + 1):
            logged = self._log_size()
            try:
                super().start()
                break
            except RuntimeError:
                if attempt == attempts or self.running or not self._state_transfer_failed(logged):
                    raise
                _log.warn(
                    "{node!r}: its state transfer failed (attempt {attempt} of {attempts});"
                    " starting it again with an empty data directory. Its log ends with:\n{tail}",
                    node=self,
                    attempt=attempt,
                    attempts=attempts,
                    tail=self.log_tail(),
                )
                self._prepare_for_snapshot()
            finally:
                self._start_position = None
        if not self.version:
            # Its first start failed before it joined, so the base class
            # did not finish its first-start steps.
            self._bootstrap()

    def _log_size(self) -> int:
        """
        @return: how many bytes the node's log holds now (0 before its
            first start).
        """
        if self._directory is None:
            return 0
        try:
            return os.path.getsize(self.logfile)
        except OSError:
            return 0

    def _state_transfer_failed(self, since: int) -> bool:
        """
        @param since: the log's size when the failed start began.
        @return: whether the node's log, from C{since}, says that it left
            because its state transfer failed (on its side or the
            donor's), which Galera cannot recover from without a restart.
        """
        try:
            with open(self.logfile, "rb") as f:
                f.seek(since)
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return False
        return _STATE_TRANSFER_FAILED.search(text) is not None

    def _prepare_for_snapshot(self) -> None:
        """
        Make the node, which failed to join, ask for a whole snapshot on
        its next start: empty its data directory (what a failed transfer
        left there is unusable) and give it new ports to receive state
        on, in case something else had taken the old ones.
        """
        for entry in os.scandir(self.datadir):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        taken = (self.port, self.gcomm_port, self.ist_port, self.sst_port)
        self.ist_port, self.sst_port = _distinct_ports(2, avoid=taken)

    def _crashed(self) -> bool:
        """
        @return: whether the node's C{grastate.dat} says it did not shut
            down cleanly (C{seqno: -1}).
        """
        try:
            with open(os.path.join(self.datadir, "grastate.dat")) as f:
                return any(line.split() == ["seqno:", "-1"] for line in f)
        except OSError:
            return False

    def _recover_position(self) -> Optional[str]:
        """
        Run C{mariadbd --wsrep-recover}: InnoDB's crash recovery, then it
        logs the last committed position and exits.

        @return: that position (C{uuid:seqno}), or C{None} if it logged
            none (the node then asks for a snapshot).
        @raise subprocess.CalledProcessError: the recovery failed.
        """
        log = os.path.join(self.directory, "recover.log")
        self._run([*self._command(self.datadir), "--wsrep-recover", "--log-error=" + log])
        position = None
        with open(log, errors="replace") as f:
            for line in f:
                if "WSREP: Recovered position:" in line:
                    position = line.rsplit(None, 1)[-1]
        os.unlink(log)
        return position

    def _bootstrap(self) -> None:
        if self.new_cluster:
            # The database and the user replicate to the nodes that join.
            super()._bootstrap()
        else:
            self.version = self.admin_sql("SELECT VERSION()").strip()
        self.new_cluster = False

    def status(self) -> Dict[str, str]:
        """
        @return: the node's C{wsrep_%} status variables (C{SHOW GLOBAL
            STATUS}), by name, as text: C{wsrep_cluster_size},
            C{wsrep_ready}, C{wsrep_local_state_comment}...
        @raise subprocess.CalledProcessError: the node did not answer.
        """
        rows = self.admin_sql("SHOW GLOBAL STATUS LIKE 'wsrep\\_%'").splitlines()
        return dict(row.split("\t", 1) for row in rows if "\t" in row)

    def set_provider_option(self, name: str, value: str) -> None:
        """
        Change one of the running provider's options (C{SET GLOBAL
        wsrep_provider_options}); it lasts until the node stops.

        @param name: the option, such as C{gmcast.isolate}.
        @param value: its new value.
        @raise subprocess.CalledProcessError: the node refused it.
        """
        self.admin_sql(
            "SET GLOBAL wsrep_provider_options = %s" % (quote_literal("%s=%s" % (name, value), backslashes=True),)
        )


class GaleraCluster(Owned):
    """
    A three-node MariaDB Galera cluster of throwaway nodes on free loopback
    ports, for tests of what clients see when a node fails::

        def setUp(self):
            self.cluster = GaleraCluster()
            self.addCleanup(self.cluster.destroy)
            self.cluster.start()

        def test_failover(self):
            self.cluster.kill_node(0)
            conn = pymysql.connect(**self.cluster.nodes[1].connect_kwargs("pymysql"))

    or C{with GaleraCluster() as cluster:}, which destroys it when the
    block ends, even on error.

    Every node accepts writes (it is multi-primary) and has the database,
    the user and the password given.  The nodes' group communication is
    tuned so that a node that is killed or isolated leaves the primary
    component within about two seconds.

    Every wait of the cluster has a deadline, and raises
    L{WaitTimeout <txreconnect.testing._wait.WaitTimeout>} (a
    C{RuntimeError}) with the nodes' states and the end of their logs when
    it passes.

    @ivar nodes: the three L{GaleraNode}s; the first bootstraps the
        cluster.
    @ivar timeout: how many seconds each wait of the cluster lasts.
    """

    #: how many nodes the cluster has
    size = 3

    def __init__(
        self,
        settings: Optional[Mapping[str, SettingValue]] = None,
        provider_options: Optional[Mapping[str, str]] = None,
        database: str = "txreconnect",
        user: str = "txreconnect",
        password: str = "s3cret-pw!",
        timeout: float = _DEFAULT_TIMEOUT,
    ) -> None:
        """
        @param settings: server settings for every node (MariaDB
            C{--name=value}), on top of those Galera needs.
        @param provider_options: Galera provider options for every node
            (C{wsrep_provider_options}), on top of the fast ones it has.
        @param database: name of the database to create.
        @param user: name of the user to create.
        @param password: the user's password.
        @param timeout: see L{timeout}.
        @raise ServerNotAvailable: from L{start}, when MariaDB, Galera or
            rsync is not installed.
        """
        self.timeout = timeout
        self.nodes: List[GaleraNode] = [
            GaleraNode(
                "node%d" % (index + 1,),
                settings=settings,
                provider_options=provider_options,
                database=database,
                user=user,
                password=password,
            )
            for index in range(self.size)
        ]

    def __repr__(self) -> str:
        return "<%s %s>" % (type(self).__name__, " ".join(repr(node) for node in self.nodes))

    # --- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """
        Bootstrap the first node (C{--wsrep-new-cluster}), make the
        database and the user on it, start the other two, which join and
        receive its data, and return once every node reports a primary
        component of three, ready and synced.  Does nothing more if the
        cluster already runs.

        On failure every node is destroyed.

        @raise ServerNotAvailable: MariaDB, Galera or rsync is not
            installed; the message says what to install.
        @raise RuntimeError: a node did not come up or join in time; the
            message has the end of its log.
        """
        try:
            find_provider()
            if not self.nodes[0].cluster_address:
                self._assign_ports()
            for node in self.nodes:
                node.start()
            self.wait_for_primary(self.nodes)
        except BaseException:
            self.destroy()
            raise
        _log.info("{cluster!r} started", cluster=self)

    def destroy(self) -> None:
        """
        Kill every node and remove their directories, even those of nodes
        that failed to start.  Safe to call more than once, and from
        C{addCleanup}.
        """
        for node in self.nodes:
            node.destroy()
        for node in self.nodes:
            node.cluster_address = ""

    def _assign_ports(self) -> None:
        ports = _distinct_ports(3 * self.size)
        address = "gcomm://" + ",".join(
            "%s:%d" % (_target.HOST, port) for port in ports[: self.size]
        )
        for index, node in enumerate(self.nodes):
            node.gcomm_port = ports[index]
            node.ist_port = ports[self.size + index]
            node.sst_port = ports[2 * self.size + index]
            node.cluster_address = address
            node.new_cluster = index == 0

    # --- state ---------------------------------------------------------------

    def node(self, which: Union[int, GaleraNode]) -> GaleraNode:
        """
        @param which: a node's index in L{nodes} (0 to 2), or the node.
        @return: the node.
        @raise IndexError: no such node.
        """
        if isinstance(which, GaleraNode):
            if which not in self.nodes:
                raise IndexError("%r is not a node of %r" % (which, self))
            return which
        return self.nodes[which]

    def status(self, node: Union[int, GaleraNode]) -> Dict[str, str]:
        """
        @param node: a node's index in L{nodes}, or the node.
        @return: its C{wsrep_%} status variables by name, as text
            (C{wsrep_cluster_size}, C{wsrep_cluster_status},
            C{wsrep_ready}, C{wsrep_local_state_comment}...).
        @raise subprocess.CalledProcessError: the node did not answer.
        """
        return self.node(node).status()

    def others(self, node: Union[int, GaleraNode]) -> List[GaleraNode]:
        """
        @param node: a node's index in L{nodes}, or the node.
        @return: the other nodes, in order.
        """
        chosen = self.node(node)
        return [each for each in self.nodes if each is not chosen]

    def wait_for_primary(
        self, nodes: Sequence[GaleraNode], size: Optional[int] = None, timeout: Optional[float] = None
    ) -> None:
        """
        Wait until each of C{nodes} reports that it is in a primary
        component of C{size} nodes, ready for clients and synced.

        @param nodes: the nodes to ask.
        @param size: the size of the primary component (default: how many
            C{nodes} there are).
        @param timeout: seconds (default L{timeout}).
        @raise WaitTimeout: they did not within C{timeout}; the message
            has their states and the end of their logs.
        """
        wanted = dict(_SYNCED, wsrep_cluster_size=str(len(nodes) if size is None else size))
        self._wait(
            nodes,
            lambda: all(_has(node.status(), wanted) for node in nodes),
            "form a primary component of %s, synced" % (wanted["wsrep_cluster_size"],),
            timeout,
        )

    # --- faults --------------------------------------------------------------

    def kill_node(self, node: Union[int, GaleraNode]) -> None:
        """
        Kill a node with SIGKILL, as a crash would, and wait until the other
        two have dropped it and form the primary component of two.

        @param node: a node's index in L{nodes}, or the node.
        @raise WaitTimeout: the others did not in time.
        """
        chosen = self.node(node)
        chosen.kill()
        self.wait_for_primary(self.others(chosen))

    def restart_node(self, node: Union[int, GaleraNode]) -> None:
        """
        Start a killed or stopped node again and wait until it has rejoined
        (catching up by an incremental state transfer, or a snapshot) and
        every node is synced in a primary component of three.

        @param node: a node's index in L{nodes}, or the node.
        @raise RuntimeError: it did not come up or rejoin in time; the
            message has the end of its log.
        """
        self.node(node).start()
        self.wait_for_primary(self.nodes)

    def isolate_node(self, node: Union[int, GaleraNode]) -> None:
        """
        Cut a node off from the other two while its process and its client
        port stay up, as a network partition would: Galera's
        C{gmcast.isolate=1} closes its group connections and refuses new
        ones.  Returns once the node has left the primary component
        (C{wsrep_ready=OFF}, C{wsrep_cluster_status=non-Primary}, a
        component of one) and the other two form the primary component of
        two.

        The isolated node still accepts connections, but answers
        C{SELECT}s and writes on tables, C{BEGIN}, C{COMMIT} and
        C{ROLLBACK} with error 1047, C{WSREP has not yet prepared node for
        application use}; statements on no table (C{SELECT 1},
        C{@@read_only}: 0), C{SHOW} and C{SET} work, and a session with
        C{wsrep_dirty_reads=ON} may read.  A transaction open on it stays
        open through a refused C{COMMIT}: once the node is healed, the next
        C{COMMIT} on that connection commits it.

        Undo with L{heal_node}.

        @param node: a node's index in L{nodes}, or the node.
        @raise WaitTimeout: that did not happen in time.
        @raise subprocess.CalledProcessError: the node refused the option.
        """
        chosen = self.node(node)
        chosen.set_provider_option("gmcast.isolate", "1")
        self._wait(
            [chosen],
            lambda: _has(chosen.status(), {"wsrep_ready": "OFF", "wsrep_cluster_status": "non-Primary"}),
            "leave the primary component",
        )
        self.wait_for_primary(self.others(chosen))

    def heal_node(self, node: Union[int, GaleraNode]) -> None:
        """
        Undo L{isolate_node}: the node connects to the others again,
        rejoins (catching up by an incremental state transfer) and every
        node is synced in a primary component of three when this returns.

        @param node: a node's index in L{nodes}, or the node.
        @raise WaitTimeout: that did not happen in time.
        @raise subprocess.CalledProcessError: the node refused the option.
        """
        self.node(node).set_provider_option("gmcast.isolate", "0")
        self.wait_for_primary(self.nodes)

    # --- connecting ----------------------------------------------------------

    def _ports(self, nodes: Optional[Sequence[GaleraNode]]) -> List[int]:
        return [node.port for node in nodes or self.nodes]

    def multi_host_kwargs(
        self,
        driver: str,
        target_session_attrs: Optional[str] = None,
        nodes: Optional[Sequence[GaleraNode]] = None,
    ) -> Dict[str, object]:
        """
        Keyword arguments for a txreconnect pool of a MySQL driver in the
        host-list form (C{host="127.0.0.1,127.0.0.1,127.0.0.1"},
        C{port="p1,p2,p3"}): the pool's driver tries the nodes in order and
        keeps the first that answers.  The drivers' own C{connect()} does
        not read that form; use a node's C{connect_kwargs} for them.

        @param driver: the DB-API module's name, a MySQL driver.
        @param target_session_attrs: C{"read-write"} or C{"any"} (as
            txreconnect's MySQL drivers read it), or C{None} to leave it
            out.
        @param nodes: the nodes in the order to try them (default:
            L{nodes}).
        @return: keyword arguments for the pool.
        @raise ValueError: C{driver} is not a MySQL driver.
        """
        kwargs = _target.connect_kwargs(self.nodes[0], driver, self._ports(nodes))
        if target_session_attrs is not None:
            kwargs["target_session_attrs"] = target_session_attrs
        return kwargs

    def url(
        self,
        driver: Optional[str] = None,
        target_session_attrs: Optional[str] = None,
        nodes: Optional[Sequence[GaleraNode]] = None,
    ) -> str:
        """
        A database URL with the nodes as a host list, for
        L{ReconnectingConnectionPool.from_url
        <txreconnect.ReconnectingConnectionPool.from_url>}: the pool's
        driver tries them in order.

        @param driver: a MySQL driver's module name for a C{mysql+driver://}
            scheme, or C{None} for C{mysql://} (the default driver).
        @param target_session_attrs: C{"read-write"} or C{"any"}, or
            C{None} to leave it out.
        @param nodes: the nodes in the order to try them (default:
            L{nodes}).
        @return: C{mysql[+driver]://user:password@127.0.0.1:p1,}
            C{127.0.0.1:p2,127.0.0.1:p3/database[?target_session_attrs=...]}.
        @raise ValueError: C{driver} is not a MySQL driver.
        """
        query = None if target_session_attrs is None else {"target_session_attrs": target_session_attrs}
        return _target.url(self.nodes[0], driver, self._ports(nodes), query)

    # --- helpers -------------------------------------------------------------

    def _wait(
        self,
        nodes: Sequence[GaleraNode],
        condition: Callable[[], bool],
        what: str,
        timeout: Optional[float] = None,
    ) -> None:
        """
        Wait until C{condition} holds, asking C{nodes} (whose admin SQL may
        fail meanwhile: the last failure is reported).

        @raise WaitTimeout: it did not hold within C{timeout} seconds
            (default L{timeout}); the message has the nodes' states and the
            end of their logs.
        """
        wait_until(
            condition,
            self.timeout if timeout is None else timeout,
            "%s to %s" % (", ".join(node.name for node in nodes), what),
            interval=0.1,
            detail=lambda: "\n".join(_describe(node) for node in nodes),
            retry_on=(subprocess.CalledProcessError,),
        )



def _has(status: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    """
    @return: whether C{status} has every value of C{wanted}.
    """
    return all(status.get(name) == value for name, value in wanted.items())


def _describe(node: GaleraNode) -> str:
    """
    @return: a node's Galera state and the end of its log, for an error.
    """
    try:
        status = node.status()
        state = ", ".join(
            "%s=%s" % (name, status.get(name))
            for name in ("wsrep_cluster_size", "wsrep_cluster_status", "wsrep_ready", "wsrep_local_state_comment")
        )
    except (subprocess.CalledProcessError, RuntimeError) as e:
        state = "no answer (%s)" % (getattr(e, "stderr", None) or e,)
    return "%r: %s; its log ends with:\n%s" % (node, state, node.log_tail())
