"""
How a client reaches a throwaway server: C{connect()} keywords and
database URLs, spelled by txreconnect's driver registry
(L{txreconnect.drivers}), so that nothing in C{txreconnect.testing} names
a driver, a default port or a driver's keyword.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Protocol, Sequence, Type
from urllib.parse import quote, urlencode

from txreconnect.drivers import Driver, driver_class, known_drivers

__all__ = ["HOST", "connect_kwargs", "default_driver", "driver", "url"]

#: the address every throwaway server listens on
HOST = "127.0.0.1"


class _Account(Protocol):
    """
    What a client needs to know of a throwaway server besides its port:
    the family of database it is, the test user and the test database.
    """

    @property
    def family(self) -> str: ...

    @property
    def user(self) -> str: ...

    @property
    def password(self) -> str: ...

    @property
    def database(self) -> str: ...


def _family(family: str) -> List[Type[Driver]]:
    """
    @return: the known drivers of C{family}, sorted by name.
    """
    return [each for each in known_drivers() if each.family == family]


def driver(family: str, name: str) -> Type[Driver]:
    """
    Find the driver C{name} among those of a family of servers.

    @param family: a L{Driver}'s C{family}, e.g. C{"postgresql"}.
    @param name: a DB-API module's C{__name__}.
    @return: its L{Driver} class.
    @raise ValueError: txreconnect does not know C{name}, or it talks to
        another family of servers; the message names the drivers of
        C{family}.
    """
    cls = driver_class(name)
    if not family or cls.family != family:
        raise ValueError(
            "%r is not a %s driver (known: %s)"
            % (name, family or "known", ", ".join(each.name for each in _family(family)) or "none")
        )
    return cls


def default_driver(family: str) -> Type[Driver]:
    """
    @param family: a L{Driver}'s C{family}, e.g. C{"postgresql"}.
    @return: the driver a bare C{family://} URL means (its C{url_default}).
    @raise ValueError: the family has no default driver.
    """
    for each in _family(family):
        if each.url_default:
            return each
    raise ValueError("no driver of family %r is its default" % (family,))


def connect_kwargs(account: _Account, name: str, ports: Sequence[int]) -> Dict[str, object]:
    """
    Keyword arguments for a driver's C{connect()} to a server on
    L{HOST}, as the test user.

    @param account: the server (its family, user, password and database).
    @param name: the DB-API module's C{__name__}.
    @param ports: the port, or several (libpq's multi-host form: the host
        and the port become comma-separated lists, tried in order).
    @return: the keywords, spelled as the driver's C{connect()} wants.
    @raise ValueError: C{name} is not a driver of C{account}'s family.
    """
    cls = driver(account.family, name)
    port: object = ports[0] if len(ports) == 1 else ",".join(str(port) for port in ports)
    return dict(
        cls.connect_kwargs(
            host=",".join(HOST for _ in ports),
            port=port,
            user=account.user,
            password=account.password,
            database=account.database,
        )
    )


def url(
    account: _Account,
    name: Optional[str],
    ports: Sequence[int],
    query: Optional[Mapping[str, str]] = None,
) -> str:
    """
    A database URL for L{ReconnectingConnectionPool.from_url
    <txreconnect.ReconnectingConnectionPool.from_url>} (the grammar is in
    L{txreconnect.url}) to a server on L{HOST}, as the test user.

    @param account: the server (its family, user, password and database).
    @param name: a DB-API module's C{__name__}, for a
        C{family+name://} scheme (the name in lower case), or C{None} for
        the family's default driver (a C{family://} scheme).
    @param ports: the port, or several (a host list, tried in order).
    @param query: query parameters.
    @return: C{family[+name]://user:password@127.0.0.1:port/database},
        the user, password and database percent-encoded
        (C{urllib.parse.quote(part, safe="")}).
    @raise ValueError: C{name} is not a driver of C{account}'s family, or
        it is C{None} and the family has no default driver.
    """
    if name is None:
        scheme = default_driver(account.family).family
    else:
        scheme = "%s+%s" % (account.family, driver(account.family, name).name.lower())
    text = "%s://%s:%s@%s/%s" % (
        scheme,
        quote(account.user, safe=""),
        quote(account.password, safe=""),
        ",".join("%s:%d" % (HOST, port) for port in ports),
        quote(account.database, safe=""),
    )
    if query:
        text += "?" + urlencode(dict(query))
    return text
