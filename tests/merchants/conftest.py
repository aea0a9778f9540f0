"""Helpers for the merchant tests: fresh merchants and keys with unique names."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.clock import FixedClock
from core.database import Database
from merchants import service
from merchants.models import Merchant

MakeMerchant = Callable[..., Awaitable[Merchant]]


def raw_public_key() -> bytes:
    public = Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_merchant(db: Database, clock: FixedClock) -> MakeMerchant:
    async def make(*, liability_limit: int = 1_000_000, **kwargs: object) -> Merchant:
        return await service.create_merchant(
            db,
            name=unique("Shop"),
            liability_limit=liability_limit,
            now=clock.now(),
            **kwargs,  # type: ignore[arg-type]
        )

    return make
