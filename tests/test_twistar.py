"""
twistar models on ReconnectingConnectionPool, after
L{txreconnect.twistar.install}: real PostgreSQL (psycopg2, psycopg 3) and
MariaDB (PyMySQL) servers restarted under the models, and sqlite3.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types
from typing import Any, ClassVar, Dict, Type

from twisted.internet import defer, threads
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

import txreconnect
from txreconnect import ReconnectingConnectionPool
from txreconnect.drivers import Driver, driver_class, known_drivers
from txreconnect.testing import (
    MariaDBServer,
    PostgresServer,
    ThrowawayServer,
    require_driver,
    shared_server,
)

try:
    require_driver("twistar")
except SkipTest as e:
    skip = str(e)  # trial skips every test of this module
else:
    import BermiInflector.Rules.English as english_rules
    import txreconnect.twistar
    from BermiInflector.Inflector import Inflector
    from twistar.dbobject import DBObject
    from twistar.exceptions import ImaginaryTableError
    from twistar.registry import Registry

    class User(DBObject):
        HASMANY = ["pictures"]

    class Picture(DBObject):
        BELONGSTO = ["user"]

    class Box(DBObject):
        pass


def run_python(code: str) -> str:
    """
    Run C{code} in a new Python process (this one's interpreter, with the
    project on its path).

    @return: what it printed.
    @raise AssertionError: it failed.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(txreconnect.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=60
    )
    if done.returncode != 0:
        raise AssertionError("the child failed:\n" + done.stdout + done.stderr)
    return done.stdout


class InstallTests(SynchronousTestCase):
    """
    What L{txreconnect.twistar.install} changes, without a database.
    """

    def setUp(self) -> None:
        txreconnect.twistar.install()

    def test_tableNamesOnThisPython(self) -> None:
        """
        The inflector gives Rails-style table names on this Python, where
        3.11+ otherwise rejects its C{'^(?i)(ox)$'} rule.
        """
        expected = {
            "User": "users",
            "Picture": "pictures",
            "Box": "boxes",
            "Person": "people",
            "Ox": "oxen",
            "Mouse": "mice",
            "Quiz": "quizzes",
            "Category": "categories",
            "Status": "statuses",
            "BlogPost": "blog_posts",
        }
        inflector = Inflector()
        self.assertEqual({name: inflector.tableize(name) for name in expected}, expected)

    def test_modelTableNames(self) -> None:
        """
        twistar's models get the inflected table names.
        """
        self.assertEqual([User.tablename(), Picture.tablename(), Box.tablename()], ["users", "pictures", "boxes"])

    def test_singularizeReversesTableNames(self) -> None:
        """
        Relationships find the class back from the table name.
        """
        inflector = Inflector()
        names = ["User", "Picture", "Box", "Person", "Ox", "Mouse"]
        self.assertEqual([inflector.classify(inflector.tableize(name)) for name in names], names)

    def test_flagsFirst(self) -> None:
        """
        C{flags_first} moves global flags after a leading C{^} to the start,
        and leaves other patterns alone.
        """
        flags_first = txreconnect.twistar.flags_first
        self.assertEqual(flags_first("^(?i)(ox)$"), "(?i)^(ox)$")
        self.assertEqual(flags_first("^(?ix)a"), "(?ix)^a")
        self.assertEqual(flags_first("(?i)^(ox)en"), "(?i)^(ox)en")
        self.assertEqual(flags_first("(?i)(quiz)$"), "(?i)(quiz)$")
        self.assertEqual(flags_first("^(?:a)"), "^(?:a)")

    def test_installTwiceChangesNothing(self) -> None:
        """
        A second C{install} leaves the patched pieces as they were.
        """
        patched = (Registry.__dict__["getConfig"], english_rules.re)
        txreconnect.twistar.install()
        self.assertEqual((Registry.__dict__["getConfig"], english_rules.re), patched)

    def test_importingTxreconnectDoesNotImportTwistar(self) -> None:
        """
        C{import txreconnect} (and its pool) imports neither twistar nor
        its inflector, so programs without twistar are unchanged.
        """
        out = run_python(
            """
            import sys
            import txreconnect, txreconnect.pool
            print(sorted(m for m in sys.modules if m.split(".")[0] in ("twistar", "BermiInflector", "txreconnect.twistar")))
            """
        )
        self.assertEqual(out.strip(), "[]")

    def test_pymysqlWithoutMysqlclient(self) -> None:
        """
        With PyMySQL and no mysqlclient, twistar still gets its MySQL
        dialect (whose module imports C{MySQLdb}), and C{MySQLdb} stays
        unimportable afterwards.
        """
        require_driver("pymysql")
        out = run_python(
            """
            import sys
            sys.modules["MySQLdb"] = None  # as if mysqlclient were not installed
            import txreconnect.twistar
            from twistar.registry import Registry
            from txreconnect import ReconnectingConnectionPool
            txreconnect.twistar.install()
            Registry.DBPOOL = ReconnectingConnectionPool("pymysql", host="127.0.0.1")
            print(type(Registry.getConfig()).__name__, sys.modules["MySQLdb"])
            """
        )
        self.assertEqual(out.split(), ["MySQLDBConfig", "None"])


