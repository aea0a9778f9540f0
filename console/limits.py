"""Every bound the console enforces, named with its unit (see core/limits.py for the ledger's)."""

from __future__ import annotations

from typing import Final

PASSWORD_LENGTH_MIN: Final = 12
PASSWORD_LENGTH_MAX: Final = 1024
"""Argon2 hashes any length; the cap stops a megabyte "password" from costing a hash of it."""

LOGIN_FAILURES_MAX: Final = 5
"""Consecutive failed sign-ins (password or TOTP) after which an account is locked.
RELIABILITY.md A6 asks for the lock by the 11th failure at the latest; 5 is stricter."""
LOCKOUT_S: Final = 30 * 60
"""How long a lockout lasts: RELIABILITY.md A6 asks for at least 30 minutes, so that online
guessing gets at most LOGIN_FAILURES_MAX tries per half hour per account."""

SIGNIN_ADDRESS_FAILURES_MAX: Final = 20
"""Failed sign-ins from one client address (an IPv6 /64) after which that address is refused
until its window ends, whatever the username: the lockout above stops guessing one account's
password, this stops one client spraying guesses over many accounts."""
SIGNIN_ADDRESS_WINDOW_S: Final = 15 * 60
"""The window the failures above are counted in, from the first failure in it."""

SESSION_IDLE_S: Final = 15 * 60
"""A session unused this long is over and must sign in again (RELIABILITY.md A6: re-auth after
15 minutes idle). Use is recorded at most every SESSION_TOUCH_S, so a session may end up to that
much sooner than 15 minutes after its last request, never later."""
SESSION_ABSOLUTE_S: Final = 12 * 3600
"""...and no session outlives this, however busy."""
SECOND_FACTOR_WINDOW_S: Final = 5 * 60
"""Time between a right password and the TOTP code that completes the sign-in."""
SESSION_TOUCH_S: Final = 60
"""`last_seen_at` is written at most this often per session (not on every request)."""

TOTP_STEPS_ACCEPTED: Final = 1
"""Codes from this many 30-second steps either side of now are accepted (clock drift)."""

PAGE_SIZE: Final = 50
MEMBER_REFS_SHOWN: Final = 100
"""A member page lists this many of the member's external references (a member has a handful)."""
STATEMENTS_SHOWN: Final = 20
"""A merchant's page shows its settlement statements this many at a time."""
DUE_PERIODS_SHOWN: Final = 31
"""The settlement page names this many of the periods due (and says how many there are)."""
EXPORT_ROWS_MAX: Final = 100_000
"""A CSV export stops here; narrow the filter for more (the file says so in its last line)."""

READ_TIMEOUT_MS: Final = 15_000
"""statement_timeout for console reads: a page never holds a connection longer than this."""

DASHBOARD_DAYS: Final = 30
DASHBOARD_CACHE_S: Final = 30
"""Charts are computed at most this often per process."""
DAY_CLOSED_AFTER_S: Final = 3600
"""A business day's totals are cached once it ended this long ago (no transaction still open)."""

AUDIT_VERIFY_BATCH: Final = 5_000
AUDIT_FULL_VERIFY_S: Final = 600
"""The audit chain is re-verified from the first entry at least this often; in between, only the
entries after the last verified one (which must itself still match) are checked."""

REASON_LENGTH_MAX: Final = 500

JOB_HEARTBEAT_S: Final = 1.0
"""A settlement job started from the console writes its progress and heartbeat this often."""
JOB_STALE_S: Final = 30
"""A job whose heartbeat is older than this is no longer running (its worker stopped): the
page says so, and the next start closes it as interrupted. Far above the heartbeat, so a busy
database delaying a beat or two never takes a live job for a dead one."""
JOB_PAGE_REFRESH_S: Final = 2
"""While a job runs, the settlement page reloads itself this often to show its progress."""
