"""The exchange's own Ed25519 keys: they sign every /v1/ response and every webhook.

The newest key not retired signs; every key not yet retired is published as a JWK set, so a
client that cached the old key keeps verifying during a rotation. Private keys sit in the
database so that every server process signs with the same key; a production deployment should
put this table's private half behind its KMS (see docs/decisions/0007-exchange-keys.md).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.database import Database
from core.ids import new_id

ROTATION_OVERLAP_DEFAULT = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class ExchangeKey:
    key_id: str
    private_key: Ed25519PrivateKey
    public_key: bytes
    created_at: datetime
    retires_at: datetime | None


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def jwk(key: ExchangeKey) -> dict[str, str]:
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": _b64url(key.public_key),
        "kid": key.key_id,
        "alg": "EdDSA",
        "use": "sig",
    }


def _generate(now: datetime) -> tuple[str, bytes, bytes]:
    private = Ed25519PrivateKey.generate()
    raw_private = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    raw_public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return new_id("xk"), raw_private, raw_public


async def published_keys(db: Database, now: datetime) -> list[ExchangeKey]:
    """Keys not yet retired, newest first."""
    async with db.connection() as conn:
        rows = await conn.fetch(
            """SELECT * FROM exchange_keys WHERE retires_at IS NULL OR retires_at > $1
               ORDER BY created_at DESC, key_id DESC""",
            now,
        )
    return [
        ExchangeKey(
            key_id=row["key_id"],
            private_key=Ed25519PrivateKey.from_private_bytes(bytes(row["private_key"])),
            public_key=bytes(row["public_key"]),
            created_at=row["created_at"],
            retires_at=row["retires_at"],
        )
        for row in rows
    ]


async def signing_key(db: Database, now: datetime) -> ExchangeKey:
    """The key that signs now; the first call on a new exchange creates one."""
    keys = await published_keys(db, now)
    if keys:
        return keys[0]
    async with db.transaction() as conn:
        # One process creates the first key; the others wait here and then find it.
        await conn.execute("LOCK TABLE exchange_keys IN SHARE ROW EXCLUSIVE MODE")
        exists = await conn.fetchval(
            "SELECT 1 FROM exchange_keys WHERE retires_at IS NULL OR retires_at > $1", now
        )
        if not exists:
            key_id, private, public = _generate(now)
            await conn.execute(
                """INSERT INTO exchange_keys (key_id, private_key, public_key, created_at)
                   VALUES ($1, $2, $3, $4)""",
                key_id,
                private,
                public,
                now,
            )
    return (await published_keys(db, now))[0]


async def rotate(
    db: Database, now: datetime, *, overlap: timedelta = ROTATION_OVERLAP_DEFAULT
) -> tuple[ExchangeKey, list[str]]:
    """Add a new signing key; keys in use now retire after `overlap` (still published till then)."""
    key_id, private, public = _generate(now)
    async with db.transaction() as conn:
        retiring = await conn.fetch(
            """UPDATE exchange_keys SET retires_at = $1
               WHERE retires_at IS NULL OR retires_at > $1 RETURNING key_id""",
            now + overlap,
        )
        await conn.execute(
            """INSERT INTO exchange_keys (key_id, private_key, public_key, created_at)
               VALUES ($1, $2, $3, $4)""",
            key_id,
            private,
            public,
            now,
        )
    keys = await published_keys(db, now)
    return keys[0], [row["key_id"] for row in retiring]


async def public_key_of(db: Database, key_id: str) -> bytes | None:
    """Any exchange key's public half, retired or not (old signatures stay verifiable)."""
    async with db.connection() as conn:
        public: bytes | None = await conn.fetchval(
            "SELECT public_key FROM exchange_keys WHERE key_id = $1", key_id
        )
    return None if public is None else bytes(public)
