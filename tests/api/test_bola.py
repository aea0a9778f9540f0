"""RELIABILITY A2, broken object-level authorization, generated from the app's OpenAPI document.

Every /v1/ operation that takes an id (a path or query parameter named `*_id`, or a `*_id` field of
its request body, batch operations included) is found in `create_app().openapi()`, so a new
endpoint is covered without editing this file. Each is called with ids of each kind:

- `own`: the caller's own resource; the call succeeds as documented.
- `foreign`: another merchant's resource: 404 `not_found`, byte for byte what a missing id gets
  (DOMAIN "Who may see what": "exactly as a missing one does (404), never 403").
- `random`: a well-formed id that names nothing: 404 `not_found`.
- gone: PROTOCOL has no DELETE; a resource ends by being closed: a hold `voided`, `captured` or
  `lapsed` (409 `hold_not_active` for its owner), a transaction fully reversed (409
  `reversal_exceeds_original` for its owner, still readable). The owner's call is the control (not
  404), the other merchant's call is 404 like a missing id: a closed hold of another merchant must
  not answer `hold_not_active`, which would tell its state.

Members are the exception PROTOCOL makes: one alliance-wide identity ("same ref, same member, at
every merchant"), usable by any merchant that presents its id (DOMAIN: "A merchant learns a
member's balance only by presenting that member's id"). So a member enrolled only by another
merchant is served (balance, issue, redeem, hold), and what is checked is that nothing of the other
merchant shows (its id, key, transactions, holds, references): the caller "never learns which other
merchants the member shops at". A member id that names nothing is 404 (PROTOCOL: "missing (a
`member_id` in a body too)"). A `member_id` query parameter filters the caller's own list: it
shows the caller's transactions only, whatever the member. Members and statements have no closed
state in PROTOCOL, so they have no gone kind.

Every refusal changes nothing in the ledger (tests.api.writes) and shows nothing of the other
merchant: none of its ids, references or key id, nor the points and balances of its transactions
and holds. Two more: a batch with my reversal and the other merchant's (mine commits, theirs is
not_found and stays whole), and an idempotency key the other merchant used (no replay of theirs).
The whole module runs in an alliance of its own (a fresh database), settled once, so
that statements and inclusion proofs exist without settling the shared test ledger.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import TypeAdapter

from core.clock import FixedClock
from core.database import Database
from core.ids import new_id
from exchange.api.schemas import BatchOperation
from merchants import repository as merchant_repository
from server.main import create_app
from settlement import service as settlement
from tests.api.conftest import AUTHORITY, Partner, call, make_partner
from tests.api.test_error_codes import assert_problem
from tests.api.writes import no_ledger_effect_but_the_batch_record, nothing_written
from tests.conftest import migrated_database
from tests.factories import DEFAULT_SETTINGS, unique

MORNING = datetime(2026, 6, 1, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai, business date 2026-06-01
AFTER_CLOSE = datetime(2026, 6, 1, 16, 1, tzinfo=UTC)  # that date closed at 16:00 UTC

# --- the cases, from the OpenAPI document -----------------------------------------------------

HTTP_METHODS = ("get", "put", "post", "patch", "delete")
ID_FIELD = re.compile(r"^(?:\w+_)?([a-z]+)_id$")
"""An id: `member_id`, `hold_id`, `original_transaction_id` (its resource is the last word)."""
RESOURCES_SHARED = {"member"}
"""Resources PROTOCOL shares across the alliance; every other one belongs to one merchant."""
CLOSED_STATES = {"hold": ("voided", "captured", "lapsed"), "transaction": ("reversed",)}
"""How PROTOCOL ends a resource (there is no DELETE): the `gone` kinds."""
CLOSED_CODES = {"hold": "hold_not_active", "transaction": "reversal_exceeds_original"}
"""What the owner of a closed resource gets from a write on it."""


@dataclass(frozen=True)
class Case:
    """One id-bearing spot of one operation."""

    label: str
    method: str
    path: str
    where: str  # "path", "query" or "body"
    name: str  # the id's parameter or field name
    resource: str  # member, hold, transaction, statement, …
    body: Any  # the example body (for "body", with the id field at `pointer`)
    pointer: tuple[Any, ...]  # where the id goes in the body
    success: tuple[int, ...]  # the documented 2xx statuses
    batch: bool  # the body is a batch: the answer is a 200 with one result per operation


def _resolve(document: dict[str, Any], schema: dict[str, Any] | None) -> dict[str, Any]:
    """A schema with its $ref followed, and `X | None` reduced to X."""
    schema = schema or {}
    for _ in range(10):
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            schema = document["components"]["schemas"][name]
        elif "anyOf" in schema:
            schema = next(s for s in schema["anyOf"] if s.get("type") != "null")
        else:
            return schema
    raise AssertionError(f"unresolvable schema {schema}")


def _resource(name: str) -> str:
    match = ID_FIELD.match(name)
    assert match, name
    return match.group(1)


def _id_spots(value: Any, pointer: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The pointer to every string `*_id` key of an example body."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and ID_FIELD.match(key) and isinstance(item, str):
                yield (*pointer, key)
            else:
                yield from _id_spots(item, (*pointer, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _id_spots(item, (*pointer, index))


def _trim(example: Any, pointer: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...], str]:
    """The example with each list on the pointer's way cut down to the element that holds the
    id (a batch of that one operation), the pointer into it, and a label (`operations[op=reverse]
    .transaction_id`)."""
    body = copy.deepcopy(example)
    node, trimmed, label = body, [], [""]
    for step in pointer[:-1]:
        if isinstance(node, list):
            element = node[step]
            node[:] = [element]
            trimmed.append(0)
            op = element.get("op") if isinstance(element, dict) else None
            label[-1] += f"[op={op}]" if op else "[]"
        else:
            trimmed.append(step)
            label.append(str(step))
        node = node[trimmed[-1]]
    name = pointer[-1]
    return body, (*trimmed, name), ".".join([*label[1:], name])


def _body_cases(
    schema: dict[str, Any],
) -> Iterator[tuple[str, tuple[Any, ...], Any]]:
    """(label, pointer, body) for every id field of a request body: the keys of its examples
    (where an open object, a batch operation, shows its fields) and its declared properties."""
    examples = schema.get("examples") or []
    seen: set[str] = set()
    for example in examples:
        for spot in _id_spots(example):
            body, pointer, label = _trim(example, spot)
            if label not in seen:
                seen.add(label)
                yield label, pointer, body
    for name in schema.get("properties", {}):
        if ID_FIELD.match(name) and name not in seen:
            seen.add(name)
            body = copy.deepcopy(examples[0]) if examples else {}
            yield name, (name,), body


def declared_ids(
    document: dict[str, Any], schema: dict[str, Any], label: str = "", depth: int = 0
) -> Iterator[str]:
    """The label of every `*_id` property a request schema declares, nested ones too (a list's
    elements as `name[]`)."""
    schema = _resolve(document, schema)
    if depth > 8:
        return
    for name, child in schema.get("properties", {}).items():
        here = f"{label}.{name}" if label else name
        if ID_FIELD.match(name):
            yield here
        else:
            yield from declared_ids(document, child, here, depth + 1)
    if "items" in schema:
        yield from declared_ids(document, schema["items"], f"{label}[]", depth + 1)


def _element_of(body: Any, pointer: tuple[Any, ...]) -> Any:
    node = body
    for step in pointer[:-1]:
        node = node[step]
    return node


def enumerate_cases(document: dict[str, Any]) -> tuple[list[Case], set[str]]:
    """The cases, and the labels of the id fields the request schemas declare."""
    cases: list[Case] = []
    declared: set[str] = set()
    for path, item in document["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            success = tuple(sorted(int(s) for s in operation["responses"] if s.startswith("2")))
            content = operation.get("requestBody", {}).get("content", {})
            schema = _resolve(document, content.get("application/json", {}).get("schema"))
            examples = schema.get("examples") or []
            body = copy.deepcopy(examples[0]) if examples else None
            batch = "BatchResults" in json.dumps(operation["responses"])
            declared |= {
                f"{method.upper()} {path} body:{label}" for label in declared_ids(document, schema)
            }
            for parameter in operation.get("parameters", []):
                if parameter["in"] in ("path", "query") and ID_FIELD.match(parameter["name"]):
                    where, name = parameter["in"], parameter["name"]
                    cases.append(
                        Case(
                            f"{method.upper()} {path} {where}:{name}",
                            method.upper(),
                            path,
                            where,
                            name,
                            _resource(name),
                            body,
                            (),
                            success,
                            batch,
                        )
                    )
            for label, pointer, example in _body_cases(schema):
                cases.append(
                    Case(
                        f"{method.upper()} {path} body:{label}",
                        method.upper(),
                        path,
                        "body",
                        pointer[-1],
                        _resource(pointer[-1]),
                        example,
                        pointer,
                        success,
                        batch,
                    )
                )
    return cases, declared


CASES, DECLARED = enumerate_cases(create_app().openapi())

KNOWN = {
    "GET /v1/members/{member_id}/balance path:member_id",
    "POST /v1/issuances body:member_id",
    "POST /v1/redemptions body:member_id",
    "POST /v1/holds body:member_id",
    "POST /v1/holds/{hold_id}/capture path:hold_id",
    "POST /v1/holds/{hold_id}/void path:hold_id",
    "POST /v1/transactions/{transaction_id}/reversals path:transaction_id",
    "GET /v1/transactions/{transaction_id} path:transaction_id",
    "GET /v1/transactions/{transaction_id}/proof path:transaction_id",
    "GET /v1/transactions query:member_id",
    "GET /v1/statements/{statement_id} path:statement_id",
    "POST /v1/batches body:operations[op=issue].member_id",
    "POST /v1/batches body:operations[op=redeem].member_id",
    "POST /v1/batches body:operations[op=reverse].transaction_id",
}
"""What the enumeration finds today; it may find more, never less."""


def kinds_of(resource: str) -> tuple[str, ...]:
    gone = [
        f"{who}_{state}" for state in CLOSED_STATES.get(resource, ()) for who in ("own", "foreign")
    ]
    return ("own", "foreign", "random", *gone)


MATRIX = [
    pytest.param(case, kind, id=f"{case.label} [{kind}]")
    for case in CASES
    for kind in kinds_of(case.resource)
]


def test_the_enumeration_finds_every_known_id_bearing_operation():
    found = {case.label for case in CASES}
    assert KNOWN <= found, f"no longer found: {sorted(KNOWN - found)}"
    assert len(MATRIX) >= 3 * len(KNOWN)


def test_every_declared_id_field_of_a_request_body_is_enumerated():
    """A body's id field is called with the body of a schema example; a nested one that no
    example shows could not be, and would go unchecked: the schema needs an example with it."""
    found = {re.sub(r"\[op=[^]]*\]", "[]", case.label) for case in CASES}
    assert DECLARED <= found, f"no example shows {sorted(DECLARED - found)}"


def test_every_batch_operation_with_an_id_is_enumerated():
    """Batch operations are open objects in the document; their fields come from its example.
    The example must show every operation kind the app accepts with an id field, or the
    enumeration would miss it."""
    schema = TypeAdapter(BatchOperation).json_schema()
    accepted = {
        (variant["properties"]["op"]["const"], name)
        for variant in schema["$defs"].values()
        for name in variant.get("properties", {})
        if ID_FIELD.match(name)
    }
    found = {
        (label.split("[op=")[1].split("]")[0], label.rsplit(".", 1)[1])
        for label in (case.label for case in CASES)
        if "/v1/batches body:" in label
    }
    assert accepted, schema
    assert accepted <= found, f"batch operations with ids missing from the example: {accepted}"


# --- the world: two merchants of one alliance, settled once ------------------------------------


@dataclass
class World:
    db: Database
    client: httpx.AsyncClient
    clock: FixedClock
    mine: Partner
    theirs: Partner
    shared_member: str  # enrolled by both
    their_member: str  # enrolled by the other merchant only, with its points
    ids: dict[tuple[str, str], str]  # (resource, kind) -> id
    foreign_strings: set[str] = field(default_factory=set)
    """Ids, references and names of the other merchant's: never in any answer to me."""
    foreign_numbers: set[int] = field(default_factory=set)
    """Points and balances of its transactions and holds: never in a refusal."""