def own_registry(test: SynchronousTestCase) -> None:
    """
    Give C{test} a twistar Registry of its own (twistar's is global), put
    back as it was by a cleanup.
    """
    saved = (Registry.DBPOOL, Registry.IMPL, Registry.SCHEMAS, Registry.REGISTRATION)

    def restore() -> None:
        Registry.DBPOOL, Registry.IMPL, Registry.SCHEMAS, Registry.REGISTRATION = saved

    test.addCleanup(restore)
    Registry.IMPL = None  # twistar's cache of the dialect, picked from DBPOOL
    Registry.SCHEMAS = {}
    Registry.REGISTRATION = dict(Registry.REGISTRATION)


class DialectTests(SynchronousTestCase):
    """
    After L{txreconnect.twistar.install}, twistar's SQL dialect follows
    the family of the pool's driver, not its module name.
    """

    def setUp(self) -> None:
        txreconnect.twistar.install()
        own_registry(self)

    def dialect(self, name: str) -> str:
        """
        @param name: a driver module's name (the module need not exist).
        @return: the name of the config class twistar picks for a pool
            on that driver.
        """
        Registry.IMPL = None
        Registry.DBPOOL = types.SimpleNamespace(dbapi=types.ModuleType(name))
        return type(Registry.getConfig()).__name__

    def test_everyPostgreSQLDriverGetsPostgreSQL(self) -> None:
        """
        Every PostgreSQL driver txreconnect knows, whether twistar knows it
        (psycopg2) or not (psycopg 3), gets twistar's PostgreSQL dialect.
        """
        names = [cls.name for cls in known_drivers() if cls.family == "postgresql"]
        self.assertGreaterEqual(set(names), {"psycopg2", "psycopg"})
        self.assertEqual({name: self.dialect(name) for name in names},
                         dict.fromkeys(names, "PostgreSQLDBConfig"))

    def test_aNewPostgreSQLDriverGetsPostgreSQL(self) -> None:
        """
        A driver the registry adds for PostgreSQL gets the PostgreSQL
        dialect, with no change to this module.
        """

        class Future(Driver):
            name = "txreconnect_no_such_pg_driver"
            family = "postgresql"

        self.patch(txreconnect.twistar, "driver_class",
                   lambda name: Future if name == Future.name else driver_class(name))
        self.assertEqual(self.dialect(Future.name), "PostgreSQLDBConfig")

    def test_everyMySQLDriverGetsMySQL(self) -> None:
        """
        Every MySQL driver txreconnect knows gets twistar's MySQL dialect.
        """
        require_driver("pymysql")  # twistar's MySQL module imports MySQLdb, or PyMySQL as it
        names = [cls.name for cls in known_drivers() if cls.family == "mysql"]
        self.assertGreaterEqual(set(names), {"pymysql", "MySQLdb"})
        self.assertEqual({name: self.dialect(name) for name in names}, dict.fromkeys(names, "MySQLDBConfig"))

    def test_otherDriversAreLeftToTwistar(self) -> None:
        """
        SQLite's driver gets twistar's own choice, and a driver neither
        knows gets twistar's C{NotImplementedError}.
        """
        self.assertEqual(self.dialect("sqlite3"), "SQLiteDBConfig")
        self.assertRaises(NotImplementedError, self.dialect, "txreconnect_no_such_driver")


