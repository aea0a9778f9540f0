"""Every bound of webhook delivery, named once, with why it is what it is (ADR 0022).

The module asserts the relations between them at import, so a change that breaks one (a lease
shorter than a request can take) fails at once rather than as a duplicate delivery in production.
"""

from __future__ import annotations

from typing import Final

MAX_ATTEMPTS: Final = 12
"""Attempts per event, the first included, before it is marked failed. With the backoff below
they span about 14.5 hours (up to 18 with jitter): a merchant whose endpoint is down overnight
still gets the event, and a dead endpoint stops costing requests the next day. Nothing is lost
when an event fails: the statement stays at GET /v1/statements."""

BACKOFF_BASE_S: Final = 30
"""The wait after the first failed attempt; each later wait doubles it (30 s, 1 min, 2 min, ...).
Long enough that a receiver restarting after a deploy is back; short enough that a blip delays
an event by under a minute."""

BACKOFF_MAX_S: Final = 6 * 3600
"""No wait is longer than this: late attempts stay a few hours apart, not days."""

BACKOFF_JITTER: Final = 0.5
"""Each wait is stretched by a random fraction in [0, this): the events of one settlement run,
which all fail together when a shared gateway is down, do not all come back in the same second.
Below 1, so the waits before the cap still grow: each is at least twice the previous base."""

REQUEST_TIMEOUT_S: Final = 10.0
"""Connect, read, write and pool timeout of one POST. A receiver should acknowledge and process
later; one that takes longer is treated as failed and retried."""

LEASE_S: Final = 120
"""How long a claimed event is kept from other deliverers (its `next_attempt_at` moves this far
ahead when claimed). Longer than any attempt (the request timeout plus signing and recording),
so a live deliverer's event is never sent by another; a deliverer that dies mid-attempt leaves it
to be retried once the lease passes (at least once)."""

CLAIM_BATCH: Final = 16
"""Events one deliverer claims at once and sends concurrently: a settlement run's events go out
together without one slow merchant holding up the rest for long, and without a burst of hundreds
of connections from one process."""

MAX_PER_RUN: Final = 10_000
"""Events one `deliver_due` call sends at most, so that a scheduler tick or an operator command
ends even if events keep becoming due while it runs; the next call carries on."""

RESPONSE_EXCERPT_CHARS: Final = 200
"""Characters of a receiver's answer kept with an attempt: enough for an error message, never a
body that could carry a merchant's data we did not ask to store."""

ERROR_CHARS: Final = 500
"""Characters of a transport error's text kept with an attempt."""

LIST_DEFAULT: Final = 20
"""Deliveries `alliance webhooks list` shows unless told otherwise."""

assert LEASE_S >= 4 * REQUEST_TIMEOUT_S, "a claimed event's lease outlasts its attempt"
assert 0 <= BACKOFF_JITTER < 1, "waits grow until the cap despite the jitter"
assert BACKOFF_BASE_S * (1 + BACKOFF_JITTER) <= BACKOFF_MAX_S
assert MAX_ATTEMPTS >= 1
assert CLAIM_BATCH >= 1
