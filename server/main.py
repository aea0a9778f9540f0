"""The application `alliance serve` runs: the exchange's API with every layer above it attached.

`exchange` cannot import `settlement` (it sits below it), so the statement endpoints and the
console are attached here, at the top.
"""

from __future__ import annotations

from fastapi import FastAPI

from console.app import build_console
from core.clock import Clock
from core.database import Database
from exchange.main import create_app as create_exchange_app
from settlement.api import router as statements_router


def create_app(*, database: Database | None = None, clock: Clock | None = None) -> FastAPI:
    """The whole app. Tests pass their own database and clock; `alliance serve` passes neither."""
    app = create_exchange_app(database=database, clock=clock)
    app.include_router(statements_router)
    build_console(app)  # the admin console, at /console
    return app


def app_factory() -> FastAPI:
    """For `uvicorn --factory server.main:app_factory` (what `alliance serve` runs)."""
    return create_app()
