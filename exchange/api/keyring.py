"""The exchange's signing keys as a server process sees them: read at most once a minute."""

from __future__ import annotations

from datetime import datetime, timedelta

from core.database import Database
from core.limits import EXCHANGE_KEYS_CACHE_S
from exchange import exchange_keys
from exchange.exchange_keys import ExchangeKey


class KeyRing:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._keys: list[ExchangeKey] = []
        self._read_at: datetime | None = None

    async def published(self, now: datetime) -> list[ExchangeKey]:
        stale = self._read_at is None or now - self._read_at >= timedelta(
            seconds=EXCHANGE_KEYS_CACHE_S
        )
        if stale or not self._keys:
            await exchange_keys.signing_key(self.db, now)  # creates the first key if none
            self._keys = await exchange_keys.published_keys(self.db, now)
            self._read_at = now
        return self._keys

    async def signing_key(self, now: datetime) -> ExchangeKey:
        return (await self.published(now))[0]
