"""
The benchmark's smoke mode (C{python -m bench --smoke}) runs to the end
in a subprocess and prints every table.  It asserts no timing: the smoke
mode's counts are too small for its numbers to mean anything.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
from typing import List, Tuple

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from txreconnect.testing import required

#: the repository's root, where C{python -m bench} finds the package
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: how long the smoke run may take (it takes seconds)
TIMEOUT = 300

#: the headings and the table header rows each section prints
EXPECTED = {
    "overhead": [
        "#### Throughput, ours / adbapi",
        "| database (driver) | workload | in flight | adbapi calls/s | ours / adbapi | 95% CI | IQR of rounds | CPU µs/call, ours − adbapi | control: adbapi / adbapi (95% CI) |",
        "#### The cost of `cp_health_check=0`",
        "| database (driver) | workload | in flight | throughput, hc=0 / default (IQR) | CPU µs/call, hc=0 − default |",
        "#### The pool's own cost per interaction",
        "| database | path | workload | adbapi µs | ours − adbapi | ours − adbapi, CPU | cp_health_check=0 − adbapi | cp_stall_timeout=None − adbapi |",
        "#### Where ours spends its own time",
    ],
    "resolve_cost": [
        "### The cost of `cp_resolve_commits=True` when nothing goes wrong",
        "| database (driver) | workload | in flight | adbapi calls/s | ours / adbapi (95% CI) | resolve / adbapi (95% CI) | resolve / ours (95% CI) | CPU µs/call, resolve − ours | control: adbapi / adbapi (95% CI) |",
        "#### Round trips and instructions per call",
        "| database (driver) | workload | round trips: adbapi / ours / resolve | instructions: adbapi | ours | resolve | resolve / adbapi | resolve / ours |",
        "runOperation: UPDATE",
    ],
    "recovery": [
        "#### Events while idle, then a burst of writes",
        "| database | event | pool | failed calls | duplicate rows | first success after | p50 | p99 | connects | errors callers got |",
        "#### Restart under load",
        "| database | pool | failed calls | after back | duplicate rows | first success after back | p50 | p99 | connects/s while down | errors callers got |",
        "#### Connect attempts with cp_max=",
        "| database | pool | attempts at the stop | attempts while down | per s | max per 50 ms | median gap | attempts once back | spread over | failed calls | errors callers got |",
        "#### First success after a restart, in wait mode",
        "| database | pool | restarts with a success | first success: median | worst | raw client: median | worst | pool − raw client | first connect | listening before accepting | connect floor | median − floor | worst − floor | attempts/s while stopped | failed calls |",
    ],
    "resources": [
        "#### Memory, descriptors, threads and sessions",
        "| database | checkpoint | interactions | fault cycles | RSS MiB | open fds | threads | server connections | pool open | failed |",
    ],
    "overload": [
        "Overload:",
        "| database | pool | offered | succeeded | refused at once | failed at deadline | most waiting |",
    ],
}


def run_smoke(out: str) -> Tuple[int, str]:
    """
    Run C{python -m bench --smoke --out OUT} from the repository's root.

    On a timeout it is interrupted (SIGINT: it stops its reactor and
    destroys its servers) before it is killed.

    @return: its exit status and everything it printed.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "bench", "--smoke", "--out", out],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        raise AssertionError("python -m bench --smoke did not end within %d s:\n%s" % (TIMEOUT, output[-3000:]))
    return process.returncode, output


@functools.lru_cache(maxsize=None)
def smoke_once() -> Tuple[str, int, str]:
    """
    Run the smoke mode once per test process (trial has no
    C{setUpClass}), into C{bench-smoke} under trial's directory.

    @return: the output directory, the exit status and the output.
    """
    out = os.path.abspath("bench-smoke")
    return (out,) + run_smoke(out)


