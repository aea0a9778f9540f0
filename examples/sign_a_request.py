"""Sign requests to the exchange by hand (RFC 9421, Ed25519), as the demo tea house.

Run `make run` in one terminal, then in another:

    .venv/bin/python examples/sign_a_request.py

It enrols a member, issues 120 points, and reads the balance back, printing each response.
This is what the SDK (`sdk.AllianceClient`) does for you, minus its retries and its checking of
the exchange's signatures on the answers; see examples/till.py for the same with the SDK.
`ALLIANCE_BASE_URL` and `ALLIANCE_DEMO_KEYS` point it at another exchange or key directory.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from sdk.signing import sign_request

BASE_URL = os.environ.get("ALLIANCE_BASE_URL", "http://127.0.0.1:8000")
KEY_ID = "tea-house-1"
KEY_FILE = Path(os.environ.get("ALLIANCE_DEMO_KEYS", ".data/demo-keys")) / f"{KEY_ID}.pem"


def send(
    client: httpx2.Client, key: Ed25519PrivateKey, method: str, path: str, body: object = None
) -> Any:
    raw = b"" if body is None else json.dumps(body).encode()
    url = urlsplit(BASE_URL + path)
    headers = {"content-type": "application/json"} if raw else {}
    if method == "POST":
        headers["idempotency-key"] = secrets.token_hex(16)
    headers |= sign_request(
        method=method,
        authority=url.netloc,
        path=url.path,
        query=url.query or None,
        headers=headers,
        body=raw,
        key_id=KEY_ID,
        private_key=key,
        created=int(time.time()),
        nonce=secrets.token_urlsafe(16),
    )
    response = client.request(method, BASE_URL + path, content=raw, headers=headers)
    print(method, path, "->", response.status_code, response.text)
    return response.json()


def main() -> None:
    if not KEY_FILE.exists():
        sys.exit(f"{KEY_FILE} not found: run `make run` (it seeds the demo alliance) first")
    key = load_pem_private_key(KEY_FILE.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    with httpx2.Client(timeout=10) as client:
        member = send(client, key, "POST", "/v1/members", {"external_ref": "card-example-1"})
        member_id = member["member_id"]
        send(
            client,
            key,
            "POST",
            "/v1/issuances",
            {"member_id": member_id, "points": 120, "reference": "example receipt"},
        )
        send(client, key, "GET", f"/v1/members/{member_id}/balance")


if __name__ == "__main__":
    main()
