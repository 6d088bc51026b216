"""API keys: `bk_<key id>_<secret>`, stored as the key id and the SHA-256 of the secret.

A tenant key acts for one account; an admin key (operators) for every account. The secret is
32 random bytes, so a plain hash cannot be reversed by guessing: a slow password hash (bcrypt,
argon2) would only cost every request a few milliseconds. The token is shown once, at creation;
the store and the logs never hold it."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id text PRIMARY KEY,
    secret_sha256 bytea NOT NULL,
    account text,
    admin boolean NOT NULL,
    label text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    CHECK (admin OR account IS NOT NULL)
)"""
PREFIX = "bk_"


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: an account (tenant key) or every account (admin key)."""

    key_id: str
    account: str | None
    admin: bool

    def may_see(self, account: str | None) -> bool:
        return self.admin or (account is not None and account == self.account)


@dataclass(frozen=True)
class CreatedKey:
    key_id: str
    token: str
    account: str | None
    admin: bool


def ensure_schema(conn: psycopg.Connection[Any]) -> None:
    """Several API processes start at once: one creates the table, the others wait."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('billing-api-keys-schema'))")
        conn.execute(SCHEMA)


def create(conn: psycopg.Connection[Any], *, account: str | None, admin: bool,
           label: str = "") -> CreatedKey:
    if admin == (account is not None):
        raise ValueError("a key is either a tenant's (an account) or an operator's (admin)")
    ensure_schema(conn)
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    conn.execute("INSERT INTO api_keys (key_id, secret_sha256, account, admin, label) "
                 "VALUES (%s, %s, %s, %s, %s)",
                 (key_id, _digest(secret), account, admin, label))
    return CreatedKey(key_id, f"{PREFIX}{key_id}_{secret}", account, admin)


def revoke(conn: psycopg.Connection[Any], key_id: str, at: datetime) -> bool:
    ensure_schema(conn)
    done = conn.execute("UPDATE api_keys SET revoked_at = %s WHERE key_id = %s AND "
                        "revoked_at IS NULL", (at, key_id))
    return done.rowcount == 1


def listed(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    ensure_schema(conn)
    cur = conn.execute("SELECT key_id, account, admin, label, created_at, revoked_at "
                       "FROM api_keys ORDER BY created_at, key_id")
    names = [c.name for c in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def parse(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed token, else None."""
    if not token.startswith(PREFIX):
        return None
    key_id, sep, secret = token[len(PREFIX):].partition("_")
    if not sep or len(key_id) != 12 or not secret or len(secret) > 100:
        return None
    return key_id, secret


def matches(stored_digest: bytes, secret: str) -> bool:
    return hmac.compare_digest(bytes(stored_digest), _digest(secret))


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()
