"""L2 (RELIABILITY.md): the points ledger against an in-memory reference model.

A Hypothesis state machine drives random sequences of issue (one by one, and runs written
set-based as batches write them), redeem, hold / capture / void,
reverse (of issuances and redemptions, full and partial, exceeding and after the points were
spent), clock moves (onto, just before and just after the instants lots expire and holds lapse),
the expiry job, and idempotent replays (of results, and of refusals: ADR 0013), against the real
`Ledger` on the real PostgreSQL and against `tests.exchange.model.Model` (written from DOMAIN.md,
independent of the ledger's rules).
After every step they must agree on each member's available, held and next expiry; each lot's
remaining points; obligations per (debtor, creditor) net of reversals; each issuer's outstanding;
the transactions written; the holds' states; and the double-entry invariants (postings sum to
zero per transaction and currency; member_accounts.posted_points = the sum of the member's lots'
remaining = the sum of the postings to the member's account).

Each example uses fresh merchants and members and a FixedClock starting at a fresh instant in
2026 (the test alliance settings, point value 1, fee 5%, points lifetime 365 days, hold lifetime
900 s, hold until 2031; the clock never passes 2029).

Profiles (chosen with the HYPOTHESIS_PROFILE environment variable, read by this module only, so
other Hypothesis tests keep their own settings):
- `ci` (the default, run by `make test`): 100 examples x up to 50 steps (about 20 s here).
- `nightly`: 2,000 examples x up to 100 steps (about 20 min here), run as
  `HYPOTHESIS_PROFILE=nightly .venv/bin/pytest tests/exchange/test_model.py`.
A failure prints the minimal failing sequence and a `@reproduce_failure` blob, and is kept in the
Hypothesis example database (.hypothesis/), which replays it first on the next run.

The ledger is asyncio; Hypothesis's stateful rules are synchronous. The whole run therefore happens
in a worker thread with its own event loop and its own connection pool, each rule calling
`loop.run_until_complete(...)`; the test's own (session) loop only awaits that thread.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.database import (
    DirectoryBasedExampleDatabase,
    ExampleDatabase,
    MultiplexedDatabase,
    ReadOnlyDatabase,
)
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from core.clock import FixedClock
from core.database import Database
from core.errors import DomainError
from core.limits import IDEMPOTENCY_RETENTION_S
from exchange.bulk import IssueRequest
from exchange.idempotency import RefusalReplayed
from exchange.service import Ledger, Outcome
from tests.exchange import model as reference
from tests.exchange.model import Model, Refused
from tests.factories import DEFAULT_SETTINGS, make_member, make_merchant

T = TypeVar("T")


REGRESSIONS = Path(__file__).with_name("model_regressions")
"""Failing examples the nightly run found, kept in the repository (RELIABILITY.md L2): every run
replays them first. The nightly profile writes a new failure here, to be committed with its fix;
CI only reads them, so a test run never changes the working tree."""


LOCAL_EXAMPLES = Path(".hypothesis/examples")  # Hypothesis's own default, not in git


def examples(local: Path, kept: Path, *, keep_failures: bool) -> ExampleDatabase:
    """Both databases are read; new failures go to `local`, and to `kept` only at night."""
    kept_db = DirectoryBasedExampleDatabase(kept)
    return MultiplexedDatabase(
        DirectoryBasedExampleDatabase(local),
        kept_db if keep_failures else ReadOnlyDatabase(kept_db),
    )


def profile(examples_max: int, steps: int, *, keep_failures: bool) -> settings:
    return settings(
        max_examples=examples_max,
        stateful_step_count=steps,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        print_blob=True,
        database=examples(LOCAL_EXAMPLES, REGRESSIONS, keep_failures=keep_failures),
    )


PROFILES = {
    "ci": profile(100, 50, keep_failures=False),
    "nightly": profile(2000, 100, keep_failures=True),
}
PROFILE = PROFILES.get(os.environ.get("HYPOTHESIS_PROFILE", "ci"), PROFILES["ci"])

MERCHANTS = 3
MEMBERS = 3
LIABILITY_LIMIT = 10**15
YEAR_START = datetime(2026, 1, 1, tzinfo=UTC)
CLOCK_LIMIT = datetime(2029, 12, 31, tzinfo=UTC)
"""The test settings hold before 2031; the clock stays well inside them."""

TICK = timedelta(microseconds=1)
EXPIRY_OFFSETS = [
    TICK,
    timedelta(seconds=1),
    timedelta(seconds=60),
    timedelta(seconds=900),
    timedelta(hours=1),
    timedelta(days=1),
    timedelta(days=7),
    timedelta(days=30),
]
CLOCK_STEPS = [
    TICK,
    timedelta(seconds=1),
    timedelta(seconds=59),
    timedelta(seconds=899),
    timedelta(seconds=900),
    timedelta(hours=1),
    timedelta(days=1),
    timedelta(days=7),
    timedelta(days=8),
    timedelta(days=30),
    timedelta(days=180),
    timedelta(days=365),
]

RECORDED_REFUSALS = frozenset(
    {
        "insufficient_points",
        "not_found",
        "liability_limit_exceeded",
        "hold_not_active",
        "reversal_exceeds_original",
    }
)
"""The refusals a key replays (ADR 0013, docs/protocol.md): those of a ledger rule, met once the
request ran. A validation_error is not recorded: corrected or not, the request runs again."""

merchant_index = st.integers(0, MERCHANTS - 1)
member_index = st.integers(0, MEMBERS - 1)
pick = st.integers(0, 10_000)
"""Which of the existing transactions or holds a rule acts on (modulo how many there are)."""
ROUNDING_TIES = (10, 30, 50, 70, 90, 110)
"""Points whose 5% fee is exactly half a minor unit (at point value 1): half-to-even decides."""
issued_points = st.one_of(st.integers(1, 200), st.sampled_from(ROUNDING_TIES))
amount = st.tuples(
    st.sampled_from(("some", "some", "all", "one_more", "any")),
    st.one_of(st.integers(1, 300), st.sampled_from(ROUNDING_TIES)),
)
"""How many points, relative to what there is room for (`sized`), so that boundaries get hit."""
active_first = st.sampled_from((True, True, False))
"""Capture or void mostly an active hold; else any, captured, voided or lapsed."""
foreign_actor = st.sampled_from((False, False, False, True))
"""Sometimes another merchant than the owner acts: it must get not_found and change nothing."""

_keys = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_keys)}-{uuid.uuid4().hex[:8]}"


def sized(choice: tuple[str, int], room: int) -> int:
    """Points for `choice` given `room` (what would just fit): some of it, all of it, one more
    than it, or any number up to 300."""
    mode, number = choice
    if mode == "some":
        return 1 + (number - 1) % max(room, 1)
    if mode == "all":
        return max(room, 1)
    if mode == "one_more":
        return max(room, 0) + 1
    return number


def parse_instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


def next_midnight(now: datetime, days: int) -> datetime:
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight + timedelta(days=days + 1)


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self, loop: asyncio.AbstractEventLoop, db: Database) -> None:
        super().__init__()
        self.loop = loop
        self.db = db
        self.clock = FixedClock(YEAR_START)
        self.ledger = Ledger(db, self.clock)
        self.merchants = [
            self.run(make_merchant(db, liability_limit=LIABILITY_LIMIT)) for _ in range(MERCHANTS)
        ]
        self.members = [self.run(make_member(self.ledger)) for _ in range(MEMBERS)]
        self.model: Model | None = None
        # Successful mutations, to replay: (method, arguments, response body, when).
        self.done: list[tuple[str, dict[str, Any], dict[str, Any], datetime]] = []
        # Refused ones, to replay: (method, arguments, the refusal, when). A refusal by a ledger
        # rule (RECORDED_REFUSALS) replays; any other (validation_error) runs again.
        self.refused: list[tuple[str, dict[str, Any], DomainError, datetime]] = []

    def run(self, awaitable: Awaitable[T]) -> T:
        return self.loop.run_until_complete(awaitable)  # type: ignore[arg-type]

    @property
    def m(self) -> Model:
        assert self.model is not None
        return self.model

    @initialize(start=st.integers(0, 300 * 24 * 3600))
    def start(self, start: int) -> None:
        now = YEAR_START + timedelta(seconds=start)
        self.clock.set(now)
        self.model = Model(now)

    # --- calling both sides --------------------------------------------------------------

    def call(self, method: str, **arguments: Any) -> tuple[dict[str, Any] | None, str | None]:
        """Run a ledger mutation with a fresh idempotency key: (body, None) or (None, code)."""
        arguments["idempotency_key"] = unique("key")
        try:
            outcome: Outcome = self.run(getattr(self.ledger, method)(**arguments))
        except DomainError as error:
            refusal = error
        else:
            assert not outcome.replayed, f"a fresh key was replayed: {arguments}"
            self.done.append((method, arguments, outcome.body, self.clock.now()))
            return outcome.body, None
        assert not isinstance(refusal, RefusalReplayed), f"a fresh key was replayed: {arguments}"
        self.refused.append((method, arguments, refusal, self.clock.now()))
        return None, refusal.code

    def expect(
        self, operation: Callable[..., dict[str, Any]], **arguments: Any
    ) -> tuple[dict[str, Any] | None, str | None]:
        try:
            return operation(**arguments), None
        except Refused as refusal:
            return None, refusal.code

    @staticmethod
    def agree(
        what: str,
        actual: tuple[dict[str, Any] | None, str | None],
        expected: tuple[dict[str, Any] | None, str | None],
    ) -> None:
        body, code = actual
        expected_body, expected_code = expected
        assert code == expected_code, (
            f"{what}: the ledger answered {code or body}, the model expected "
            f"{expected_code or expected_body}"
        )
        if expected_body is not None:
            assert body is not None
            differing = {
                name: (body.get(name), value)
                for name, value in expected_body.items()
                if body.get(name) != value
            }
            assert not differing, f"{what}: (ledger, model) differ: {differing}"

    # --- operations ----------------------------------------------------------------------

    def _issue(self, merchant: int, member: int, points: int, expires_at: datetime | None) -> None:
        actual = self.call(
            "issue",
            merchant_id=self.merchants[merchant],
            member_id=self.members[member],
            points=points,
            reference=unique("ref"),
            expires_at=expires_at,
        )
        expected = self.expect(
            self.m.issue,
            merchant=self.merchants[merchant],
            member=self.members[member],
            points=points,
            expires_at=expires_at,
            transaction_id=actual[0]["transaction_id"] if actual[0] else "(refused)",
        )
        self.agree("issue", actual, expected)

    @rule(merchant=merchant_index, member=member_index, points=issued_points)
    def issue(self, merchant: int, member: int, points: int) -> None:
        self._issue(merchant, member, points, None)

    @rule(
        merchant=merchant_index,
        plan=st.lists(st.tuples(member_index, issued_points), min_size=2, max_size=4),
    )
    def issue_run(self, merchant: int, plan: list[tuple[int, int]]) -> None:
        """A run of issuances written set-based (`Ledger.issue_many`, as /v1/batches writes
        them): each must be what the model gives issuing them one after another. A run the
        ledger gives back (a limit in the way) is issued one by one, as the batch does."""
        requests = [
            IssueRequest(unique("key"), self.members[member], points, unique("ref"))
            for member, points in plan
        ]
        results = self.run(
            self.ledger.issue_many(merchant_id=self.merchants[merchant], requests=requests)
        )
        if results is None:
            for member, points in plan:
                self._issue(merchant, member, points, None)
            return
        for request, result, (member, points) in zip(requests, results, plan, strict=True):
            actual: tuple[dict[str, Any] | None, str | None]
            if isinstance(result, DomainError):
                assert not isinstance(result, RefusalReplayed), "a fresh key was replayed"
                actual = (None, result.code)
                arguments = {
                    "merchant_id": self.merchants[merchant],
                    "member_id": request.member_id,
                    "points": points,
                    "reference": request.reference,
                    "expires_at": None,
                    "idempotency_key": request.idempotency_key,
                }
                self.refused.append(("issue", arguments, result, self.clock.now()))
            else:
                assert not result.replayed, "a fresh key was replayed"
                actual = (result.body, None)
                arguments = {
                    "merchant_id": self.merchants[merchant],
                    "member_id": request.member_id,
                    "points": points,
                    "reference": request.reference,
                    "expires_at": None,
                    "idempotency_key": request.idempotency_key,
                }
                # Replayed later through the single `issue`: the fingerprints must agree.
                self.done.append(("issue", arguments, result.body, self.clock.now()))
            expected = self.expect(
                self.m.issue,
                merchant=self.merchants[merchant],
                member=self.members[member],
                points=points,
                expires_at=None,
                transaction_id=actual[0]["transaction_id"] if actual[0] else "(refused)",
            )
            self.agree("issue_many", actual, expected)

    @rule(
        merchant=merchant_index,
        member=member_index,
        points=issued_points,
        offset=st.sampled_from(EXPIRY_OFFSETS),
        midnight=st.one_of(st.none(), st.integers(0, 3)),
    )
    def issue_expiring(
        self, merchant: int, member: int, points: int, offset: timedelta, midnight: int | None
    ) -> None:
        """An explicit expiry: an offset from now, or a shared midnight (ties in lot order)."""
        now = self.clock.now()
        expires_at = now + offset if midnight is None else next_midnight(now, midnight)
        self._issue(merchant, member, points, expires_at)

    @rule(merchant=merchant_index, member=member_index, choice=amount)
    def redeem(self, merchant: int, member: int, choice: tuple[str, int]) -> None:
        member_id = self._spender(member)
        points = sized(choice, self.m.available(member_id))
        actual = self.call(
            "redeem",
            merchant_id=self.merchants[merchant],
            member_id=member_id,
            points=points,
            reference=unique("ref"),
        )
        expected = self.expect(
            self.m.redeem,
            merchant=self.merchants[merchant],
            member=member_id,
            points=points,
            transaction_id=actual[0]["transaction_id"] if actual[0] else "(refused)",
        )
        self.agree("redeem", actual, expected)

    @rule(
        merchant=merchant_index,
        member=member_index,
        choice=amount,
        lifetime_s=st.sampled_from([None, 1, 60, 900, 3600]),
    )
    def hold(
        self, merchant: int, member: int, choice: tuple[str, int], lifetime_s: int | None
    ) -> None:
        member_id = self._spender(member)
        points = sized(choice, self.m.available(member_id))
        actual = self.call(
            "hold",
            merchant_id=self.merchants[merchant],
            member_id=member_id,
            points=points,
            reference=unique("ref"),
            expires_in_seconds=lifetime_s,
        )
        expected = self.expect(
            self.m.hold,
            merchant=self.merchants[merchant],
            member=member_id,
            points=points,
            lifetime_s=lifetime_s,
            hold_id=actual[0]["hold_id"] if actual[0] else "(refused)",
        )
        self.agree("hold", actual, expected)
        if actual[0] is not None:
            hold = self.m.holds[actual[0]["hold_id"]]
            assert parse_instant(actual[0]["expires_at"]) == hold.expires_at

    def _actor(self, owner: str, foreign: bool) -> str:
        if not foreign:
            return owner
        return self.merchants[(self.merchants.index(owner) + 1) % MERCHANTS]

    def _spender(self, index: int) -> str:
        """A member with points available if there is one (refusals come from the amounts)."""
        funded = [member for member in self.members if self.m.available(member) > 0]
        return funded[index % len(funded)] if funded else self.members[index]

    def _pick_hold(self, index: int, active_only: bool) -> reference.Hold:
        """The latest hold first; with `active_only`, an active one if there is any."""
        holds = list(self.m.holds.values())
        active = [hold for hold in holds if hold.active(self.m.now)]
        if active_only and active:
            holds = active
        return holds[-1 - index % len(holds)]

    @precondition(lambda self: self.model is not None and self.model.holds)
    @rule(
        which=pick,
        active_only=active_first,
        choice=st.one_of(st.none(), amount),
        foreign=foreign_actor,
    )
    def capture(
        self, which: int, active_only: bool, choice: tuple[str, int] | None, foreign: bool
    ) -> None:
        """Capture all (no points) or part of a hold, active or in whatever state it is by now."""
        hold = self._pick_hold(which, active_only)
        captured = None if choice is None else min(sized(choice, hold.points), hold.points)
        actor = self._actor(hold.merchant, foreign)
        actual = self.call("capture", merchant_id=actor, hold_id=hold.hold_id, points=captured)
        expected = self.expect(
            self.m.capture,
            merchant=actor,
            hold_id=hold.hold_id,
            points=captured,
            transaction_id=actual[0]["transaction_id"] if actual[0] else "(refused)",
        )
        self.agree("capture", actual, expected)

    @precondition(lambda self: self.model is not None and self.model.holds)
    @rule(which=pick, active_only=active_first, foreign=foreign_actor)
    def void(self, which: int, active_only: bool, foreign: bool) -> None:
        hold = self._pick_hold(which, active_only)
        actor = self._actor(hold.merchant, foreign)
        actual = self.call("void", merchant_id=actor, hold_id=hold.hold_id)
        expected = self.expect(self.m.void, merchant=actor, hold_id=hold.hold_id)
        self.agree("void", actual, expected)

    @precondition(lambda self: self.model is not None and self.model.transactions)
    @rule(
        kind=st.sampled_from(("redemption", "issuance", "redemption", "issuance", "reversal")),
        which=pick,
        choice=st.one_of(st.none(), amount, amount),
        foreign=foreign_actor,
    )
    def reverse(self, kind: str, which: int, choice: tuple[str, int] | None, foreign: bool) -> None:
        """Reverse a redemption, an issuance (or, refused, a reversal): in full (no points), in
        part, all that is left, or more than that."""
        by_kind = {
            "issuance": [
                (i.transaction_id, i.merchant, i.points - i.reversed)
                for i in sorted(self.m.issuances.values(), key=self._clawback_is_plain)
            ],
            "redemption": [
                (r.transaction_id, r.merchant, r.points - r.reversed)
                for r in self.m.redemptions.values()
            ],
            "reversal": [
                (reversal_id, merchant, 1) for reversal_id, merchant in self.m.reversals.items()
            ],
        }
        targets = by_kind[kind] or [target for group in by_kind.values() for target in group]
        # Mostly one not yet fully reversed, the latest first; "one_more" still goes over.
        targets = [target for target in targets if target[2] > 0] or targets
        original_id, owner, rest = targets[-1 - which % len(targets)]
        points = None if choice is None else sized(choice, rest)
        self._reverse(self._actor(owner, foreign), original_id, points)

    @precondition(
        lambda self: (
            self.model is not None
            and any(r.points - r.reversed > 1 for r in self.model.redemptions.values())
        )
    )
    @rule(which=pick, share=st.integers(1, 99))
    def refund_part(self, which: int, share: int) -> None:
        """A merchant refunds part of one of its open redemptions, the latest across several lots
        first (which lots a partial reversal gives back; cumulative rounding of cancellations)."""
        open_redemptions = [r for r in self.m.redemptions.values() if r.points - r.reversed > 1]
        open_redemptions.sort(key=lambda r: len(r.takes) > 1)  # those across lots last: first
        redemption = open_redemptions[-1 - which % len(open_redemptions)]
        rest = redemption.points - redemption.reversed
        points = min(max(rest * share // 100, 1), rest - 1)
        self._reverse(redemption.merchant, redemption.transaction_id, points)

    def _clawback_is_plain(self, issuance: reference.Issuance) -> bool:
        """False for an issuance whose points are partly spent or expired, or whose member has
        points on hold: where the clawback policy bites (sorted last, so picked first)."""
        lot = self.m.lots[issuance.transaction_id]
        touched = lot.remaining < lot.issued or lot.expired(self.m.now)
        return not touched and not self.m.held(issuance.member)

    def _reverse(self, actor: str, original_id: str, points: int | None) -> None:
        actual = self.call(
            "reverse",
            merchant_id=actor,
            transaction_id=original_id,
            reference=unique("ref"),
            points=points,
        )
        expected = self.expect(
            self.m.reverse,
            merchant=actor,
            original_id=original_id,
            points=points,
            transaction_id=actual[0]["transaction_id"] if actual[0] else "(refused)",
        )
        self.agree("reverse", actual, expected)

    def _move_clock(self, to: datetime) -> None:
        to = min(to, CLOCK_LIMIT)
        if to > self.clock.now():
            self.clock.set(to)
            self.m.now = to

    @rule(step=st.sampled_from(CLOCK_STEPS))
    def advance(self, step: timedelta) -> None:
        self._move_clock(self.clock.now() + step)

    @precondition(lambda self: self.model is not None and self.model.future_instants())
    @rule(which=pick, nudge=st.sampled_from([timedelta(0), -TICK, TICK]))
    def advance_to_instant(self, which: int, nudge: timedelta) -> None:
        """Onto (or a microsecond either side of) an instant a lot expires or a hold lapses."""
        instants = self.m.future_instants()
        self._move_clock(instants[which % len(instants)] + nudge)

    @precondition(lambda self: self.model is not None and self.model.expiry_due())
    @rule()
    def expire(self) -> None:
        """The expiry job, when a lot has expired with points left or a hold has lapsed."""
        self.run(self.ledger.expire())
        self.m.expire()

    @precondition(lambda self: self.model is not None and self.done)
    @rule(which=pick, tamper=st.sampled_from((False, False, True)))
    def replay(self, which: int, tamper: bool) -> None:
        """An earlier key again: the same body replays the first result and changes nothing; a
        different body (another reference) is refused and changes nothing."""
        retained_after = self.clock.now() - reference.IDEMPOTENCY_RETENTION
        retained = [entry for entry in self.done if entry[3] > retained_after]
        if not retained:
            return
        method, arguments, body, _ = retained[which % len(retained)]
        arguments = dict(arguments)
        if tamper and "reference" in arguments:
            arguments["reference"] = unique("other-ref")
            code = None
            try:
                self.run(getattr(self.ledger, method)(**arguments))
            except DomainError as error:
                code = error.code
            assert code == "idempotency_key_reused", f"{method}: key reused, another body: {code}"
            return
        outcome: Outcome = self.run(getattr(self.ledger, method)(**arguments))
        assert outcome.replayed, f"{method}: a replay was not flagged as one"
        assert outcome.body == body, f"{method}: replay body {outcome.body} != first {body}"

    @precondition(lambda self: self.model is not None and self.refused)
    @rule(which=pick, tamper=st.sampled_from((False, False, True)))
    def replay_refusal(self, which: int, tamper: bool) -> None:
        """An earlier refused key again (ADR 0013). A refusal by a ledger rule replays, the same
        code, detail and members, however the books moved since, and changes nothing (the
        invariant checks the books against the unchanged model); a different body is refused as
        a reused key. A validation_error was not recorded: the request runs again, and is the
        same validation_error (the model's ones do not depend on the books)."""
        retained_after = self.clock.now() - reference.IDEMPOTENCY_RETENTION
        retained = [entry for entry in self.refused if entry[3] > retained_after]
        if not retained:
            return
        method, arguments, first, _ = retained[which % len(retained)]
        arguments = dict(arguments)
        recorded = first.code in RECORDED_REFUSALS
        if tamper and recorded and "reference" in arguments:
            arguments["reference"] = unique("other-ref")
        try:
            self.run(getattr(self.ledger, method)(**arguments))
        except DomainError as error:
            again = error
        else:
            raise AssertionError(f"{method}: a refused key ran: {arguments}")
        if tamper and recorded and "reference" in arguments:
            assert again.code == "idempotency_key_reused", f"{method}: reused key: {again.code}"
        elif recorded:
            assert isinstance(again, RefusalReplayed), f"{method}: {first.code} not replayed"
            assert (again.code, again.detail, again.extra) == (
                first.code,
                first.detail,
                first.extra,
            ), f"{method}: replayed {again.code} {again.detail}, first {first.code} {first.detail}"
        else:
            assert not isinstance(again, RefusalReplayed), f"{method}: {first.code} was recorded"
            assert again.code == first.code, f"{method}: {first.code}, then {again.code}"

    # --- agreement after every step --------------------------------------------------------

    @invariant()
    def books_agree(self) -> None:
        if self.model is None:
            return
        self.run(self._check())

    async def _check(self) -> None:
        model = self.m
        members = self.members
        issuer_accounts = [f"issuer:{merchant}" for merchant in self.merchants]
        async with self.db.connection() as conn:
            lots = await conn.fetch(
                """SELECT transaction_id, member_id, issuer_id, currency, issued_points,
                          remaining_points, issued_at, expires_at
                   FROM lots WHERE member_id = ANY($1::text[])""",
                members,
            )
            obligations = await conn.fetch(
                """SELECT debtor_id, creditor_id, sum(points)::bigint AS points,
                          sum(gross_value)::bigint AS gross, sum(fee)::bigint AS fee
                   FROM obligations WHERE member_id = ANY($1::text[])
                   GROUP BY debtor_id, creditor_id""",
                members,
            )
            unbalanced = await conn.fetch(
                """SELECT transaction_id, currency, sum(amount)::bigint AS total FROM postings
                   WHERE member_id = ANY($1::text[])
                   GROUP BY transaction_id, currency HAVING sum(amount) <> 0""",
                members,
            )
            accounts = await conn.fetch(
                """SELECT a.member_id, a.currency, a.posted_points,
                          (SELECT coalesce(sum(l.remaining_points), 0)::bigint FROM lots l
                            WHERE l.member_id = a.member_id AND l.currency = a.currency)
                            AS lots_remaining,
                          (SELECT coalesce(sum(p.amount), 0)::bigint FROM postings p
                            WHERE p.member_id = a.member_id AND p.currency = a.currency
                              AND p.account = 'member:' || a.member_id) AS postings_total
                   FROM member_accounts a WHERE a.member_id = ANY($1::text[])""",
                members,
            )
            issuers = await conn.fetch(
                """SELECT account, sum(amount)::bigint AS total FROM postings
                   WHERE account = ANY($1::text[]) AND currency = 'AP' GROUP BY account""",
                issuer_accounts,
            )
            kinds = await conn.fetch(
                """SELECT member_id, kind, count(*) AS n FROM transactions
                   WHERE member_id = ANY($1::text[]) GROUP BY member_id, kind""",
                members,
            )
            holds = await conn.fetch(
                "SELECT hold_id, status FROM holds WHERE member_id = ANY($1::text[])", members
            )
        balances = [await self.ledger.balance(member_id=member) for member in members]

        # Members: available, held, next expiry.
        for member, balance in zip(members, balances, strict=True):
            upcoming = model.next_expiry(member)
            actual_upcoming = balance["next_expiry"]
            assert (balance["available"], balance["held"]) == (
                model.available(member),
                model.held(member),
            ), f"member {member} at {model.now}: (available, held) {balance} vs model"
            if upcoming is None:
                assert actual_upcoming is None, f"member {member}: next expiry {actual_upcoming}"
            else:
                assert actual_upcoming is not None, (
                    f"member {member}: no next expiry, model {upcoming}"
                )
                assert (actual_upcoming["points"], parse_instant(actual_upcoming["at"])) == upcoming

        # Lots: one per issuance, with its remaining points.
        actual_lots = {
            row["transaction_id"]: (
                row["member_id"],
                row["issuer_id"],
                row["currency"],
                row["issued_points"],
                row["remaining_points"],
                row["issued_at"],
                row["expires_at"],
            )
            for row in lots
        }
        expected_lots = {
            lot.issuance_id: (
                lot.member,
                lot.issuer,
                "AP",
                lot.issued,
                lot.remaining,
                lot.issued_at,
                lot.expires_at,
            )
            for lot in model.lots.values()
        }
        if actual_lots != expected_lots:
            differing = {
                key: (actual_lots.get(key), expected_lots.get(key))
                for key in actual_lots.keys() | expected_lots.keys()
                if actual_lots.get(key) != expected_lots.get(key)
            }
            raise AssertionError(f"lots (ledger, model) differ: {differing}")

        # Obligations per (debtor, creditor), net of reversals.
        actual_obligations = {
            (row["debtor_id"], row["creditor_id"]): (row["points"], row["gross"], row["fee"])
            for row in obligations
            if (row["points"], row["gross"], row["fee"]) != (0, 0, 0)
        }
        expected_obligations = {
            pair: tuple(net) for pair, net in model.net_obligations.items() if any(net)
        }
        assert actual_obligations == expected_obligations, (
            f"obligations (points, gross, fee): ledger {actual_obligations}, "
            f"model {expected_obligations}"
        )

        # Issuers: outstanding points = minus the issuer account's balance.
        issuer_totals = {row["account"]: -row["total"] for row in issuers}
        for merchant in self.merchants:
            assert issuer_totals.get(f"issuer:{merchant}", 0) == model.outstanding(merchant), (
                f"issuer {merchant}: outstanding {issuer_totals.get(f'issuer:{merchant}', 0)}, "
                f"model {model.outstanding(merchant)}"
            )

        # Double entry.
        assert not unbalanced, f"unbalanced transactions: {[dict(row) for row in unbalanced]}"
        posted = {row["member_id"]: row["posted_points"] for row in accounts}
        for row in accounts:
            assert row["posted_points"] == row["lots_remaining"] == row["postings_total"], (
                f"member account {dict(row)}: posted, lots remaining, postings disagree"
            )
        for member in members:
            in_lots = sum(lot.remaining for lot in model.member_lots(member))
            assert posted.get(member, 0) == in_lots, f"member {member}: posted vs model lots"

        # Transactions written (refusals and replays write none) and holds' states.
        actual_kinds = Counter({(row["member_id"], row["kind"]): row["n"] for row in kinds})
        assert actual_kinds == +model.transactions, (
            f"transactions by (member, kind): ledger {actual_kinds}, model {model.transactions}"
        )
        actual_holds = {row["hold_id"]: row["status"] for row in holds}
        expected_holds = {hold.hold_id: hold.status for hold in model.holds.values()}
        assert actual_holds == expected_holds, (
            f"holds: ledger {actual_holds}, model {expected_holds}"
        )


def run_state_machine_sync(database_url: str) -> None:
    """The whole Hypothesis run, in this (worker) thread, on its own event loop and pool."""
    loop = asyncio.new_event_loop()
    try:
        db = loop.run_until_complete(Database.connect(database_url, min_size=1, max_size=4))
        try:
            run_state_machine_as_test(lambda: LedgerMachine(loop, db), settings=PROFILE)
        finally:
            loop.run_until_complete(db.close())
    finally:
        loop.close()


def test_model_constants_are_the_test_settings() -> None:
    """The model hard-codes the settings it models; they must be the ones the tests run under."""
    assert reference.POINT_VALUE == DEFAULT_SETTINGS.point_value
    assert reference.FEE_RATE == DEFAULT_SETTINGS.fee_rate
    assert reference.POINTS_LIFETIME == timedelta(seconds=DEFAULT_SETTINGS.points_lifetime_s or 0)
    assert reference.HOLD_LIFETIME == timedelta(seconds=DEFAULT_SETTINGS.hold_lifetime_s)
    assert reference.IDEMPOTENCY_RETENTION == timedelta(seconds=IDEMPOTENCY_RETENTION_S)
    assert DEFAULT_SETTINGS.effective_from <= YEAR_START
    assert CLOCK_LIMIT.year < 2031


async def test_ledger_agrees_with_reference_model(database_url: str) -> None:
    await asyncio.to_thread(run_state_machine_sync, database_url)


def test_ci_replays_the_kept_failures_and_only_the_nightly_run_writes_them(
    tmp_path: Path,
) -> None:
    """RELIABILITY.md L2: failures found at night are kept in the repository and replayed by
    every run; a CI run reads them but never writes into the working tree."""
    local, kept = tmp_path / "local", tmp_path / "kept"
    DirectoryBasedExampleDatabase(kept).save(b"test", b"found last night")
    ci = examples(local, kept, keep_failures=False)
    nightly = examples(local, kept, keep_failures=True)

    assert set(ci.fetch(b"test")) == {b"found last night"}, "CI replays what was kept"
    ci.save(b"test", b"found in CI")
    assert set(DirectoryBasedExampleDatabase(kept).fetch(b"test")) == {b"found last night"}
    assert b"found in CI" in set(DirectoryBasedExampleDatabase(local).fetch(b"test"))
    nightly.save(b"test", b"found tonight")
    assert b"found tonight" in set(DirectoryBasedExampleDatabase(kept).fetch(b"test"))
    for name, keep in (("ci", False), ("nightly", True)):
        wanted = examples(LOCAL_EXAMPLES, REGRESSIONS, keep_failures=keep)
        assert repr(PROFILES[name].database) == repr(wanted), name
    assert REGRESSIONS.is_dir(), "the kept examples' directory is in the repository"
