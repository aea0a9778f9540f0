"""`python -m sdk`: what a new partner runs first.

python -m sdk keygen [--out FILE] [--force]
    Writes an Ed25519 key pair: FILE (default alliance-key.pem), the private key, PKCS#8 PEM,
    mode 0600; and FILE with `.pub.pem`, the public key. Prints the public key (base64url of
    its 32 raw bytes, the form `alliance merchant add-key --public-key` takes) on stdout, alone,
    and what to do with it on stderr.

python -m sdk ping [--base-url URL] [--key-id ID] [--key-file FILE] [--timeout S]
    Checks a configured client end to end: fetches the exchange's keys, sends one signed
    request (GET /v1/transactions?limit=1) and checks the signed answer. Each option defaults
    to its environment variable: ALLIANCE_BASE_URL (else http://127.0.0.1:8000),
    ALLIANCE_KEY_ID, ALLIANCE_KEY_FILE. Exit status 0 when all is well, 1 when the exchange
    refuses or cannot be reached, 2 when the configuration is incomplete.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sdk._client import AllianceClient
from sdk._config import ClientSettings, ConfigurationError
from sdk._constants import (
    ENV_BASE_URL,
    ENV_KEY_FILE,
    ENV_KEY_ID,
    PRIVATE_KEY_FILE_MODE,
    __version__,
)
from sdk._errors import AllianceError
from sdk._retry import RetryPolicy

DEFAULT_KEY_FILE = "alliance-key.pem"

HINTS = {
    "unknown_key": "is the key registered? the operator runs `alliance merchant add-key`",
    "key_revoked": "the key is revoked or outside its validity window: register a new one",
    "signature_expired": "this machine's clock is off by more than 300 s: check it (NTP)",
    "merchant_suspended": "the merchant is suspended: ask the alliance operator",
}


def main(
    argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    out, err = stdout or sys.stdout, stderr or sys.stderr
    args = _parser().parse_args(argv)
    if args.command == "keygen":
        return keygen(Path(args.out), force=args.force, stdout=out, stderr=err)
    return ping(
        base_url=args.base_url,
        key_id=args.key_id,
        key_file=args.key_file,
        timeout_s=args.timeout,
        stdout=out,
        stderr=err,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sdk", description="Alliance partner SDK tools")
    parser.add_argument("--version", action="version", version=f"alliance-sdk {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    keygen_parser = commands.add_parser("keygen", help="write an Ed25519 key pair")
    keygen_parser.add_argument("--out", default=DEFAULT_KEY_FILE, help="private key file")
    keygen_parser.add_argument("--force", action="store_true", help="overwrite existing files")
    ping_parser = commands.add_parser("ping", help="check a configured client end to end")
    ping_parser.add_argument("--base-url", help=f"the exchange (default ${ENV_BASE_URL})")
    ping_parser.add_argument("--key-id", help=f"your key id (default ${ENV_KEY_ID})")
    ping_parser.add_argument("--key-file", help=f"your private key, PEM (default ${ENV_KEY_FILE})")
    ping_parser.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    return parser


# --- keygen -------------------------------------------------------------------------------------


def keygen(private_path: Path, *, force: bool, stdout: TextIO, stderr: TextIO) -> int:
    public_path = private_path.with_name(private_path.name.removesuffix(".pem") + ".pub.pem")
    for path in (private_path, public_path):
        if path.exists() and not force:
            _say(stderr, f"error: {path} exists; pass --force to overwrite it")
            return 1
    key = Ed25519PrivateKey.generate()
    _write_private(private_path, key)
    public = key.public_key()
    public_path.write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    encoded = base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
    _say(stdout, encoded)
    _say(
        stderr,
        f"Private key: {private_path} (mode 0600; keep it secret, never send it).\n"
        f"Public key:  {public_path}\n"
        "Send the public key to the alliance operator, who registers it with\n"
        f"  alliance merchant add-key <merchant_id> --public-key={encoded} --key-id <key id>\n"
        f"then configure the client: {ENV_KEY_ID}=<key id> {ENV_KEY_FILE}={private_path}",
    )
    return 0


def _write_private(path: Path, key: Ed25519PrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Created 0600 from the start: never readable by others, not even for a moment.
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_KEY_FILE_MODE)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
    os.chmod(path, PRIVATE_KEY_FILE_MODE)  # in case a umask took bits away we asked for


# --- ping ---------------------------------------------------------------------------------------


def ping(
    *,
    base_url: str | None,
    key_id: str | None,
    key_file: str | None,
    timeout_s: float,
    stdout: TextIO,
    stderr: TextIO,
) -> int:
    try:
        settings = ClientSettings.resolve(base_url=base_url, key_id=key_id, key_file=key_file)
        private_key = settings.private_key()
    except ConfigurationError as error:
        _say(stderr, f"error: {error}")
        return 2
    # A smoke test reports the first failure as it is, rather than retrying it away.
    client = AllianceClient(
        base_url=settings.base_url,
        key_id=settings.key_id,
        private_key=private_key,
        timeout=timeout_s,
        retry=RetryPolicy(max_retries=0),
    )
    with client:
        try:
            started = time.monotonic()
            keys = client.get_exchange_keys()
            _say(stdout, f"exchange   {settings.base_url}")
            _say(stdout, f"keys       {', '.join(key.key_id for key in keys)}")
            client.list_transactions(limit=1)
            elapsed_ms = (time.monotonic() - started) * 1000
        except AllianceError as error:
            hint = HINTS.get(error.code or "")
            _say(stderr, f"error: {error}" + (f"\nhint: {hint}" if hint else ""))
            return 1
    _say(
        stdout,
        f"ok         key {settings.key_id} accepted; the answer verified ({elapsed_ms:.0f} ms)",
    )
    return 0


def _say(stream: TextIO, text: str) -> None:
    stream.write(text + "\n")
