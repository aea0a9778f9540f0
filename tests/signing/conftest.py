"""The API fixtures (an app on the real test database, an httpx client, a partner with a key), so
that the signature tests can also send their requests through the whole stack."""

from tests.api.conftest import app, client, partner

__all__ = ["app", "client", "partner"]
