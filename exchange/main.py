"""The exchange's web application: the composition root of the merchant API v1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from core.clock import Clock, SystemClock
from core.config import get_settings
from core.database import Database, resolve_database_url
from core.durability import ensure_durable
from exchange.api import errors
from exchange.api.gateway import Gateway
from exchange.api.keyring import KeyRing
from exchange.api.observability import RequestContext, configure_logging, metrics_response
from exchange.api.ratelimit import RateLimiter
from exchange.api.routes import router
from exchange.openapi import describe_security
from exchange.service import Ledger


def create_app(*, database: Database | None = None, clock: Clock | None = None) -> FastAPI:
    """The app. Tests pass their own database and clock; `alliance serve` passes neither."""
    settings = get_settings()
    configure_logging(json=settings.log_json)
    app_clock = clock or SystemClock()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = database is None
        db = database or await Database.connect(
            resolve_database_url(settings),
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
        )
        try:  # RELIABILITY.md D7, ADR 0023: never serve on a database that could lose commits
            async with db.connection() as conn:
                await ensure_durable(conn)
        except BaseException:
            if owned:
                await db.close()
            raise
        app.state.db = db
        app.state.clock = app_clock
        app.state.ledger = Ledger(db, app_clock)
        app.state.keyring = KeyRing(db)
        app.state.rate_limiter = RateLimiter(
            rate_per_s=settings.rate_limit_per_s, burst=settings.rate_limit_burst
        )
        try:
            yield
        finally:
            if owned:
                await db.close()

    app = FastAPI(
        title="Alliance Points Exchange — merchant API",
        version="1.0.0",
        lifespan=lifespan,
        description=(
            "The contract partner merchants integrate against (PROTOCOL.md v1). Every /v1/ "
            "request but GET /v1/exchange-keys is signed with RFC 9421 HTTP Message Signatures "
            "(Ed25519); every /v1/ response is signed by the exchange. Errors are RFC 9457 "
            "problem+json with a stable `code`."
        ),
    )
    errors.install(app)
    app.include_router(router)
    _add_operator_routes(app)
    app.add_middleware(Gateway)
    app.add_middleware(RequestContext)
    describe_security(app)
    return app


def _add_operator_routes(app: FastAPI) -> None:
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        database: Database = request.app.state.db
        try:
            async with database.connection() as conn:
                await conn.fetchval("SELECT 1")
        except OSError:
            return JSONResponse({"status": "database unreachable"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return metrics_response()

    @app.get("/", include_in_schema=False)
    async def index() -> dict[str, str]:
        """Where things are. Nothing about the alliance's figures: this page is unauthenticated,
        and what the ledger holds is for the console's signed-in operators."""
        return {
            "service": "alliance points exchange",
            "api": "/v1/",
            "exchange_keys": "/v1/exchange-keys",
            "openapi": "/openapi.json",
            "console": "/console/",
        }
