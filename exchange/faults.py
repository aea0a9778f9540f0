"""Fault injection for the crash tests (RELIABILITY.md I4, D2). A TEST HOOK: never set it in
production.

`ALLIANCE_FAULT_EXIT_AFTER_COMMIT=N` makes the process end itself with `os._exit(137)` (what a
`kill -9` leaves: no cleanup, no answer) right after the Nth mutation it committed, before its
response is sent: the client's connection drops, and only its retry under the same idempotency
key can learn what happened (tests/api/test_worker_kill.py).

The variable is read once, when this module is imported, and straight from the process
environment: it is deliberately not a `core.config.Settings` field, so it is no operator setting,
cannot come from a `.env` file, and is never documented for deployment. Unset (the only
production value), `after_commit` returns at once: a call and one comparison per commit.
"""

from __future__ import annotations

import os

EXIT_AFTER_COMMIT_VARIABLE = "ALLIANCE_FAULT_EXIT_AFTER_COMMIT"
EXIT_STATUS = 137
"""128 + SIGKILL, as a shell reports a process killed with `kill -9`."""


def _commits_left() -> int | None:
    value = os.environ.get(EXIT_AFTER_COMMIT_VARIABLE, "").strip()
    if not value:
        return None
    count = int(value)
    if count < 1:
        raise ValueError(f"{EXIT_AFTER_COMMIT_VARIABLE} must be a positive count, not {value!r}")
    return count


_commits_left_before_exit: int | None = _commits_left()


def after_commit() -> None:
    """Called by `exchange.service.Ledger` right after a mutation committed, before it answers.

    Counts the process's committed mutations when the test hook is set; ends the process at the
    Nth. A recorded refusal counts (its record is a commit of its own); so do a batch's
    operations, each as it commits one by one, and the batch's own record; issuances a batch
    writes set-based, in one transaction, do not."""
    global _commits_left_before_exit
    if _commits_left_before_exit is None:
        return
    _commits_left_before_exit -= 1
    if _commits_left_before_exit == 0:
        os.write(2, f"{EXIT_AFTER_COMMIT_VARIABLE}: exiting after a commit\n".encode())
        os._exit(EXIT_STATUS)
