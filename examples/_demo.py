"""What the examples share: a client for one of the demo merchants of `make run`'s alliance.

`make run` seeds the demo alliance (`alliance demo`), which writes each demo merchant's private
key to `.data/demo-keys/<key id>.pem`, and serves the exchange on http://127.0.0.1:8000. Two
variables point the examples elsewhere:

    ALLIANCE_BASE_URL    the exchange (default http://127.0.0.1:8000)
    ALLIANCE_DEMO_KEYS   the directory of demo keys (default .data/demo-keys)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sdk import AllianceClient, load_private_key

BASE_URL = os.environ.get("ALLIANCE_BASE_URL", "http://127.0.0.1:8000")
KEYS_DIR = Path(os.environ.get("ALLIANCE_DEMO_KEYS", ".data/demo-keys"))

TEA_HOUSE = "tea-house-1"
BOOKSHOP = "bookshop-1"
CINEMA = "cinema-1"


def demo_client(key_id: str) -> AllianceClient:
    """A client signing as the demo merchant whose key is `key_id`."""
    key_file = KEYS_DIR / f"{key_id}.pem"
    if not key_file.exists():
        sys.exit(f"{key_file} not found: run `make run` first (it seeds the demo alliance)")
    return AllianceClient(base_url=BASE_URL, key_id=key_id, private_key=load_private_key(key_file))
