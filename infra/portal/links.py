"""Signed, expiring portal links: `billing portal link SUB` prints
`BASE/portal/enter?token=T`, where T is the subscription and an expiry signed with HMAC-SHA256
under a secret kept in PostgreSQL (`portal_secrets`, made on first use). Opening the link puts
the same token in a cookie (HttpOnly, SameSite=Strict, Path=/portal) and redirects to the
portal without it, so the token leaves the address bar and the server's access log never sees
a query string. Every request checks the signature and the expiry again."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

SCHEMA = """
CREATE TABLE IF NOT EXISTS portal_secrets (
    id serial PRIMARY KEY,
    secret bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)"""
DEFAULT_TTL_SECONDS = 3600
MAX_TTL_SECONDS = 30 * 24 * 3600


@dataclass(frozen=True)
class Visitor:
    """Whoever holds a valid link: acts on this one subscription until `expires`."""

    subscription: str
    expires: int  # Unix seconds


def secrets_of(conn: psycopg.Connection[Any]) -> list[bytes]:
    """The signing secrets, newest first (made on first use; the table too, except where
    the owner made it for a least-privileged API login, `billing roles setup`)."""
    if conn.execute("SELECT to_regclass('portal_secrets')").fetchone() == (None,):
        conn.execute(SCHEMA)
    rows = conn.execute("SELECT secret FROM portal_secrets ORDER BY id DESC").fetchall()
    if not rows:
        conn.execute("INSERT INTO portal_secrets (secret) VALUES (%s)",
                     (secrets.token_bytes(32),))
        rows = conn.execute("SELECT secret FROM portal_secrets ORDER BY id DESC").fetchall()
    return [bytes(r[0]) for r in rows]


def sign(secret: bytes, subscription: str, expires: int) -> str:
    payload = _b64(f"{expires}|{subscription}".encode())
    return f"{payload}.{_b64(_mac(secret, payload))}"


def verify(keys: list[bytes], token: str, now: datetime) -> Visitor | None:
    """The visitor of a token signed by any of `keys` and not expired, else None."""
    payload, dot, signature = token.partition(".")
    if not dot or len(token) > 1000:
        return None
    try:
        given = _unb64(signature)
        expires_text, bar, subscription = _unb64(payload).decode().partition("|")
        expires = int(expires_text)
    except (ValueError, UnicodeDecodeError):
        return None
    if not bar or not subscription:
        return None
    if not any(hmac.compare_digest(_mac(key, payload), given) for key in keys):
        return None
    if expires <= now.timestamp():
        return None
    return Visitor(subscription, expires)


def _mac(secret: bytes, payload: str) -> bytes:
    return hmac.new(secret, payload.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
