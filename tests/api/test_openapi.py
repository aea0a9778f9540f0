"""docs/openapi.json is the application's OpenAPI document, and it describes PROTOCOL.md v1 whole:
every endpoint, the signature scheme, examples, and the problem+json error shape."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from server.main import create_app
from tests.conftest import PROJECT_ROOT

DOCUMENT_PATH = PROJECT_ROOT / "docs" / "openapi.json"
REGENERATE = "run `.venv/bin/python scripts/export_openapi.py` and commit docs/openapi.json"

# The endpoints table of PROTOCOL.md v1, as (method, path).
PROTOCOL_ENDPOINTS = frozenset(
    {
        ("POST", "/v1/members"),
        ("GET", "/v1/members/{member_id}/balance"),
        ("POST", "/v1/issuances"),
        ("POST", "/v1/redemptions"),
        ("POST", "/v1/holds"),
        ("POST", "/v1/holds/{hold_id}/capture"),
        ("POST", "/v1/holds/{hold_id}/void"),
        ("POST", "/v1/transactions/{transaction_id}/reversals"),
        ("GET", "/v1/transactions/{transaction_id}"),
        ("GET", "/v1/transactions"),
        ("POST", "/v1/batches"),
        ("GET", "/v1/statements"),
        ("GET", "/v1/statements/{statement_id}"),
        ("GET", "/v1/exchange-keys"),
    }
)
UNSIGNED = frozenset({("GET", "/v1/exchange-keys")})
PROTOCOL_MD_CANDIDATES = (
    os.environ.get("ALLIANCE_PROTOCOL_MD", ""),
    "/work/shared/spec/PROTOCOL.md",
)
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options", "trace"})


def committed() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DOCUMENT_PATH.read_text(encoding="utf-8"))
    return loaded


def generated() -> dict[str, Any]:
    # Through JSON and back, so that tuples, enums and the like compare as they are written.
    loaded: dict[str, Any] = json.loads(json.dumps(create_app().openapi()))
    return loaded


def differences(left: Any, right: Any, pointer: str = "") -> list[str]:
    """JSON pointers where two documents differ (the first few are enough to find a drift)."""
    if isinstance(left, dict) and isinstance(right, dict):
        found: list[str] = []
        for key in sorted(set(left) | set(right)):
            child = f"{pointer}/{str(key).replace('~', '~0').replace('/', '~1')}"
            if key not in left:
                found.append(f"{child} (only in the app)")
            elif key not in right:
                found.append(f"{child} (only in docs/openapi.json)")
            else:
                found += differences(left[key], right[key], child)
        return found
    if isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        return [
            d
            for i, (a, b) in enumerate(zip(left, right, strict=True))
            for d in differences(a, b, f"{pointer}/{i}")
        ]
    return [] if left == right else [pointer or "/"]


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }


def resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def test_docs_openapi_json_is_the_apps_document():
    assert DOCUMENT_PATH.exists(), f"docs/openapi.json is missing: {REGENERATE}"
    drift = differences(committed(), generated())
    assert not drift, (
        f"docs/openapi.json differs from the app's OpenAPI document at {drift[:10]}"
        f"{' …' if len(drift) > 10 else ''}: {REGENERATE}"
    )


def test_the_committed_file_is_formatted_as_the_script_writes_it():
    text = DOCUMENT_PATH.read_text(encoding="utf-8")
    expected = json.dumps(committed(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert text == expected, f"docs/openapi.json is not in the exported format: {REGENERATE}"


# Endpoints beyond PROTOCOL.md, each documented in docs/protocol.md ("Extensions").
EXTENSIONS = {("GET", "/v1/transactions/{transaction_id}/proof")}


def test_every_protocol_endpoint_is_in_the_document():
    documented = set(operations(committed()))
    missing = PROTOCOL_ENDPOINTS - documented
    assert not missing, f"PROTOCOL.md endpoints missing from docs/openapi.json: {sorted(missing)}"
    extra = {(m, p) for m, p in documented if p.startswith("/v1/")} - PROTOCOL_ENDPOINTS
    extra -= EXTENSIONS
    assert not extra, f"/v1/ operations that PROTOCOL.md does not name: {sorted(extra)}"


def test_the_endpoint_list_matches_protocol_md_itself():
    found = next((Path(c) for c in PROTOCOL_MD_CANDIDATES if c and Path(c).is_file()), None)
    if found is None:
        pytest.skip("PROTOCOL.md is not here (set ALLIANCE_PROTOCOL_MD to its path)")
    text = found.read_text(encoding="utf-8")
    table = set(re.findall(r"^\| `(GET|POST|PUT|PATCH|DELETE) (/v1/[^`]*)` \|", text, re.M))
    assert len(table) >= 14
    assert table == PROTOCOL_ENDPOINTS


def test_the_signature_scheme_is_described_and_required_on_every_signed_operation():
    document = committed()
    scheme = document["components"]["securitySchemes"]["HttpMessageSignature"]
    assert scheme["in"] == "header"
    assert scheme["name"] == "Signature"
    for word in ("RFC 9421", "Ed25519", "Signature-Input", "nonce", "content-digest", "@authority"):
        assert word in scheme["description"]
    for endpoint, operation in operations(document).items():
        if endpoint in UNSIGNED:
            assert "security" not in operation, endpoint
        elif endpoint[1].startswith("/v1/"):
            assert operation["security"] == [{"HttpMessageSignature": []}], endpoint


def test_every_operation_documents_its_errors_as_problem_json():
    document = committed()
    problem = document["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail", "code"}
    for endpoint, operation in operations(document).items():
        if not endpoint[1].startswith("/v1/"):
            continue
        errors = {code: resolve(document, r) for code, r in operation["responses"].items()}
        errors = {code: r for code, r in errors.items() if not code.startswith("2")}
        expected = {"413"} if endpoint in UNSIGNED else {"401", "403", "404", "422", "429"}
        assert expected <= set(errors), (endpoint, sorted(errors))
        for code, response in errors.items():
            assert list(response["content"]) == ["application/problem+json"], (endpoint, code)
            media = response["content"]["application/problem+json"]
            assert media["schema"] == {"$ref": "#/components/schemas/Problem"}, (endpoint, code)
            assert media["examples"], (endpoint, code)
            for example in media["examples"].values():
                assert example["value"]["status"] == int(code), (endpoint, code)
                assert set(problem["required"]) <= set(example["value"]), (endpoint, code)


def test_every_operation_has_examples_of_its_bodies():
    document = committed()
    for endpoint, operation in operations(document).items():
        if not endpoint[1].startswith("/v1/"):
            continue
        assert operation.get("summary"), endpoint
        assert operation.get("description"), endpoint
        if "requestBody" in operation:
            schema = resolve(
                document, operation["requestBody"]["content"]["application/json"]["schema"]
            )
            # An optional body is `anyOf: [the model, null]`.
            schemas = [resolve(document, s) for s in schema.get("anyOf", [schema])]
            assert any(s.get("examples") for s in schemas), f"{endpoint}: body without examples"
        successes = {c: r for c, r in operation["responses"].items() if c.startswith("2")}
        assert successes, endpoint
        for code, response in successes.items():
            schema = resolve(document, response["content"]["application/json"]["schema"])
            assert schema.get("examples"), f"{endpoint} {code}: response without examples"


def test_signed_responses_document_the_exchange_signature_headers():
    document = committed()
    for endpoint, operation in operations(document).items():
        if not endpoint[1].startswith("/v1/") or endpoint in UNSIGNED:
            continue
        for code, response in operation["responses"].items():
            headers = resolve(document, response)["headers"]
            assert {"Signature", "Signature-Input", "Content-Digest"} <= set(headers), (
                endpoint,
                code,
            )