async def ok(world: World, partner: Partner, method: str, path: str, body: Any = None) -> Any:
    response = await call(world.client, partner, world.clock, method, path, json_body=body)
    assert response.status_code in (200, 201), response.text
    return response.json()


async def enrol(world: World, partner: Partner, ref: str) -> str:
    member: str = (await ok(world, partner, "POST", "/v1/members", {"external_ref": ref}))[
        "member_id"
    ]
    return member


async def issue(world: World, partner: Partner, member: str, points: int) -> dict[str, Any]:
    body = {"member_id": member, "points": points, "reference": unique("issue")}
    result: dict[str, Any] = await ok(world, partner, "POST", "/v1/issuances", body)
    return result


async def hold(
    world: World, partner: Partner, points: int, *, seconds: int | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "member_id": world.shared_member,
        "points": points,
        "reference": unique("hold"),
    }
    if seconds is not None:
        body["expires_in_seconds"] = seconds
    result: dict[str, Any] = await ok(world, partner, "POST", "/v1/holds", body)
    return result


def remember(world: World, partner: Partner, *objects: dict[str, Any]) -> None:
    """Note what the other merchant's objects show, to look for it in answers to me."""
    if partner is not world.theirs:
        return
    for obj in objects:
        for key in ("transaction_id", "hold_id", "reference", "reverses", "capture_transaction_id"):
            if isinstance(obj.get(key), str):
                world.foreign_strings.add(obj[key])
        for key in ("points", "balance_after"):
            if isinstance(obj.get(key), int):
                world.foreign_numbers.add(obj[key])


