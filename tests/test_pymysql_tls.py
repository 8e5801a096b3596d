"""
PyMySQL's default TLS context is built once per pool, not once per
connect, and the TLS every connection gets is what PyMySQL alone would
give it: on a real MariaDB server without TLS, and on one with TLS (a
self-signed certificate made with the C{openssl} command).
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from typing import Any, Dict, List, Optional

from twisted.trial.unittest import TestCase

from txreconnect import DisconnectionError, ReconnectingConnectionPool, WaitForDatabase
from txreconnect.drivers import driver_for
from txreconnect.testing import MariaDBServer, require_driver, shared_server
from tests.support import unavailable

_certificates: Dict[str, str] = {}


def _certificate() -> Dict[str, str]:
    """
    @return: the paths of a self-signed certificate for 127.0.0.1 and its
        key (made once per test process).
    """
    if not _certificates:
        if shutil.which("openssl") is None:
            raise unavailable("the openssl command is not installed (Debian: apt-get install openssl)")
        directory = tempfile.mkdtemp(prefix="txr-tls")
        atexit.register(shutil.rmtree, directory, True)
        cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
             "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        # The server may run as another user.
        os.chmod(directory, 0o755)
        os.chmod(key, 0o644)
        _certificates.update(cert=cert, key=key)
    return _certificates


class _TLSMixin:
    #: whether the server offers TLS
    tls: bool

    def setUp(self) -> None:
        self.pymysql = require_driver("pymysql")
        settings: Dict[str, Any] = {}
        if self.tls:
            paths = _certificate()
            settings = {"ssl_cert": paths["cert"], "ssl_key": paths["key"]}
        self.server = shared_server(self, MariaDBServer, **settings)
        self.kwargs = self.server.connect_kwargs("pymysql")
        # Count PyMySQL's own context builds, by their TLS parameters.
        self.built: List[Any] = []
        base = self.pymysql.connections.Connection
        original = base._create_ssl_ctx

        def counted(connection: Any, sslp: Any) -> Any:
            self.built.append(sslp if isinstance(sslp, dict) else type(sslp).__name__)
            return original(connection, sslp)

        self.patch(base, "_create_ssl_ctx", counted)

    def cipher(self, conn: Any) -> str:
        """
        @return: the session's TLS cipher, as the server says (empty: no
            TLS).
        """
        cursor = conn.cursor()
        try:
            cursor.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            return str(cursor.fetchone()[1])
        finally:
            cursor.close()
            conn.close()

    def plain(self, **extra: Any) -> str:
        """
        @return: the cipher of a connection PyMySQL opens on its own.
        """
        return self.cipher(self.pymysql.connect(**dict(self.kwargs, **extra)))

    def through_driver(self, driver: Any, **extra: Any) -> str:
        """
        @return: the cipher of a connection opened as the pool opens them.
        """
        return self.cipher(driver.connect((), dict(self.kwargs, **extra), self.pymysql.connect))

    def preferred(self) -> str:
        """
        Open a connection with PyMySQL alone, without TLS options, and
        tell whether this PyMySQL has a preferred TLS mode (it builds its
        default context: 1.1 and later; 1.0 uses TLS only when asked).

        @return: that connection's cipher.
        """
        del self.built[:]
        plain = self.plain()
        self.has_preferred = self.built == [{}]
        self.assertEqual(bool(plain), self.tls and self.has_preferred)
        del self.built[:]
        return plain

    def test_theSameTLSAsPyMySQLAloneWithTheDefaultContextBuiltOnce(self) -> None:
        """
        With no TLS option (PyMySQL's preferred mode), five connections
        opened as the pool opens them get what PyMySQL alone gives (TLS
        if and only if the server offers it), and the default context
        is built once; PyMySQL alone builds it for each connection.  A
        PyMySQL without a preferred mode (1.0) builds none either way.
        """
        plain = self.preferred()
        driver = driver_for(self.pymysql)
        ciphers = [self.through_driver(driver) for _ in range(5)]
        self.assertEqual(ciphers, [plain] * 5)
        self.assertEqual(self.built, [{}] if self.has_preferred else [])

    def test_disabledTLSStaysDisabled(self) -> None:
        driver = driver_for(self.pymysql)
        self.assertEqual(self.through_driver(driver, ssl_disabled=True), "")
        self.assertEqual(self.plain(ssl_disabled=True), "")

    def test_aPoolSharesOneDefaultContextAcrossItsThreads(self) -> Any:
        """
        A pool of 4 threads, each with its own connection, and one more
        connection after each is dropped, builds the default context at
        most once.
        """
        expected = bool(self.preferred())
        pool = ReconnectingConnectionPool("pymysql", cp_min=4, cp_max=4, **self.kwargs)
        pool.start()
        self.addCleanup(pool.close)

        def cipher(txn: Any) -> str:
            txn.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            return str(txn.fetchone()[1])

        def drop(conn: Any) -> None:
            pool.disconnect(conn)

        d = pool.runInteraction(cipher)
        d.addCallback(lambda first: self.assertEqual(bool(first), expected))
        for _ in range(4):
            d.addCallback(lambda _: pool.runWithConnection(drop))
        d.addCallback(lambda _: pool.runInteraction(cipher))
        d.addCallback(lambda last: self.assertEqual(bool(last), expected))
        d.addCallback(lambda _: self.assertLessEqual(self.built.count({}), 1, self.built))
        return d


class PlainServerTests(_TLSMixin, TestCase):
    """
    A server without TLS (MariaDB's default before 11.4).
    """

    tls = False

    def test_requiredTLSStillFails(self) -> None:
        """
        Asking for a verified certificate from a server without TLS ends
        as it does with PyMySQL alone: an error (PyMySQL 1.1 and later),
        or a connection without TLS (PyMySQL 1.0 goes on silently).
        """
        driver = driver_for(self.pymysql)
        paths = _certificate()
        outcomes = []
        for opener in (self.plain, lambda **extra: self.through_driver(driver, **extra)):
            try:
                outcomes.append(("connected, cipher", opener(ssl_ca=paths["cert"], ssl_verify_cert=True)))
            except self.pymysql.err.OperationalError as error:
                outcomes.append(("refused", error.args[0]))
        self.assertEqual(outcomes[0], outcomes[1])


class TLSServerTests(_TLSMixin, TestCase):
    """
    A server with a self-signed certificate.
    """

    tls = True

    def test_theUsersOwnTLSParametersAreReadForEachConnection(self) -> None:
        """
        A verified connection (C{ssl_ca}, C{ssl_verify_cert}) gets TLS; its
        context is PyMySQL's own, built from the user's parameters for
        each connection (renewed files are read), never the shared one.
        """
        driver = driver_for(self.pymysql)
        paths = _certificate()
        ciphers = [self.through_driver(driver, ssl_ca=paths["cert"], ssl_verify_cert=True) for _ in range(2)]
        self.assertTrue(all(ciphers), ciphers)
        self.assertEqual(len(self.built), 2)
        self.assertNotIn({}, self.built)

    def test_aCertificateThatFailsVerificationStillFails(self) -> Any:
        """
        A CA that did not sign the server's certificate fails the
        connection, as with PyMySQL alone: TLS is never turned off.
        """
        other = tempfile.mkdtemp(prefix="txr-ca")
        self.addCleanup(shutil.rmtree, other, True)
        ca = os.path.join(other, "ca.pem")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", os.path.join(other, "k.pem"),
             "-out", ca, "-days", "2", "-subj", "/CN=other"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        policy = WaitForDatabase(deadline=1)
        pool = ReconnectingConnectionPool(
            "pymysql", cp_min=1, cp_max=1, cp_policy=policy, ssl_ca=ca, ssl_verify_cert=True, **self.kwargs
        )
        pool.start()
        self.addCleanup(pool.close)
        error: Optional[BaseException] = None
        try:
            self.plain(ssl_ca=ca, ssl_verify_cert=True)
        except self.pymysql.err.OperationalError as e:
            error = e
        self.assertIsNotNone(error)
        return self.assertFailure(pool.runQuery("SELECT 1"), DisconnectionError)
