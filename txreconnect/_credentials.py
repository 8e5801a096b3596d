"""
Credentials that change while the pool runs: a password (or any secret
keyword the driver knows) given as a callable, and C{cp_credentials}, a
callable returning C{connect()} keywords; both called in the pool thread
for every new connection.

What they raise, or return that cannot be used, becomes
L{CredentialsFailed}: a failed connection attempt, which goes through
the reconnect policy like any other, and whose message names the
callable and the type of the trouble, never a value.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from txreconnect.errors import ConfigurationError

__all__ = ["Credentials", "CredentialsFailed"]


class CredentialsFailed(Exception):
    """
    A credentials callable raised, or returned something unusable; the
    connection attempt fails with this (chaining what it raised).
    """


class Credentials:
    """
    The callables among a pool's connect keywords, and how to call them.

    @ivar secrets: the secret keywords given as callables, by name.
    @ivar extra: C{cp_credentials}, or C{None}.
    """

    def __init__(self, secrets: Dict[str, Callable[[], Any]], extra: Optional[Callable[[], Any]]) -> None:
        self.secrets = secrets
        self.extra = extra

    @classmethod
    def find(
        cls, connkw: Mapping[str, Any], secret_keywords: Sequence[str], extra: Any
    ) -> Optional["Credentials"]:
        """
        @param connkw: the keywords for the driver's C{connect()}.
        @param secret_keywords: the driver's secret keywords (a password
            may be a callable; other keywords are passed as given).
        @param extra: the C{cp_credentials} option.
        @return: the callables, or C{None} if there are none.
        @raise ConfigurationError: C{cp_credentials} is not callable.
        """
        if extra is not None and not callable(extra):
            raise ConfigurationError(
                "cp_credentials must be a callable returning connect() keywords, not a %s" % (type(extra).__name__,)
            )
        secrets = {key: value for key, value in connkw.items() if key in secret_keywords and callable(value)}
        if not secrets and extra is None:
            return None
        return cls(secrets, extra)

    def resolve(self, connkw: Mapping[str, Any]) -> Dict[str, Any]:
        """
        Call every callable (in the calling pool thread) and return the
        keywords for one connection attempt.

        @param connkw: the static keywords.
        @return: C{connkw} with each callable secret replaced by its value
            and C{cp_credentials}' keywords laid over it.
        @raise CredentialsFailed: a callable raised, or returned something
            other than text (a secret) or a mapping of keyword names
            (C{cp_credentials}).
        """
        resolved = dict(connkw)
        for key, source in self.secrets.items():
            value = _call(source, "the %s callable" % (key,))
            if not isinstance(value, (str, bytes)):
                raise CredentialsFailed(
                    "the %s callable returned a %s, not text" % (key, type(value).__name__)
                )
            resolved[key] = value
        if self.extra is not None:
            more = _call(self.extra, "cp_credentials")
            if not isinstance(more, Mapping) or not all(isinstance(key, str) for key in more):
                raise CredentialsFailed(
                    "cp_credentials returned a %s, not a mapping of connect() keywords" % (type(more).__name__,)
                )
            resolved.update(more)
        return resolved


def _call(source: Callable[[], Any], what: str) -> Any:
    """
    @return: what C{source()} returns.
    @raise CredentialsFailed: it raised; chains its error, whose message
        is left out of ours (it might quote a secret).
    """
    try:
        return source()
    except Exception as error:
        raise CredentialsFailed("%s raised %s" % (what, type(error).__name__)) from error