async def closed_holds(world: World, partner: Partner, tag: str, points: int) -> None:
    voided = await hold(world, partner, points)
    voided = await ok(world, partner, "POST", f"/v1/holds/{voided['hold_id']}/void", {})
    captured = await hold(world, partner, points + 2)
    capture = await ok(world, partner, "POST", f"/v1/holds/{captured['hold_id']}/capture", {})
    remember(world, partner, voided, captured, capture)
    world.ids["hold", f"{tag}_voided"] = voided["hold_id"]
    world.ids["hold", f"{tag}_captured"] = captured["hold_id"]


@pytest.fixture(scope="module")
async def world() -> AsyncIterator[World]:
    async with migrated_database() as url:
        db = await Database.connect(url, min_size=1, max_size=6)
        try:
            async with db.transaction() as conn:
                await merchant_repository.insert_settings(conn, DEFAULT_SETTINGS)
            clock = FixedClock(MORNING)
            app = create_app(database=db, clock=clock)
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
                async with httpx.AsyncClient(
                    transport=transport, base_url=f"http://{AUTHORITY}"
                ) as client:
                    yield await build_world(db, client, clock)
        finally:
            await db.close()


async def build_world(db: Database, client: httpx.AsyncClient, clock: FixedClock) -> World:
    mine, theirs = await make_partner(db), await make_partner(db)
    world = World(db, client, clock, mine, theirs, "", "", {})
    world.foreign_strings |= {theirs.merchant_id, theirs.key_id}
    async with db.connection() as conn:
        name = await conn.fetchval(
            "SELECT name FROM merchants WHERE merchant_id = $1", theirs.merchant_id
        )
    world.foreign_strings.add(name)

    # The morning: a member both merchants know, one only the other merchant knows.
    ref = unique("card")
    world.shared_member = await enrol(world, mine, ref)
    assert await enrol(world, theirs, ref) == world.shared_member
    their_ref = unique("card")
    world.their_member = await enrol(world, theirs, their_ref)
    world.foreign_strings.add(their_ref)

    # Odd amounts, so that the other merchant's figures are recognisable in a body.
    theirs_issue = await issue(world, theirs, world.shared_member, 7919)
    remember(world, theirs, theirs_issue, await issue(world, theirs, world.their_member, 6007))
    clock.advance(timedelta(seconds=1))  # their lots expire first: redemptions take them first
    own_issue = await issue(world, mine, world.shared_member, 1000)
    for partner, points, tag in ((theirs, 5003, "foreign"), (mine, 500, "own")):
        issued = await issue(world, partner, world.shared_member, points)
        path = f"/v1/transactions/{issued['transaction_id']}/reversals"
        reversal = await ok(world, partner, "POST", path, {"reference": unique("refund")})
        remember(world, partner, issued, reversal)
        world.ids["transaction", f"{tag}_reversed"] = issued["transaction_id"]
    # A redemption of the other merchant's points makes a statement line between the two.
    for partner, points in ((mine, 10), (theirs, 131)):
        redemption = {"member_id": world.shared_member, "points": points, "reference": unique("r")}
        remember(world, partner, await ok(world, partner, "POST", "/v1/redemptions", redemption))
    for partner, points, tag in ((mine, 3, "own"), (theirs, 4001, "foreign")):
        short = await hold(world, partner, points, seconds=60)  # lapses before the close
        remember(world, partner, short)
        world.ids["hold", f"{tag}_lapsed"] = short["hold_id"]

    # The close, and settlement: statements and inclusion proofs.
    clock.set(AFTER_CLOSE)
    assert len(await settlement.settle_due(db, clock)) == 1
    for partner, tag in ((mine, "own"), (theirs, "foreign")):
        [statement] = (await ok(world, partner, "GET", "/v1/statements"))["data"]
        world.ids["statement", tag] = statement["statement_id"]
        if partner is mine:  # the line the scan must look past: the statement's own business
            assert theirs.merchant_id in {line["counterparty_id"] for line in statement["lines"]}
    world.foreign_strings.add(world.ids["statement", "foreign"])

    # After the close: the other merchant's active hold, and closed holds on both sides.
    theirs_hold = await hold(world, theirs, 3001)
    remember(world, theirs, theirs_hold)
    await closed_holds(world, theirs, "foreign", 2003)
    await closed_holds(world, mine, "own", 4)

    world.ids |= {
        ("member", "own"): world.shared_member,
        ("member", "foreign"): world.their_member,
        ("transaction", "own"): own_issue["transaction_id"],
        ("transaction", "foreign"): theirs_issue["transaction_id"],
        ("hold", "foreign"): theirs_hold["hold_id"],
    }
    world.foreign_numbers -= {0}
    return world


