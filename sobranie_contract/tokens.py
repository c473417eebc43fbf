"""The tokens of the contract: HS256 JWTs with ``sub`` (the user) and ``exp``, signed with a
secret the servers and whoever mints tokens share. ``scope="server"`` marks back-end code that
may publish to private ``user:`` channels."""

from __future__ import annotations

import logging
import os
import time

import jwt

DEV_SECRET = "sobranie-dev-secret-not-for-production"
log = logging.getLogger("sobranie.auth")
_warned = False


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