class _ModelTests(TestCase):
    """
    Models with inflected table names (users, pictures, boxes) and a
    has-many / belongs-to relation, on one database; subclasses name it.
    """

    driver_name: ClassVar[str]
    #: the id column's type, for this database
    id_column: ClassVar[str]
    #: the name of twistar's config class expected for this driver
    dialect: ClassVar[str]

    def setUp(self) -> Any:
        self.driver = require_driver(self.driver_name)
        txreconnect.twistar.install()
        own_registry(self)
        self.pool = self.make_pool()
        self.addCleanup(self.pool.close)
        Registry.DBPOOL = self.pool
        Registry.register(User, Picture, Box)
        return self.pool.runInteraction(self.create_tables)

    def make_pool(self) -> ReconnectingConnectionPool:
        raise NotImplementedError

    def create_tables(self, txn: Any) -> None:
        tables: Dict[str, str] = {
            "users": "first_name VARCHAR(100), age INTEGER",
            "pictures": "name VARCHAR(100), user_id INTEGER",
            "boxes": "label VARCHAR(100)",
        }
        for name, columns in tables.items():
            txn.execute("DROP TABLE IF EXISTS %s" % (name,))
            txn.execute("CREATE TABLE %s (id %s, %s)" % (name, self.id_column, columns))

    @defer.inlineCallbacks
    def user_with_pictures(self, first_name: str, *names: str) -> Any:
        """
        Save a user and pictures that belong to it.

        @return: a L{Deferred} that fires with the user.
        """
        user = yield User(first_name=first_name, age=30).save()
        for name in names:
            yield Picture(name=name, user_id=user.id).save()
        return user

    def test_dialect(self) -> None:
        """
        twistar picks the SQL dialect of the pool's driver.
        """
        self.assertEqual(type(Registry.getConfig()).__name__, self.dialect)

    @defer.inlineCallbacks
    def test_saveFindCountDelete(self) -> Any:
        """
        Models are saved with new ids, found by id and by condition,
        counted, updated and deleted.
        """
        ann = yield User(first_name="Ann", age=30).save()
        bob = yield User(first_name="Bob", age=40).save()
        self.assertNotEqual(ann.id, bob.id)
        found = yield User.find(bob.id)
        self.assertEqual((found.first_name, found.age), ("Bob", 40))
        older = yield User.find(where=["age > ?", 35])
        self.assertEqual([u.id for u in older], [bob.id])
        self.assertEqual((yield User.count()), 2)
        bob.age = 41
        yield bob.save()
        self.assertEqual((yield User.find(bob.id)).age, 41)
        ann_id = ann.id
        yield ann.delete()
        self.assertEqual((yield User.count()), 1)
        self.assertIsNone((yield User.find(ann_id)))

    @defer.inlineCallbacks
    def test_hasManyAndBelongsTo(self) -> Any:
        """
        A user has many pictures, and each picture belongs to its user.
        """
        ann = yield self.user_with_pictures("Ann", "beach", "hills")
        yield self.user_with_pictures("Bob", "city")
        pictures = yield ann.pictures.get(orderby="name")
        self.assertEqual([p.name for p in pictures], ["beach", "hills"])
        self.assertEqual((yield ann.pictures.count()), 2)
        owner = yield pictures[0].user.get()
        self.assertEqual((owner.id, owner.first_name), (ann.id, "Ann"))

    @defer.inlineCallbacks
    def test_boxesTable(self) -> Any:
        """
        C{Box} is stored in C{boxes}, the table name inflected from it.
        """
        box = yield Box(label="tools").save()
        self.assertEqual((yield Box.find(where=["label = ?", "tools"], limit=1)).id, box.id)
        rows = yield self.pool.runQuery("SELECT label FROM boxes")
        self.assertEqual([tuple(r) for r in rows], [("tools",)])
        yield Box.deleteAll()
        self.assertEqual((yield Box.count()), 0)

    @defer.inlineCallbacks
    def test_missingTable(self) -> Any:
        """
        Saving a model whose table does not exist still fails with
        twistar's C{ImaginaryTableError}, and is not replayed.
        """
        yield self.pool.runOperation("DROP TABLE boxes")
        yield self.assertFailure(Box(label="tools").save(), ImaginaryTableError)
        self.assertEqual(self.pool.stats()["replays"], 0)


