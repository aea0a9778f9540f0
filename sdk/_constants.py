"""Every default and bound of the client, named with its unit, in one place."""

from __future__ import annotations

from typing import Final

__version__: Final = "0.1.0"

DEFAULT_BASE_URL: Final = "http://127.0.0.1:8000"
"""Where `make run` serves the demo exchange; a real partner always passes its own."""

TIMEOUT_S: Final = 10.0
"""Per attempt: the longest wait for a read, a write or a free connection."""
CONNECT_TIMEOUT_S: Final = 5.0

MAX_RETRIES: Final = 3
"""Retries after the first attempt, so at most 4 attempts per logical call."""
RETRY_DELAY_S_INITIAL: Final = 0.5
"""The wait before the first retry; it doubles before each further retry..."""
RETRY_DELAY_S_MAX: Final = 8.0
"""...up to this."""
RETRY_JITTER: Final = 0.25
"""Each computed wait is shortened by up to this fraction, at random, so clients spread out."""
RETRY_AFTER_S_MAX: Final = 60.0
"""A `Retry-After` longer than this is not waited out: the error goes to the caller instead."""

BATCH_OPERATIONS_MAX: Final = 1_000
"""Operations in one `POST /v1/batches` (PROTOCOL.md)."""
PAGE_SIZE_MAX: Final = 100
"""The largest `limit` the exchange accepts on list endpoints; the iterators ask for this."""

IDEMPOTENCY_KEY_LENGTH_MAX: Final = 255
NONCE_BYTES: Final = 16
"""Random bytes in each signature's nonce (22 base64url characters)."""

PRIVATE_KEY_FILE_MODE: Final = 0o600

ENV_BASE_URL: Final = "ALLIANCE_BASE_URL"
ENV_KEY_ID: Final = "ALLIANCE_KEY_ID"
ENV_KEY_FILE: Final = "ALLIANCE_KEY_FILE"
