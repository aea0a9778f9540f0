"""Settings read from the environment (and a `.env` file), validated once at start-up."""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Process-wide settings. `DATABASE_URL` unset means: run the embedded PostgreSQL."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str | None = Field(default=None, alias="DATABASE_URL")
    data_dir: Path = Field(default=Path(".data"), alias="ALLIANCE_DATA_DIR")
    pool_min_size: int = Field(default=2, alias="ALLIANCE_POOL_MIN_SIZE")
    pool_max_size: int = Field(default=20, alias="ALLIANCE_POOL_MAX_SIZE")
    host: str = Field(default="127.0.0.1", alias="ALLIANCE_HOST")
    port: int = Field(default=8000, alias="ALLIANCE_PORT")
    rate_limit_per_s: float = Field(default=200.0, alias="ALLIANCE_RATE_LIMIT_PER_S")
    rate_limit_burst: int = Field(default=400, alias="ALLIANCE_RATE_LIMIT_BURST")
    log_json: bool = Field(default=True, alias="ALLIANCE_LOG_JSON")
    # The alliance's own account: debtor of the payment files' credit transfers, creditor of the
    # collections. Checked (IBAN mod 97, BIC shape) where the files are made,
    # settlement.payments.Treasury. The defaults are ISO 13616's published example account.
    treasury_name: str = Field(default="Demo Alliance Treasury", alias="ALLIANCE_TREASURY_NAME")
    treasury_iban: str = Field(default="NL91ABNA0417164300", alias="ALLIANCE_TREASURY_IBAN")
    treasury_bic: str | None = Field(default="ABNANL2A", alias="ALLIANCE_TREASURY_BIC")
    # Development and tests only: webhooks may go to loopback and private addresses, and plain
    # http:// to loopback (ADR 0022, merchants.webhook_urls). Off, they go to public https only.
    webhook_allow_private_targets: bool = Field(
        default=False, alias="ALLIANCE_WEBHOOK_ALLOW_PRIVATE_TARGETS"
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


_warned: set[int] = set()


def webhook_private_targets_allowed() -> bool:
    """`ALLIANCE_WEBHOOK_ALLOW_PRIVATE_TARGETS`; when on, a warning is logged (once per settings
    read), for it lets a merchant's webhook URL point into the exchange's own network."""
    settings = get_settings()
    allowed = settings.webhook_allow_private_targets
    if allowed and id(settings) not in _warned:
        _warned.add(id(settings))
        logging.getLogger("alliance.webhooks").warning(
            "ALLIANCE_WEBHOOK_ALLOW_PRIVATE_TARGETS is on: webhook URLs may point at loopback and "
            "private addresses, and use http:// to loopback. For development and tests only."
        )
    return allowed