async def id_for(world: World, resource: str, kind: str) -> str:
    if kind == "random":
        own = await id_for(world, resource, "own")
        prefix = own.rsplit("_", 1)[0] if "_" in own else "x"
        return new_id(prefix)
    if (resource, kind) == ("hold", "own"):  # capture and void use it up: a fresh one each time
        return str((await hold(world, world.mine, 1))["hold_id"])
    assert (resource, kind) in world.ids, (
        f"test_bola does not know how to make a {kind} {resource} id: add it to build_world"
    )
    return world.ids[resource, kind]


# --- the calls --------------------------------------------------------------------------------


def fresh_body(case: Case, id_value: str) -> Any:
    """The example body with the id in place, and values that must be fresh (references,
    idempotency keys) or small (points) replaced."""

    def fresh(value: Any) -> Any:
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for key, item in value.items():
                if key in ("reference", "external_ref"):
                    out[key] = unique(key)
                elif key == "idempotency_key":
                    out[key] = unique("op")
                elif key == "points" and isinstance(item, int):
                    out[key] = 1
                else:
                    out[key] = fresh(item)
            return out
        if isinstance(value, list):
            return [fresh(item) for item in value]
        return value

    body = fresh(copy.deepcopy(case.body))
    if case.where == "body":
        _element_of(body, case.pointer)[case.pointer[-1]] = id_value
    return body


