"""Who may connect and what they may touch: JWT (HS256), channel ACL, Origin allow-list.

The tokens themselves (how they are made, the shared secret) are the contract's:
:mod:`sobranie_contract.tokens`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jwt

from sobranie_contract import wire


class Unauthorized(Exception):
    """No valid token: answered with HTTP 401 before any upgrade or stream."""


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
