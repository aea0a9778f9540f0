"""Replay protection: a signed request's (keyid, nonce) is accepted once, across all processes."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from core.database import Database


async def claim(conn: asyncpg.Connection, *, key_id: str, nonce: str, expires_at: datetime) -> bool:
    """True the first time this (key_id, nonce) is seen; False for a replay.

    Committed on its own (the connection must not be in a transaction): a nonce is spent once
    its signature is accepted, whatever then becomes of the request, unless the gateway refuses
    the request before it reaches the routes (`release`).
    """
    claimed = await conn.fetchval(
        """INSERT INTO request_nonces (key_id, nonce, expires_at) VALUES ($1, $2, $3)
           ON CONFLICT DO NOTHING RETURNING 1""",
        key_id,
        nonce,
        expires_at,
    )
    return claimed is not None


async def release(conn: asyncpg.Connection, *, key_id: str, nonce: str) -> None:
    """Forget a claim whose request was refused without effect (rate limited, say), so that the
    same signed request can be sent again. Only the claimant may call it, right after `claim`."""
    await conn.execute("DELETE FROM request_nonces WHERE key_id = $1 AND nonce = $2", key_id, nonce)


async def prune(db: Database, now: datetime) -> int:
    """Forget nonces whose signatures would be refused as expired anyway."""
    async with db.connection() as conn:
        result: str = await conn.execute("DELETE FROM request_nonces WHERE expires_at <= $1", now)
    return int(result.split()[-1])