class _RestartTests(_ModelTests):
    """
    The same, on a real server that restarts between calls.
    """

    server_class: ClassVar[Type[ThrowawayServer]]

    def make_pool(self) -> ReconnectingConnectionPool:
        self.server = shared_server(self, self.server_class)
        pool = ReconnectingConnectionPool(
            self.driver_name, **self.server.connect_kwargs(self.driver_name), cp_min=1, cp_max=3
        )
        pool.start()
        return pool

    def restart(self) -> Any:
        return threads.deferToThread(self.server.restart)

    @defer.inlineCallbacks
    def test_modelsSurviveAServerRestart(self) -> Any:
        """
        After the server restarted, every model call (find, relations,
        save, count, delete) succeeds at its first attempt: the pool
        replays the one that found its connection lost.
        """
        ann = yield self.user_with_pictures("Ann", "beach")
        yield self.restart()
        found = yield User.find(ann.id)
        self.assertEqual(found.first_name, "Ann")
        yield Picture(name="hills", user_id=ann.id).save()
        pictures = yield found.pictures.get(orderby="name")
        self.assertEqual([p.name for p in pictures], ["beach", "hills"])
        yield self.restart()
        self.assertEqual((yield (yield pictures[1].user.get()).pictures.count()), 2)
        yield pictures[0].delete()
        self.assertEqual((yield Picture.count()), 1)
        self.assertGreaterEqual(self.pool.stats()["replays"], 2)

    @defer.inlineCallbacks
    def test_saveAfterRestartFirstUseOfTable(self) -> Any:
        """
        A save that is the first use of its table since the restart (so
        twistar reads the table's columns on the lost connection) is
        replayed too, and stores one row.
        """
        yield User(first_name="Ann").save()
        yield self.restart()
        box = yield Box(label="tools").save()
        self.assertEqual(self.pool.stats()["replays"], 1)
        self.assertEqual((yield Box.find(box.id)).label, "tools")
        self.assertEqual((yield Box.count()), 1)


class PostgresPsycopg2Tests(_RestartTests):
    server_class = PostgresServer
    driver_name = "psycopg2"
    id_column = "SERIAL PRIMARY KEY"
    dialect = "PostgreSQLDBConfig"


class PostgresPsycopgTests(PostgresPsycopg2Tests):
    driver_name = "psycopg"


class MariaDBPyMySQLTests(_RestartTests):
    server_class = MariaDBServer
    driver_name = "pymysql"
    id_column = "INTEGER AUTO_INCREMENT PRIMARY KEY"
    dialect = "MySQLDBConfig"


class SQLiteTests(_ModelTests):
    driver_name = "sqlite3"
    id_column = "INTEGER PRIMARY KEY"
    dialect = "SQLiteDBConfig"

    def make_pool(self) -> ReconnectingConnectionPool:
        pool = ReconnectingConnectionPool(
            "sqlite3", self.mktemp(), check_same_thread=False, cp_min=1, cp_max=1
        )
        pool.start()
        return pool


del _ModelTests, _RestartTests