class SmokeTests(SynchronousTestCase):
    """
    C{python -m bench --smoke}, run once for every test of this class.
    """

    def setUp(self) -> None:
        self.out, self.status, self.output = smoke_once()
        skipped: List[str] = [line for line in self.output.splitlines() if line.startswith("skipped ")]
        if skipped and self.status == 0 and not required():
            reason = "the benchmark skipped a database: %s" % ("; ".join(skipped),)
            raise SkipTest(reason + " (outside CI only; in CI this fails)")

    def test_exitsZero(self) -> None:
        """
        The smoke run exits 0 and says its servers were destroyed.
        """
        self.assertEqual(self.status, 0, self.output[-5000:])
        self.assertIn("servers destroyed", self.output)

    def test_printsEveryTable(self) -> None:
        """
        Every section prints its headings and table headers.
        """
        for section, lines in EXPECTED.items():
            for line in lines:
                self.assertIn(line, self.output, "%s: missing %r" % (section, line))

    def test_printsTheMachine(self) -> None:
        """
        The first line says when and on what the numbers were measured.
        """
        first = self.output.splitlines()[0]
        self.assertTrue(first.startswith("Measured "), first)
        self.assertIn("cores", first)
        self.assertIn("SMOKE", first)

    def test_tablesRenderAgainFromTheirJSON(self) -> None:
        """
        The markdown files of the steady-state section and of the cost of
        C{cp_resolve_commits} are what C{python -m bench.overhead_tables}
        and C{python -m bench.resolve_cost_tables} render from their JSON
        files, without measuring.
        """
        for section, module in (("overhead", "bench.overhead_tables"), ("resolve_cost", "bench.resolve_cost_tables")):
            with open(os.path.join(self.out, section + ".md")) as f:
                written = f.read()
            rendered = subprocess.run(
                [sys.executable, "-m", module, os.path.join(self.out, section + ".json")],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
            self.assertEqual(rendered.returncode, 0, rendered.stderr)
            self.assertEqual(written, rendered.stdout, section)

    def test_resolveCostCountsTheMarkerRoundTrip(self) -> None:
        """
        The cost section counts the round trips of each pool, even in smoke
        mode: C{cp_resolve_commits=True} sends one request more per call
        than ours with its defaults, on each database and workload, and
        ours as many as adbapi.
        """
        with open(os.path.join(self.out, "resolve_cost.json")) as f:
            data = json.load(f)
        why = data["not_counted"].get("round_trips_per_call")
        if why is not None and not required():
            raise SkipTest(why + " (outside CI only; in CI this fails)")
        self.assertEqual(len(data["counts"]), 2 * 3, data["counts"])
        for row in data["counts"]:
            trips = row["round_trips_per_call"]
            self.assertAlmostEqual(trips["ours"], trips["adbapi"], delta=0.2, msg=row)
            self.assertAlmostEqual(trips["ours_resolve"], trips["ours"] + 1, delta=0.2, msg=row)

    def test_overloadIsBoundedOnlyWithTheOptions(self) -> None:
        """
        Offered three times what the database serves, the pools without
        C{cp_max_waiting} let calls pile up; the bounded one never has
        more than 10 waiting and refuses the rest at once; no call fails
        for another reason.
        """
        with open(os.path.join(self.out, "overload.json")) as f:
            results = json.load(f)["results"]
        self.assertEqual(len(results), 2 * 4, sorted(results))
        for key, outcome in results.items():
            self.assertEqual(outcome["other_failures"], [], key)
            if key.endswith("/ours_bounded"):
                self.assertLessEqual(outcome["most_waiting"], 10, key)
                self.assertGreater(outcome["refused"], 0, key)
            elif key.endswith("/ours_deadline"):
                self.assertEqual(outcome["refused"], 0, key)
            else:
                self.assertGreater(outcome["most_waiting"], 10, key)
                self.assertEqual(outcome["refused"] + outcome["timed_out"], 0, key)

    def test_writesResults(self) -> None:
        """
        Each section writes its markdown and its raw numbers, as JSON,
        into C{--out}; with matplotlib, the recovery section draws its
        pictures too.
        """
        for section, lines in EXPECTED.items():
            with open(os.path.join(self.out, section + ".md")) as f:
                markdown = f.read()
            self.assertIn(lines[0], markdown)
            with open(os.path.join(self.out, section + ".json")) as f:
                data = json.load(f)
            self.assertIn("machine", data)
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return
        for picture in ("restart.png", "reconnect_jitter.png"):
            with open(os.path.join(self.out, picture), "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")


class InstructionCountTests(SynchronousTestCase):
    """
    The benchmark's instruction counts: the child process runs a workload
    under callgrind and an instruction count comes back.
    """

    def setUp(self) -> None:
        import shutil

        if shutil.which("valgrind") is None:
            message = "valgrind is not installed (Debian: apt-get install valgrind)"
            if required():
                raise RuntimeError(message + " (CI requires it: this is a failure, not a skip)")
            raise SkipTest(message + " (outside CI only; in CI this fails)")

    def test_childRunUnderCallgrindReportsItsInstructions(self) -> None:
        """
        Ten sqlite3 calls through each pool's public API, under callgrind,
        give a positive instruction count; twenty give more.
        """
        sys.path.insert(0, ROOT)
        self.addCleanup(sys.path.remove, ROOT)
        from bench._common import ADBAPI, OURS, Target
        from bench.instructions import count

        target = Target("sqlite", "SQLite :memory: (sqlite3)", "sqlite3")
        args, kwargs = target.connect_args()
        for pool in (ADBAPI.key, OURS.key):
            spec = {"target": "sqlite", "driver": "sqlite3", "args": list(args), "kwargs": kwargs, "pool": pool, "workload": "txn3"}
            few, more = count(dict(spec, calls=10)), count(dict(spec, calls=20))
            self.assertGreater(few, 0)
            self.assertGreater(more, few)


class OneCPUTests(SynchronousTestCase):
    """
    The throughput rounds run with this process and the servers on one
    CPU (C{bench._cpus.one_cpu}), and everything gets every CPU back after.
    """

    def setUp(self) -> None:
        if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
            message = "needs Linux and at least two CPUs"
            if required():
                raise RuntimeError(message + " (CI requires it: this is a failure, not a skip)")
            raise SkipTest(message + " (outside CI only; in CI this fails)")
        sys.path.insert(0, ROOT)
        self.addCleanup(sys.path.remove, ROOT)

    def test_pinsThisProcessAndEveryServerProcessThenGivesThemBack(self) -> None:
        """
        Inside the block, every thread of this process and every process
        of the server (the postmaster and a backend opened before) runs on
        the one CPU yielded, and a backend opened inside inherits it; after
        it, all of them may use every CPU again.
        """
        import threading

        import psycopg2

        from bench._common import Target
        from bench._cpus import one_cpu
        from txreconnect.testing import PostgresServer, started

        server = started(self, PostgresServer())
        allowed = os.sched_getaffinity(0)
        before = psycopg2.connect(**server.connect_kwargs("psycopg2"))
        self.addCleanup(before.close)
        waiting = threading.Event()
        helper = threading.Thread(target=waiting.wait)  # a thread that exists before
        helper.start()
        self.addCleanup(helper.join)
        self.addCleanup(waiting.set)

        def affinities() -> List[set]:
            found = []
            for pid in [os.getpid()] + server.pids():
                for tid in os.listdir("/proc/%d/task" % (pid,)):
                    found.append(os.sched_getaffinity(int(tid)))
            return found

        with one_cpu([Target("postgres", "PostgreSQL", "psycopg2", server)]) as cpu:
            self.assertIn(cpu, allowed)
            inside = psycopg2.connect(**server.connect_kwargs("psycopg2"))
            self.addCleanup(inside.close)
            self.assertGreaterEqual(len(server.pids()), 3)  # the postmaster, its helpers, two backends
            self.assertEqual([{cpu}] * len(affinities()), affinities())
        self.assertEqual([allowed] * len(affinities()), affinities())


class MedianIntervalTests(SynchronousTestCase):
    """
    C{bench._common.median_interval}: the 95% confidence interval that the
    README's throughput table gives for each median.
    """

    def setUp(self) -> None:
        sys.path.insert(0, ROOT)
        self.addCleanup(sys.path.remove, ROOT)

    def test_holdsTheTrueMedianNineteenTimesInTwenty(self) -> None:
        """
        Over many samples (seeded), the interval holds the true median of
        the distribution in about 95% of them; it always holds the
        sample's own median.
        """
        import random

        from bench._common import median_interval, quantile

        rng = random.Random(6)
        trials, covered = 2000, 0
        for _ in range(trials):
            values = [rng.expovariate(1.0) for _ in range(101)]  # skewed: median ln 2
            low, high = median_interval(values)
            self.assertLessEqual(low, quantile(values, 0.5))
            self.assertLessEqual(quantile(values, 0.5), high)
            covered += low <= 0.6931471805599453 <= high
        self.assertTrue(0.93 <= covered / trials <= 0.97, covered / trials)

    def test_noValuesGiveNoInterval(self) -> None:
        from bench._common import median_interval

        low, high = median_interval([])
        self.assertNotEqual(low, low)  # NaN
        self.assertNotEqual(high, high)
