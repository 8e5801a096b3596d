"""
C{txreconnect drill}, run as a user runs it: in a subprocess, its report
table read back.  The drill schedules its faults on its own reactor's
clock; these tests only wait for it to exit.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import sys
import tempfile
from typing import Any, ClassVar, Dict, Generator, List, Optional, Sequence, Tuple
from urllib.parse import quote

from twisted.internet import defer, threads, utils
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from txreconnect import drill
from txreconnect._drill import server as _server
from txreconnect._drill.audit import FAILED, OK, UNKNOWN, Audit, audit
from txreconnect._drill.faults import COOLDOWN, SPACING, WARMUP, plan
from txreconnect._drill.record import Record
from txreconnect.drivers import Driver, driver_class, known_drivers
from txreconnect.errors import ConfigurationError
from txreconnect.testing import PostgresServer, require_driver, required, shared_server

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _table(output: str) -> Dict[str, List[str]]:
    """
    Read the report table: each row's label (stripped) with its cells,
    and the column names under C{""}.
    """
    lines = output.splitlines()
    rule = next(i for i, line in enumerate(lines) if re.fullmatch(r"-{20,}", line))
    rows = {"": lines[rule - 1].split()}
    for line in lines[rule + 1:]:
        if not line.strip():
            break
        label, *cells = re.split(r"\s{2,}", line.strip())
        rows[label] = cells
    return rows


class DrillTests(TestCase):
    """
    The drill exits 0 with a clean audit for txreconnect's pool, and with
    C{--compare} shows stock adbapi failing through the same faults.
    """

    timeout = 90

    @defer.inlineCallbacks
    def drill(self, *args: str) -> Generator[Any, Any, Tuple[str, int]]:
        """
        Run C{txreconnect drill *args} from this checkout.

        @return: its output (stdout and stderr) and exit status.
        """
        before = set(glob.glob(os.path.join(tempfile.gettempdir(), "txreconnect-drill-*")))
        code = "from txreconnect._cli import main; main(%r)" % (["drill", *args],)
        out, err, status = yield utils.getProcessOutputAndValue(
            sys.executable, ["-c", code], env=dict(os.environ, PYTHONPATH=_ROOT), path=_ROOT
        )
        output = out.decode("utf-8", "replace") + err.decode("utf-8", "replace")
        if status == 2 and "not found on PATH" in output:
            if required():
                self.fail(output)
            raise SkipTest(output.strip() + " (outside CI this test is skipped)")
        after = set(glob.glob(os.path.join(tempfile.gettempdir(), "txreconnect-drill-*")))
        self.assertEqual(after - before, set(), "the drill left its files behind")
        return output, status

    def assertClean(self, output: str, status: int, columns: Sequence[str]) -> Dict[str, List[str]]:
        """
        The drill exited 0 and printed a table with C{columns}, where
        txreconnect wrote rows, lost none and duplicated none.

        @return: the table.
        """
        self.assertEqual(status, 0, output)
        table = _table(output)
        self.assertEqual(table[""], list(columns), output)
        self.assertGreater(int(table["writes"][0]), 0, output)
        self.assertEqual(table["audit: lost rows"][0], "0", output)
        self.assertEqual(table["audit: duplicate rows"][0], "0", output)
        self.assertEqual(table["audit: stored after an error"][0], "0", output)
        self.assertEqual(table["audit"][0], "clean", output)
        self.assertIn("txreconnect: audit clean (0 lost, 0 duplicate rows", output)
        return table

    @defer.inlineCallbacks
    def test_sqliteByDefault(self) -> Any:
        """
        With no server, the drill runs on SQLite, injects each of its
        faults, and txreconnect's audit is clean.  The COMMIT cut always
        hits a write there, whose outcome is reported unknown and which is
        found stored once.
        """
        output, status = yield self.drill("--duration", "5", "--seed", "7")
        table = self.assertClean(output, status, ["txreconnect"])
        for kind in ("kill", "restart", "cut"):
            self.assertIn("%s: recovery" % (kind,), table)
        self.assertGreaterEqual(int(table["TransactionOutcomeUnknown"][0]), 1, output)
        self.assertGreaterEqual(int(table["outcome unknown (stored / not)"][0].split(" / ")[0]), 1, output)

    @defer.inlineCallbacks
    def compare(self, server: str, driver: str) -> Any:
        """
        C{--spawn server --compare}: txreconnect's audit is clean, and
        stock adbapi fails through the same faults.
        """
        require_driver(driver)
        output, status = yield self.drill("--spawn", server, "--compare", "--duration", "8", "--seed", "11")
        table = self.assertClean(output, status, ["txreconnect", "adbapi"])
        for kind in ("kill", "restart", "drop", "reset", "cut"):
            self.assertIn("%s: recovery" % (kind,), table)
        self.assertGreater(int(table["failed"][1]), 0, output)
        self.assertNotIn("Traceback", output)

    @defer.inlineCallbacks
    def test_url(self) -> Any:
        """
        C{--url} drills a server the drill does not own: faults through
        the proxy and killed sessions, no restart.  The password is never
        shown, and the drill's tables are dropped at the end.
        """
        require_driver("psycopg2")
        server = shared_server(self, PostgresServer)
        url = "postgresql://%s:%s@127.0.0.1:%d/%s" % (
            server.user, quote(server.password, safe=""), server.port, server.database)
        output, status = yield self.drill("--url", url, "--duration", "4", "--seed", "5")
        table = self.assertClean(output, status, ["txreconnect"])
        self.assertEqual(sorted(label.split(":")[0] for label in table if label.endswith(": recovery")),
                         ["cut", "drop", "kill", "reset"])
        self.assertNotIn(server.password, output)
        self.assertNotIn("cp_resolve_commits", output)
        left = yield threads.deferToThread(
            server.admin_sql, "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'txreconnect_drill%'",
            database=server.database,
        )
        self.assertEqual(left.strip(), "0")

    @defer.inlineCallbacks
    def test_waitingTheDrillResolvesTheLostCommit(self) -> Any:
        """
        With C{--wait}, the pool waits for the database and resolves a
        lost COMMIT (C{cp_resolve_commits=True}, as the drill says): no
        call fails, not even the one whose COMMIT was cut, which without
        it ends in L{TransactionOutcomeUnknown} (unless the cut hit a
        read's COMMIT: that one is replayed without asking).
        """
        require_driver("psycopg2")
        server = shared_server(self, PostgresServer)
        url = "postgresql://%s:%s@127.0.0.1:%d/%s" % (
            server.user, quote(server.password, safe=""), server.port, server.database)
        output, status = yield self.drill("--url", url, "--wait", "30", "--duration", "4", "--seed", "5")
        table = self.assertClean(output, status, ["txreconnect"])
        self.assertIn("cp_resolve_commits=True", output)
        self.assertIn("cut: recovery", table)
        self.assertEqual(table["failed"][0], "0", output)
        self.assertEqual(table["outcome unknown (stored / not)"][0], "0 / 0", output)
        self.assertIn("lost COMMITs resolved (done / not)", table)

    @defer.inlineCallbacks
    def test_badArguments(self) -> Any:
        """
        A URL that is not a server's, or a driver of another database,
        ends the drill at once with status 2 and says why.
        """
        for args, why in [
            (["--url", "sqlite:///drill.db"], "must name one PostgreSQL or MySQL server"),
            (["--url", "postgresql://app@/shop?host=/run/postgresql"], "by its TCP host"),
            (["--spawn", "postgres", "--driver", "pymysql"], "--driver must be one of psycopg2, "),
            (["--url", "postgresql://app@db/shop", "--driver", "psycopg"], "the URL's scheme names the driver"),
        ]:
            output, status = yield self.drill(*args)
            self.assertEqual(status, 2, output)
            self.assertIn(why, output)
            self.assertNotIn("Traceback", output)

    def test_postgresCompare(self) -> Any:
        return self.compare("postgres", "psycopg2")

    def test_mariadbCompare(self) -> Any:
        return self.compare("mariadb", "pymysql")


class _FuturePostgres(Driver):
    """
    A PostgreSQL driver txreconnect does not know yet, as a driver module
    added to the registry would describe it.
    """

    name: ClassVar[str] = "txreconnect_no_such_pg_driver"
    family: ClassVar[str] = "postgresql"
    url_schemes: ClassVar[Tuple[str, ...]] = ("postgresql", "postgres")
    default_port: ClassVar[Optional[int]] = 5432
    install_hint: ClassVar[str] = "the future driver (pip install nothing-yet)"


def _options(**given: Any) -> argparse.Namespace:
    """
    @return: the drill's options, as L{drill.add_arguments} parses them,
        with C{given} set.
    """
    parser = argparse.ArgumentParser()
    drill.add_arguments(parser)
    return argparse.Namespace(**dict(vars(parser.parse_args([])), **given))


class DriverChoiceTests(SynchronousTestCase):
    """
    The drill's drivers, ports and keywords come from the driver
    registry: a driver added there is a choice without a change here.
    """

    def test_spawnDriversAreTheFamilysDefaultFirst(self) -> None:
        """
        Each server C{--spawn} starts takes every known driver of its
        family, the family's default driver (what a bare URL scheme
        means) first.
        """
        for spawn, (_, family) in _server.SERVERS.items():
            names = _server.drivers_of(family)
            self.assertEqual(set(names), {cls.name for cls in known_drivers() if cls.family == family})
            self.assertTrue(driver_class(names[0]).url_default, names)
        self.assertEqual(_server.drivers_of("postgresql")[:1], ["psycopg2"])
        self.assertEqual(_server.drivers_of("mysql")[:1], ["pymysql"])

    def test_aNewDriverOfAFamilyIsAChoice(self) -> None:
        """
        A driver the registry lists for PostgreSQL is a C{--driver} for
        C{--spawn postgres}; not installed, it is refused with its own
        install hint.
        """
        self.patch(_server, "known_drivers", lambda: [*known_drivers(), _FuturePostgres])
        self.patch(drill, "driver_class",
                   lambda name: _FuturePostgres if name == _FuturePostgres.name else driver_class(name))
        self.assertIn(_FuturePostgres.name, _server.drivers_of("postgresql"))
        error = self.assertRaises(ImportError, drill._where, _options(spawn="postgres", driver=_FuturePostgres.name))
        self.assertIn(_FuturePostgres.install_hint, str(error))
        self.assertRaises(ConfigurationError, drill._where, _options(spawn="mariadb", driver=_FuturePostgres.name))

    def test_urlWithoutAPortGetsTheDriversDefault(self) -> None:
        """
        A C{--url} without a port connects to the default port of its
        driver's server, in that driver's keyword.
        """
        for url, driver, port in [("postgresql://app@db/shop", "psycopg2", 5432),
                                  ("mysql://app@db/shop", "pymysql", 3306)]:
            try:
                require_driver(driver)
            except Exception:
                continue
            name, connect_kwargs, _ = drill._where(_options(url=url))
            self.assertEqual(name, driver)
            self.assertEqual(connect_kwargs[driver_class(driver).keywords["port"]], port)
            self.assertEqual(connect_kwargs[driver_class(driver).keywords["database"]], "shop")

    def test_urlOfAFileDatabaseIsRefused(self) -> None:
        """
        A URL of a driver whose family a L{FaultProxy} cannot read (SQLite)
        is refused before anything starts.
        """
        error = self.assertRaises(ConfigurationError, drill._where, _options(url="sqlite:///drill.db"))
        self.assertIn("must name one PostgreSQL or MySQL server", str(error))


class AuditTests(SynchronousTestCase):
    """
    The audit compares what each client was told with the stored rows.
    """

    def test_everyKindOfDiscrepancy(self) -> None:
        writes = {"ok": OK, "lost": OK, "twice": OK, "failed": FAILED, "stored": FAILED,
                  "unknown-in": UNKNOWN, "unknown-out": UNKNOWN}
        rows = {"ok": 1, "twice": 2, "stored": 1, "unknown-in": 1, "stranger": 1}
        self.assertEqual(
            audit(writes, rows),
            Audit(lost=1, duplicate=1, stored_after_error=1, strangers=1, unknown_stored=1, unknown_not_stored=1),
        )
        self.assertFalse(audit(writes, rows).clean)

    def test_clean(self) -> None:
        verdict = audit({"a": OK, "b": FAILED, "c": UNKNOWN}, {"a": 1, "c": 1})
        self.assertTrue(verdict.clean)
        self.assertEqual(verdict.unknown_stored, 1)

    def test_unknownStoredTwiceIsADuplicate(self) -> None:
        self.assertEqual(audit({"a": UNKNOWN}, {"a": 2}).duplicate, 1)


class RecordTests(SynchronousTestCase):
    """
    Downtime and recovery times come from the calls' start and end times.
    """

    def setUp(self) -> None:
        self.record = Record("pool")
        lost = ConnectionError("lost")
        for started, ended, error in [(0, 1, None), (1, 2, lost), (2, 3, lost), (2.5, 4, None), (4, 5, lost)]:
            self.record.call(started, ended, error, None)

    def test_downtime(self) -> None:
        """
        From each failure after a success to the next success, and to the
        end for a failure that none followed.
        """
        self.assertEqual(self.record.downtime(end=6), (4 - 2) + (6 - 5))

    def test_recovery(self) -> None:
        """
        Only calls made after the fault count.
        """
        self.assertEqual(self.record.recovery(0.5), 4 - 0.5)
        self.assertIsNone(self.record.recovery(3))

    def test_failures(self) -> None:
        self.assertEqual((self.record.succeeded, self.record.failed), (2, 3))
        self.assertEqual(self.record.failed_between(1.5, 5), 2)


class PlanTests(SynchronousTestCase):
    """
    The fault schedule comes from the seed alone.
    """

    kinds = ("cut", "drop", "kill", "reset", "restart")

    def test_seeded(self) -> None:
        self.assertEqual(plan(self.kinds, 10, 3), plan(self.kinds, 10, 3))
        self.assertNotEqual(plan(self.kinds, 10, 3), plan(self.kinds, 10, 4))

    def test_everyKindWithinTheDrill(self) -> None:
        for duration in (2, 10, 30):
            schedule = plan(self.kinds, duration, 1)
            self.assertTrue(set(self.kinds) <= {kind for _, kind in schedule})
            times = [at for at, _ in schedule]
            self.assertEqual(times, sorted(times))
            self.assertTrue(all(WARMUP <= at <= max(WARMUP, duration - COOLDOWN) for at in times), times)
        self.assertEqual(len(plan(self.kinds, 30, 1)), int((30 - WARMUP - COOLDOWN) // SPACING))
