"""Every bound the system enforces, named with its unit, in one place (TigerStyle)."""

from __future__ import annotations

from typing import Final

POINTS_PER_OPERATION_MAX: Final = 1_000_000_000_000
"""Largest amount one issuance, redemption, hold or reversal may move (keeps sums inside int64)."""

BATCH_OPERATIONS_MAX: Final = 1_000
"""Operations in one POST /v1/batches (PROTOCOL.md)."""

REFERENCE_LENGTH_MAX: Final = 255
EXTERNAL_REF_LENGTH_MAX: Final = 255
IDEMPOTENCY_KEY_LENGTH_MAX: Final = 255
IDEMPOTENCY_RETENTION_S: Final = 7 * 24 * 3600

HOLD_LIFETIME_S_MAX: Final = 30 * 24 * 3600
LOTS_PER_REDEMPTION_MAX: Final = 10_000
"""A redemption touching more lots than this is refused (it would hold a member lock too long)."""

EXPOSURE_SLOTS: Final = 16
"""Headroom slots per issuer: concurrent issuances by one merchant spread over this many rows."""

PAGE_SIZE_DEFAULT: Final = 50
PAGE_SIZE_MAX: Final = 100

EXPIRY_BATCH_MEMBERS: Final = 500
"""Members written off per transaction by the expiry job."""

REQUEST_BODY_BYTES_MAX: Final = 1024 * 1024
"""Largest request body the API reads; a full batch of 1,000 operations fits well under it."""

EXCHANGE_KEYS_CACHE_S: Final = 60
"""How long a server process reuses the exchange's signing keys before reading them again."""

SIGNATURE_TOLERANCE_S: Final = 300
"""A request signature's `created` may differ from the server clock by at most this much, in either
direction: PROTOCOL.md says "within 300 s of the server clock". Older is a captured request sent
late; newer is a client whose clock runs ahead of ours. Both sides are forgiven equally, since a
client cannot know which way its clock is off."""

NONCE_GRACE_S: Final = 60
"""Extra time a spent nonce is kept past the last instant its signature could be accepted, so that
pruning racing a request at the edge of the window cannot forget a nonce too early."""

NONCE_RETENTION_S: Final = 2 * SIGNATURE_TOLERANCE_S + NONCE_GRACE_S
"""How long a (keyid, nonce) is remembered after the request that spent it. A signature created at
t is accepted while the server clock is in [t - 300 s, t + 300 s], so a nonce first seen at now0
(anywhere in that range) can come back until t + 300 s <= now0 + 600 s: twice the tolerance."""

NONCE_LENGTH_MAX: Final = 255
"""Longest `nonce` a signature may carry (the replay table stores each one)."""

STATEMENT_TIMEOUT_S: Final = 60
"""Client-side bound on one statement for the server's pool: a request never waits longer.
Operator commands (settle, expire, verify, the scheduler) run without it: their statements span
whole periods, and at 10,000,000 obligations the Merkle leaf sort of a run alone passed 60 s."""

BATCH_WORK_POOL_SIZE: Final = 2
"""Connections of the unbounded pool a request opens for batch work (`Database.for_batch_work`):
a settlement run holds one for its advisory lock and works on at most one more."""