async def attempt(world: World, case: Case, id_value: str) -> httpx.Response:
    path = case.path.replace("{" + case.name + "}", id_value) if case.where == "path" else case.path
    for other in re.findall(r"\{(\w+)\}", path):  # the operation's other ids: the caller's own
        assert ID_FIELD.match(other), f"{case.label}: a path parameter this test cannot fill"
        path = path.replace("{" + other + "}", await id_for(world, _resource(other), "own"))
    params = {case.name: id_value} if case.where == "query" else None
    body = fresh_body(case, id_value) if case.method != "GET" else None
    return await call(
        world.client, world.mine, world.clock, case.method, path, json_body=body, params=params
    )


def answer(case: Case, response: httpx.Response) -> dict[str, Any]:
    """The one result that matters: the body, or a batch's only result."""
    if case.batch:
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert len(results) == 1, results
        result: dict[str, Any] = results[0]
        return result
    body: dict[str, Any] = response.json()
    return body


def visible(case: Case, response: httpx.Response) -> str:
    """The body as the foreign-value scan reads it. A statement's lines name its counterparties,
    which is the statement's own business (DOMAIN: statements by counterparty)."""
    body = response.json()
    if case.resource == "statement" and isinstance(body, dict) and "lines" in body:
        body = {**body, "lines": [{**line, "counterparty_id": ""} for line in body["lines"]]}
    return json.dumps(body)


