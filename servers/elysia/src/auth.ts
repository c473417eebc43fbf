// Who may connect and what they may touch, as servers/auth.py: JWT (HS256), the channel ACL,
// the Origin allow-list (which is also the CORS list).
import { createHmac, timingSafeEqual } from "node:crypto";

import { PRESENCE_CHANNEL, PRIVATE_PREFIX } from "./wire";

export const DEV_SECRET = "sobranie-dev-secret-not-for-production";

export class Unauthorized extends Error {}

export type Claims = { sub: string; scope?: unknown; [claim: string]: unknown };

function b64url(part: string): Buffer {
  if (!/^[A-Za-z0-9_-]*$/.test(part)) throw new Unauthorized("invalid token: not base64url");
  return Buffer.from(part, "base64url");
}

export class Authenticator {
  private key: Buffer;
  readonly origins: Set<string>;

  constructor(secret: string, origins: string[] = []) {
    this.key = Buffer.from(secret, "utf8");
    this.origins = new Set(origins);
  }

  /** ``?token=`` (browsers) or ``Authorization: Bearer`` (everyone else). */
  tokenFrom(query: URLSearchParams, headers: Headers): string | null {
    const token = query.get("token");
    if (token) return token;
    const header = headers.get("authorization") ?? "";
    const space = header.indexOf(" ");
    if (space < 0) return null;
    const value = header.slice(space + 1).trim();
    return header.slice(0, space).toLowerCase() === "bearer" && value ? value : null;
  }

  /** The verified claims (HS256 only; ``sub`` and ``exp`` required), or Unauthorized. */
  claims(token: string | null): Claims {
    if (!token) throw new Unauthorized("missing token");
    const parts = token.split(".");
    if (parts.length !== 3) throw new Unauthorized("invalid token: not a JWS");
    let header: Record<string, unknown>;
    let claims: Record<string, unknown>;
    try {
      header = JSON.parse(b64url(parts[0]).toString("utf8"));
      claims = JSON.parse(b64url(parts[1]).toString("utf8"));
    } catch (exc) {
      if (exc instanceof Unauthorized) throw exc;
      throw new Unauthorized("invalid token: not JSON");
    }
    if (typeof header !== "object" || header === null || header.alg !== "HS256") {
      throw new Unauthorized("invalid token: the algorithm is not allowed");
    }
    const expected = createHmac("sha256", this.key).update(`${parts[0]}.${parts[1]}`).digest();
    const given = b64url(parts[2]);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      throw new Unauthorized("invalid token: Signature verification failed");
    }
    if (typeof claims !== "object" || claims === null || Array.isArray(claims)) {
      throw new Unauthorized("invalid token: claims are not an object");
    }
    const now = Date.now() / 1000;
    for (const name of ["sub", "exp"]) {
      if (!(name in claims)) throw new Unauthorized(`invalid token: Token is missing the "${name}" claim`);
    }
    for (const name of ["exp", "nbf", "iat"]) {
      if (name in claims && typeof claims[name] !== "number") {
        throw new Unauthorized(`invalid token: ${name} must be a number`);
      }
    }
    if ((claims.exp as number) <= now) throw new Unauthorized("token expired");
    if ("nbf" in claims && (claims.nbf as number) > now) throw new Unauthorized("invalid token: not yet valid");
    if ("iat" in claims && (claims.iat as number) > now) throw new Unauthorized("invalid token: issued in the future");
    if (typeof claims.sub !== "string" || !claims.sub) throw new Unauthorized("token has no user");
    return claims as Claims;
  }

  /** A token for ``user`` (the server's own warm-up; clients get theirs from the back end). */
  token(user: string, ttl = 60): string {
    const part = (obj: object) => Buffer.from(JSON.stringify(obj)).toString("base64url");
    const now = Math.floor(Date.now() / 1000);
    const body = `${part({ alg: "HS256", typ: "JWT" })}.${part({ sub: user, iat: now, exp: now + ttl })}`;
    return `${body}.${createHmac("sha256", this.key).update(body).digest("base64url")}`;
  }

  /** Cross-site WebSocket hijacking defence; an empty allow-list allows every origin. */
  originAllowed(origin: string | null): boolean {
    return this.origins.size === 0 || (origin !== null && this.origins.has(origin));
  }
}

/** ``user:<id>`` is private to ``<id>``; every other valid channel is open in v1. */
export function maySubscribe(user: string, channel: string): boolean {
  return channel.startsWith(PRIVATE_PREFIX) ? channel.slice(PRIVATE_PREFIX.length) === user : true;
}

/** Clients never publish to private or presence channels (server-side paths do). */
export function mayPublish(user: string, channel: string): boolean {
  return !channel.startsWith(PRIVATE_PREFIX) && channel !== PRESENCE_CHANNEL;
}
