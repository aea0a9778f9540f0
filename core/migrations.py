"""Apply the Alembic migrations programmatically (`alliance migrate`, tests, `make run`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

import migrations


def alembic_config(database_url: str) -> Config:
    """Built in code, not from alembic.ini, so that an installed (non-editable) package migrates."""
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).resolve().parent))
    config.set_main_option("path_separator", "os")
    config.attributes["database_url"] = database_url
    return config


def upgrade_to_head(database_url: str) -> None:
    """Blocking; call from sync code or via `upgrade_to_head_async` inside an event loop."""
    command.upgrade(alembic_config(database_url), "head")


async def upgrade_to_head_async(database_url: str) -> None:
    # env.py runs its own event loop, so it must run on a thread without one.
    await asyncio.to_thread(upgrade_to_head, database_url)
