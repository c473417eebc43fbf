"""Who may connect and what they may touch: JWT (HS256), channel ACL, Origin allow-list."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence

import jwt

from sobranie_bench import wire

DEV_SECRET = "sobranie-dev-secret-not-for-production"
log = logging.getLogger("sobranie.auth")
_warned = False


class Unauthorized(Exception):
    """No valid token: answered with HTTP 401 before any upgrade or stream."""


def secret_from_env(explicit: str | None = None) -> str:
    """The shared HS256 secret: explicit, else ``SOBRANIE_JWT_SECRET``, else the dev default."""
    global _warned
    secret = explicit or os.environ.get("SOBRANIE_JWT_SECRET")
    if secret:
        return secret
    if not _warned:
        log.warning("SOBRANIE_JWT_SECRET is not set: using the development secret")
        _warned = True
    return DEV_SECRET


def make_token(user: str, secret: str, ttl: float = 3600.0, *, scope: str | None = None,
               now: float | None = None) -> str:
    """A signed token for ``user`` expiring in ``ttl`` seconds (``scope='server'`` for
    back-end code allowed to publish to private ``user:`` channels)."""
    issued = time.time() if now is None else now
    claims: dict[str, object] = {"sub": user, "iat": int(issued), "exp": int(issued + ttl)}
    if scope:
        claims["scope"] = scope
    return jwt.encode(claims, secret, algorithm="HS256")


class Authenticator:
    def __init__(self, secret: str, origins: Sequence[str] = ()) -> None:
        self.secret = secret
        self.origins = frozenset(origins)

    def token_from(self, query: Mapping[str, str], headers: Mapping[str, str]) -> str | None:
        """``?token=`` (browsers) or ``Authorization: Bearer`` (everyone else)."""
        token = query.get("token")
        if token:
            return token
        header = headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value else None

    def claims(self, token: str | None) -> dict[str, object]:
        if not token:
            raise Unauthorized("missing token")
        try:
            claims = jwt.decode(token, self.secret, algorithms=["HS256"],
                                options={"require": ["sub", "exp"]})
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise Unauthorized("token has no user")
        return claims

    def user(self, query: Mapping[str, str], headers: Mapping[str, str]) -> str:
        """The user id the request proves, or :class:`Unauthorized`."""
        return str(self.claims(self.token_from(query, headers))["sub"])

    def origin_allowed(self, origin: str | None) -> bool:
        """Cross-site WebSocket hijacking defence; an empty allow-list allows all."""
        return not self.origins or (origin is not None and origin in self.origins)


def may_subscribe(user: str, channel: str) -> bool:
    """``user:<id>`` is private to ``<id>``; every other valid channel is open in v1."""
    if channel.startswith(wire.PRIVATE_PREFIX):
        return channel[len(wire.PRIVATE_PREFIX):] == user
    return True


def may_publish(user: str, channel: str) -> bool:
    """Clients never publish to private or presence channels (server-side paths do)."""
    return not channel.startswith(wire.PRIVATE_PREFIX) and channel != wire.PRESENCE_CHANNEL