def assert_shows_nothing_foreign(
    world: World, case: Case, response: httpx.Response, *, refused: bool
) -> None:
    """None of the other merchant's ids, references, key id or name; and, in a refusal, none of
    its figures (a served member's balance legitimately counts every merchant's points)."""
    text = visible(case, response)
    leaked: list[Any] = [value for value in world.foreign_strings if value in text]
    if refused:  # a refusal has no figures of anyone's: none of the other merchant's either
        leaked += [n for n in world.foreign_numbers if re.search(rf"(?<![\w.]){n}(?![\w.])", text)]
    assert not leaked, f"{case.label}: the other merchant's {leaked} in {text}"


def unchanged(world: World, case: Case) -> AbstractAsyncContextManager[None]:
    """No ledger row written, for both merchants and both members (tests.api.writes)."""
    if case.batch:
        return no_ledger_effect_but_the_batch_record(world.db)
    return nothing_written(
        world.db,
        members=[world.shared_member, world.their_member],
        merchants=[world.mine.merchant_id, world.theirs.merchant_id],
    )


def expected(case: Case, kind: str) -> str:
    """What PROTOCOL and DOMAIN say this kind of id gets from this operation."""
    if case.where == "query":
        return "filtered"
    if kind == "random":
        return "not_found"
    if case.resource in RESOURCES_SHARED:
        return "served"  # own or foreign: the member is the alliance's
    if kind == "own":
        return "served"
    if kind.startswith("own_"):
        return "served" if case.method == "GET" else "closed"
    return "not_found"  # foreign, and foreign closed


