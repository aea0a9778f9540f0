"""The load generator: a separate process of asyncio clients signing every request for real.

Each request is signed as a partner's till signs it (sdk.signing, RFC 9421, Ed25519), with a
fresh nonce, `created` = now and a Content-Digest of the body; every POST has a fresh
Idempotency-Key. Prints one JSON object: requests, operations, errors, rate and latency.

    python -m bench.load --url http://127.0.0.1:8900 --keys .data/bench/keys.json \\
        --kind redeem --clients 32 --duration 10 --members 100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import uvloop
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from bench.seed import load_partners, member_id
from sdk.signing import sign_request

KINDS = ("redeem", "issue", "balance", "batch")


@dataclass(frozen=True, slots=True)
class Signer:
    merchant_id: str
    key_id: str
    key: Ed25519PrivateKey


@dataclass(slots=True)
class Tally:
    latencies: list[float] = field(default_factory=list)
    operations: int = 0
    sent: int = 0
    errors: Counter[str] = field(default_factory=Counter)


def signers(keys_file: Path) -> list[Signer]:
    result = []
    for partner in load_partners(keys_file):
        key = load_pem_private_key(partner.private_pem.encode(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        result.append(Signer(partner.merchant_id, partner.key_id, key))
    return result


def signed(signer: Signer, authority: str, method: str, path: str, body: bytes) -> dict[str, str]:
    headers = {"host": authority}
    if method == "POST":
        headers["content-type"] = "application/json"
        headers["idempotency-key"] = secrets.token_hex(16)
    headers |= sign_request(
        method=method,
        authority=authority,
        path=path,
        query=None,
        headers=headers,
        body=body,
        key_id=signer.key_id,
        private_key=signer.key,
        created=int(time.time()),
        nonce=secrets.token_urlsafe(16),
    )
    return headers


def request_for(
    kind: str, rng: random.Random, members: int, batch_size: int
) -> tuple[str, str, bytes, int]:
    """(method, path, body, operations) of one request."""
    who = member_id(rng.randrange(members))
    if kind == "balance":
        return "GET", f"/v1/members/{who}/balance", b"", 1
    if kind == "redeem":
        body: dict[str, Any] = {"member_id": who, "points": rng.randint(1, 5), "reference": "b"}
        return "POST", "/v1/redemptions", json.dumps(body).encode(), 1
    if kind == "issue":
        body = {"member_id": who, "points": rng.randint(10, 200), "reference": "bench receipt"}
        return "POST", "/v1/issuances", json.dumps(body).encode(), 1
    operations = [
        {
            "op": "issue",
            "idempotency_key": secrets.token_hex(16),
            "member_id": member_id(rng.randrange(members)),
            "points": rng.randint(10, 200),
            "reference": "till upload",
        }
        for _ in range(batch_size)
    ]
    return "POST", "/v1/batches", json.dumps({"operations": operations}).encode(), batch_size


async def client(
    number: int,
    args: argparse.Namespace,
    pool: list[Signer],
    http: aiohttp.ClientSession,
    measure_from: float,
    deadline: float,
    tally: Tally,
) -> None:
    rng = random.Random(args.seed * 1000 + number)
    authority = urlsplit(args.url).netloc
    sent = 0
    while time.perf_counter() < deadline and (args.count is None or sent < args.count):
        sent += 1
        signer = pool[0] if args.hot else rng.choice(pool)
        method, path, body, operations = request_for(
            kind=args.kind, rng=rng, members=args.members, batch_size=args.batch_size
        )
        headers = signed(signer, authority, method, path, body)
        began = time.perf_counter()
        try:
            async with http.request(method, path, data=body, headers=headers) as response:
                status = response.status
                payload = await response.read()
            failed_ops = 0
            if status < 300 and args.kind == "batch":
                failed_ops = sum(1 for r in json.loads(payload)["results"] if "code" in r)
        except aiohttp.ClientError as error:
            status, failed_ops = 0, 0
            tally.errors[type(error).__name__] += 1
        ended = time.perf_counter()
        tally.sent += operations
        if began < measure_from or ended > deadline:
            continue  # warm-up, or cut by the end of the window
        if status >= 300:
            tally.errors[str(status)] += 1
            continue
        if failed_ops:
            tally.errors["operation"] += failed_ops
        tally.latencies.append(ended - began)
        tally.operations += operations - failed_ops


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    pool = signers(Path(args.keys))
    tally = Tally()
    # aiohttp rather than httpx: it costs the shared cores about half the CPU per request
    # (bench/README.md, "Where the CPU goes"), so more of them serve the exchange.
    connector = aiohttp.TCPConnector(limit=args.clients)
    timeout = aiohttp.ClientTimeout(total=120.0)
    async with aiohttp.ClientSession(args.url, connector=connector, timeout=timeout) as http:
        start = time.perf_counter()
        fixed = args.count is not None  # a fixed number of requests per client, all measured
        measure_from = start if fixed else start + args.warmup
        deadline = float("inf") if fixed else measure_from + args.duration
        await asyncio.gather(
            *(
                client(n, args, pool, http, measure_from, deadline, tally)
                for n in range(args.clients)
            )
        )
        window = time.perf_counter() - start if fixed else args.duration
    return {
        "kind": args.kind,
        "clients": args.clients,
        "hot": args.hot,
        "duration_s": window,
        "requests": len(tally.latencies),
        "operations": tally.operations,
        "requests_per_s": len(tally.latencies) / window,
        "operations_per_s": tally.operations / window,
        # Every operation sent, warm-up and the window's edges included: what CPU time went on.
        "operations_sent": tally.sent,
        "p50_ms": percentile(tally.latencies, 0.50) * 1000,
        "p99_ms": percentile(tally.latencies, 0.99) * 1000,
        "errors": dict(tally.errors),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--keys", required=True)
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--members", type=int, required=True)
    parser.add_argument("--hot", action="store_true", help="every request from one merchant")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--count", type=int, help="requests per client (instead of --duration)")
    sys.stdout.write(json.dumps(uvloop.run(run(parser.parse_args()))) + "\n")


if __name__ == "__main__":
    main()
