"""
Everything txreconnect knows about one driver lives in that driver's
module under C{txreconnect/drivers/}: outside it, no code names a
driver's module, its default port or a keyword spelling of its own
(docstrings may, as examples).
"""

from __future__ import annotations

import ast
import os
from typing import Dict, Iterator, List, Set, Tuple

from twisted.trial.unittest import SynchronousTestCase

import txreconnect
from txreconnect.drivers import Driver, known_drivers

_PACKAGE = os.path.dirname(txreconnect.__file__)

#: (module path relative to the package, fact) pairs that are allowed,
#: each for a reason that is not driver knowledge
_ALLOWED: Dict[Tuple[str, str], str] = {
    # The drill's stand-in server is built on the standard library's
    # sqlite3 (it subclasses sqlite3.Connection); it is a harness, not
    # knowledge of a driver.
    ("_drill/sqlite.py", "sqlite3"): "a harness built on sqlite3",
    # twistar's dbconfig/mysql.py imports MySQLdb by name; install() lets
    # PyMySQL stand in for that import.  Knowledge of twistar.
    ("twistar.py", "MySQLdb"): "twistar imports MySQLdb by name",
    ("twistar.py", "pymysql"): "PyMySQL stands in for twistar's MySQLdb import",
}


def _facts() -> Tuple[Set[str], Set[str], Set[int]]:
    """
    @return: the known drivers' module names, their keyword spellings
        that are their own (not the generic part names), and their
        default ports.
    """
    names = {cls.name for cls in known_drivers()}
    generic = set(Driver.keywords.values())
    spellings: Set[str] = set()
    ports: Set[int] = set()
    for cls in known_drivers():
        spellings.update(value for value in cls.keywords.values() if value not in generic)
        spellings.update(key for key in cls.secret_keywords if key not in generic)
        spellings.update(key for key in cls.shown_keywords if key not in generic)
        spellings.update(cls.transaction_pooling_keywords)
        if cls.default_port is not None:
            ports.add(cls.default_port)
    return names, spellings, ports


def _docstrings(tree: ast.AST) -> Set[int]:
    """
    @return: the ids of the string constants that are docstrings.
    """
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _modules() -> Iterator[Tuple[str, ast.AST]]:
    for directory, subdirectories, files in os.walk(_PACKAGE):
        relative = os.path.relpath(directory, _PACKAGE)
        if relative.split(os.sep)[0] == "drivers":
            continue
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                with open(path, encoding="utf-8") as f:
                    yield os.path.normpath(os.path.join(relative, name)), ast.parse(f.read(), path)


def _mentions(tree: ast.AST, names: Set[str], spellings: Set[str], ports: Set[int]) -> Iterator[str]:
    docstrings = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and id(node) not in docstrings:
            if isinstance(node.value, str) and (node.value in names or node.value in spellings):
                yield node.value
            elif type(node.value) is int and node.value in ports:
                yield str(node.value)
        elif isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names if alias.name.split(".")[0] in names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in names:
            yield node.module.split(".")[0]
        elif isinstance(node, ast.keyword) and node.arg in spellings:
            yield node.arg


class OnePlacePerDriverTests(SynchronousTestCase):
    def test_noDriverFactOutsideTheDriversPackage(self) -> None:
        """
        No module of txreconnect outside C{drivers/} names a known
        driver's module, default port or own keyword spelling in code,
        but for the listed exceptions.
        """
        names, spellings, ports = _facts()
        self.assertIn("psycopg2", names)  # the check checks something
        self.assertIn("dbname", spellings)
        self.assertIn(5432, ports)
        found: List[Tuple[str, str]] = []
        for path, tree in _modules():
            found.extend((path, fact) for fact in _mentions(tree, names, spellings, ports))
        self.assertEqual([entry for entry in found if entry not in _ALLOWED], [])

    def test_eachSchemeHasOneDefaultDriver(self) -> None:
        """
        Every URL scheme that a driver serves has exactly one default
        driver, and every driver's name is unique in any case (the
        C{scheme+name} of a URL ignores case).
        """
        defaults: Dict[str, List[str]] = {}
        for cls in known_drivers():
            for scheme in cls.url_schemes:
                defaults.setdefault(scheme, [])
                if cls.url_default:
                    defaults[scheme].append(cls.name)
        self.assertEqual({scheme: len(names) for scheme, names in defaults.items()}, dict.fromkeys(defaults, 1))
        lowered = [cls.name.lower() for cls in known_drivers()]
        self.assertEqual(len(lowered), len(set(lowered)))