@pytest.mark.parametrize(("case", "kind"), MATRIX)
async def test_id_kinds(world, case, kind):
    id_value = await id_for(world, case.resource, kind)
    outcome = expected(case, kind)

    if outcome == "filtered":  # a list narrowed to a member: the caller's own items only
        response = await attempt(world, case, id_value)
        assert response.status_code == 200, response.text
        page = response.json()
        assert {item["merchant_id"] for item in page["data"]} <= {world.mine.merchant_id}
        if kind == "random":
            assert page["data"] == []
        if kind == "own":
            assert page["data"], "the caller's own transactions of its own member are listed"
        assert_shows_nothing_foreign(world, case, response, refused=False)
        return

    if outcome == "served":
        response = await attempt(world, case, id_value)
        assert response.status_code in case.success, response.text
        result = answer(case, response)
        assert "code" not in result, result
        assert_shows_nothing_foreign(world, case, response, refused=False)
        return

    if outcome == "closed":
        async with unchanged(world, case):
            response = await attempt(world, case, id_value)
        code = CLOSED_CODES[case.resource]
        if case.batch:
            result = answer(case, response)
            assert (result["status"], result["code"]) == (409, code), result
        else:
            assert_problem(response, 409, code)
        assert_shows_nothing_foreign(world, case, response, refused=True)
        return

    # not_found: exactly what an id that names nothing gets.
    missing = await attempt(world, case, await id_for(world, case.resource, "random"))
    async with unchanged(world, case):
        response = await attempt(world, case, id_value)
    if case.batch:
        result, reference = answer(case, response), answer(case, missing)
        assert (result["status"], result["code"]) == (404, "not_found"), result
    else:
        result = assert_problem(response, 404, "not_found")
        reference = assert_problem(missing, 404, "not_found")
        assert response.content == missing.content
        assert set(response.headers) == set(missing.headers)
    assert result == reference
    assert_shows_nothing_foreign(world, case, response, refused=True)


async def test_a_batch_reverses_its_own_transaction_and_not_another_merchants(world):
    """One batch, two reversals: the own one commits, the other merchant's is not_found and its
    transaction is still whole (its owner can still reverse all of it)."""
    own = await issue(world, world.mine, world.shared_member, 40)
    theirs = await issue(world, world.theirs, world.shared_member, 41)
    operations = [
        {
            "op": "reverse",
            "idempotency_key": unique("op"),
            "transaction_id": transaction["transaction_id"],
            "reference": unique("refund"),
        }
        for transaction in (own, theirs)
    ]
    response = await call(
        world.client,
        world.mine,
        world.clock,
        "POST",
        "/v1/batches",
        json_body={"operations": operations},
    )
    assert response.status_code == 200, response.text
    mine, refused = response.json()["results"]
    assert (mine["kind"], mine["reverses"], mine["points"]) == (
        "reversal",
        own["transaction_id"],
        40,
    )
    assert (refused["status"], refused["code"]) == (404, "not_found"), refused
    assert theirs["transaction_id"] not in response.text
    assert theirs["reference"] not in response.text
    whole = await ok(
        world,
        world.theirs,
        "POST",
        f"/v1/transactions/{theirs['transaction_id']}/reversals",
        {"reference": unique("refund")},
    )
    assert whole["points"] == 41


@pytest.mark.parametrize("where", ["header", "batch operation"])
async def test_another_merchants_idempotency_key_replays_nothing_of_theirs(world, where):
    """Idempotency keys are scoped to the merchant (PROTOCOL): the same key and the same body
    from me is a request of mine, not a replay of the other merchant's answer."""
    key = unique("shared-key")
    body: dict[str, Any] = {"member_id": world.shared_member, "points": 7, "reference": key}
    if where == "batch operation":
        path, body = (
            "/v1/batches",
            {"operations": [{"op": "issue", "idempotency_key": key, **body}]},
        )
    else:
        path = "/v1/issuances"
    header_key = key if where == "header" else unique("batch-key")  # the same for both, too
    answers = [
        await call(
            world.client, p, world.clock, "POST", path, json_body=body, idempotency_key=header_key
        )
        for p in (world.theirs, world.mine)
    ]
    for answer_ in answers:
        assert answer_.status_code in (200, 201), answer_.text
    theirs, mine = (r.json()["results"][0] if where != "header" else r.json() for r in answers)
    assert "idempotency-replayed" not in answers[1].headers
    assert mine["merchant_id"] == world.mine.merchant_id
    assert mine["transaction_id"] != theirs["transaction_id"]
    assert theirs["transaction_id"] not in answers[1].text
